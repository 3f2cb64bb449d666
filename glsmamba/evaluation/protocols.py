"""Named PoseTrack evaluation protocols: which person boxes, which scores, which NMS.

The metric (``posetrack_map``) is the same for all of them (poseval's AP); what differs
between the numbers papers report is what is *written* into the prediction files. A
protocol turns raw top-down predictions (one per person box, joint scores = heatmap
peaks) into the people that are written:

* ``gt``: ground-truth person boxes (box score 1). An upper bound: no detector misses,
  no false boxes. Joint scores = heatmap peaks; person score = box score x mean of the
  joint scores above 0.2 (0 if none).
Both detected-box protocols crop the detections as they come (not clipped to the image).

* ``dcpose``: DCPose / FAMI-Pose / TDMI / DiffPose. Detected boxes with score >= 0.2
  (``IMAGE_THRE: 0.2``, dropped when ``score < 0.2``); every joint score = heatmap peak x
  box score; person score = box score; no NMS. The DCPose configs test without flip
  (``FLIP_TEST: false``).
* ``mmpose``: mmpose's PoseTrack18 recipe. Detected boxes with score >= 0.4
  (``det_bbox_thr=0.4``); joint scores = heatmap peaks (kept); person score = box score x
  mean of the joint scores > 0.2 (0 if none); then OKS-NMS per frame at 0.9 (a person whose
  OKS with an already kept, higher-scoring person exceeds 0.9 is dropped), with the
  dataset's sigmas and the crop area (padded box w x h) as the object area. mmpose tests
  with flip (``flip_test=True``).

Sources and the exact code paths are in docs/EVALUATION.md. This module knows nothing of
datasets or models: it works on prediction dicts (``image_id``, ``keypoints`` (K, 3) with
the raw heatmap peak in column 2, ``bbox_score``, ``area``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from glsmamba.errors import ConfigError

JOINT_SCORE_THR = 0.2


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (see the module docstring)."""

    name: str
    boxes: str                   # "gt" | "detections"
    box_score_thr: float         # detections with score < thr give no person
    joint_score: str             # "peak" | "peak_x_box"
    person_score: str            # "box" | "box_x_confident_mean"
    joint_score_thr: float       # joints above count in "box_x_confident_mean"
    oks_nms_thr: float | None    # None = no NMS; else drop OKS > thr
    peers_flip_test: bool | None  # what the protocol's authors test with (None: n/a)
    summary: str
    clip_boxes: bool = True      # clip detected boxes to the image before cropping

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, flip_test: bool | None = None) -> str:
        """One line for logs and tables: name, rules and the flip setting used."""
        text = f"protocol {self.name}: {self.summary}"
        if flip_test is not None:
            text += f"; flip test {'on' if flip_test else 'off'}"
            if self.peers_flip_test is not None and bool(flip_test) != self.peers_flip_test:
                text += f" (the {self.name} papers test with it {'on' if self.peers_flip_test else 'off'})"
        return text


PROTOCOLS: dict[str, Protocol] = {
    "gt": Protocol(
        "gt", "gt", 0.0, "peak", "box_x_confident_mean", JOINT_SCORE_THR, None, None,
        "ground-truth person boxes (upper bound, not comparable with detected-box numbers); "
        "joint score = heatmap peak"),
    "dcpose": Protocol(
        "dcpose", "detections", 0.2, "peak_x_box", "box", JOINT_SCORE_THR, None, False,
        "detected boxes with score >= 0.2; joint score = heatmap peak x box score; "
        "person score = box score; no NMS (DCPose / FAMI-Pose / TDMI / DiffPose)",
        clip_boxes=False),
    "mmpose": Protocol(
        "mmpose", "detections", 0.4, "peak", "box_x_confident_mean", JOINT_SCORE_THR, 0.9, True,
        "detected boxes with score >= 0.4; joint score = heatmap peak; person score = box "
        "score x mean of joint scores > 0.2; OKS-NMS at 0.9 (mmpose PoseTrack18)",
        clip_boxes=False),
}


def register_protocol(protocol: Protocol) -> Protocol:
    """Make ``protocol`` selectable by its name (eval.protocol, ``glsmamba eval --protocol``)."""
    PROTOCOLS[protocol.name] = protocol
    return protocol


def list_protocols() -> list[str]:
    return list(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown evaluation protocol {name!r} "
                          f"(one of: {', '.join(PROTOCOLS)})") from None


