"""Write predictions as poseval-ready PoseTrack18 JSON: one file per GT video.

Every frame of the video is listed in ``images`` (poseval pairs frames by position and
rejects files with fewer frames), each person has 17 ``keypoints`` (x, y, score) and
17 ``scores``, and a ``track_id`` unique within its frame.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from glsmamba.errors import DataError
from glsmamba.fileio import write_json_atomic
from glsmamba.evaluation.posetrack_map import MAX_TRACK_ID, POSETRACK18_KEYPOINTS

DEFAULT_CATEGORY = {
    "supercategory": "person", "id": 1, "name": "person",
    "keypoints": list(POSETRACK18_KEYPOINTS),
    "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13],
                 [6, 7], [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3],
                 [2, 4], [3, 5], [4, 6], [5, 7]],
}


def _plain_id(value):
    """numpy integers / floats -> Python numbers so that JSON and dict look-ups agree."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _valid_track_id(value) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and 0 <= int(value) < MAX_TRACK_ID)


def assign_track_ids(track_ids: Sequence) -> list[int]:
    """Keep valid, first-seen ids; give missing, duplicated or out-of-range ones the
    smallest free non-negative integers (poseval needs unique ids below 10000)."""
    result: list[int | None] = []
    used: set[int] = set()
    for value in track_ids:
        if _valid_track_id(value) and int(value) not in used:
            used.add(int(value))
            result.append(int(value))
        else:
            result.append(None)
    free = (i for i in range(MAX_TRACK_ID + len(result)) if i not in used)
    return [value if value is not None else next(free) for value in result]


def _person_record(pred: Mapping, index: int, image_id, ann_id: int) -> dict:
    keypoints = np.asarray(pred.get("keypoints"), dtype=np.float64)
    if keypoints.shape != (len(POSETRACK18_KEYPOINTS), 3):
        raise DataError(f"keypoints must be ({len(POSETRACK18_KEYPOINTS)}, 3) x, y, score; got "
                        f"shape {keypoints.shape}", f"predictions[{index}]")
    if not np.isfinite(keypoints).all():
        raise DataError("keypoints hold NaN or infinity", f"predictions[{index}]")
    record = {
        "image_id": image_id,
        "id": ann_id,
        "category_id": 1,
        "keypoints": [float(v) for v in keypoints.reshape(-1)],
        "scores": [float(v) for v in keypoints[:, 2]],
    }
    if pred.get("bbox") is not None:
        record["bbox"] = [float(v) for v in np.asarray(pred["bbox"], dtype=np.float64).reshape(4)]
    score = pred.get("score")
    if score is not None:
        if not math.isfinite(float(score)):
            raise DataError("person score is NaN or infinite", f"predictions[{index}]")
        record["score"] = float(score)
    return record


def _group_by_image(predictions: Sequence[Mapping], video_of: Mapping) -> dict:
    grouped: dict = {}
    for index, pred in enumerate(predictions):
        if not isinstance(pred, Mapping) or "image_id" not in pred:
            raise DataError("prediction without 'image_id'", f"predictions[{index}]")
        image_id = _plain_id(pred["image_id"])
        if image_id not in video_of:
            raise DataError(f"image id {image_id!r} is in no GT video",
                            f"predictions[{index}]")
        grouped.setdefault(image_id, []).append((index, pred))
    return grouped


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError("output path exists and is not a folder", str(out_dir))
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError("output folder is not empty; refusing to overwrite its files "
                        "(pass overwrite=True / --overwrite)", str(out_dir))


def _check_replaceable(path: Path) -> None:
    """Only a prediction file (every person has ``scores``) may be replaced: an output folder
    that is the GT annotation folder must not lose its labels."""
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        annotations = data.get("annotations") if isinstance(data, dict) else None
        ours = isinstance(annotations, list) and all(
            isinstance(a, Mapping) and "scores" in a for a in annotations)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise DataError("refusing to replace this file: it is not a prediction file (its "
                        "people have no 'scores': ground truth?); choose another output folder",
                        str(path))


def write_posetrack_predictions(out_dir: str | Path, videos: Mapping[str, Mapping],
                                predictions: Sequence[Mapping],
                                overwrite: bool = False) -> list[Path]:
    """Write ``out_dir/<video>.json`` for every GT video; returns the paths written.

    ``videos``: video name -> {"images": [GT image records, in order], "categories"?: ...}.
    ``predictions``: dicts with ``image_id``, ``keypoints`` (17, 3) image x, y, score and
    optional ``track_id``, ``bbox`` (x, y, w, h) and ``score``. Track ids are made unique
    per frame; predictions are kept in the given order within a frame.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    video_of = {}
    for name, video in videos.items():
        for index, image in enumerate(video.get("images") or []):
            if not isinstance(image, Mapping) or "id" not in image:
                raise DataError("GT image record without 'id'", f"{name} images[{index}]")
            video_of[_plain_id(image["id"])] = name
    bad = [n for n in videos if not n or Path(n).name != n or n in (".", "..")]
    if bad:
        raise DataError(f"video name {bad[0]!r} cannot be a file name", str(out_dir))
    grouped = _group_by_image(predictions, video_of)
    for name in videos:
        _check_replaceable(out_dir / f"{name}.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    ann_id = 0
    for name, video in videos.items():
        annotations = []
        for image in video.get("images") or []:
            image_id = _plain_id(image["id"])
            people = grouped.get(image_id, [])
            track_ids = assign_track_ids([p.get("track_id") for _, p in people])
            for (index, pred), track_id in zip(people, track_ids):
                record = _person_record(pred, index, image_id, ann_id)
                record["track_id"] = track_id
                annotations.append(record)
                ann_id += 1
        data = {
            "images": list(video.get("images") or []),
            "annotations": annotations,
            "categories": [DEFAULT_CATEGORY],
        }
        paths.append(write_json_atomic(out_dir / f"{name}.json", data))
    return paths
