"""Metrics as objects: each registered dataset names one; the objects give the numbers of
the functions they wrap (poseval mAP, the PoseTrack21 kit, PCK)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from glsmamba.data.datasets import get_dataset, list_datasets
from glsmamba.data.metainfo import load_metainfo
from glsmamba.errors import ConfigError
from glsmamba.evaluation import load_json_dir
from glsmamba.evaluation.metrics import (PoseTrack21MAP, PoseTrackMAP, SubJhmdbPCK, file_rules,
                                         get_metric, list_metrics)
from glsmamba.evaluation.pck import pck_accuracy
from glsmamba.evaluation.posetrack21 import evaluate_posetrack21
from glsmamba.evaluation.posetrack_map import evaluate_posetrack


def test_every_dataset_names_a_registered_metric_and_its_metainfo():
    assert {"posetrack_map", "posetrack21_map", "pck"} <= set(list_metrics())
    for name in list_datasets():
        parser = get_dataset(name)
        assert parser.dataset_type == name
        assert get_metric(parser.metric).key                     # resolvable, has a headline
        assert load_metainfo(parser.default_metainfo).num_joints > 0
    assert get_dataset("posetrack21").metric == "posetrack21_map"
    assert get_dataset("jhmdb_mat").metric == "pck" and not get_dataset("jhmdb").detected_boxes
    with pytest.raises(ConfigError, match="unknown metric"):
        get_metric("nope")
    assert {name: cls.rules_label for name, cls in file_rules().items()} == {
        "poseval": "poseval", "posetrack21": "PoseTrack21 kit"}


def _noisy_predictions(gt: dict, seed: int = 0) -> dict:
    """GT people moved by a few pixels, with scores: a prediction poseval accepts."""
    rng = np.random.default_rng(seed)
    pred = copy.deepcopy(gt)
    for video in pred.values():
        for ann in video.get("annotations") or []:
            points = np.asarray(ann["keypoints"], float).reshape(-1, 3)
            points[:, :2] += rng.normal(0, 20, (len(points), 2)) * (points[:, 2:] > 0)
            ann["keypoints"] = points.reshape(-1).tolist()
            ann["scores"] = rng.uniform(0.3, 1, len(points)).tolist()
            ann.setdefault("track_id", 0)
    return pred


def test_posetrack_metrics_give_the_numbers_of_their_rules(fixtures_dir):
    gt = load_json_dir(fixtures_dir / "posetrack18" / "annotations" / "val")
    pred = _noisy_predictions(gt)
    result = PoseTrackMAP().evaluate(gt, pred)
    assert result.total == pytest.approx(evaluate_posetrack(gt, pred).total)
    assert 0 < result.total < 100
    kit = PoseTrack21MAP().evaluate(gt, pred)
    np.testing.assert_allclose(kit.ap, evaluate_posetrack21(gt, pred).ap)
    metric = PoseTrackMAP()
    summary = metric.summary(result)
    assert list(summary)[0] == "mAP" and summary["Total"] == pytest.approx(result.total)
    assert "Total" in metric.format_table(result, title="t")
    assert metric.describe() == "AP rules poseval" and metric.uses_protocol


class _Parsed:
    """What a metric reads of a parsed dataset: samples and metainfo."""

    def __init__(self, samples, metainfo):
        self.samples, self.metainfo = samples, metainfo


def test_pck_metric_scores_box_predictions_against_their_samples():
    from glsmamba.data.sample import PoseSample
    info = load_metainfo("jhmdb")
    rng = np.random.default_rng(1)
    samples, predictions = [], []
    for index in range(6):
        joints = rng.uniform(10, 90, (info.num_joints, 2)).astype(np.float32)
        samples.append(PoseSample(image_path="", frame_paths=[], keypoints=joints,
                                  bbox_xywh=np.array([0, 0, 100, 80], np.float32),
                                  visible=np.ones(info.num_joints, np.float32)))
        guess = joints + rng.normal(0, 15, joints.shape)
        predictions.append({"index": index, "keypoints": np.c_[guess, np.ones(len(guess))]})
    metric = SubJhmdbPCK()
    result = metric.score(predictions, _Parsed(samples, info))
    expected = pck_accuracy(np.stack([p["keypoints"][:, :2] for p in predictions]),
                            np.stack([s.keypoints for s in samples]),
                            np.stack([s.visible for s in samples]),
                            np.stack([s.bbox_xywh for s in samples]),
                            joint_names=info.joint_names)
    assert result.mean == pytest.approx(expected.mean) and 0 < result.mean < 100
    assert list(metric.summary(result))[0] == "PCK" and not metric.uses_protocol
    assert "PCK@0.2" in metric.describe() and "PCK" in metric.format_table(result)
