"""PoseTrack multi-person pose tracking metrics with poseval's exact rules.

``evaluate.py --evalPoseTracking`` of poseval (evaluateTracking.py + eval_helpers.py) run on
py-motmetrics 1.4 (the version pip installs). Knows nothing of datasets: it scores the same
``video name -> JSON dict`` maps as :func:`glsmamba.evaluation.evaluate_posetrack`. Every
rule and quirk is listed in docs/EVALUATION.md; in short:

1. GT frames with at least one person record are the labelled frames; per video the LAST
   labelled frame is dropped (poseval's ``imgidxs[:-1]``);
2. in labelled frames with ignore regions, joints strictly inside a polygon are dropped on
   both sides and people left without joints are removed;
3. a labelled frame without GT people or without predicted people adds, for every joint,
   one miss and one false positive (poseval's placeholder ids), whatever the counts;
4. otherwise, per joint: GT people holding the joint are the objects (their track ids),
   predicted people holding it the hypotheses, and a pair may match when its distance
   (in head sizes) is at most 0.5; one MOT accumulator per joint and video;
5. the accumulator is py-motmetrics' (keep last frame's pairs, then an optimal assignment,
   switches when an object's hypothesis changes); MOTP's distance sum is the sum of the
   accumulator's event distances, which includes every pair within the threshold;
6. per joint over all videos: MOTA = 100 (1 - (misses + switches + FP) / objects),
   MOTP = 100 (1 - distance sum / detections), precision, recall; the total is the mean
   over the joints whose value is not NaN.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from glsmamba.errors import DataError
from glsmamba.evaluation.posetrack_map import COLUMNS, DIST_THRESHOLD, points_in_polygon
from glsmamba.evaluation.poseval_format import MAX_TRACK_ID, NUM_JOINTS, POSEVAL_JOINTS
from glsmamba.evaluation.poseval_io import parse_video
from glsmamba.evaluation.table import POSEVAL_HEADERS, format_cell, render_table

COUNT_NAMES = ("num_objects", "num_matches", "num_switches", "num_misses",
               "num_false_positives")
_PLACEHOLDER = 0          # poseval's id for the missing side of a frame


# --------------------------------------------------------------------------- accumulator


def optimal_pairs(costs: np.ndarray) -> list[tuple[int, int]]:
    """py-motmetrics' assignment with scipy: NaN / inf = cannot pair.

    costs (N, M) -> [(row, col)] of the minimum-cost assignment among those with the most
    allowed pairs. Forbidden entries become one large constant, as motmetrics does, so
    that scipy sees the same matrix (and breaks ties the same way)."""
    valid = np.isfinite(costs)
    if not valid.any():
        return []
    filled = costs
    if not valid.all():
        largest = np.abs(costs[valid]).max() + 1
        filled = np.where(valid, costs, 2 * min(costs.shape) * largest + 1)
    rows, cols = linear_sum_assignment(filled)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if valid[i, j]]


class MotAccumulator:
    """Per-frame MOT events of one joint in one video, py-motmetrics 1.4's rules.

    Counts objects, matches, switches, misses, false positives and the sum of the event
    distances (RAW pairs within the threshold + matches + ASCEND/TRANSFER/MIGRATE events)."""

    def __init__(self) -> None:
        self.last_hyp: dict = {}          # object -> hypothesis of its last match
        self.last_obj: dict = {}          # hypothesis -> object of its last assignment
        self.matched_objects: set = set()
        self.seen_hyps: set = set()
        self.counts = dict.fromkeys(COUNT_NAMES, 0)
        self.distance = 0.0

    def update(self, oids: list, hids: list, dist: np.ndarray) -> None:
        """oids (N,), hids (M,), dist (N, M) with NaN where a pair may not match."""
        finite = np.isfinite(dist)
        self.counts["num_objects"] += len(oids)
        self.distance += float(dist[finite].sum())            # RAW events
        obj_done = np.zeros(len(oids), bool)
        hyp_done = np.zeros(len(hids), bool)
        if len(oids) and len(hids):
            self._keep_pairs(oids, hids, dist, finite, obj_done, hyp_done)
            rest = dist.copy()
            rest[obj_done] = np.nan
            rest[:, hyp_done] = np.nan
            for i, j in optimal_pairs(rest):
                self._assign(oids[i], hids[j], float(rest[i, j]))
                obj_done[i] = hyp_done[j] = True
        self.counts["num_misses"] += int((~obj_done).sum())
        self.counts["num_false_positives"] += int((~hyp_done).sum())

    def _keep_pairs(self, oids, hids, dist, finite, obj_done, hyp_done) -> None:
        """Step 1: an object whose last hypothesis is here and within reach keeps it."""
        columns: dict = {}
        for j, hyp in enumerate(hids):
            columns.setdefault(hyp, []).append(j)
        for i, obj in enumerate(oids):
            if obj not in self.last_hyp:
                continue
            free = [j for j in columns.get(self.last_hyp[obj], ()) if not hyp_done[j]]
            if not free or not finite[i, free[0]]:
                continue
            j = free[0]
            obj_done[i] = hyp_done[j] = True
            self.counts["num_matches"] += 1
            self.distance += float(dist[i, j])
            self.matched_objects.add(obj)
            self.seen_hyps.add(hids[j])

    def _assign(self, obj, hyp, distance: float) -> None:
        """Step 2 pair: MATCH or SWITCH, plus motmetrics' extra events' distances."""
        if obj in self.last_hyp and self.last_hyp[obj] != hyp:
            self.counts["num_switches"] += 1
            if hyp not in self.seen_hyps:                    # ASCEND
                self.distance += distance
        else:
            self.counts["num_matches"] += 1
        if hyp in self.last_obj and self.last_obj[hyp] != obj:   # TRANSFER
            self.distance += distance
            if obj not in self.matched_objects:              # MIGRATE
                self.distance += distance
        self.distance += distance
        self.seen_hyps.add(hyp)
        self.matched_objects.add(obj)
        self.last_hyp[obj] = hyp
        self.last_obj[hyp] = obj


# --------------------------------------------------------------------------- results


@dataclass
class TrackingResult:
    """poseval's MOT metrics (percent): (16,) arrays, the 15 poseval joints then the total."""

    mota: np.ndarray
    motp: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    counts: dict                   # COUNT_NAMES + "num_detections" -> (15,) int arrays
    distance_sum: np.ndarray       # (15,)
    num_frames: int                # labelled frames scored (each video's last one dropped)
    num_videos: int
    joint_names: tuple[str, ...] = POSEVAL_JOINTS

    @property
    def num_switches(self) -> int:
        """Identity switches summed over the joints."""
        return int(self.counts["num_switches"].sum())

    @property
    def columns(self) -> dict[str, float]:
        """poseval's MOT table: MOTA per body part and total, MOTP, precision, recall."""
        cols = {f"MOTA {name}": float(np.mean(self.mota[list(idx)]))
                for name, idx in COLUMNS.items()}
        cols["MOTA Total"] = float(self.mota[NUM_JOINTS])
        cols["MOTP Total"] = float(self.motp[NUM_JOINTS])
        cols["Prec Total"] = float(self.precision[NUM_JOINTS])
        cols["Rec Total"] = float(self.recall[NUM_JOINTS])
        return cols

    def to_poseval_json(self) -> dict:
        """The layout of poseval's ``total_MOT_metrics.json`` (NaN kept: write with
        ``allow_nan=True``, as poseval's ``json.dump`` does)."""
        names = {str(i): name for i, name in enumerate(self.joint_names)}
        names[str(NUM_JOINTS)] = "total"
        return {"mota": [float(v) for v in self.mota], "motp": [float(v) for v in self.motp],
                "pre": [float(v) for v in self.precision],
                "rec": [float(v) for v in self.recall], "names": names}

    def to_dict(self) -> dict:
        """JSON-ready summary without NaN (NaN -> null) with the counts per joint."""
        def clean(values):
            return [None if math.isnan(v) else float(v) for v in values]

        columns = {k: (None if math.isnan(v) else v) for k, v in self.columns.items()}
        return {"columns": columns, "joints": list(self.joint_names) + ["total"],
                "mota": clean(self.mota), "motp": clean(self.motp),
                "pre": clean(self.precision), "rec": clean(self.recall),
                **{k: [int(v) for v in a] for k, a in self.counts.items()},
                "num_frames": self.num_frames, "num_videos": self.num_videos}


