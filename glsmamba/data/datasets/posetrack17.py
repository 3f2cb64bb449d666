"""PoseTrack 2017 in the COCO-style conversion used by the peers (DCPose, FAMI-Pose).

Their layout: ``posetrack_train.json`` / ``posetrack_val.json`` (merged COCO-style files with
``images`` records holding ``file_name``, ``nframes``, ``frame_id`` and ``annotations`` with
17 PoseTrack18-order joints, ears zero) and frames renamed ``images_renamed/…/%08d.jpg`` from
1. The parser is the PoseTrack18 one: frame order comes from the records (``frame_id``, else
``file_name``), not from the ``%08d`` names, and the video is the frame's folder.
"""
from __future__ import annotations

from glsmamba.data.datasets._posetrack_base import PoseTrackBase
from glsmamba.data.datasets.registry import register_dataset


@register_dataset("posetrack17")
class PoseTrack17Dataset(PoseTrackBase):
    """PoseTrack17 (COCO-style conversion) -> clip samples; arguments as :class:`PoseTrackBase`."""
