"""PoseTrack17 (the peers' COCO-style conversion, frames %08d from 1)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from glsmamba.data.datasets import PoseTrack17Dataset, PoseTrack18Dataset


def _write_pt17(root: Path, num_frames: int = 4) -> Path:
    images, annotations = [], []
    for t in range(1, num_frames + 1):
        file_name = f"images_renamed/bonn_5sec/000342_mpii/{t:08d}.jpg"
        image_id = 10003420000 + t
        # no vid_id, records out of order: the parser must sort by frame_id
        images.append({"file_name": file_name, "id": image_id, "frame_id": image_id, "nframes": num_frames,
                       "is_labeled": t != 2, "width": 100, "height": 80})
        keypoints = [0.0] * 51
        keypoints[15:18] = [30 + t, 40, 1]
        keypoints[18:21] = [50, 40, 2]
        annotations.append({"image_id": image_id, "id": t, "track_id": 3, "bbox": [20, 20, 40, 50],
                            "keypoints": keypoints, "area": 2000, "iscrowd": 0, "category_id": 1})
    path = root / "posetrack_val.json"
    path.write_text(json.dumps({"images": images[::-1], "annotations": annotations, "categories": []}))
    return path


def test_pt17_coco_conversion(tmp_path):
    path = _write_pt17(tmp_path)
    dataset = PoseTrack17Dataset(path, tmp_path, delta=1)
    assert len(dataset) == 3                                      # frame 2 is unlabelled
    video = dataset.videos["000342_mpii"]
    assert [Path(p).name for p in video.frame_paths] == [f"{t:08d}.jpg" for t in range(1, 5)]
    first = dataset.samples[0]
    assert first.frame_index == 0
    assert [Path(p).name for p in first.frame_paths] == ["00000001.jpg", "00000001.jpg", "00000002.jpg"]
    np.testing.assert_allclose(first.keypoints[5], [31, 40])
    assert first.visible.tolist()[5:7] == [1, 1] and first.visible.sum() == 2
    # same parse as PoseTrack18 (shared code): identical samples
    other = PoseTrack18Dataset(path, tmp_path, delta=1)
    assert [s.frame_paths for s in other.samples] == [s.frame_paths for s in dataset.samples]


def test_pt17_detections_by_image_name(tmp_path):
    path = _write_pt17(tmp_path)
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_name": "images_renamed/bonn_5sec/000342_mpii/00000003.jpg",
                                 "bbox": [10, 10, 30, 30], "score": 0.8, "category_id": 1,
                                 "nframes": 4, "frame_id": 10003420003}]))
    dataset = PoseTrack17Dataset(path, tmp_path, detections=dets, mode="test")
    assert len(dataset) == 1 and dataset.samples[0].frame_index == 2
    assert Path(dataset.samples[0].frame_paths[-1]).name == "00000004.jpg"
