"""PoseTrack21 (``posetrack_data/{train,val}/<video>.json``, github.com/anDoer/PoseTrack21).

Same COCO-style records as PoseTrack18 with these differences, handled here:

* every frame of a video is listed; ``has_labeled_person`` marks frames with boxes and
  ``is_labeled`` frames with keypoints; people may have a box and no keypoints;
* ``person_id`` (identity across videos) besides ``track_id`` (within the video): kept in
  ``sample.extra["person_id"]``;
* the third keypoint value is an occlusion flag, not an "annotated" flag: PoseTrack21's
  evaluation counts a GT joint when ``x > 0 and y > 0``, so ``visible`` follows the
  coordinates and the raw flags go to ``sample.extra["keypoint_flags"]``;
* ignore regions stay in the image records (``videos[name].images``) for the evaluation.
"""
from __future__ import annotations

import numpy as np

from glsmamba.data.datasets._posetrack_base import PoseTrackBase
from glsmamba.data.datasets.registry import register_dataset


@register_dataset("posetrack21")
class PoseTrack21Dataset(PoseTrackBase):
    """PoseTrack21 pose annotations -> clip samples; arguments as :class:`PoseTrackBase`."""

    visibility = "coordinates"
    metric = "posetrack21_map"          # the PoseTrack21 kit's AP rules

    def _extra(self, ann: dict | None, image: dict, raw: np.ndarray | None) -> dict:
        extra = super()._extra(ann, image, raw)
        if ann is not None:
            if "person_id" in ann:
                extra["person_id"] = int(ann["person_id"])
            if raw is not None:
                extra["keypoint_flags"] = raw[:, 2].astype(np.float32)
        return extra
