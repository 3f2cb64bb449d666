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
from glsmamba.evaluation.poseval_format import MAX_TRACK_ID, POSETRACK18_KEYPOINTS

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


MARKER = ".glsmamba-predictions"        # JSON manifest; no .json suffix: not a video
MARKER_FORMAT = "glsmamba-predictions-v1"


def _digest(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a prediction folder glsmamba wrote ({name: sha256}), else None."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if data.get("format") != MARKER_FORMAT or not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    if data.get("complete") is not True:
        return None                     # written first when files are replaced one by one
    return files


def verify_prediction_folder(folder: str | Path) -> None:
    """DataError when a prediction folder glsmamba wrote is incomplete or was modified
    (a listed file missing or changed); folders without a manifest are not checked."""
    from glsmamba.fileio import file_sha256
    folder = Path(folder)
    files = read_manifest(folder)
    if files is None:
        if (folder / MARKER).exists():
            raise DataError("the prediction set is incomplete (being written, or its writer "
                            "was interrupted) or its manifest is unreadable; write the "
                            "predictions again", str(folder / MARKER))
        return
    for name, digest in sorted(files.items()):
        path = folder / name
        try:
            same = not path.is_symlink() and file_sha256(path) == digest
        except OSError:
            same = False
        if not same:
            raise DataError(f"{name} is missing or differs from the prediction set glsmamba "
                            f"wrote (listed in {MARKER}): the set is incomplete or was "
                            "modified; write the predictions again", str(folder))


def _is_own_set(out_dir: Path) -> bool:
    """The folder holds exactly a prediction set glsmamba wrote (manifest + its files)."""
    files = read_manifest(out_dir)
    if files is None:
        return False
    present = {p.name for p in out_dir.iterdir()}
    return present <= set(files) | {MARKER}


def check_prediction_target(out_dir: Path, names, replace_foreign: bool, inputs) -> None:
    """OutputRefused / DataError when a prediction set named ``names`` may not go to
    ``out_dir``: it would replace an input, a link, a file, or (without
    ``replace_foreign``) a folder glsmamba did not write."""
    from glsmamba.outputs import input_files, refuse_foreign, refuse_input_folder, refuse_inputs
    out_dir = Path(out_dir)
    known = input_files(inputs)
    refuse_inputs([out_dir] + [out_dir / name for name in names], known)
    refuse_input_folder(out_dir, known)
    if out_dir.is_symlink():
        raise DataError("output folder is a link; refusing to write through it", str(out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError("output path exists and is not a folder", str(out_dir))
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _is_own_set(out_dir) \
            and not replace_foreign:
        taken = [out_dir / name for name in names if (out_dir / name).exists()]
        if taken:
            raise DataError(f"refusing to replace this file: it is not a prediction file "
                            f"glsmamba wrote (no {MARKER} manifest lists it: ground truth?); "
                            "choose another output folder (or --overwrite)", str(taken[0]))
        refuse_foreign(out_dir, owned=False, overwrite=False, command="glsmamba eval")


def _publish(out_dir: Path, files: dict[str, bytes], overwrite: bool, replace_foreign: bool,
             inputs) -> None:
    """Make ``files`` visible in ``out_dir`` as one set (see write_posetrack_predictions)."""
    from glsmamba.fileio import atomic_write_bytes, publish_folder
    check_prediction_target(out_dir, list(files), replace_foreign, inputs)
    manifest = {"format": MARKER_FORMAT, "complete": True,
                "files": {name: _digest(data) for name, data in files.items()}}
    everything = {**files, MARKER: json.dumps(manifest, indent=1).encode()}
    empty = not out_dir.exists() or not any(out_dir.iterdir())
    if empty or _is_own_set(out_dir):
        if not empty and not overwrite:
            raise DataError("output folder is not empty; refusing to overwrite its files "
                            "(pass overwrite=True / --overwrite)", str(out_dir))
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        publish_folder(everything, out_dir, replace_existing=out_dir.exists())
        return
    # files replaced one by one (a folder of the user's, --overwrite): the manifest says
    # "incomplete" until the last file is in place, and readers refuse such a set
    atomic_write_bytes(out_dir / MARKER, json.dumps({**manifest, "complete": False}).encode())
    for name, data in files.items():
        atomic_write_bytes(out_dir / name, data)
    atomic_write_bytes(out_dir / MARKER, everything[MARKER])


def write_posetrack_predictions(out_dir: str | Path, videos: Mapping[str, Mapping],
                                predictions: Sequence[Mapping],
                                overwrite: bool = False, replace_foreign: bool = False,
                                inputs=(), extra_files: Mapping[str, bytes] | None = None
                                ) -> list[Path]:
    """Write ``out_dir/<video>.json`` for every GT video; returns the paths written.

    ``videos``: video name -> {"images": [GT image records, in order], "categories"?: ...}.
    ``predictions``: dicts with ``image_id``, ``keypoints`` (17, 3) image x, y, score and
    optional ``track_id``, ``bbox`` (x, y, w, h) and ``score``. Track ids are made unique
    per frame; predictions are kept in the given order within a frame.

    The files (plus ``extra_files``, name -> bytes) and a manifest (``MARKER``: each
    file's SHA-256) become visible as one set: written into a private folder and renamed
    into place. An existing set glsmamba wrote is replaced with ``overwrite``; a folder
    holding anything else only with ``replace_foreign`` (the user's ``--overwrite``: the
    files are then replaced one by one, the manifest last). No output ever replaces one
    of ``inputs`` (files or folders the command read).
    """
    out_dir = Path(out_dir)
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
    files: dict[str, bytes] = {}
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
        files[f"{name}.json"] = json.dumps(data, allow_nan=False).encode()
    _publish(out_dir, {**files, **dict(extra_files or {})}, overwrite, replace_foreign, inputs)
    return [out_dir / name for name in files]
