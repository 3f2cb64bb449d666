"""poseval's pose-tracking MOT metrics on hand-built cases whose numbers are worked out by hand.

Poses: 15 annotated joints, joint k at (x0 + 10 k, 50 + 5 k); head box 30 x 40 so the head
size is 0.6 * 50 = 30 px and a joint matches within 15 px. People 400 px apart never match
each other. Predictions are offset by (3, 4) px = 5 px = 1/6 head size unless said otherwise.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from glsmamba.cli import main
from glsmamba.errors import DataError
from glsmamba.evaluation.poseval_format import POSETRACK18_KEYPOINTS
from glsmamba.evaluation.tracking import MotAccumulator, evaluate_tracking, optimal_pairs

D = 5 / 30          # distance of an offset prediction, in head sizes
A, B, C = 100.0, 500.0, 900.0


def _pose(x0: float, dx: float = 0.0, dy: float = 0.0) -> list[float]:
    kps = []
    for k in range(17):
        kps += [0, 0, 0] if k in (3, 4) else [x0 + 10.0 * k + dx, 50.0 + 5.0 * k + dy, 1]
    return kps


def _video(frames: list[list[tuple]], gt: bool, regions: dict | None = None) -> dict:
    """frames: per frame a list of (x0, track_id); GT people get a head box, predictions
    the (3, 4) px offset. ``regions``: frame -> list of polygons [(x, y), ...]."""
    images, annotations = [], []
    for f, people in enumerate(frames):
        image = {"id": f + 1, "file_name": f"images/val/000001_mpii_test/{f:06d}.jpg"}
        for poly in (regions or {}).get(f, []):
            image.setdefault("ignore_regions_x", []).append([p[0] for p in poly])
            image.setdefault("ignore_regions_y", []).append([p[1] for p in poly])
        images.append(image)
        for x0, track in people:
            ann = {"image_id": f + 1, "keypoints": _pose(x0) if gt else _pose(x0, 3, 4)}
            if track is not None:
                ann["track_id"] = track
            if gt:
                ann["bbox_head"] = [x0, 30.0, 30.0, 40.0]
            else:
                ann["scores"] = [0.9] * 17
            annotations.append(ann)
    return {"images": images, "annotations": annotations,
            "categories": [{"name": "person", "keypoints": list(POSETRACK18_KEYPOINTS)}]}


def _score(gt_frames, pred_frames, regions=None, **kwargs):
    return evaluate_tracking({"v": _video(gt_frames, True, regions)},
                             {"v": _video(pred_frames, False)}, **kwargs)


def _all_joints(values: np.ndarray, expected: float) -> None:
    np.testing.assert_allclose(values, np.full(16, expected), rtol=0, atol=1e-9)


def test_perfect_tracks_and_the_last_frame_is_dropped():
    gt = [[(A, 1), (B, 2)]] * 3
    pred = [[(A, 7), (B, 8)]] * 2 + [[]]          # last frame empty: poseval never scores it
    result = _score(gt, pred)
    _all_joints(result.mota, 100.0)
    _all_joints(result.precision, 100.0)
    _all_joints(result.recall, 100.0)
    # per joint and frame: 2 RAW pairs + 2 matches at D each; 4 detections
    _all_joints(result.motp, 100 * (1 - 8 * D / 4))
    assert result.counts["num_objects"].tolist() == [4] * 15 and result.num_frames == 2


def test_identity_switch():
    gt = [[(A, 1), (B, 2)]] * 4
    pred = [[(A, 1), (B, 2)], [(A, 2), (B, 1)], [(A, 2), (B, 1)], []]
    result = _score(gt, pred)
    assert result.counts["num_switches"].tolist() == [2] * 15 and result.num_switches == 30
    _all_joints(result.mota, 100 * (1 - 2 / 6))
    # frame 0: 2 RAW + 2 MATCH; frame 1: 2 RAW + 2 SWITCH + 2 TRANSFER; frame 2: 2 RAW + 2 MATCH
    _all_joints(result.motp, 100 * (1 - 14 * D / 6))


def test_false_positive_and_miss():
    gt = [[(A, 1)], [(A, 1), (B, 2)], [(A, 1)]]
    pred = [[(A, 1), (C, 5)], [(A, 1)], [(A, 1)]]
    result = _score(gt, pred)
    assert result.counts["num_false_positives"].tolist() == [1] * 15
    assert result.counts["num_misses"].tolist() == [1] * 15
    _all_joints(result.mota, 100 * (1 - 2 / 3))
    _all_joints(result.precision, 100 * 2 / 3)
    _all_joints(result.recall, 100 * 2 / 3)


def test_unlabelled_frame_and_frame_without_predictions():
    # frame 1 has no GT record: not a frame for poseval (its prediction is not scored);
    # frame 2 has two GT people but no prediction: ONE miss and ONE false positive per joint
    gt = [[(A, 1)], [], [(A, 1), (B, 2)], [(A, 1)]]
    pred = [[(A, 1)], [(C, 9)], [], [(A, 1)]]
    result = _score(gt, pred)
    assert result.num_frames == 2
    for key, value in (("num_objects", 2), ("num_matches", 1), ("num_misses", 1),
                       ("num_false_positives", 1)):
        assert result.counts[key].tolist() == [value] * 15, key
    _all_joints(result.mota, 0.0)
    _all_joints(result.precision, 50.0)


def test_ignore_region_removes_people_on_both_sides():
    box = [(B - 50, 0), (B + 250, 0), (B + 250, 200), (B - 50, 200)]    # holds every joint of B
    gt = [[(A, 1), (B, 2)]] * 2
    pred = [[(A, 1), (B + 3, 3)]] * 2    # B's prediction would be a false positive-free match
    pred_fp = [[(A, 1)]] * 2             # without the region B is missed
    assert _score(gt, pred_fp).mota[15] == pytest.approx(50.0)
    inside = _score(gt, pred_fp, regions={0: [box]})
    _all_joints(inside.mota, 100.0)
    assert inside.counts["num_objects"].tolist() == [1] * 15
    # a prediction inside the region is dropped too (no false positive)
    only_fp = _score([[(A, 1)]] * 2, [[(A, 1), (B, 4)]] * 2, regions={0: [box]})
    _all_joints(only_fp.precision, 100.0)
    assert _score(gt, pred, regions={0: [box]}).counts["num_objects"].sum() == 15


def test_missing_track_id_strict_and_lenient():
    gt = [[(A, 1)]] * 3
    pred = [[(A, None)]] * 3
    with pytest.raises(DataError, match="track_id"):
        _score(gt, pred)
    result = _score(gt, pred, strict=False)     # each person-frame is its own track
    assert result.counts["num_switches"].tolist() == [1] * 15
    _all_joints(result.mota, 50.0)


def test_track_id_rules_of_poseval():
    gt = [[(A, 1)]] * 2
    with pytest.raises(DataError, match="10000"):
        _score(gt, [[(A, 10000)]] * 2)
    with pytest.raises(DataError, match="repeated"):
        _score(gt, [[(A, 3), (B, 3)]] * 2)
    with pytest.raises(DataError, match="not a number"):
        _score(gt, [[(A, "x")]] * 2)
    # the same id given as 3 and 3.0 is one track (motmetrics compares values)
    ok = _score(gt * 2, [[(A, 3)], [(A, 3.0)], [(A, 3)], [(A, 3)]])
    assert ok.num_switches == 0


def test_nan_where_poseval_has_nan_and_json_layout(tmp_path):
    gt_video = _video([[(A, 1)]] * 3, True)
    for ann in gt_video["annotations"]:          # right ankle (COCO index 16) never annotated
        ann["keypoints"][48:51] = [0, 0, 0]
    result = evaluate_tracking({"v": gt_video}, {"v": _video([[(A, 1)]] * 3, False)})
    assert math.isnan(result.mota[0]) and math.isnan(result.recall[0])
    assert result.precision[0] == 0.0 and result.motp[0] == 0.0      # no detection: 0.0
    assert result.mota[15] == pytest.approx(100.0)                  # NaN left out of the mean
    layout = result.to_poseval_json()
    assert list(layout) == ["mota", "motp", "pre", "rec", "names"]
    assert len(layout["mota"]) == 16 and layout["names"]["15"] == "total"
    assert layout["names"]["0"] == "right_ankle"


def test_cli_tracking_table_and_json(tmp_path, capsys):
    for folder, frames, gt in (("gt", [[(A, 1), (B, 2)]] * 4, True),
                               ("pred", [[(A, 1), (B, 2)], [(A, 2), (B, 1)]] * 2, False)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "v.json").write_text(json.dumps(_video(frames, gt)))
    out = tmp_path / "mot.json"
    assert main(["eval-predictions", "--gt", str(tmp_path / "gt"), "--pred",
                 str(tmp_path / "pred"), "--tracking", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Average Precision (AP) metric:" in text
    assert "& MOTA & MOTA & MOTA & MOTA & MOTA & MOTA & MOTA & MOTA & MOTP & Prec & Rec  \\\\" \
        in text
    saved = json.loads(out.read_text())
    # frames 0-2 scored: switches at frames 1 and 2 -> 4 switches over 6 objects per joint
    np.testing.assert_allclose(saved["mota"], [100 * (1 - 4 / 6)] * 16, atol=1e-9)
    assert main(["eval-predictions", "--gt", str(tmp_path / "gt"), "--pred",
                 str(tmp_path / "pred"), "--tracking", "--frames-with", "x"]) == 2


def test_accumulator_keeps_previous_pairs_before_the_optimal_assignment():
    acc = MotAccumulator()
    acc.update([1, 2], [10, 20], np.array([[0.1, np.nan], [np.nan, 0.1]]))
    # the optimal assignment would swap; object 1 keeps hypothesis 10 (still within reach)
    acc.update([1, 2], [10, 20], np.array([[0.4, 0.0], [0.0, np.nan]]))
    assert acc.counts["num_switches"] == 0 and acc.counts["num_matches"] == 3
    assert acc.counts["num_misses"] == 1 and acc.counts["num_false_positives"] == 1


def test_optimal_pairs_prefers_more_pairs_then_lower_cost():
    costs = np.array([[0.1, 0.2], [0.05, np.nan]])
    assert sorted(optimal_pairs(costs)) == [(0, 1), (1, 0)]
    assert optimal_pairs(np.full((2, 2), np.nan)) == []
