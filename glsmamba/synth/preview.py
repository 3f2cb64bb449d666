"""Contact sheet of a generated benchmark: sample frames with their GT skeletons.

Visible joints are filled dots, hidden ones (v = 1) hollow red rings; left limbs are
orange, right limbs blue; each tile is captioned with its video, frame and degradations.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from glsmamba.errors import DataError
from glsmamba.synth.body import KEYPOINT_NAMES, SKELETON

LEFT, RIGHT, CENTRE = (0, 140, 255), (255, 120, 0), (60, 220, 60)   # BGR
HIDDEN = (0, 0, 255)


def _limb_colour(a: int, b: int) -> tuple[int, int, int]:
    names = KEYPOINT_NAMES[a] + KEYPOINT_NAMES[b]
    if "left" in names and "right" not in names:
        return LEFT
    if "right" in names and "left" not in names:
        return RIGHT
    return CENTRE


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, scale: float = 1.0) -> None:
    """Draw one person's (17, 3) keypoints (x, y, v) onto ``image`` in place."""
    points = keypoints[:, :2] * scale
    flags = keypoints[:, 2]
    for a, b in SKELETON:
        a, b = a - 1, b - 1
        if flags[a] > 0 and flags[b] > 0:
            cv2.line(image, tuple(int(v) for v in points[a]), tuple(int(v) for v in points[b]),
                     _limb_colour(a, b), 2, cv2.LINE_AA)
    for (x, y), flag in zip(points, flags):
        if flag >= 2:
            cv2.circle(image, (int(x), int(y)), 3, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(image, (int(x), int(y)), 3, (0, 0, 0), 1, cv2.LINE_AA)
        elif flag > 0:
            cv2.circle(image, (int(x), int(y)), 4, HIDDEN, 2, cv2.LINE_AA)


def _caption(image: np.ndarray, lines: list[str]) -> None:
    for row, text in enumerate(lines):
        origin = (4, 14 + 14 * row)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def _load_frames(root: Path) -> list[tuple[dict, list[dict], str]]:
    """(image record, its annotations, video name) of every labelled frame."""
    frames = []
    files = sorted((root / "annotations").glob("*/*.json"))
    if not files:
        raise DataError("no annotation files found under annotations/*/", str(root))
    for path in files:
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read annotation file: {err}", str(path)) from err
        by_image: dict[int, list[dict]] = {}
        for annotation in document.get("annotations", []):
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        for image in document.get("images", []):
            if image.get("is_labeled", True):
                frames.append((image, by_image.get(image["id"], []), path.stem))
    return frames


def pick_frames(frames: list, count: int, seed: int = 0) -> list:
    """Up to ``count`` frames: each degradation kind first, then clean frames, spread out."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for kind in ("occluded", "blur", "defocus", "crossing"):
        candidates = [i for i, (image, _, _) in enumerate(frames)
                      if kind in image.get("degradations", []) and i not in chosen]
        chosen += [int(i) for i in rng.permutation(candidates)[:max(1, count // 6)]]
    rest = [i for i in range(len(frames)) if i not in chosen]
    chosen += [int(i) for i in rng.permutation(rest)[:max(0, count - len(chosen))]]
    return [frames[i] for i in sorted(chosen[:count])]


def make_preview(root: str | Path, out_path: str | Path | None = None, count: int = 12,
                 columns: int = 4, seed: int = 0) -> Path:
    """Write a contact sheet PNG (default ``ROOT/preview.png``) and return its path."""
    root = Path(root)
    out_path = Path(out_path) if out_path is not None else root / "preview.png"
    tiles = []
    for image, people, video in pick_frames(_load_frames(root), count, seed):
        path = root / image["file_name"]
        pixels = cv2.imread(str(path))
        if pixels is None:
            raise DataError("cannot read image", str(path), str(image["id"]))
        for annotation in people:
            draw_skeleton(pixels, np.asarray(annotation["keypoints"], float).reshape(-1, 3))
        tags = ", ".join(image.get("degradations", [])) or "clean"
        _caption(pixels, [f"{video} #{image['frame_id'] % 10000}", tags])
        tiles.append(pixels)
    if not tiles:
        raise DataError("no labelled frames to preview", str(root))
    height, width = tiles[0].shape[:2]
    tiles = [cv2.resize(t, (width, height)) if t.shape[:2] != (height, width) else t for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    sheet = np.concatenate(rows, axis=0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(Path(out_path).suffix or ".png", sheet)
    if not ok:
        raise DataError("cannot encode preview image", str(out_path))
    from glsmamba.fileio import atomic_write_bytes
    atomic_write_bytes(out_path, encoded.tobytes())
    return out_path
