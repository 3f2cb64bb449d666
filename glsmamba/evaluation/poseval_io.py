"""Reading poseval-format files: PoseTrack18 JSON (per video or merged) and PoseTrack17
``annolist`` files -> per-video person arrays in poseval's 15-joint order.

Only loading and parsing (poseval's converter rules: which keypoint is present, head
sizes, ignore regions, score defaults); the AP arithmetic is
:mod:`glsmamba.evaluation.posetrack_map`.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glsmamba.errors import DataError

from glsmamba.evaluation.poseval_format import (  # noqa: F401  (the format's names, here too)
    HEAD_SIZE_FACTOR, JOINT_INDEX, MIN_SCORE, NUM_JOINTS, POSETRACK18_KEYPOINTS, POSEVAL_JOINTS)


# --------------------------------------------------------------------------- loading


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON at line {err.lineno} column {err.colno} "
                        f"(char {err.pos}): {err.msg}", str(path)) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text at byte {err.start}", str(path)) from None
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror}", str(path)) from None


def video_name_of(image: Mapping) -> str | None:
    """The video folder of an image record (``images/val/003418_mpii_test/000000.jpg``)."""
    name = image.get("file_name")
    if not isinstance(name, str) or "/" not in name.replace("\\", "/"):
        return None
    return Path(name.replace("\\", "/")).parent.name or None


def split_merged(data: Mapping, path: str | None = None, prediction: bool = False,
                 strict: bool = True) -> dict[str, dict]:
    """Split one merged PoseTrack18 file into per-video dicts, by the image's folder name.

    Annotations whose image_id is not among the images are dropped with a warning (as
    poseval drops them), or, for a ``prediction`` file with ``strict``, are an error; a
    prediction file without ``annotations`` is an error."""
    images = data.get("images") if isinstance(data, Mapping) else None
    if not isinstance(images, list):
        raise DataError("expected a PoseTrack18 JSON object with an 'images' list", path)
    if prediction and "annotations" not in data:
        raise DataError("prediction file has no 'annotations' list (every person would be "
                        "missing and it would score 0)", path)
    videos: dict[str, dict] = {}
    video_of_image: dict = {}
    for index, image in enumerate(images):
        if not isinstance(image, Mapping) or "id" not in image:
            raise DataError("image record without an 'id'", path, f"images[{index}]")
        name = video_name_of(image) or str(image.get("vid_id", "video"))
        video = videos.setdefault(name, {"images": [], "annotations": [],
                                         "categories": data.get("categories", [])})
        video["images"].append(image)
        video_of_image[image["id"]] = name
    dangling = []
    for index, ann in enumerate(data.get("annotations") or []):
        image_id = ann.get("image_id") if isinstance(ann, Mapping) else None
        if image_id in video_of_image:
            videos[video_of_image[image_id]]["annotations"].append(ann)
        else:
            dangling.append(index)
    if dangling:
        first = dangling[0]
        if prediction and strict:
            image_id = data["annotations"][first].get("image_id") \
                if isinstance(data["annotations"][first], Mapping) else None
            raise DataError(f"annotation's image_id {image_id!r} is not among the file's images "
                            f"({len(dangling)} such annotations); fix the file or use --lenient "
                            "to drop them", path, f"annotations[{first}]")
        warnings.warn(f"{path} [annotations[{first}]]: {len(dangling)} annotation(s) whose "
                      "image_id is not among the file's images are dropped", stacklevel=2)
    return videos


def load_json_dir(path: str | Path, prediction: bool = False,
                  strict: bool = True) -> dict[str, dict]:
    """``video name -> JSON dict`` from a folder of per-video files or one merged file.

    Folder: every ``*.json`` (sorted), named by file stem. File: a merged PoseTrack18
    file is split by the images' video folders; an ``annolist`` file is one video.
    ``prediction`` / ``strict``: see :func:`split_merged`.
    """
    path = Path(path)
    if path.is_file():
        data = _read_json(path)
        if isinstance(data, Mapping) and "annolist" in data:
            return {path.stem: data}
        return split_merged(data, str(path), prediction=prediction, strict=strict)
    if not path.is_dir():
        raise DataError("no such folder or file", str(path))
    from glsmamba.evaluation.writer import verify_prediction_folder
    verify_prediction_folder(path)            # a set glsmamba wrote must be whole
    files = sorted(p for p in path.glob("*.json") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError("folder holds no .json files", str(path))
    videos = {}
    for file in files:
        data = _read_json(file)
        if not isinstance(data, Mapping):
            raise DataError(f"expected a JSON object, found {type(data).__name__}", str(file))
        videos[file.stem] = data
    return videos


# --------------------------------------------------------------------------- parsing


@dataclass
class PosevalVideo:
    """All person records of one video file in poseval's 15-joint order."""

    keys: list                        # frame keys: image ids (PoseTrack18) or positions
    num_records: np.ndarray           # (F,) person records per frame, as in the file
    regions: list[list[np.ndarray]]   # per frame: ignore polygons, each (M, 2)
    frame: np.ndarray                 # (A,) frame position of each person
    xy: np.ndarray                    # (A, 15, 2) float64
    present: np.ndarray               # (A, 15) bool
    scores: np.ndarray                # (A, 15) float64
    head_size: np.ndarray             # (A,) float64, NaN where unknown
    track_ids: list = field(default_factory=list)   # (A,)


