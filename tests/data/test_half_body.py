"""The half-body crop switch: centre of the selected joints' extent (ours) or their mean,
and the upper-body probability, as HRNet / DCPose (``half_body_transform``)."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from glsmamba.data.clip_dataset import build_pipeline
from glsmamba.data.metainfo import load_metainfo
from glsmamba.data.transforms import HRNET_UPPER_PROB, RandomHalfBody
from glsmamba.engine import builder
from glsmamba.config import DEFAULTS, apply_override
from glsmamba.errors import ConfigError

INFO = load_metainfo("posetrack")


def _person() -> dict:
    """17 visible joints; the upper body's mean is far from the centre of its extent."""
    keypoints = np.zeros((17, 2), np.float32)
    # upper body (0..10): ten joints clustered at (100, 50..59), one outlier at (160, 90)
    keypoints[:10] = np.stack([np.full(10, 100.0), 50.0 + np.arange(10)], axis=1)
    keypoints[10] = (160.0, 90.0)
    # lower body (11..16)
    keypoints[11:] = np.stack([100.0 + 4 * np.arange(6), 120.0 + 10 * np.arange(6)], axis=1)
    return {"keypoints": keypoints, "visible": np.ones(17, np.float32),
            "center": np.array([120.0, 100.0], np.float32),
            "scale": np.array([90.0, 120.0], np.float32), "rng": np.random.default_rng(0)}


def test_mean_centre_is_the_mean_of_the_selected_joints():
    results = _person()
    upper = results["keypoints"][:11]
    mean = RandomHalfBody(INFO.upper_body, INFO.lower_body, p=1.0, upper_prob=1.0, center="mean")
    out = mean(copy.deepcopy(results))
    assert out["half_body"]
    # mean of x = (10 * 100 + 160) / 11, mean of y = (50 + ... + 59 + 90) / 11
    np.testing.assert_allclose(out["center"], [1160 / 11, (545 + 90) / 11], rtol=1e-6)
    np.testing.assert_allclose(out["center"], upper.mean(0), rtol=1e-6)
    extent = RandomHalfBody(INFO.upper_body, INFO.lower_body, p=1.0, upper_prob=1.0)
    out_extent = extent(copy.deepcopy(results))
    np.testing.assert_allclose(out_extent["center"], [130.0, 70.0])  # (min + max) / 2
    assert np.abs(out["center"] - out_extent["center"]).max() > 10
    # same crop size either way: the extent (60 x 40) padded to 3:4, x 1.5
    np.testing.assert_allclose(out["scale"], out_extent["scale"])
    np.testing.assert_allclose(out["scale"], [60 * 1.5, 80 * 1.5])


def test_mean_centre_of_the_lower_body_and_invisible_joints_left_out():
    results = _person()
    results["visible"][16] = 0  # an unannotated ankle is not selected
    out = RandomHalfBody(INFO.upper_body, INFO.lower_body, p=1.0, upper_prob=0.0,
                         center="mean")(results)
    np.testing.assert_allclose(out["center"], results["keypoints"][11:16].mean(0), rtol=1e-6)


def _upper_rate(upper_prob: float, draws: int = 3000) -> float:
    transform = RandomHalfBody(INFO.upper_body, INFO.lower_body, p=1.0, upper_prob=upper_prob,
                               center="mean")
    base = _person()
    upper_mean = base["keypoints"][:11].mean(0)
    hits = 0
    for seed in range(draws):
        results = {**copy.deepcopy(base), "rng": np.random.default_rng(seed)}
        hits += bool(np.allclose(transform(results)["center"], upper_mean))
    return hits / draws


def test_upper_body_probability_as_hrnet():
    # HRNet / DCPose: upper first when np.random.randn() < 0.5, i.e. P = Phi(0.5)
    assert HRNET_UPPER_PROB == pytest.approx(0.69146, abs=1e-5)
    normal = np.random.default_rng(1).standard_normal(400_000)
    assert (normal < 0.5).mean() == pytest.approx(HRNET_UPPER_PROB, abs=3e-3)
    assert _upper_rate(HRNET_UPPER_PROB) == pytest.approx(HRNET_UPPER_PROB, abs=0.03)
    assert _upper_rate(0.5) == pytest.approx(0.5, abs=0.03)


def test_invalid_half_body_options():
    with pytest.raises(ValueError, match="centre"):
        RandomHalfBody(INFO.upper_body, INFO.lower_body, center="middle")
    with pytest.raises(ValueError, match="upper_prob"):
        RandomHalfBody(INFO.upper_body, INFO.lower_body, upper_prob=1.5)


def _half_body(pipeline) -> RandomHalfBody:
    (step,) = [t for t in pipeline.transforms if isinstance(t, RandomHalfBody)]
    return step


def test_pipeline_and_config_reach_the_transform(monkeypatch):
    step = _half_body(build_pipeline("train", metainfo=INFO, half_body_center="mean",
                                     half_body_upper_prob=HRNET_UPPER_PROB))
    assert step.center == "mean" and step.upper_prob == pytest.approx(HRNET_UPPER_PROB)
    assert _half_body(build_pipeline("train", metainfo=INFO)).center == "extent"

    config = copy.deepcopy(DEFAULTS)
    assert config["data"]["half_body_center"] == "extent"
    assert config["data"]["half_body_upper_prob"] == 0.5
    apply_override(config, "data.half_body_center=mean")
    apply_override(config, "data.half_body_upper_prob=0.6915")
    with pytest.raises(ConfigError, match="half_body_center"):
        apply_override(copy.deepcopy(config), "data.half_body_center=middle")
    monkeypatch.setattr(builder, "parse_split", lambda *a, **k: SimpleNamespace(
        samples=[], metainfo=INFO))
    model = SimpleNamespace(input_size=(192, 256), heatmap_size=(48, 64))
    split = builder.build_split(config, model, "train")
    step = _half_body(split.clips.pipeline)
    assert step.center == "mean" and step.upper_prob == pytest.approx(0.6915)
