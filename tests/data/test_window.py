"""Clip windows: centred (t-δ..t+δ) and causal (t-2δ..t) clips in the data path and config."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from glsmamba.data.clip_dataset import ClipDataset, build_pipeline
from glsmamba.data.datasets import PoseTrack18Dataset, clip_indices
from glsmamba.data.transforms import MEAN_RGB, STD_RGB
from glsmamba.data.windows import (WINDOWS, check_window, clamped_indices, delay_frames,
                                   target_index, window_offsets)
from glsmamba.errors import ConfigError, DataError


def test_offsets_target_and_delay_of_each_window():
    assert list(window_offsets(2, "centered")) == [-2, -1, 0, 1, 2]
    assert list(window_offsets(2, "causal")) == [-4, -3, -2, -1, 0]
    assert list(window_offsets(0, "causal")) == [0]
    assert target_index(5, "centered") == 2 and target_index(5, "causal") == 4
    assert target_index(1, "causal") == 0
    assert delay_frames(2, "centered") == 2 and delay_frames(2, "causal") == 0
    for window in WINDOWS:     # the same clip length whatever the window
        assert len(window_offsets(3, window)) == 7
        assert list(window_offsets(3, window))[target_index(7, window)] == 0


def test_unknown_window_and_negative_delta_are_config_errors():
    with pytest.raises(ConfigError, match="centered, causal"):
        check_window("future")
    with pytest.raises(ConfigError):
        window_offsets(-1, "causal")


def test_causal_indices_repeat_the_first_frame_and_never_look_ahead():
    assert clip_indices(1, 10, 2, "causal") == [0, 0, 0, 0, 1]
    assert clip_indices(6, 10, 2, "causal") == [2, 3, 4, 5, 6]
    assert clip_indices(9, 10, 2) == [7, 8, 9, 9, 9]              # centred: unchanged
    for t in range(10):
        assert max(clamped_indices(t, 2, 9, "causal")) == t
        assert clamped_indices(t, 2, 9, "causal")[-1] == t


def test_causal_dataset_clips_end_at_the_labelled_frame(tiny_posetrack, posetrack_builder):
    root, _ = tiny_posetrack
    ann = root / "annotations" / "val"
    causal = PoseTrack18Dataset(ann, root, delta=1, window="causal")
    centred = PoseTrack18Dataset(ann, root, delta=1)
    assert causal.window == "causal" and centred.window == "centered"
    for a, b in zip(causal.samples, centred.samples):
        assert a.image_path == b.image_path and a.frame_index == b.frame_index
        assert a.frame_paths[-1] == a.image_path          # frame t is the last one
        assert b.frame_paths[1] == b.image_path           # frame t is the middle one
    late = next(s for s in causal.samples if s.frame_index == 5)
    assert [p[-10:] for p in late.frame_paths] == ["000003.jpg", "000004.jpg", "000005.jpg"]
    with pytest.raises(ConfigError):
        PoseTrack18Dataset(ann, root, delta=1, window="ahead")


def test_causal_clip_items_hold_frames_t_minus_2delta_to_t(tiny_posetrack, posetrack_builder):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root, delta=2, window="causal")
    pipeline = build_pipeline("test", metainfo=dataset.metainfo, padding=1.0)
    clips = ClipDataset(dataset.samples, pipeline, window="causal")
    index = next(i for i, s in enumerate(dataset.samples) if s.frame_index == 2)
    assert clips.results_of(index)["target_index"] == 4
    item = clips[index]
    value = posetrack_builder["frame_value"]
    centre = item["clip"][:, 0, 128, 96] * STD_RGB[0] + MEAN_RGB[0]
    np.testing.assert_allclose(centre.numpy(), [value(0, t) for t in (0, 0, 0, 1, 2)], atol=2.5)
    box = dataset.samples[index].bbox_xywh      # the crop is frame t's box
    np.testing.assert_allclose(item["center"].numpy(), [box[0] + box[2] / 2, box[1] + box[3] / 2])
    with pytest.raises(ConfigError):
        ClipDataset(dataset.samples, pipeline, window="sideways")


def test_size_check_names_the_estimated_frame(tiny_posetrack):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root, delta=1, window="causal")
    clips = ClipDataset(dataset.samples, build_pipeline("test", metainfo=dataset.metainfo),
                        window="causal")
    results = clips.results_of(0)
    results["expected_size"] = (1, 1)
    with pytest.raises(DataError) as err:
        clips.pipeline(results)
    assert str(dataset.samples[0].image_path) in str(err.value)


def test_config_window_default_choices_and_model(tiny_posetrack):
    from glsmamba.engine.builder import build_model, build_split
    from glsmamba.config import CHOICES, DEFAULTS, apply_override
    assert DEFAULTS["data"]["window"] == "centered"
    assert CHOICES[("data", "window")] == set(WINDOWS)
    config = copy.deepcopy(DEFAULTS)
    with pytest.raises(ConfigError, match="data.window"):
        apply_override(config, "data.window=ahead")
    root, _ = tiny_posetrack
    apply_override(config, "data.window=causal")
    config["model"].update(name="glsmamba-tiny",
                           overrides={"input_size": [48, 64], "dim": 16, "d_state": 1})
    config["data"].update(root=str(root), train_ann="annotations/val", delta=1)
    model = build_model(config, log=lambda *_: None, for_training=False)
    assert model.clip_window == "causal" and model.target_index == 2
    split = build_split(config, model, "val", with_target=False)
    assert split.clips.window == "causal"
    assert all(s.frame_paths[-1] == s.image_path for s in split.parsed.samples)
    config["data"]["window"] = "centered"
    assert build_model(config, log=lambda *_: None, for_training=False).target_index == 1