def _conversion_table(data: Mapping, num_values: int, where: str) -> list[int | None]:
    """Index into POSEVAL_JOINTS (or None) for each keypoint of the file."""
    categories = data.get("categories")
    names = None
    if isinstance(categories, list) and categories and isinstance(categories[0], Mapping):
        names = categories[0].get("keypoints")
    if not names:
        if num_values == 3 * len(POSETRACK18_KEYPOINTS):
            names = POSETRACK18_KEYPOINTS
        elif num_values == 3 * NUM_JOINTS:
            names = POSEVAL_JOINTS
        else:
            raise DataError(f"keypoints hold {num_values} values; expected 51 (17 joints) or "
                            "45 (15 joints) when 'categories' gives no keypoint names", where)
    table = [JOINT_INDEX.get(str(n)) for n in names]
    missing = [POSEVAL_JOINTS[i] for i in range(NUM_JOINTS) if i not in table]
    if missing:
        raise DataError(f"categories[0].keypoints lacks {', '.join(missing)}", where)
    return table


def _as_float_array(values, what: str, where: str, record: str | None = None) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be numbers", where, record) from None


def _parse_posetrack18(data: Mapping, where: str, is_gt: bool,
                       only_ids: set | None = None, strict: bool = True) -> PosevalVideo:
    images = data.get("images")
    if not isinstance(images, list):
        raise DataError("expected an 'images' list (PoseTrack18) or an 'annolist' "
                        "(PoseTrack17)", where)
    if "annotations" not in data and not is_gt:
        raise DataError("prediction file has no 'annotations' list (every person would be "
                        "missing and the video would score 0)", where)
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list):
        raise DataError("'annotations' must be a list", where)
    position = {}
    for index, image in enumerate(images):
        if not isinstance(image, Mapping) or "id" not in image:
            raise DataError("image record without an 'id'", where, f"images[{index}]")
        if image["id"] in position:
            raise DataError(f"image id {image['id']} listed twice", where, f"images[{index}]")
        position[image["id"]] = index
    records = []
    dangling = []                                    # poseval drops them silently
    for index, ann in enumerate(annotations):
        if not isinstance(ann, Mapping):
            raise DataError("annotation is not an object", where, f"annotations[{index}]")
        image_id = ann.get("image_id")
        if image_id not in position:
            dangling.append((index, image_id))
        elif only_ids is None or image_id in only_ids:
            records.append((index, ann))
    if dangling:
        index, image_id = dangling[0]
        message = (f"annotation's image_id {image_id!r} is not among the file's images"
                   + (f" ({len(dangling)} such annotations)" if len(dangling) > 1 else ""))
        if strict and not is_gt:
            raise DataError(message + "; fix the file or use --lenient to drop them",
                            where, f"annotations[{index}]")
        warnings.warn(f"{where} [annotations[{index}]]: {message}; dropped, as poseval does",
                      stacklevel=4)
    frame = np.array([position[ann["image_id"]] for _, ann in records], dtype=np.int64)
    regions = [_regions_posetrack18(image, where) for image in images]
    people = _people_from_records(data, records, where, is_gt)
    return PosevalVideo(list(position), np.bincount(frame, minlength=len(images)), regions, frame,
                  *people)


