"""Trackers that link people over time into track ids.

* :class:`IouTracker`: greedy box IoU between consecutive frames (boxes only; runs as frames
  are read, before the pose model).
* :class:`PoseTracker`: runs after the pose model, so poses inform identities. Per frame an
  optimal assignment (``scipy.optimize.linear_sum_assignment``) on the cost

      cost = (w_iou (1 - IoU(predicted box, box)) + w_oks (1 - OKS(predicted pose, pose)))
             / (w_iou + w_oks)

  where a track's box and last pose are moved by a constant-velocity model of the box
  centre (a running average of its motion, from rest; the size is kept) and the IoU is the
  better of the predicted and the last box's (a wrong velocity never hurts); OKS uses the
  joints confident in both poses (without any, the cost is the IoU term alone). A pair may
  match when its cost or its IoU term alone is at most ``max_cost`` (poses rank pairs but
  never veto one the boxes accept). Two stages as in ByteTrack: people whose box score is at least
  ``high_score`` are matched first to every live track; people with a lower score (at least
  ``low_score``) then only continue the tracks still unmatched, and never start a track
  (they get an id of their own). Unmatched tracks survive ``max_age`` frames.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy.optimize import linear_sum_assignment

from glsmamba.errors import ConfigError

TRACKERS = ("pose", "iou")      # build_tracker's methods (config track.method, infer --tracker)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xywh boxes a (N, 4) and b (M, 4)."""
    a_x2, a_y2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    b_x2, b_y2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(a_x2[:, None], b_x2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a_y2[:, None], b_y2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


class IouTracker:
    """Greedy IoU association of boxes between consecutive frames -> track ids."""

    def __init__(self, iou_thr: float = 0.3, max_age: int = 5):
        self.iou_thr, self.max_age = iou_thr, max_age
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}    # id -> (box, frames unseen)
        self.next_id = 0
        self.seconds = 0.0            # time spent in update (for the wall-time share)

    def update(self, boxes: np.ndarray) -> list[int]:
        """boxes (N, 4) xywh -> N track ids."""
        started = time.perf_counter()
        ids = self._associate(boxes)
        self.seconds += time.perf_counter() - started
        return ids

    def _associate(self, boxes: np.ndarray) -> list[int]:
        ids = [-1] * len(boxes)
        track_ids = list(self.tracks)
        if track_ids and len(boxes):
            ious = box_iou(boxes, np.stack([self.tracks[t][0] for t in track_ids]))
            for flat in np.argsort(-ious, axis=None):
                row, col = divmod(int(flat), len(track_ids))
                if ious[row, col] < self.iou_thr:
                    break
                if ids[row] == -1 and track_ids[col] not in ids:
                    ids[row] = track_ids[col]
        for row, box in enumerate(boxes):
            if ids[row] == -1:
                ids[row], self.next_id = self.next_id, self.next_id + 1
            self.tracks[ids[row]] = (np.asarray(box, np.float32), 0)
        for track_id in track_ids:
            if track_id not in ids:
                box, age = self.tracks[track_id]
                if age + 1 > self.max_age:
                    del self.tracks[track_id]
                else:
                    self.tracks[track_id] = (box, age + 1)
        return ids


# --------------------------------------------------------------------------- pose tracker


