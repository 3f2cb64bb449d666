"""PoseTrack21's official pose-estimation AP (its TrackEval-based kit), where it differs
from poseval.

The kit (``anDoer/PoseTrack21``: ``eval/posetrack21/posetrack21/trackeval/datasets/
posetrack.py`` and ``.../metrics/map.py``, class ``PosemAP``) follows poseval's PCKh
matching and VOC AP, but three of its rules differ:

1. **Which joints exist.** A GT or predicted joint counts only when ``x > 0 and y > 0``
   (poseval: unless it is exactly ``(0, 0, 0)``). A predicted joint at a negative or zero
   coordinate (a joint decoded outside the image) is neither a true nor a false positive.
2. **Which frames count.** The frames whose GT image has ``is_labeled: true``
   (poseval: the frames holding at least one GT person record). A frame with people but
   ``is_labeled: false`` is left out; a labelled frame without GT people would make its
   predictions false positives, but the kit crashes on such a frame when it holds
   predictions (``map.py`` uses an undefined name, ``pre_idx``), so it only ever scores
   them when they are empty: we warn and leave them out, which gives the number the kit
   gives whenever it gives one.
3. **Joints without GT.** ``recall = TP / max(num_gt, 1)``, so a joint predicted but never
   annotated has AP 0 and counts in Total (poseval: NaN, left out of Total).

Everything else matches poseval as ``posetrack_map`` implements it: head size = 0.6 x the
head-box diagonal, distance / head size <= 0.5, the two greedy argmax passes of the
matching, scores from ``scores`` (-9999 when missing), ignore regions removing joints
strictly inside (shapely's ``contains``), joints sorted with numpy's ``argsort()[::-1]``,
Head / Shoulder ... columns and Total = mean of the 15 joint APs. The kit pairs frames by
position and asserts equal image ids; we pair by image id (the same whenever the kit runs).
So this function rewrites rules 1 and 2 into the inputs, runs the poseval rules, and
applies rule 3 to the result.
"""
from __future__ import annotations

import copy
import warnings
from typing import Mapping

import numpy as np

from glsmamba.evaluation.posetrack_map import MapResult, evaluate_posetrack


def _zero_nonpositive(annotations: list) -> int:
    """Set joints with x <= 0 or y <= 0 to (0, 0, 0) in place; returns how many changed."""
    changed = 0
    for ann in annotations:
        values = ann.get("keypoints")
        if not isinstance(values, list) or len(values) % 3:
            continue
        for j in range(0, len(values), 3):
            x, y = values[j], values[j + 1]
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and (x <= 0 or y <= 0):
                if values[j] != 0 or values[j + 1] != 0 or values[j + 2] != 0:
                    changed += 1
                values[j:j + 3] = [0, 0, 0]
    return changed


def posetrack21_inputs(gt: Mapping[str, Mapping], pred: Mapping[str, Mapping]
                       ) -> tuple[dict, dict, int]:
    """Copies of ``gt`` / ``pred`` with the kit's joint and frame rules applied (1, 2),
    and the number of predicted people in labelled frames without GT people."""
    gt_out, pred_out, orphan_people = {}, {}, 0
    for name, video in gt.items():
        video = copy.deepcopy(video)
        if "images" in video:
            labelled = {im["id"] for im in video["images"] if im.get("is_labeled", True)}
            video["annotations"] = [a for a in video.get("annotations") or []
                                    if a.get("image_id") in labelled]
            _zero_nonpositive(video["annotations"])
            with_people = {a["image_id"] for a in video["annotations"]}
            empty_labelled = labelled - with_people
            if name in pred and "images" in pred[name]:
                orphan_people += sum(1 for a in pred[name].get("annotations") or []
                                     if a.get("image_id") in empty_labelled)
        gt_out[name] = video
    for name, video in pred.items():
        video = copy.deepcopy(video)
        if "annotations" in video:
            _zero_nonpositive(video["annotations"])
        pred_out[name] = video
    return gt_out, pred_out, orphan_people


def evaluate_posetrack21(gt: Mapping[str, Mapping], pred: Mapping[str, Mapping],
                         image_ids: set | None = None, strict: bool = True,
                         sources: Mapping[str, str] | None = None) -> MapResult:
    """The PoseTrack21 kit's AP (see the module docstring) on PoseTrack18-layout JSON;
    arguments as :func:`evaluate_posetrack`."""
    gt_in, pred_in, orphans = posetrack21_inputs(gt, pred)
    if orphans:
        warnings.warn(f"{orphans} predicted people in labelled frames without GT people: the "
                      "PoseTrack21 kit fails on such frames (it would count them as false "
                      "positives); they are left out, as poseval does", stacklevel=2)
    result = evaluate_posetrack(gt_in, pred_in, image_ids, strict=strict, sources=sources)
    no_gt = (result.num_gt_joints == 0) & (result.num_pred_joints > 0)
    if no_gt.any():
        result.ap = np.where(no_gt, 0.0, result.ap)
        result.recall = np.where(no_gt, 0.0, result.recall)
    return result
