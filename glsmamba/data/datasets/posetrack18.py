"""PoseTrack 2018 (per-video JSON folder or merged file; frames ``%06d.jpg`` from 0)."""
from __future__ import annotations

from glsmamba.data.datasets._posetrack_base import PoseTrackBase
from glsmamba.data.datasets.registry import register_dataset


@register_dataset("posetrack18")
class PoseTrack18Dataset(PoseTrackBase):
    """PoseTrack18 GT boxes or detected boxes -> clip samples.

    ``PoseTrack18Dataset("annotations/val", data_root, delta=2)`` for GT boxes,
    add ``detections="…/val_detections.json", det_score_thr=0.2, mode="test"`` for the
    detected-box protocol. See :class:`PoseTrackBase` for every argument.
    """
