"""PoseTrack18 parser: real fixtures, tiny written videos, clip clamping, detections, errors."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from glsmamba.data.datasets import PoseTrack18Dataset, clip_indices
from glsmamba.errors import DataError


def _key(sample):
    return (sample.image_id, sample.ann_id)


def _same_samples(a, b):
    assert sorted(map(_key, a.samples)) == sorted(map(_key, b.samples))
    by_key = {_key(s): s for s in b.samples}
    for s in a.samples:
        t = by_key[_key(s)]
        assert s.frame_paths == t.frame_paths
        np.testing.assert_array_equal(s.keypoints, t.keypoints)
        np.testing.assert_array_equal(s.bbox_xywh, t.bbox_xywh)


# ------------------------------------------------------------------ real fixtures
def test_fixture_folder_and_merged_file_agree(fixtures_dir: Path):
    root = fixtures_dir / "posetrack18"
    per_video = PoseTrack18Dataset(root / "annotations" / "val", root)
    merged = PoseTrack18Dataset(root / "annotations" / "test_posetrack18_val.json", root)
    assert len(per_video) == 14 and len(per_video.videos) == 3
    _same_samples(per_video, merged)
    sample = next(s for s in per_video.samples if s.video_id == "003418_mpii_test")
    assert sample.keypoints.shape == (17, 2) and sample.visible.sum() == 11
    # box clipped to the 1920 x 1080 image: 15 + 1092 > 1079
    assert sample.bbox_xywh[1] + sample.bbox_xywh[3] == pytest.approx(1079)
    assert sample.extra["bbox_head"] == [346.0, 337.0, 296.0, 237.0]
    # videos list only their labelled frame: clip neighbours come from the folder listing
    assert len(sample.frame_paths) == 5 and len(set(sample.frame_paths)) == 1
    assert per_video.videos["003418_mpii_test"].complete is False
    assert per_video.check_files() == []


def test_fixture_detections_threshold(fixtures_dir: Path):
    root = fixtures_dir / "posetrack18"
    dets_path = root / "annotations" / "test_posetrack18_human_detections.json"
    dets = json.loads(dets_path.read_text())
    for thr in (0.0, 0.5):
        dataset = PoseTrack18Dataset(root / "annotations" / "val", root, detections=dets_path,
                                     det_score_thr=thr, mode="test")
        expected = sum(1 for d in dets if d["score"] >= thr and d["bbox"][2] > 0 and d["bbox"][3] > 0)
        assert len(dataset) == expected
        assert all(s.bbox_score >= thr and s.visible.sum() == 0 and s.ann_id == -1 for s in dataset.samples)
    assert len(dataset) < len(dets)


# ------------------------------------------------------------------ written videos
def test_tiny_folder_and_merged_agree_and_clips_clamp(tiny_posetrack):
    root, _ = tiny_posetrack
    per_video = PoseTrack18Dataset(root / "annotations" / "val", root, delta=2)
    merged = PoseTrack18Dataset(root / "annotations" / "val_merged.json", root, delta=2)
    _same_samples(per_video, merged)
    # persons without joints are skipped: one per labelled frame (2 + 1 frames)
    assert len(per_video) == 3
    video = per_video.videos["000001_mpii_test"]
    assert video.complete and len(video.images) == 6
    # records stay in the file's order (reversed there); frames follow frame_id
    assert [im["frame_id"] % 100 for im in video.images] == list(range(6))[::-1]
    assert [Path(p).name for p in video.frame_paths] == [f"{t:06d}.jpg" for t in range(6)]
    names = {s.frame_index: [Path(p).name for p in s.frame_paths]
             for s in per_video.samples if s.video_id == "000001_mpii_test"}
    assert names[2] == ["000000.jpg", "000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert names[5] == ["000003.jpg", "000004.jpg", "000005.jpg", "000005.jpg", "000005.jpg"]
    short = next(s for s in per_video.samples if s.video_id == "000002_mpii_test")
    assert [Path(p).name for p in short.frame_paths] == ["000000.jpg"] * 3 + ["000001.jpg", "000002.jpg"]


def test_delta_zero_and_larger(tiny_posetrack):
    root, _ = tiny_posetrack
    for delta in (0, 1, 3):
        dataset = PoseTrack18Dataset(root / "annotations" / "val", root, delta=delta)
        assert all(len(s.frame_paths) == 2 * delta + 1 for s in dataset.samples)
        assert all(s.frame_paths[delta] == s.image_path for s in dataset.samples)


def test_clip_indices_clamp():
    assert clip_indices(0, 5, 2) == [0, 0, 0, 1, 2]
    assert clip_indices(4, 5, 2) == [2, 3, 4, 4, 4]
    assert clip_indices(0, 1, 1) == [0, 0, 0]


def test_labelled_only_and_min_keypoints(tmp_path, posetrack_builder):
    build = posetrack_builder["build"]
    build(tmp_path)
    ann = tmp_path / "annotations" / "val"
    assert len(PoseTrack18Dataset(ann, tmp_path, min_keypoints=0)) == 6      # box-only people kept
    assert len(PoseTrack18Dataset(ann, tmp_path, min_keypoints=5)) == 0


def test_unlisted_frames_fall_back_to_folder_listing(tmp_path, posetrack_builder):
    posetrack_builder["build"](tmp_path, list_all=False)
    dataset = PoseTrack18Dataset(tmp_path / "annotations" / "val", tmp_path)
    sample = next(s for s in dataset.samples if s.video_id == "000001_mpii_test" and s.frame_index == 5)
    assert [Path(p).name for p in sample.frame_paths] == ["000003.jpg", "000004.jpg", "000005.jpg",
                                                          "000005.jpg", "000005.jpg"]
    assert dataset.videos["000001_mpii_test"].complete is False
    # writers still get the raw records as listed (only labelled frames here)
    assert len(dataset.videos["000001_mpii_test"].images) == 2


def test_unlisted_frames_without_folder_warn(tmp_path, posetrack_builder):
    posetrack_builder["build"](tmp_path, list_all=False, write_images=False)
    with pytest.warns(UserWarning, match="listed frames only"):
        dataset = PoseTrack18Dataset(tmp_path / "annotations" / "val", tmp_path / "elsewhere")
    sample = next(s for s in dataset.samples if s.video_id == "000001_mpii_test" and s.frame_index == 1)
    assert [Path(p).name for p in sample.frame_paths] == ["000002.jpg"] * 2 + ["000005.jpg"] * 3
    with pytest.raises(DataError, match="image file not found"):
        dataset.check_files()


def test_detections_by_image_name_and_unknown_image(tiny_posetrack, tmp_path):
    root, _ = tiny_posetrack
    dets = [{"image_name": "images/val/000001_mpii_test/000002.jpg", "bbox": [5, 5, 20, 20], "score": 0.9,
             "category_id": 1},
            {"image_id": 10000010005, "bbox": [5, 5, 20, 20], "score": 0.1, "category_id": 1},
            {"image_id": 10000010005, "bbox": [5, 5, 0, 20], "score": 0.9, "category_id": 1},
            {"image_id": 10000010002, "bbox": [5, 5, 20, 20], "score": 0.9, "category_id": 2}]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    with pytest.warns(UserWarning, match="zero size"):
        dataset = PoseTrack18Dataset(root / "annotations" / "val", root, detections=path,
                                     det_score_thr=0.05, mode="test")
    assert [round(s.bbox_score, 2) for s in dataset.samples] == [0.9, 0.1]
    assert dataset.samples[0].frame_index == 2
    with pytest.warns(UserWarning, match="zero size"):
        high = PoseTrack18Dataset(root / "annotations" / "val", root, detections=path, det_score_thr=0.5,
                                  mode="test")
    assert len(high) == 1
    dets.append({"image_id": 123, "bbox": [1, 1, 5, 5], "score": 0.9})
    path.write_text(json.dumps(dets))
    with pytest.raises(DataError, match=r"dets\.json \[detection #4\].*not in the annotations"):
        PoseTrack18Dataset(root / "annotations" / "val", root, detections=path)


# ------------------------------------------------------------------ errors
def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _one_image(**ann_changes):
    keypoints = [0.0] * 51
    keypoints[:3] = [10, 10, 1]
    ann = {"image_id": 1, "id": 7, "track_id": 0, "bbox": [1, 1, 20, 30], "keypoints": keypoints}
    ann.update(ann_changes)
    return {"images": [{"file_name": "images/v/000000.jpg", "id": 1, "nframes": 1, "is_labeled": True}],
            "annotations": [ann]}


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        PoseTrack18Dataset(tmp_path / "nope.json", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*.json"):
        PoseTrack18Dataset(tmp_path / "empty", tmp_path)


def test_truncated_json_names_line_and_column(tmp_path):
    text = json.dumps(_one_image(), indent=1)
    path = _write(tmp_path, text[: len(text) // 2])
    with pytest.raises(DataError, match=r"bad\.json: malformed or truncated JSON at line \d+, column \d+"):
        PoseTrack18Dataset(path, tmp_path)


def test_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="'images' list"):
        PoseTrack18Dataset(_write(tmp_path, [1, 2]), tmp_path)
    data = _one_image()
    data["annotations"][0]["image_id"] = 99
    with pytest.raises(DataError, match=r"\[annotations\[0\]\].*unknown image_id 99"):
        PoseTrack18Dataset(_write(tmp_path, data), tmp_path)


def test_keypoints_of_wrong_length(tmp_path):
    path = _write(tmp_path, _one_image(keypoints=[1.0] * 50))
    with pytest.raises(DataError, match=r"bad\.json \[annotation id=7 \(image 1\)\]: keypoints have 50 values"):
        PoseTrack18Dataset(path, tmp_path)


def test_zero_size_box_error_or_skip(tmp_path):
    path = _write(tmp_path, _one_image(bbox=[5, 5, 0, 10]))
    with pytest.raises(DataError, match=r"\[annotation id=7 \(image 1\)\]: box with zero size"):
        PoseTrack18Dataset(path, tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 GT boxes"):
        assert len(PoseTrack18Dataset(path, tmp_path, bad_gt_box="skip")) == 0
    bad_box = _write(tmp_path, _one_image(bbox=[5, 5, 10]), "short.json")
    with pytest.raises(DataError, match="bbox must be 4"):
        PoseTrack18Dataset(bad_box, tmp_path)


def test_bad_arguments(tiny_posetrack):
    root, _ = tiny_posetrack
    with pytest.raises(ValueError, match="mode"):
        PoseTrack18Dataset(root / "annotations" / "val", root, mode="val")
    with pytest.raises(ValueError, match="delta"):
        PoseTrack18Dataset(root / "annotations" / "val", root, delta=-1)


def test_videos_behave_like_mappings_for_writers(tiny_posetrack):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root)
    video = dataset.videos["000002_mpii_test"]
    assert video["images"] is video.images and video.get("categories") == video.categories
    assert video.get("missing", 3) == 3
    assert video.ann_file.endswith("000002_mpii_test.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset.check_files() == []


def test_bad_nframes_names_the_image(tmp_path):
    data = _one_image()
    data["images"][0]["nframes"] = "many"
    with pytest.raises(DataError, match=r"bad\.json \[image id=1\]: 'nframes' must be an integer"):
        PoseTrack18Dataset(_write(tmp_path, data), tmp_path)
