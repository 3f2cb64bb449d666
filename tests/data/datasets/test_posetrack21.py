"""PoseTrack21 layout: person_id, occlusion flags, box-only people, frames with boxes only."""
from __future__ import annotations

import json

import numpy as np

from glsmamba.data.datasets import PoseTrack21Dataset


def _pt21_sequence(tmp_path):
    folder = tmp_path / "posetrack_data" / "val"
    folder.mkdir(parents=True)
    images, annotations = [], []
    for t in range(5):
        image_id = 10000010000 + t
        images.append({"file_name": f"images/val/000001_bonn_test/{t:06d}.jpg", "id": image_id,
                       "frame_id": image_id, "vid_id": "000001", "nframes": 5, "is_labeled": t in (1, 3),
                       "has_labeled_person": True, "ignore_regions_x": [[0, 10, 10]],
                       "ignore_regions_y": [[0, 0, 10]]})
        keypoints = [0.0] * 51
        if t in (1, 3):
            keypoints[0:3] = [40, 30, 1]          # visible
            keypoints[15:18] = [35, 50, 0]        # occluded but annotated
            keypoints[18:21] = [0, 0, 0]          # not annotated
        annotations.append({"image_id": image_id, "id": image_id * 10, "track_id": 2, "person_id": 1024,
                            "bbox": [20, 20, 40, 60], "bbox_head": [30, 20, 20, 20], "keypoints": keypoints,
                            "category_id": 1})
        # a person with a box and no keypoints at all
        annotations.append({"image_id": image_id, "id": image_id * 10 + 1, "track_id": 5, "person_id": 77,
                            "bbox": [60, 10, 20, 40], "category_id": 1})
    (folder / "000001_bonn_test.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return folder


def test_pt21_visibility_from_coordinates_and_person_ids(tmp_path):
    folder = _pt21_sequence(tmp_path)
    dataset = PoseTrack21Dataset(folder, tmp_path)
    assert len(dataset) == 2                                    # labelled frames, people with joints
    sample = dataset.samples[0]
    assert sample.visible[0] == 1 and sample.visible[5] == 1 and sample.visible[6] == 0
    np.testing.assert_array_equal(sample.extra["keypoint_flags"][[0, 5]], [1, 0])
    assert sample.extra["person_id"] == 1024 and sample.track_id == 2
    assert sample.frame_index == 1 and len(set(sample.frame_paths)) == 4
    assert dataset.videos["000001_bonn_test"].images[0]["ignore_regions_x"] == [[0, 10, 10]]


def test_pt21_box_only_people_and_unlabelled_frames(tmp_path):
    folder = _pt21_sequence(tmp_path)
    everyone = PoseTrack21Dataset(folder, tmp_path, min_keypoints=0, labelled_only=False)
    assert len(everyone) == 10
    box_only = [s for s in everyone.samples if s.extra["person_id"] == 77]
    assert len(box_only) == 5 and all(s.visible.sum() == 0 for s in box_only)