@dataclass
class PoseTrackerOptions:
    """Parameters of :class:`PoseTracker` (config section ``[track]``, same names)."""

    iou_weight: float = 0.5       # weight of 1 - IoU(predicted box, box) in the cost
    oks_weight: float = 0.5       # weight of 1 - OKS(predicted pose, pose)
    max_cost: float = 0.8         # pairs whose cost and IoU term both exceed it never match
    high_score: float = 0.5       # box score of the first stage; only these start tracks
    low_score: float = 0.1        # lower scores: second stage only; below: never matched
    max_age: int = 8              # frames an unmatched track survives before removal
    momentum: float = 0.8         # weight of the old velocity when it is re-estimated
    keypoint_thr: float = 0.3     # joints below this score are left out of OKS

    def __post_init__(self):
        for name in ("iou_weight", "oks_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"track.{name} must be >= 0, got {getattr(self, name)}")
        if self.iou_weight + self.oks_weight <= 0:
            raise ConfigError("track.iou_weight + track.oks_weight must be > 0")
        if not 0 <= self.low_score <= self.high_score:
            raise ConfigError(f"need 0 <= track.low_score <= track.high_score, got "
                              f"{self.low_score} and {self.high_score}")
        if self.max_age < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("track.max_age must be >= 0 and 0 <= track.momentum < 1")

    @classmethod
    def from_mapping(cls, values: Mapping) -> PoseTrackerOptions:
        """Options from a config section (other keys, e.g. ``method``, are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class _Track:
    track_id: int
    box: np.ndarray         # (4,) x, y, w, h last matched
    keypoints: np.ndarray   # (K, 3) last matched pose
    velocity: np.ndarray    # (2,) centre motion per frame (x, y)
    age: int = 0            # frames since the last match

    def predicted(self) -> tuple[np.ndarray, np.ndarray]:
        """Box (4,) and pose (K, 3) predicted for the next frame: moved by the centre's
        constant velocity (the size is kept: it changes with the pose, not the motion)."""
        shift = self.velocity * (self.age + 1)
        pose = self.keypoints.copy()
        pose[:, :2] += shift
        return np.concatenate([self.box[:2] + shift, self.box[2:]]), pose


def pose_oks(poses_a: np.ndarray, poses_b: np.ndarray, areas: np.ndarray,
             sigmas: np.ndarray, keypoint_thr: float) -> np.ndarray:
    """OKS of every pair over the joints confident in both, NaN where none is.

    poses_a (A, K, 3), poses_b (B, K, 3), areas (A,) object scale of poses_a -> (A, B)."""
    d2 = ((poses_a[:, None, :, :2] - poses_b[None, :, :, :2]) ** 2).sum(-1)     # (A, B, K)
    scale = np.maximum(areas, 1.0)[:, None, None] * (2 * sigmas[None, None]) ** 2
    similarity = np.exp(-d2 / (2 * scale))
    both = (poses_a[:, None, :, 2] >= keypoint_thr) & (poses_b[None, :, :, 2] >= keypoint_thr)
    counts = both.sum(-1)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, (similarity * both).sum(-1) / np.maximum(counts, 1), np.nan)


class PoseTracker:
    """Track ids from boxes, poses and box scores, frame after frame (see module doc)."""

    def __init__(self, options: PoseTrackerOptions | None = None,
                 sigmas: Sequence[float] | None = None):
        self.options = options or PoseTrackerOptions()
        self.sigmas = None if sigmas is None else np.asarray(sigmas, np.float64)
        self.tracks: list[_Track] = []
        self.next_id = 0
        self.seconds = 0.0            # time spent in update (for the wall-time share)

    def update(self, boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> list[int]:
        """boxes (N, 4) xywh, keypoints (N, K, 3), box scores (N,) -> N track ids."""
        started = time.perf_counter()
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        keypoints = np.asarray(keypoints, np.float64)
        keypoints = keypoints.reshape(len(boxes), -1, 3) if len(boxes) else np.zeros((0, 1, 3))
        scores = np.asarray(scores, np.float64).reshape(-1)
        opts = self.options
        ids = [-1] * len(boxes)
        high = np.flatnonzero(scores >= opts.high_score)
        low = np.flatnonzero((scores >= opts.low_score) & (scores < opts.high_score))
        free = list(range(len(self.tracks)))
        for people in (high, low):
            free = self._match(people, free, boxes, keypoints, ids)
        for row in range(len(boxes)):
            if ids[row] == -1:
                ids[row] = self._new_id()
                if scores[row] >= opts.high_score:
                    self.tracks.append(_Track(ids[row], boxes[row].copy(), keypoints[row].copy(),
                                              np.zeros(2)))
        for index in free:
            self.tracks[index].age += 1
        self.tracks = [t for t in self.tracks if t.age <= opts.max_age]
        self.seconds += time.perf_counter() - started
        return ids

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def cost(self, tracks: list[_Track], boxes: np.ndarray,
             keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, N) association cost in [0, 1] of ``tracks`` with people (boxes, keypoints),
        and (T, N) its IoU term alone."""
        predicted = [t.predicted() for t in tracks]
        pred_boxes = np.stack([p[0] for p in predicted])
        last_boxes = np.stack([t.box for t in tracks])
        # the better of the predicted and the last box: a wrong velocity never hurts
        iou_cost = 1.0 - np.maximum(box_iou(pred_boxes, boxes), box_iou(last_boxes, boxes))
        if self.options.oks_weight == 0:
            return iou_cost, iou_cost
        sigmas = self.sigmas if self.sigmas is not None else np.full(keypoints.shape[1], 0.08)
        if len(sigmas) != keypoints.shape[1]:
            raise ConfigError(f"{len(sigmas)} OKS sigmas for poses of {keypoints.shape[1]} joints")
        oks = pose_oks(np.stack([p[1] for p in predicted]), keypoints,
                       pred_boxes[:, 2] * pred_boxes[:, 3], sigmas, self.options.keypoint_thr)
        w_iou, w_oks = self.options.iou_weight, self.options.oks_weight
        mixed = (w_iou * iou_cost + w_oks * (1.0 - oks)) / (w_iou + w_oks)
        return np.where(np.isnan(oks), iou_cost, mixed), iou_cost

    def _match(self, people: np.ndarray, free: list[int], boxes: np.ndarray,
               keypoints: np.ndarray, ids: list[int]) -> list[int]:
        """Assign ``people`` (rows) to the ``free`` tracks; returns the tracks left free."""
        if not len(people) or not free:
            return free
        tracks = [self.tracks[i] for i in free]
        cost, iou_cost = self.cost(tracks, boxes[people], keypoints[people])
        # poses rank the pairs but never veto one the boxes alone would accept
        allowed = np.minimum(cost, iou_cost) <= self.options.max_cost
        rows, cols = linear_sum_assignment(np.where(allowed, cost, 1e6))
        taken = set()
        for r, c in zip(rows, cols):
            if not allowed[r, c]:
                continue
            track, person = tracks[r], int(people[c])
            self._advance(track, boxes[person], keypoints[person])
            ids[person] = track.track_id
            taken.add(free[r])
        return [i for i in free if i not in taken]

    def _advance(self, track: _Track, box: np.ndarray, keypoints: np.ndarray) -> None:
        """Update a matched track's velocity (an average of the centre's motion per frame,
        starting from rest), box and pose."""
        measured = ((box[:2] + box[2:] / 2) - (track.box[:2] + track.box[2:] / 2)) \
            / (track.age + 1)
        m = self.options.momentum
        track.velocity = m * track.velocity + (1 - m) * measured
        track.box, track.keypoints, track.age = box.copy(), keypoints.copy(), 0


def build_tracker(method: str, options: Mapping | None = None,
                  sigmas: Sequence[float] | None = None):
    """``"pose"`` -> :class:`PoseTracker`, ``"iou"`` -> :class:`IouTracker`."""
    if method == "pose":
        return PoseTracker(PoseTrackerOptions.from_mapping(options or {}), sigmas)
    if method == "iou":
        return IouTracker()
    raise ConfigError(f"unknown tracker {method!r} (pose or iou)")

