"""PoseTrack multi-person pose mAP with poseval's exact rules (evaluateAP.py / eval_helpers.py).

Knows nothing of datasets: it scores PoseTrack18-format JSON dicts (one per video) or
PoseTrack17 ``annolist`` dicts. See docs/EVALUATION.md for every rule and quirk reproduced.

Pipeline (poseval's order):
1. each video file -> frames (read by :mod:`glsmamba.evaluation.poseval_io`); keypoints
   mapped to poseval's 15 joints by category name;
   a keypoint is present unless it is exactly ``(0, 0, 0)``;
2. keep the GT frames that hold at least one person record (``is_labeled`` is not read);
3. in frames with ignore regions, drop GT and predicted joints strictly inside a polygon
   (people left without joints are dropped);
4. per frame, match predictions to GT by PCKh@0.5 (greedy, both ways), label each
   predicted joint true/false positive;
5. per joint, VOC AP over all frames; columns Head ... Ankle and Total = mean of the 15 APs.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from glsmamba.errors import DataError
from glsmamba.evaluation.poseval_format import MAX_TRACK_ID
from glsmamba.evaluation.poseval_io import (
    MIN_SCORE, NUM_JOINTS, POSETRACK18_KEYPOINTS, POSEVAL_JOINTS, PosevalVideo, load_json_dir,
    parse_video, split_merged, video_name_of)
from glsmamba.evaluation.table import render_table

# file loading lives in poseval_io; re-exported for the callers of this module
__all__ = ["COLUMNS", "MAX_TRACK_ID", "MIN_SCORE", "POSETRACK18_KEYPOINTS", "POSEVAL_JOINTS",
           "MapResult", "evaluate_posetrack", "format_table", "image_ids_with", "load_json_dir",
           "match_frames", "parse_video", "points_in_polygon", "precision_recall",
           "split_merged", "video_name_of", "voc_ap"]

# columns of the table: indices into POSEVAL_JOINTS in poseval's averaging order
COLUMNS = {
    "Head": (14, 12, 13),
    "Shoulder": (8, 9),
    "Elbow": (7, 10),
    "Wrist": (6, 11),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}
DIST_THRESHOLD = 0.5     # PCKh threshold, in head sizes


# --------------------------------------------------------------------------- results


@dataclass
class MapResult:
    """Per-joint AP / precision / recall (percent, poseval joint order) and counts."""

    ap: np.ndarray                 # (15,)
    precision: np.ndarray          # (15,) precision at the lowest score
    recall: np.ndarray             # (15,) recall at the lowest score
    num_gt_joints: np.ndarray      # (15,) annotated GT joints after ignore regions
    num_pred_joints: np.ndarray    # (15,) predicted joints scored
    num_frames: int                # labelled frames evaluated
    num_videos: int
    num_gt_people: int
    num_pred_people: int
    joint_names: tuple[str, ...] = POSEVAL_JOINTS

    @property
    def total(self) -> float:
        """Mean AP over the joints whose AP is defined (poseval's Total)."""
        return _nanmean_like_poseval(self.ap)

    @property
    def columns(self) -> dict[str, float]:
        """Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Total."""
        return _columns(self.ap)

    @property
    def precision_columns(self) -> dict[str, float]:
        return _columns(self.precision)

    @property
    def recall_columns(self) -> dict[str, float]:
        return _columns(self.recall)

    def to_dict(self) -> dict:
        """JSON-ready summary (NaN written as null)."""
        def clean(values: Iterable[float]) -> list:
            return [None if math.isnan(v) else float(v) for v in values]

        def clean_map(mapping: Mapping[str, float]) -> dict:
            return {k: (None if math.isnan(v) else float(v)) for k, v in mapping.items()}

        return {
            "columns": clean_map(self.columns),
            "precision_columns": clean_map(self.precision_columns),
            "recall_columns": clean_map(self.recall_columns),
            "joints": list(self.joint_names),
            "ap": clean(self.ap),
            "precision": clean(self.precision),
            "recall": clean(self.recall),
            "num_gt_joints": [int(v) for v in self.num_gt_joints],
            "num_pred_joints": [int(v) for v in self.num_pred_joints],
            "num_frames": self.num_frames,
            "num_videos": self.num_videos,
            "num_gt_people": self.num_gt_people,
            "num_pred_people": self.num_pred_people,
        }


def _nanmean_like_poseval(values: np.ndarray) -> float:
    keep = values[~np.isnan(values)]
    return float(keep.mean()) if keep.size else float("nan")


def _columns(values: np.ndarray) -> dict[str, float]:
    cols = {name: float(values[list(idx)].mean()) for name, idx in COLUMNS.items()}
    cols["Total"] = _nanmean_like_poseval(values)
    return cols


def format_table(result: MapResult, title: str | None = "Average Precision (AP) metric:",
                 markdown: bool = False, label: str = "") -> str:
    """poseval's two-line table (or markdown) of the 8 columns."""
    return render_table(result.columns, title=title, markdown=markdown, label=label)


# --------------------------------------------------------------------------- geometry


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Strict interior test like shapely/GEOS ``Polygon.contains``: even-odd ray crossing,
    points on an edge or vertex are outside. points (N, 2), polygon (M, 2) -> (N,) bool."""
    result = np.zeros(len(points), bool)
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    candidates = np.flatnonzero(np.all((points > low) & (points < high), axis=1))
    if candidates.size == 0:
        return result
    ring = polygon
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    x1, y1 = ring[:-1, 0][None], ring[:-1, 1][None]          # (1, M)
    x2, y2 = ring[1:, 0][None], ring[1:, 1][None]
    px, py = points[candidates, 0][:, None], points[candidates, 1][:, None]   # (n, 1)
    considered = ~((x1 < px) & (x2 < px))                    # segments not strictly left
    at_vertex = (px == x2) & (py == y2)
    horizontal = (y1 == py) & (y2 == py)
    on_horizontal = horizontal & (px >= np.minimum(x1, x2)) & (px <= np.maximum(x1, x2))
    straddles = ((y1 > py) & (y2 <= py)) | ((y2 > py) & (y1 <= py))
    orient = np.sign((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1))
    orient = np.where(y2 < y1, -orient, orient)
    on_edge = considered & ~horizontal & straddles & (orient == 0)
    on_boundary = (considered & (at_vertex | on_horizontal)) | on_edge
    crossing = considered & ~at_vertex & ~horizontal & straddles & (orient > 0)
    inside = (crossing.sum(axis=1) % 2) == 1
    result[candidates] = inside & ~on_boundary.any(axis=1)
    return result


def _ignored_joints(xy: np.ndarray, regions: list[np.ndarray]) -> np.ndarray:
    """(A, 15) True for joints strictly inside any region."""
    flat = xy.reshape(-1, 2)
    ignored = np.zeros(flat.shape[0], bool)
    for poly in regions:
        ignored |= points_in_polygon(flat, poly)
    return ignored.reshape(xy.shape[:2])


# --------------------------------------------------------------------------- matching


def match_frames(gt_xy: np.ndarray, gt_present: np.ndarray, head_size: np.ndarray,
                 pred_xy: np.ndarray, pred_present: np.ndarray) -> np.ndarray:
    """True-positive label of every predicted joint, poseval's assignGTmulti, per frame.

    gt_xy (F, G, 15, 2), gt_present (F, G, 15), head_size (F, G), pred_xy (F, P, 15, 2),
    pred_present (F, P, 15) -> labels (F, P, 15). Padding people have no joints.
    PCKh between each prediction and each GT; each prediction keeps only its best GT
    (first on ties), then each GT takes its best prediction (first on ties); joints of
    unmatched predictions are false positives.
    """
    num_frames, num_pred, num_gt = pred_xy.shape[0], pred_xy.shape[1], gt_xy.shape[1]
    if num_pred == 0 or num_gt == 0:
        return np.zeros((num_frames, num_pred, NUM_JOINTS), bool)
    delta = pred_xy[:, :, None] - gt_xy[:, None]                         # (F, P, G, 15, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.sqrt(delta[..., 0] ** 2 + delta[..., 1] ** 2) / head_size[:, None, :, None]
    match = pred_present[:, :, None] & gt_present[:, None] & (dist <= DIST_THRESHOLD)
    gt_joints = gt_present.sum(axis=2)[:, None]                          # (F, 1, G)
    pck = match.sum(axis=3) / np.maximum(gt_joints, 1)                   # (F, P, G)
    frames = np.arange(num_frames)[:, None]
    preds = np.arange(num_pred)[None]
    best_gt = np.argmax(pck, axis=2)                                     # (F, P)
    kept = np.zeros_like(pck)
    kept[frames, preds, best_gt] = pck[frames, preds, best_gt]
    gt_to_pred = np.argmax(kept, axis=1)                                 # (F, G)
    gt_matched = kept.max(axis=1) > 0
    pred_to_gt = np.full((num_frames, num_pred), -1)
    f_idx, g_idx = np.nonzero(gt_matched)
    pred_to_gt[f_idx, gt_to_pred[f_idx, g_idx]] = g_idx
    labels = match[frames, preds, np.maximum(pred_to_gt, 0)]             # (F, P, 15)
    labels[pred_to_gt < 0] = False
    return labels


def _rank_in_frame(frame: np.ndarray, num_frames: int) -> np.ndarray:
    """Position of each person within its frame; ``frame`` (A,) must be sorted."""
    counts = np.bincount(frame, minlength=num_frames)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.arange(len(frame)) - starts[frame]


def _pad(frame: np.ndarray, num_frames: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Scatter per-person arrays (A, ...) into (F, max people, ...) by frame, keeping order.
    ``frame`` must be sorted."""
    rank = _rank_in_frame(frame, num_frames)
    width = int(rank.max()) + 1 if rank.size else 0
    padded = []
    for array in arrays:
        out = np.zeros((num_frames, width) + array.shape[1:], array.dtype)
        out[frame, rank] = array
        padded.append(out)
    return padded


# --------------------------------------------------------------------------- AP


def precision_recall(scores: np.ndarray, labels: np.ndarray, num_gt: float):
    """poseval's computeRPC: sort by score (numpy's default argsort, reversed)."""
    order = np.asarray(scores).argsort()[::-1]
    true_pos = np.cumsum(np.asarray(labels)[order] == 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = true_pos / np.float64(num_gt)
    precision = true_pos / np.arange(1, len(order) + 1)
    return precision, recall, order


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone (right-to-left running max) precision envelope."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def _joint_metrics(scores: np.ndarray, labels: np.ndarray, num_gt: float):
    """AP, precision, recall (percent) of one joint; zeros when nothing was predicted."""
    if scores.size == 0:
        return 0.0, 0.0, 0.0
    precision, recall, _ = precision_recall(scores, labels, num_gt)
    with np.errstate(invalid="ignore"):
        ap = voc_ap(recall, precision)
    return ap * 100, precision[-1] * 100, recall[-1] * 100


# --------------------------------------------------------------------------- driver


def _pred_positions(name: str, gt_video: PosevalVideo, pred_video: PosevalVideo, strict: bool,
                    by_position: bool) -> np.ndarray:
    """GT frame position of each predicted person (-1: frame not in the GT)."""
    num_gt, num_pred = len(gt_video.keys), len(pred_video.keys)
    if num_pred != num_gt and strict:
        raise DataError(f"{num_pred} prediction frames but {num_gt} GT frames "
                        "(poseval needs every frame of the video)", f"prediction {name}")
    if by_position:
        mapping = np.array([i if i < num_gt else -1 for i in range(num_pred)], dtype=np.int64)
    else:
        gt_position = {key: i for i, key in enumerate(gt_video.keys)}
        pred_keys = set(pred_video.keys)
        missing = [key for key in gt_video.keys if key not in pred_keys]
        if missing and strict:
            raise DataError(f"prediction lacks GT image id(s) {missing[:5]}", f"prediction {name}")
        if not missing and pred_video.keys != gt_video.keys:
            warnings.warn(f"{name}: prediction frames are in another order than the GT; "
                          "poseval pairs frames by position and would mis-score this file",
                          stacklevel=4)
        mapping = np.array([gt_position.get(key, -1) for key in pred_video.keys], np.int64)
    if not len(pred_video.frame):
        return np.zeros(0, np.int64)
    return mapping[pred_video.frame]


def _warn_unlabelled_with_people(name: str, data: Mapping, video: PosevalVideo) -> None:
    images = data.get("images") or []
    flagged = [im.get("id") for im, n in zip(images, video.num_records)
               if n > 0 and isinstance(im, Mapping) and im.get("is_labeled") is False]
    if flagged:
        warnings.warn(f"GT {name}: {len(flagged)} frame(s) marked is_labeled=false hold people "
                      f"(e.g. image {flagged[0]}); poseval scores them, and so do we",
                      stacklevel=3)


def _track_ids_by_image(data: Mapping, video: PosevalVideo) -> list[tuple]:
    """(image key, track id) of every predicted person of the file."""
    if "annolist" in data:
        return [(video.keys[f], t) for f, t in zip(video.frame.tolist(), video.track_ids)]
    keys = set(video.keys)
    return [(ann.get("image_id"), ann.get("track_id")) for ann in data.get("annotations") or []
            if isinstance(ann, Mapping) and ann.get("image_id") in keys]


def _check_track_ids(name: str, pairs: list[tuple]) -> None:
    by_frame: dict = {}
    for position, track_id in pairs:
        where = f"prediction {name} image {position}"
        if track_id is None:
            raise DataError("prediction person without 'track_id' (poseval requires one)",
                            where)
        if isinstance(track_id, (int, float)) and track_id >= MAX_TRACK_ID:
            raise DataError(f"track id {track_id} >= {MAX_TRACK_ID} (poseval asserts below)",
                            where)
        seen = by_frame.setdefault(position, set())
        if str(track_id) in seen:
            raise DataError(f"track id {track_id} repeated in the frame (poseval needs "
                            "unique ids per frame)", where)
        seen.add(str(track_id))


@dataclass
class PosevalVideoOutcome:
    scores: np.ndarray      # (n, 15) kept predictions, frame then file order
    labels: np.ndarray      # (n, 15)
    present: np.ndarray     # (n, 15)
    gt_joints: np.ndarray   # (15,)
    frames: int
    gt_people: int


def _evaluate_video(name: str, gt_video: PosevalVideo, pred_video: PosevalVideo, pred_frame: np.ndarray,
                    image_ids: set | None) -> PosevalVideoOutcome:
    # poseval keeps the GT frames with at least one person record (is_labeled is not read)
    selected = gt_video.num_records > 0
    if image_ids is not None:
        selected &= np.array([key in image_ids for key in gt_video.keys], bool)
    gt_keep = selected[gt_video.frame] if len(gt_video.frame) else np.zeros(0, bool)
    pred_keep = (pred_frame >= 0)
    pred_keep[pred_keep] = selected[pred_frame[pred_keep]]
    gt_present = gt_video.present.copy()
    pred_present = pred_video.present.copy()
    for position in np.flatnonzero(selected):
        regions = gt_video.regions[position]
        if regions:
            rows = np.flatnonzero(gt_video.frame == position)
            gt_present[rows] &= ~_ignored_joints(gt_video.xy[rows], regions)
            rows = np.flatnonzero(pred_frame == position)
            pred_present[rows] &= ~_ignored_joints(pred_video.xy[rows], regions)
    # people left without joints are dropped (they can neither match nor score)
    gt_rows = np.flatnonzero(gt_keep & gt_present.any(axis=1))
    pred_rows = np.flatnonzero(pred_keep & pred_present.any(axis=1))
    gt_rows = gt_rows[np.argsort(gt_video.frame[gt_rows], kind="stable")]
    pred_rows = pred_rows[np.argsort(pred_frame[pred_rows], kind="stable")]
    # batch the selected frames only: compact frame index 0 .. n_selected - 1
    compact = np.cumsum(selected) - 1
    num_frames = int(selected.sum())
    g_frame = compact[gt_video.frame[gt_rows]]
    g_xy, g_present, g_head = _pad(g_frame, num_frames, gt_video.xy[gt_rows],
                                   gt_present[gt_rows], gt_video.head_size[gt_rows])
    p_frame = compact[pred_frame[pred_rows]]
    p_xy, p_present = _pad(p_frame, num_frames, pred_video.xy[pred_rows],
                           pred_present[pred_rows])
    labels = match_frames(g_xy, g_present, g_head, p_xy, p_present)   # (F, P, 15)
    rank = _rank_in_frame(p_frame, num_frames)
    return PosevalVideoOutcome(pred_video.scores[pred_rows], labels[p_frame, rank],
                         pred_present[pred_rows], gt_present[gt_rows].sum(axis=0),
                         int(selected.sum()), len(gt_rows))


def evaluate_posetrack(gt: Mapping[str, Mapping], pred: Mapping[str, Mapping],
                       image_ids: set | None = None, strict: bool = True,
                       sources: Mapping[str, str] | None = None) -> MapResult:
    """poseval's AP on ``video name -> JSON dict`` maps (videos taken in sorted order).

    ``image_ids`` restricts the evaluation to those GT frames. ``strict`` enforces what
    poseval enforces on prediction files (every frame present, a ``track_id`` below 10000
    unique per frame, no annotation of an unknown image id); without it such files are
    scored as far as possible. NaN / inf keypoints or scores are always an error.
    ``sources``: video name -> prediction file, to name the file in errors.
    """
    missing = sorted(set(gt) - set(pred))
    if missing:
        raise DataError(f"no prediction for GT video(s): {', '.join(missing[:10])}"
                        + (" ..." if len(missing) > 10 else ""))
    extra = sorted(set(pred) - set(gt))
    if extra:
        warnings.warn(f"{len(extra)} predicted video(s) without GT ignored: "
                      f"{', '.join(extra[:5])}", stacklevel=2)
    outcomes = []
    num_pred_people = 0
    for name in sorted(gt):
        gt_video = parse_video(gt[name], f"GT {name}", is_gt=True)
        _warn_unlabelled_with_people(name, gt[name], gt_video)
        labelled = {k for k, n in zip(gt_video.keys, gt_video.num_records) if n > 0}
        where = f"prediction {sources[name]}" if sources and name in sources else f"prediction {name}"
        pred_video = parse_video(pred[name], where, is_gt=False, only_ids=labelled,
                                 strict=strict)
        if strict:
            _check_track_ids(name, _track_ids_by_image(pred[name], pred_video))
        by_position = "annolist" in gt[name] or "annolist" in pred[name]
        pred_frame = _pred_positions(name, gt_video, pred_video, strict, by_position)
        outcome = _evaluate_video(name, gt_video, pred_video, pred_frame, image_ids)
        outcomes.append(outcome)
        num_pred_people += len(outcome.scores)
    return _summarise(outcomes, num_pred_people)


def _summarise(outcomes: list[PosevalVideoOutcome], num_pred_people: int) -> MapResult:
    scores = np.concatenate([o.scores for o in outcomes] + [np.zeros((0, NUM_JOINTS))])
    labels = np.concatenate([o.labels for o in outcomes] + [np.zeros((0, NUM_JOINTS), bool)])
    present = np.concatenate([o.present for o in outcomes] + [np.zeros((0, NUM_JOINTS), bool)])
    num_gt_joints = np.sum([o.gt_joints for o in outcomes] + [np.zeros(NUM_JOINTS, np.int64)],
                           axis=0)
    ap, precision, recall = (np.zeros(NUM_JOINTS) for _ in range(3))
    for joint in range(NUM_JOINTS):
        keep = present[:, joint]
        ap[joint], precision[joint], recall[joint] = _joint_metrics(
            scores[keep, joint], labels[keep, joint].astype(np.int8), float(num_gt_joints[joint]))
    return MapResult(ap=ap, precision=precision, recall=recall, num_gt_joints=num_gt_joints,
                     num_pred_joints=present.sum(axis=0),
                     num_frames=sum(o.frames for o in outcomes),
                     num_videos=sum(o.frames > 0 for o in outcomes),
                     num_gt_people=sum(o.gt_people for o in outcomes),
                     num_pred_people=num_pred_people)


def image_ids_with(gt: Mapping[str, Mapping], key: str, value=None) -> set:
    """GT image ids whose record has a truthy ``key`` (or ``value`` equal to / in it)."""
    ids = set()
    for data in gt.values():
        for image in data.get("images") or []:
            field_value = image.get(key)
            if value is None:
                hit = bool(field_value)
            elif isinstance(field_value, list):
                hit = value in field_value or value in map(str, field_value)
            else:
                hit = field_value == value or str(field_value) == str(value)
            if hit:
                ids.add(image.get("id"))
    return ids
