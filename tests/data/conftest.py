"""Builders of tiny datasets written into tmp_path (PoseTrack18-style videos with real images)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

NUM_JOINTS = 17
IMAGE_W, IMAGE_H = 64, 48


def frame_value(video_index: int, frame: int) -> int:
    """Grey level of a frame: lets a test tell which frame was loaded."""
    return 20 + 40 * video_index + 10 * frame


def person(image_id: int, ann_id: int, track_id: int, box, joints: dict[int, tuple[float, float]]) -> dict:
    keypoints = [0.0] * (3 * NUM_JOINTS)
    for k, (x, y) in joints.items():
        keypoints[3 * k: 3 * k + 3] = [x, y, 1]
    return {"image_id": image_id, "id": ann_id, "track_id": track_id, "bbox": list(box),
            "bbox_head": [box[0], box[1], 8, 8], "keypoints": keypoints, "category_id": 1,
            "num_keypoints": len(joints)}


def build_posetrack18(root: Path, frames=(6, 3), labelled=((2, 5), (0,)), list_all=True,
                      write_images=True) -> dict:
    """Two videos under ``root`` in the PoseTrack18 layout; returns what was written.

    ``labelled[v]``: frame indices of video v that are labelled and hold two people (the
    second person of each frame has no annotated joint). ``list_all=False`` lists only the
    labelled frames in the annotation files.
    """
    videos = {}
    for v, (num_frames, labelled_frames) in enumerate(zip(frames, labelled)):
        name = f"00000{v + 1}_mpii_test"
        folder = root / "images" / "val" / name
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for t in range(num_frames):
            file_name = f"images/val/{name}/{t:06d}.jpg"
            if write_images:
                image = np.full((IMAGE_H, IMAGE_W, 3), frame_value(v, t), np.uint8)
                cv2.imwrite(str(root / file_name), image)
            image_id = 10000000000 + (v + 1) * 10000 + t
            is_labeled = t in labelled_frames
            if is_labeled or list_all:
                images.append({"file_name": file_name, "id": image_id, "frame_id": image_id,
                               "vid_id": f"00000{v + 1}", "nframes": num_frames,
                               "is_labeled": is_labeled, "width": IMAGE_W, "height": IMAGE_H,
                               "ignore_regions_x": [], "ignore_regions_y": []})
            if is_labeled:
                annotations.append(person(image_id, image_id * 100, 0, (10 + t, 8, 20, 30),
                                          {0: (20.0 + t, 12.0), 5: (15.0, 20.0), 6: (25.5, 20.5), 9: (14, 30)}))
                annotations.append(person(image_id, image_id * 100 + 1, 1, (40, 5, 10, 20), {}))
        # shuffle the image order in the file: the parser must sort by frame_id
        images = images[::-1]
        data = {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "person", "keypoints": []}]}
        videos[name] = data
    ann_dir = root / "annotations" / "val"
    ann_dir.mkdir(parents=True, exist_ok=True)
    for name, data in videos.items():
        (ann_dir / f"{name}.json").write_text(json.dumps(data))
    merged = {"images": sum((d["images"] for d in videos.values()), []),
              "annotations": sum((d["annotations"] for d in videos.values()), []),
              "categories": videos[next(iter(videos))]["categories"]}
    (root / "annotations" / "val_merged.json").write_text(json.dumps(merged))
    return videos


@pytest.fixture
def tiny_posetrack(tmp_path: Path):
    """(root, written annotation dicts) of a complete two-video PoseTrack18 set."""
    videos = build_posetrack18(tmp_path)
    return tmp_path, videos


@pytest.fixture
def posetrack_builder():
    """The ``build_posetrack18`` function, plus helpers, for tests that vary the layout."""
    return {"build": build_posetrack18, "person": person, "frame_value": frame_value,
            "size": (IMAGE_W, IMAGE_H)}
