"""Sub-JHMDB PCK@alpha (mmpose's JhmdbPCKAccuracy convention), hand-computed cases."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from glsmamba.evaluation.pck import (JHMDB_GROUPS, JHMDB_JOINTS, box_sizes, format_pck_table,
                                     mean_over_splits, pck_accuracy)

J = {name: i for i, name in enumerate(JHMDB_JOINTS)}


def _case(num: int = 2):
    gt = np.stack([np.stack([np.arange(15) * 5.0, np.arange(15) * 3.0], 1)] * num)  # (N, 15, 2)
    boxes = np.array([[0, 0, 80, 100]] * num, float)     # max(w, h) = 100 -> 0.2 -> 20 px
    visible = np.ones((num, 15))
    return gt, boxes, visible


def test_perfect_is_100():
    gt, boxes, visible = _case()
    result = pck_accuracy(gt.copy(), gt, visible, boxes)
    assert result.mean == 100.0
    assert all(v == 100.0 for v in result.columns.values())
    assert result.counts.tolist() == [2] * 15


def test_exactly_alpha_is_wrong_strictly_less_like_mmpose():
    gt, boxes, visible = _case()
    pred = gt.copy()
    pred[0, J["left_wrist"], 0] += 20.0          # exactly 0.2 x 100: not < 0.2 -> wrong
    pred[1, J["left_wrist"], 0] += 19.99         # inside
    result = pck_accuracy(pred, gt, visible, boxes, alpha=0.2)
    assert result.per_joint[J["left_wrist"]] == 50.0
    assert result.groups["Wrist"] == 75.0        # (right 100 + left 50) / 2
    assert result.mean == pytest.approx((14 * 100 + 50) / 15)


def test_groups_follow_mmpose_head_is_the_head_joint_only():
    gt, boxes, visible = _case(num=4)
    pred = gt.copy()
    pred[:, J["neck"]] += 100.0                  # neck and belly belong to no group
    pred[:, J["belly"]] += 100.0
    pred[:2, J["right_ankle"]] += 100.0
    result = pck_accuracy(pred, gt, visible, boxes)
    assert result.groups["Head"] == 100.0
    assert result.groups["Ankle"] == 75.0
    assert result.mean == pytest.approx((12 * 100 + 50) / 15)
    assert list(result.columns) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee",
                                    "Ankle", "Mean"]
    assert set(JHMDB_GROUPS["Shoulder"]) == {"right_shoulder", "left_shoulder"}


def test_invisible_joints_and_degenerate_boxes_are_skipped():
    gt, boxes, visible = _case(num=3)
    pred = gt.copy()
    pred[0, J["head"]] += 500.0
    visible[0, J["head"]] = 0                    # not counted at all
    pred[1] += 500.0
    boxes[1] = [10, 10, 0, 0]                    # zero size: sample skipped (mmpose)
    visible[:, J["belly"]] = 0                   # no visible belly anywhere -> NaN, not in Mean
    result = pck_accuracy(pred, gt, visible, boxes)
    assert result.counts[J["head"]] == 1 and result.counts[J["neck"]] == 2
    assert math.isnan(result.per_joint[J["belly"]])
    assert result.mean == 100.0                  # mean over the 14 defined joints


def test_xyxy_boxes_and_shape_errors():
    assert box_sizes(np.array([[10, 10, 50, 110]]), "xyxy").tolist() == [100.0]
    assert box_sizes(np.array([[10, 10, 50, 110]]), "xywh").tolist() == [110.0]
    gt, boxes, visible = _case()
    with pytest.raises(ValueError, match="box_format"):
        pck_accuracy(gt, gt, visible, boxes, box_format="cxcywh")
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        pck_accuracy(gt[:, :, :1], gt[:, :, :1], visible, boxes)
    with pytest.raises(ValueError, match="one normaliser per sample"):
        pck_accuracy(gt, gt, visible, boxes[:1])
    with pytest.raises(ValueError, match="unknown joint"):
        pck_accuracy(gt, gt, visible, boxes, groups={"Tail": ("tail",)})


def test_custom_joints_and_alpha():
    gt = np.zeros((1, 2, 2))
    pred = np.array([[[0.0, 4.0], [0.0, 6.0]]])
    result = pck_accuracy(pred, gt, np.ones((1, 2)), np.array([[0, 0, 10, 50]]), alpha=0.1,
                          joint_names=("a", "b"), groups={"A": ("a",), "AB": ("a", "b")})
    assert result.per_joint.tolist() == [100.0, 0.0]      # 4/50 < 0.1, 6/50 >= 0.1
    assert result.groups == {"A": 100.0, "AB": 50.0}


def test_mean_over_splits():
    gt, boxes, visible = _case()
    perfect = pck_accuracy(gt, gt, visible, boxes)
    pred = gt.copy()
    pred[:, J["right_knee"]] += 50.0
    worse = pck_accuracy(pred, gt, visible, boxes)
    mean = mean_over_splits([perfect, worse])
    assert mean.groups["Knee"] == pytest.approx((100 + 50) / 2)
    assert mean.mean == pytest.approx((100 + 14 / 15 * 100) / 2)
    assert mean.counts.tolist() == [4] * 15
    with pytest.raises(ValueError):
        mean_over_splits([])
    table = format_pck_table(mean, markdown=True)
    assert "| Head |" in table and "Mean" in table
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "PCK@0.2" in format_pck_table(mean)