# ---------------------------------------------------------------------------- scores
def rescore(box_scores: np.ndarray, joint_scores: np.ndarray, thr: float = JOINT_SCORE_THR) -> np.ndarray:
    """mmpose's rescoring: box score x mean of the joint scores strictly above ``thr``
    (0 when no joint is above it). box_scores (N,), joint_scores (N, K) -> (N,)."""
    joint_scores = np.asarray(joint_scores, dtype=np.float64)
    confident = joint_scores > thr
    counts = confident.sum(axis=1)
    mean = np.where(counts > 0, (joint_scores * confident).sum(axis=1) / np.maximum(counts, 1), 0.0)
    return np.asarray(box_scores, dtype=np.float64) * mean


# ---------------------------------------------------------------------------- OKS-NMS
def oks_iou(keypoints: np.ndarray, others: np.ndarray, area: float, other_areas: np.ndarray,
            sigmas: Sequence[float]) -> np.ndarray:
    """OKS of one pose (K, 2+) with N others (N, K, 2+), as mmpose's ``oks_iou`` without a
    visibility threshold: ``e = d^2 / (2 sigma)^2 / ((a + a_i) / 2 + eps) / 2``, OKS = mean
    of ``exp(-e)`` over all K joints (the object scale is the mean of the two areas)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    others = np.asarray(others, dtype=np.float64).reshape(-1, *keypoints.shape)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2             # (K,)
    if len(variances) != keypoints.shape[0]:
        raise ValueError(f"{len(variances)} sigmas for {keypoints.shape[0]} joints")
    d2 = ((others[:, :, :2] - keypoints[None, :, :2]) ** 2).sum(axis=-1)        # (N, K)
    scale = (area + np.asarray(other_areas, dtype=np.float64)) / 2 + np.spacing(1)
    e = d2 / variances[None, :] / scale[:, None] / 2
    return np.exp(-e).mean(axis=1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray,
            sigmas: Sequence[float], thr: float = 0.9) -> list[int]:
    """Greedy OKS-NMS (mmpose's ``oks_nms``): visit people by descending score (numpy's
    ``argsort()[::-1]``, so ties resolve as in mmpose), keep the best, drop every other
    whose OKS with it is above ``thr``. Returns the kept indices, best first."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return []
    keypoints = np.asarray(keypoints, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while len(order) > 0:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        if len(rest) == 0:
            break
        overlap = oks_iou(keypoints[best], keypoints[rest], areas[best], areas[rest], sigmas)
        order = rest[overlap <= thr]
    return keep


# ---------------------------------------------------------------------------- apply
def apply_protocol(protocol: Protocol | str, predictions: Sequence[Mapping],
                   sigmas: Sequence[float] | None = None) -> list[dict]:
    """The people to write under ``protocol``.

    ``predictions``: dicts with ``image_id``, ``keypoints`` (K, 3) image x, y and the raw
    heatmap peak, ``bbox_score`` and (for OKS-NMS) ``area`` (crop width x height, image
    pixels). Returns new dicts (inputs are not modified), in the input order, with
    ``keypoints[:, 2]`` = the protocol's joint scores, ``score`` = its person score and
    ``peak_scores`` = the raw peaks.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    records = []
    for pred in predictions:
        box_score = float(pred.get("bbox_score", 1.0))
        if protocol.boxes == "detections" and box_score < protocol.box_score_thr:
            continue
        record = dict(pred)
        keypoints = np.array(pred["keypoints"], dtype=np.float64)
        peaks = keypoints[:, 2].copy()
        if protocol.joint_score == "peak_x_box":
            keypoints[:, 2] = peaks * box_score
        elif protocol.joint_score != "peak":
            raise ValueError(f"unknown joint_score rule {protocol.joint_score!r}")
        if protocol.person_score == "box":
            score = box_score
        elif protocol.person_score == "box_x_confident_mean":
            score = float(rescore(np.array([box_score]), peaks[None], protocol.joint_score_thr)[0])
        else:
            raise ValueError(f"unknown person_score rule {protocol.person_score!r}")
        record.update(keypoints=keypoints, score=score, peak_scores=peaks, bbox_score=box_score)
        records.append(record)
    if protocol.oks_nms_thr is None:
        return records
    if sigmas is None:
        raise ValueError(f"protocol {protocol.name} needs the joints' OKS sigmas")
    by_image: dict = {}
    for i, record in enumerate(records):
        by_image.setdefault(record["image_id"], []).append(i)
    kept: set[int] = set()
    for members in by_image.values():
        if any("area" not in records[i] for i in members):
            raise ValueError("OKS-NMS needs each prediction's 'area'")
        keep = oks_nms(np.stack([records[i]["keypoints"] for i in members]),
                       np.array([records[i]["score"] for i in members]),
                       np.array([float(records[i]["area"]) for i in members]),
                       sigmas, protocol.oks_nms_thr)
        kept.update(members[k] for k in keep)
    return [record for i, record in enumerate(records) if i in kept]
