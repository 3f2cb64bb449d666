"""Non-finite numbers in annotation and detection files: errors naming file and record
(a NaN joint would otherwise make NaN targets that look like a diverged training)."""
from __future__ import annotations

import json

import pytest

from glsmamba.data.datasets import PoseTrack18Dataset
from glsmamba.errors import DataError


def test_nan_keypoint_in_training_annotations(tmp_path, posetrack_builder):
    videos = posetrack_builder["build"](tmp_path)
    name = sorted(videos)[0]
    data = videos[name]
    data["annotations"][0]["keypoints"][3] = float("nan")
    (tmp_path / "annotations" / "val" / f"{name}.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"{name}.json \[.*\]: keypoint value 3 \(joint 1\) is nan"):
        PoseTrack18Dataset(tmp_path / "annotations" / "val", tmp_path)


@pytest.mark.parametrize("score", [float("nan"), float("inf"), "high"])
def test_non_finite_detection_score(tiny_posetrack, tmp_path, score):
    root, _ = tiny_posetrack
    dets = [{"image_id": 10000010002, "bbox": [5, 5, 20, 20], "score": 0.9},
            {"image_id": 10000010002, "bbox": [5, 5, 20, 20], "score": score}]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    with pytest.raises(DataError, match=r"dets\.json \[detection #1\]: detection score"):
        PoseTrack18Dataset(root / "annotations" / "val", root, detections=path, mode="test")


def test_detection_box_far_outside_any_image(tiny_posetrack, tmp_path):
    root, _ = tiny_posetrack
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 10000010002, "bbox": [5, 5, 1e30, 20], "score": 0.9}]))
    with pytest.raises(DataError, match=r"dets\.json \[detection #0\]: bbox .* lies beyond 1e\+06"):
        PoseTrack18Dataset(root / "annotations" / "val", root, detections=path, mode="test")