def _people_from_records(data: Mapping, records: list, where: str, is_gt: bool) -> tuple:
    """xy, present, scores, head_size, track_ids of the records (file order)."""
    if not records:
        return (np.zeros((0, NUM_JOINTS, 2)), np.zeros((0, NUM_JOINTS), bool),
                np.zeros((0, NUM_JOINTS)), np.zeros(0), [])
    first = records[0][1].get("keypoints")
    table = _conversion_table(data, len(first) if isinstance(first, list) else -1, where)
    count = len(table)
    for index, ann in records:
        values = ann.get("keypoints")
        if not isinstance(values, list) or len(values) != 3 * count:
            raise DataError(f"'keypoints' must be a flat list of {3 * count} numbers",
                            where, f"annotations[{index}]")
    raw = _as_float_array([ann["keypoints"] for _, ann in records], "'keypoints'", where)
    raw = raw.reshape(len(records), count, 3)
    _check_finite(raw, records, where, "'keypoints'", 3)
    scores_raw = _scores(records, count, where)
    _check_finite(scores_raw, records, where, "'scores'", 1)
    columns = [src for src, dst in enumerate(table) if dst is not None]
    targets = [table[src] for src in columns]
    xy = np.zeros((len(records), NUM_JOINTS, 2))
    xy[:, targets] = raw[:, columns, :2]
    point = raw[:, columns]
    present = np.zeros((len(records), NUM_JOINTS), bool)
    # poseval's converter skips a keypoint only when it is exactly (0, 0, 0)
    present[:, targets] = ~((point[..., 0] == 0) & (point[..., 1] == 0) & (point[..., 2] == 0))
    scores = np.full((len(records), NUM_JOINTS), np.nan)
    scores[:, targets] = scores_raw[:, columns]
    head_size = _head_sizes(records, present, where) if is_gt else np.full(len(records), np.nan)
    return xy, present, scores, head_size, [ann.get("track_id") for _, ann in records]


def _check_finite(values: np.ndarray, records: list, where: str, what: str, per_joint: int) -> None:
    """NaN / inf keypoints or scores are an error naming the record (poseval would rank a
    NaN score above every other and count a NaN joint as a silent miss)."""
    bad = ~np.isfinite(values.reshape(len(records), -1))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        index = records[row][0]
        value = values.reshape(len(records), -1)[row, column]
        raise DataError(f"{what} value {column} (joint {column // per_joint}) is {value}; "
                        "keypoints and scores must be finite numbers", where,
                        f"annotations[{index}]")


def _scores(records: list, count: int, where: str) -> np.ndarray:
    scores = np.full((len(records), count), MIN_SCORE)
    rows, values = [], []
    for row, (index, ann) in enumerate(records):
        given = ann.get("scores")
        if given:                                    # poseval: missing or [] -> MIN_SCORE
            if not isinstance(given, list) or len(given) < count:
                raise DataError(f"'scores' must list {count} numbers", where,
                                f"annotations[{index}]")
            rows.append(row)
            values.append(given[:count])
    if rows:
        scores[rows] = _as_float_array(values, "'scores'", where)
    return scores


def _head_sizes(records: list, present: np.ndarray, where: str) -> np.ndarray:
    boxes = np.full((len(records), 4), np.nan)
    for row, (index, ann) in enumerate(records):
        box = ann.get("bbox_head")
        if box is None:
            if present[row].any():
                raise DataError("GT person with joints but no 'bbox_head' (needed for the "
                                "head size)", where, f"annotations[{index}]")
            continue
        if not isinstance(box, list) or len(box) != 4:
            raise DataError("'bbox_head' must be [x, y, w, h]", where, f"annotations[{index}]")
        boxes[row] = _as_float_array(box, "'bbox_head'", where, f"annotations[{index}]")
        if present[row].any() and not np.isfinite(boxes[row]).all():
            raise DataError(f"'bbox_head' {box} is not finite (the head size would be NaN and "
                            "every joint a miss)", where, f"annotations[{index}]")
    # poseval: 0.6 * norm([x2, y2] - [x1, y1]) with x2 = x1 + w as its converter writes it
    return _head_size(boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2],
                      boxes[:, 1] + boxes[:, 3])


def _head_size(x1, y1, x2, y2):
    return HEAD_SIZE_FACTOR * np.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2)


