"""PoseTrack21 kit rules vs poseval's, on the real PoseTrack18-layout fixture files."""
from __future__ import annotations

import copy
import math

import pytest

from glsmamba.evaluation import evaluate_posetrack, load_json_dir
from glsmamba.evaluation.posetrack21 import evaluate_posetrack21, posetrack21_inputs
from glsmamba.evaluation.posetrack_map import POSEVAL_JOINTS


@pytest.fixture()
def gt(fixtures_dir):
    return load_json_dir(fixtures_dir / "posetrack18/annotations/val")


def _as_predictions(gt):
    pred = copy.deepcopy(gt)
    for video in pred.values():
        for ann in video["annotations"]:
            ann["scores"] = [0.9] * 17
    return pred


def test_gt_as_predictions_is_100_under_both(gt):
    pred = _as_predictions(gt)
    assert evaluate_posetrack(gt, pred).total == pytest.approx(100.0)
    assert evaluate_posetrack21(gt, pred).total == pytest.approx(100.0)


def test_joints_at_nonpositive_coordinates_are_not_predictions(gt):
    """poseval scores a joint at x < 0 (a false positive here); the kit ignores it."""
    pred = _as_predictions(gt)
    name = sorted(pred)[0]
    ghost = copy.deepcopy(pred[name]["annotations"][0])
    ghost["keypoints"] = [v for _ in range(17) for v in (-5.0, 100.0, 1.0)]
    ghost["scores"] = [1.0] * 17                          # ranked first
    ghost["track_id"] = 999
    pred[name]["annotations"].append(ghost)
    poseval = evaluate_posetrack(gt, pred)
    kit = evaluate_posetrack21(gt, pred)
    assert poseval.total < 100.0
    assert kit.total == pytest.approx(100.0)
    assert kit.num_pred_joints.sum() < poseval.num_pred_joints.sum()


def test_frames_follow_is_labeled(gt):
    """A frame with people but is_labeled false: counted by poseval, left out by the kit."""
    pred = _as_predictions(gt)
    name = sorted(gt)[0]
    unlabelled = copy.deepcopy(gt)
    unlabelled[name]["images"][0]["is_labeled"] = False
    with pytest.warns(UserWarning):
        poseval = evaluate_posetrack(unlabelled, pred)
    kit = evaluate_posetrack21(unlabelled, pred)
    assert kit.num_frames == poseval.num_frames - 1
    assert kit.num_gt_people < poseval.num_gt_people


def test_joint_without_gt_counts_as_zero_in_total(gt):
    """Predicted but never annotated: poseval NaN (left out of Total), kit 0 (counted)."""
    stripped = copy.deepcopy(gt)
    head_top = 2                                              # PoseTrack18 keypoint index
    for video in stripped.values():
        for ann in video["annotations"]:
            ann["keypoints"][3 * head_top: 3 * head_top + 3] = [0, 0, 0]
    pred = _as_predictions(gt)                                # still predicts head_top
    poseval = evaluate_posetrack(stripped, pred)
    kit = evaluate_posetrack21(stripped, pred)
    joint = POSEVAL_JOINTS.index("head_top")
    assert math.isnan(poseval.ap[joint]) and kit.ap[joint] == 0.0
    assert poseval.total == pytest.approx(100.0)
    assert kit.total == pytest.approx(100.0 * 14 / 15)


def test_predictions_in_empty_labelled_frames_warn(gt):
    name = sorted(gt)[0]
    emptied = copy.deepcopy(gt)
    emptied[name]["annotations"] = []
    pred = _as_predictions(gt)
    _, _, orphans = posetrack21_inputs(emptied, pred)
    assert orphans == len(gt[name]["annotations"]) > 0
    with pytest.warns(UserWarning, match="PoseTrack21 kit fails"):
        evaluate_posetrack21(emptied, pred)


def test_eval_predictions_cli_rules(gt, tmp_path, fixtures_dir, capsys):
    import json

    from glsmamba.cli import main
    pred = _as_predictions(gt)
    name = sorted(pred)[0]
    ghost = copy.deepcopy(pred[name]["annotations"][0])
    ghost.update(keypoints=[v for _ in range(17) for v in (-5.0, 100.0, 1.0)],
                 scores=[1.0] * 17, track_id=999)
    pred[name]["annotations"].append(ghost)
    folder = tmp_path / "pred"
    folder.mkdir()
    for video, data in pred.items():
        (folder / f"{video}.json").write_text(json.dumps(data))
    gt_dir = str(fixtures_dir / "posetrack18/annotations/val")
    totals = {}
    for rules in ("poseval", "posetrack21"):
        assert main(["eval-predictions", "--gt", gt_dir, "--pred", str(folder),
                     "--rules", rules, "--markdown"]) == 0
        row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")][-1]
        totals[rules] = float(row.strip("|").split("|")[-1])
    assert totals["posetrack21"] == 100.0 and totals["poseval"] < 100.0