def format_tracking_table(result: TrackingResult, markdown: bool = False,
                          title: str | None = "Multiple Object Tracking (MOT) metrics:",
                          label: str = "") -> str:
    """poseval's MOT table (MOTA per body part, total MOTA, MOTP, precision, recall):
    its two header lines and one row, or markdown."""
    if markdown:
        return render_table(result.columns, title=title, markdown=True, label=label)
    kinds = [name.split()[0] for name in result.columns]
    parts = [POSEVAL_HEADERS.get(name.split()[1], name.split()[1]) for name in result.columns]
    top = "&" + "&".join(f" {k:<4} " for k in kinds[:-1]) + f"& {kinds[-1]:<4} \\\\"
    bottom = "&" + "&".join(f" {p:<4} " if p != "Total" else f" {p}" for p in parts[:-1])
    bottom += f"& {parts[-1]}\\\\"
    row = "&" + "".join(format_cell(v) + " &" for v in list(result.columns.values())[:-1])
    row += format_cell(list(result.columns.values())[-1]) + " \\\\"
    body = "\n".join([top, bottom, row])
    return f"{title}\n{body}" if title else body


def _final_metrics(counts: dict, distance: np.ndarray) -> tuple[np.ndarray, ...]:
    """poseval's computeMetrics on the summed counts -> mota, motp, pre, rec (16,) each."""
    objects = counts["num_objects"].astype(np.float64)
    objects[objects == 0] = np.nan
    detections = counts["num_detections"].astype(np.float64)
    false_pos = counts["num_false_positives"].astype(np.float64)
    errors = counts["num_misses"] + counts["num_switches"] + false_pos
    mota = 100 * (1.0 - errors / objects)
    with np.errstate(divide="ignore", invalid="ignore"):
        motp = np.where(detections == 0, 0.0, 100 * (1.0 - distance / detections))
    claimed = false_pos + detections
    claimed[claimed == 0] = np.nan
    pre = 100 * detections / claimed
    rec = 100 * detections / objects
    return tuple(np.append(v, _mean_defined(v)) for v in (mota, motp, pre, rec))


