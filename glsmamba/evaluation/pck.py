"""PCK@alpha normalised by the GT box (Sub-JHMDB protocol, mmpose's ``JhmdbPCKAccuracy``).

A joint is correct when ``||pred - gt|| / max(box_w, box_h) < alpha`` (strictly less, as
mmpose's ``keypoint_pck_accuracy``). Per joint: correct / visible GT joints; a group is
the plain mean of its joints' PCKs; Mean is the mean over the joints that have at least
one visible GT (mmpose's ``avg_acc``). Knows nothing of datasets.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from glsmamba.evaluation.table import render_table

# Sub-JHMDB joint order (mmpose's jhmdb metainfo)
JHMDB_JOINTS = (
    "neck", "belly", "head", "right_shoulder", "left_shoulder", "right_hip", "left_hip",
    "right_elbow", "left_elbow", "right_knee", "left_knee", "right_wrist", "left_wrist",
    "right_ankle", "left_ankle",
)
# mmpose's grouping: Head is the head joint alone; neck and belly count only in Mean
JHMDB_GROUPS = {
    "Head": ("head",),
    "Shoulder": ("right_shoulder", "left_shoulder"),
    "Elbow": ("right_elbow", "left_elbow"),
    "Wrist": ("right_wrist", "left_wrist"),
    "Hip": ("right_hip", "left_hip"),
    "Knee": ("right_knee", "left_knee"),
    "Ankle": ("right_ankle", "left_ankle"),
}


@dataclass
class PckResult:
    """PCK in percent; NaN for a joint without any visible GT."""

    per_joint: np.ndarray          # (K,)
    groups: dict[str, float]       # group name -> PCK
    mean: float                    # mean over joints with visible GT
    counts: np.ndarray             # (K,) visible GT joints used
    joint_names: tuple[str, ...]
    alpha: float

    @property
    def columns(self) -> dict[str, float]:
        return {**self.groups, "Mean": self.mean}

    def to_dict(self) -> dict:
        def clean(v: float):
            return None if math.isnan(v) else float(v)

        return {
            "alpha": self.alpha,
            "columns": {k: clean(v) for k, v in self.columns.items()},
            "per_joint": {n: clean(v) for n, v in zip(self.joint_names, self.per_joint)},
            "counts": {n: int(c) for n, c in zip(self.joint_names, self.counts)},
        }


def box_sizes(boxes: np.ndarray, box_format: str = "xywh") -> np.ndarray:
    """max(width, height) of each box; boxes (N, 4) -> (N,)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {boxes.shape}")
    if box_format == "xywh":
        sizes = boxes[:, 2:]
    elif box_format == "xyxy":
        sizes = boxes[:, 2:] - boxes[:, :2]
    else:
        raise ValueError(f"box_format must be 'xywh' or 'xyxy', got {box_format!r}")
    return sizes.max(axis=1)


def normalised_distances(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
                         norm: np.ndarray) -> np.ndarray:
    """(N, K) distance / norm; NaN where the GT joint is not visible or norm <= 0."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise ValueError(f"pred and gt must both be (N, K, 2), got {pred.shape} and {gt.shape}")
    visible = np.asarray(visible).astype(bool)
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be {pred.shape[:2]}, got {visible.shape}")
    norm = np.asarray(norm, np.float64).reshape(-1)
    if norm.shape[0] != pred.shape[0]:
        raise ValueError(f"need one normaliser per sample: {norm.shape[0]} != {pred.shape[0]}")
    valid = visible & (norm > 0)[:, None]
    dist = np.linalg.norm(pred - gt, axis=-1) / np.where(norm > 0, norm, 1.0)[:, None]
    return np.where(valid, dist, np.nan)


def pck_accuracy(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, boxes: np.ndarray,
                 alpha: float = 0.2, joint_names: Sequence[str] = JHMDB_JOINTS,
                 groups: Mapping[str, Sequence[str]] = JHMDB_GROUPS,
                 box_format: str = "xywh") -> PckResult:
    """PCK@alpha of pred (N, K, 2) vs gt (N, K, 2), visible (N, K), GT boxes (N, 4)."""
    dist = normalised_distances(pred, gt, visible, box_sizes(boxes, box_format))
    if len(joint_names) != dist.shape[1]:
        raise ValueError(f"{len(joint_names)} joint names for {dist.shape[1]} joints")
    counts = (~np.isnan(dist)).sum(axis=0)
    correct = (np.nan_to_num(dist, nan=np.inf) < alpha).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(counts > 0, 100.0 * correct / counts, np.nan)
    index = {name: i for i, name in enumerate(joint_names)}
    group_values = {}
    for group, members in groups.items():
        unknown = [m for m in members if m not in index]
        if unknown:
            raise ValueError(f"group {group!r} names unknown joint(s) {unknown}")
        group_values[group] = float(np.mean([per_joint[index[m]] for m in members]))
    defined = per_joint[~np.isnan(per_joint)]
    mean = float(defined.mean()) if defined.size else float("nan")
    return PckResult(per_joint, group_values, mean, counts, tuple(joint_names), float(alpha))


def mean_over_splits(results: Sequence[PckResult]) -> PckResult:
    """Average of per-split results (the Sub-JHMDB report: mean over the three splits)."""
    if not results:
        raise ValueError("no split results to average")
    first = results[0]
    if any(r.joint_names != first.joint_names or list(r.groups) != list(first.groups)
           for r in results):
        raise ValueError("split results have different joints or groups")
    per_joint = np.mean([r.per_joint for r in results], axis=0)
    groups = {g: float(np.mean([r.groups[g] for r in results])) for g in first.groups}
    mean = float(np.mean([r.mean for r in results]))
    counts = np.sum([r.counts for r in results], axis=0)
    return PckResult(per_joint, groups, mean, counts, first.joint_names, first.alpha)


def format_pck_table(result: PckResult, title: str | None = None, markdown: bool = False,
                     label: str = "") -> str:
    """Head, Shoulder, ..., Ankle, Mean."""
    if title is None:
        title = f"PCK@{result.alpha:g}:"
    return render_table(result.columns, title=title, markdown=markdown, label=label)