def _polygon(xs, ys, where: str, record: str) -> np.ndarray | None:
    points = list(zip(xs or [], ys or []))
    if not points:
        return None
    poly = _as_float_array(points, "ignore region coordinates", where, record)
    if len(poly) < 3:
        warnings.warn(f"{where} [{record}]: ignore region with {len(poly)} point(s) ignored "
                      "(poseval's shapely would reject it)", stacklevel=3)
        return None
    return poly


def _regions_posetrack18(image: Mapping, where: str) -> list[np.ndarray]:
    xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
    if not xs or not ys:
        return []
    record = f"image {image.get('id')}"
    polys = [_polygon(px, py, where, record) for px, py in zip(xs, ys)]
    return [p for p in polys if p is not None]


def _first(value):
    """PoseTrack17 stores scalars as one-element lists."""
    return value[0] if isinstance(value, list) and value else value


def _parse_annolist(data: Mapping, where: str, is_gt: bool) -> PosevalVideo:
    entries = data["annolist"]
    if not isinstance(entries, list):
        raise DataError("'annolist' must be a list", where)
    frame, rows, regions, num_records = [], [], [], []
    for position, entry in enumerate(entries):
        rects = entry.get("annorect") or []
        num_records.append(len(rects))
        for row, rect in enumerate(rects):
            frame.append(position)
            rows.append(_annolist_person(rect, where, f"annolist[{position}].annorect[{row}]",
                                         is_gt))
        polys = []
        for region in entry.get("ignore_regions") or []:
            pts = region.get("point") or []
            poly = _polygon([_first(p["x"]) for p in pts], [_first(p["y"]) for p in pts],
                            where, f"annolist[{position}]")
            if poly is not None:
                polys.append(poly)
        regions.append(polys)
    count = len(rows)
    stack = (lambda i, shape: np.array([r[i] for r in rows]) if rows else np.zeros(shape))
    return PosevalVideo(list(range(len(entries))), np.array(num_records, dtype=np.int64), regions,
                  np.array(frame, dtype=np.int64), stack(0, (0, NUM_JOINTS, 2)),
                  stack(1, (0, NUM_JOINTS)).astype(bool), stack(2, (0, NUM_JOINTS)),
                  stack(3, (0,)).astype(np.float64), [r[4] for r in rows][:count])


def _annolist_person(rect: Mapping, where: str, record: str, is_gt: bool) -> tuple:
    xy = np.zeros((NUM_JOINTS, 2))
    present = np.zeros(NUM_JOINTS, bool)
    scores = np.full(NUM_JOINTS, np.nan)
    annopoints = rect.get("annopoints") or []
    points = (annopoints[0].get("point") or []) if annopoints else []
    for point in points:
        joint = _first(point.get("id"))
        if not isinstance(joint, int) or not 0 <= joint < NUM_JOINTS or present[joint]:
            continue                                  # poseval takes the first point per id
        try:
            xy[joint] = (float(_first(point["x"])), float(_first(point["y"])))
            score = _first(point.get("score"))
            scores[joint] = MIN_SCORE if score is None else float(score)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"point {joint} needs numeric x, y (and score)", where, record) from None
        if not (np.isfinite(xy[joint]).all() and np.isfinite(scores[joint])):
            raise DataError(f"point {joint} has a non-finite x, y or score "
                            f"({xy[joint].tolist()}, {scores[joint]})", where, record)
        present[joint] = True
    head = np.nan
    if is_gt and all(k in rect for k in ("x1", "y1", "x2", "y2")):
        head = float(_head_size(*(float(_first(rect[k])) for k in ("x1", "y1", "x2", "y2"))))
    elif is_gt and present.any():
        raise DataError("GT person with joints but no head box x1/y1/x2/y2", where, record)
    return xy, present, scores, head, _first(rect.get("track_id"))


def parse_video(data: Mapping, where: str, is_gt: bool, only_ids: set | None = None,
                strict: bool = True) -> PosevalVideo:
    """Person arrays of one video file (PoseTrack18 ``images`` or PoseTrack17 ``annolist``).

    ``only_ids``: convert only the people of these image ids (PoseTrack18; saves time on
    predictions for unlabelled frames). Frame keys and counts still cover every image.
    """
    if not isinstance(data, Mapping):
        raise DataError(f"expected a JSON object, found {type(data).__name__}", where)
    if "annolist" in data:
        return _parse_annolist(data, where, is_gt)
    return _parse_posetrack18(data, where, is_gt, only_ids, strict)