def _mean_defined(values: np.ndarray) -> float:
    keep = values[~np.isnan(values)]
    return float(keep.mean()) if keep.size else float("nan")


# --------------------------------------------------------------------------- per video


def _canonical_id(value, where: str, strict: bool):
    """Track ids compare as numbers (5 == 5.0, as in motmetrics); others only when lenient."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise DataError(f"track id {value} is not finite", where)
        if strict and number >= MAX_TRACK_ID:
            raise DataError(f"track id {value} >= {MAX_TRACK_ID} (poseval asserts below)",
                            where)
        return number
    if strict or not isinstance(value, (str, bool)):
        raise DataError(f"track id {value!r} is not a number (poseval adds an offset to it)",
                        where)
    return value


def _region_flags(data: Mapping) -> list[bool]:
    """Per frame: does poseval see an ``ignore_regions`` entry (at least one x/y pair)."""
    if "annolist" in data:
        return [bool(entry.get("ignore_regions")) for entry in data["annolist"]]
    flags = []
    for image in data.get("images") or []:
        xs, ys = image.get("ignore_regions_x"), image.get("ignore_regions_y")
        flags.append(isinstance(xs, list) and isinstance(ys, list) and min(len(xs), len(ys)) > 0)
    return flags


def _annolist_kept(data: Mapping) -> np.ndarray:
    """(A,) poseval keeps an annolist rect only if it has ``annopoints[0]["point"]``."""
    kept = []
    for entry in data["annolist"]:
        for rect in entry.get("annorect") or []:
            points = rect.get("annopoints") if isinstance(rect, Mapping) else None
            kept.append(bool(points) and isinstance(points[0], Mapping) and bool(points[0])
                        and "point" in points[0])
    return np.array(kept, bool)


@dataclass
class _People:
    """The people of one frame as poseval scores them."""

    xy: np.ndarray          # (N, 15, 2)
    present: np.ndarray     # (N, 15)
    head_size: np.ndarray   # (N,)
    ids: list               # (N,) track ids (None where missing)


def _frame_people(video, rows: np.ndarray, regions: list, flagged: bool,
                  kept: np.ndarray | None) -> _People:
    if kept is not None:
        rows = rows[kept[rows]]
    present = video.present[rows].copy()
    if flagged:
        for polygon in regions:
            flat = points_in_polygon(video.xy[rows].reshape(-1, 2), polygon)
            present &= ~flat.reshape(present.shape)
        alive = present.any(axis=1)
        rows, present = rows[alive], present[alive]
    return _People(video.xy[rows], present, video.head_size[rows],
                   [video.track_ids[r] for r in rows])


def _resolve_ids(people: _People, annolist: bool, where: str, strict: bool,
                 is_gt: bool) -> list:
    """Track id of each person. annolist: poseval lists the ids that are given and takes
    the k-th for the k-th person (a missing id shifts the later ones; it fails where a
    person with joints is left without one). PoseTrack18: poseval's converter needs an id
    on every person; when lenient a predicted person without one is its own track."""
    ids = list(people.ids)
    if annolist:
        given = [i for i in ids if i is not None]
        ids = [given[k] if k < len(given) else None for k in range(len(ids))]
    out = []
    for k, value in enumerate(ids):
        if value is None:
            if (annolist and people.present[k].any()) or \
                    (not annolist and (strict or is_gt)):
                side = "GT" if is_gt else "prediction"
                raise DataError(f"{side} person without 'track_id' (poseval needs one for "
                                "tracking)", where)
            out.append(("no track id", where, k))
        else:
            out.append(_canonical_id(value, where, strict))
    return out


def _frame_distances(gt: _People, pred: _People) -> np.ndarray:
    """(G, P, 15): distance in GT head sizes where both joints exist and it is <= 0.5,
    else NaN (poseval: norm(gt - pred) / head size)."""
    delta = gt.xy[:, None] - pred.xy[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.sqrt(delta[..., 0] ** 2 + delta[..., 1] ** 2) / gt.head_size[:, None, None]
    ok = gt.present[:, None] & pred.present[None] & (dist <= DIST_THRESHOLD)
    return np.where(ok, dist, np.nan)


def _update_frame(accumulators: list[MotAccumulator], gt: _People, pred: _People,
                  resolve) -> None:
    """Feed one labelled frame to the 15 joint accumulators; ``resolve(people, is_gt)``
    gives the track ids (only read when both sides have people, as in poseval)."""
    if not len(gt.ids) or not len(pred.ids):
        placeholder = np.full((1, 1), np.nan)
        for acc in accumulators:
            acc.update([_PLACEHOLDER], [_PLACEHOLDER], placeholder)
        return
    gt_ids, pred_ids = resolve(gt, True), resolve(pred, False)
    dist = _frame_distances(gt, pred)
    for joint, acc in enumerate(accumulators):
        g = np.flatnonzero(gt.present[:, joint])
        p = np.flatnonzero(pred.present[:, joint])
        acc.update([gt_ids[i] for i in g], [pred_ids[i] for i in p],
                   dist[np.ix_(g, p, [joint])][..., 0])


def _group_rows(frame: np.ndarray, num_frames: int) -> list[np.ndarray]:
    order = np.argsort(frame, kind="stable")
    bounds = np.searchsorted(frame[order], np.arange(num_frames + 1))
    return [order[bounds[f]:bounds[f + 1]] for f in range(num_frames)]


def _pred_frame_of(name: str, gt_video, pred_video, annolist: bool, strict: bool) -> np.ndarray:
    """(A_pred,) GT frame position of each predicted person (-1: not a GT frame)."""
    num_gt, num_pred = len(gt_video.keys), len(pred_video.keys)
    if strict and num_gt != num_pred:
        raise DataError(f"{num_pred} prediction frames but {num_gt} GT frames (poseval needs "
                        "every frame of the video)", f"prediction {name}")
    if annolist:
        mapping = np.array([i if i < num_gt else -1 for i in range(num_pred)], np.int64)
    else:
        position = {key: i for i, key in enumerate(gt_video.keys)}
        pred_keys = set(pred_video.keys)
        missing = [k for k in gt_video.keys if k not in pred_keys]
        if missing and strict:
            raise DataError(f"prediction lacks GT image id(s) {missing[:5]}",
                            f"prediction {name}")
        mapping = np.array([position.get(k, -1) for k in pred_video.keys], np.int64)
    return mapping[pred_video.frame] if len(pred_video.frame) else np.zeros(0, np.int64)


def _check_pred_ids(name: str, data: Mapping, where: str) -> None:
    """poseval rejects a prediction file with a track id repeated within a frame, and (its
    PoseTrack18 converter) one with a person without ``track_id``."""
    seen: dict = {}
    if "annolist" in data:
        pairs = [(f, rect.get("track_id")) for f, e in enumerate(data["annolist"])
                 for rect in e.get("annorect") or [] if isinstance(rect, Mapping)]
        pairs = [(f, t[0] if isinstance(t, list) and t else t) for f, t in pairs]
    else:
        pairs = [(a.get("image_id"), a.get("track_id")) for a in data.get("annotations") or []
                 if isinstance(a, Mapping)]
        for index, (frame, track) in enumerate(pairs):
            if track is None:
                raise DataError("prediction person without 'track_id' (poseval needs one)",
                                where, f"annotations[{index}]")
    for frame, track in pairs:
        if track is None:
            continue
        key = (frame, float(track) if isinstance(track, (int, float)) else repr(track))
        if key in seen:
            raise DataError(f"track id {track} repeated in image {frame} (poseval needs "
                            "unique ids per frame)", where)
        seen[key] = True


def _video_accumulators(name: str, gt_data: Mapping, pred_data: Mapping, strict: bool,
                        where: str) -> tuple[list[MotAccumulator], int]:
    """The 15 joint accumulators of one video and the number of frames fed to them."""
    gt_video = parse_video(gt_data, f"GT {name}", is_gt=True)
    labelled = np.flatnonzero(gt_video.num_records > 0)
    keys = {gt_video.keys[f] for f in labelled}
    pred_video = parse_video(pred_data, where, is_gt=False, only_ids=keys, strict=strict)
    if strict:
        _check_pred_ids(name, pred_data, where)
    annolist = "annolist" in gt_data or "annolist" in pred_data
    pred_frame = _pred_frame_of(name, gt_video, pred_video, annolist, strict)
    num_frames = len(gt_video.keys)
    gt_rows = _group_rows(gt_video.frame, num_frames)
    pred_rows = _group_rows(np.where(pred_frame >= 0, pred_frame, num_frames), num_frames)
    flags = _region_flags(gt_data)
    gt_kept = _annolist_kept(gt_data) if "annolist" in gt_data else None
    pred_kept = _annolist_kept(pred_data) if "annolist" in pred_data else None
    accumulators = [MotAccumulator() for _ in range(NUM_JOINTS)]
    if len(labelled) == 1:
        warnings.warn(f"GT {name}: one labelled frame only; poseval drops each video's last "
                      "labelled frame (and fails on such a video), so it adds nothing",
                      stacklevel=3)
    for f in labelled[:-1]:
        flagged = f < len(flags) and flags[f]
        gt = _frame_people(gt_video, gt_rows[f], gt_video.regions[f], flagged, gt_kept)
        pred = _frame_people(pred_video, pred_rows[f], gt_video.regions[f], flagged, pred_kept)
        key = gt_video.keys[f]

        def resolve(people, is_gt, key=key):
            data, side = (gt_data, f"GT {name}") if is_gt else (pred_data, where)
            return _resolve_ids(people, "annolist" in data, f"{side} image {key}", strict,
                                is_gt)

        _update_frame(accumulators, gt, pred, resolve)
    return accumulators, max(len(labelled) - 1, 0)


# --------------------------------------------------------------------------- driver


def evaluate_tracking(gt: Mapping[str, Mapping], pred: Mapping[str, Mapping],
                      strict: bool = True,
                      sources: Mapping[str, str] | None = None) -> TrackingResult:
    """poseval's ``--evalPoseTracking`` on ``video name -> JSON dict`` maps.

    ``strict`` enforces what poseval enforces (every frame present, numeric track ids below
    10000, unique per predicted frame, every person with a track id); without it missing
    frames hold no people and a predicted person without a track id is its own track.
    ``sources``: video name -> prediction file, to name the file in errors.
    """
    missing = sorted(set(gt) - set(pred))
    if missing:
        raise DataError(f"no prediction for GT video(s): {', '.join(missing[:10])}"
                        + (" ..." if len(missing) > 10 else ""))
    totals = {k: np.zeros(NUM_JOINTS, np.int64) for k in COUNT_NAMES}
    distance = np.zeros(NUM_JOINTS)
    num_frames = num_videos = 0
    for name in sorted(gt):
        where = f"prediction {sources[name]}" if sources and name in sources \
            else f"prediction {name}"
        accumulators, frames = _video_accumulators(name, gt[name], pred[name], strict, where)
        num_frames += frames
        num_videos += frames > 0
        for joint, acc in enumerate(accumulators):
            for key in COUNT_NAMES:
                totals[key][joint] += acc.counts[key]
            distance[joint] += acc.distance
    totals["num_detections"] = totals["num_matches"] + totals["num_switches"]
    mota, motp, pre, rec = _final_metrics(totals, distance)
    return TrackingResult(mota=mota, motp=motp, precision=pre, recall=rec, counts=totals,
                          distance_sum=distance, num_frames=num_frames, num_videos=num_videos)
