"""poseval-exact mAP: hand-computed cases on tiny synthetic GT, a loop reference, fixtures."""
from __future__ import annotations

import copy
import json
import math
import time

import numpy as np
import pytest

from glsmamba.errors import DataError
from glsmamba.evaluation.posetrack_map import (
    POSETRACK18_KEYPOINTS, POSEVAL_JOINTS, evaluate_posetrack, format_table, image_ids_with,
    load_json_dir, points_in_polygon, precision_recall, split_merged, voc_ap)

# head box 30 x 40 -> diagonal 50 -> head size 0.6 * 50 = 30 px; threshold 0.5 -> 15 px
HEAD_W, HEAD_H, HEAD_SIZE = 30.0, 40.0, 30.0
EARS = (POSETRACK18_KEYPOINTS.index("left_ear"), POSETRACK18_KEYPOINTS.index("right_ear"))
J = {name: i for i, name in enumerate(POSEVAL_JOINTS)}          # poseval joint index
K17 = {name: i for i, name in enumerate(POSETRACK18_KEYPOINTS)}  # file keypoint index


def body(x0: float, y0: float) -> np.ndarray:
    """(17, 2) pose with distinct joints, 20 px apart, anchored at (x0, y0)."""
    xy = np.stack([x0 + 20.0 * (np.arange(17) % 4), y0 + 20.0 * (np.arange(17) // 4)], 1)
    xy[list(EARS)] = 0.0
    return xy


def gt_ann(image_id: int, xy: np.ndarray, track_id: int = 0, missing=()) -> dict:
    kps = []
    for k, (x, y) in enumerate(xy):
        if k in EARS or k in missing:
            kps += [0, 0, 0]
        else:
            kps += [float(x), float(y), 1]
    return {"image_id": image_id, "track_id": track_id, "keypoints": kps, "scores": [],
            "bbox_head": [float(xy[2, 0]), float(xy[2, 1]), HEAD_W, HEAD_H]}


def pred_ann(image_id: int, xy: np.ndarray, score, track_id: int = 0) -> dict:
    scores = np.broadcast_to(np.asarray(score, float), (17,)).copy()
    kps = []
    for k, (x, y) in enumerate(xy):
        kps += [0, 0, 0] if k in EARS else [float(x), float(y), float(scores[k])]
    return {"image_id": image_id, "track_id": track_id, "keypoints": kps,
            "scores": [float(s) for s in scores]}


def image(image_id: int, labeled: bool = True, regions=None) -> dict:
    record = {"id": image_id, "file_name": f"images/val/vid/{image_id:06d}.jpg",
              "is_labeled": labeled}
    if regions:
        record["ignore_regions_x"] = [[p[0] for p in poly] for poly in regions]
        record["ignore_regions_y"] = [[p[1] for p in poly] for poly in regions]
    return record


def video(images, annotations) -> dict:
    return {"images": images, "annotations": annotations,
            "categories": [{"name": "person", "keypoints": list(POSETRACK18_KEYPOINTS)}]}


def ap_of(result, joint: str) -> float:
    return float(result.ap[J[joint]])


# --------------------------------------------------------------------------- hand-computed


def test_perfect_predictions_score_100_everywhere():
    gt = {"vid": video([image(1)], [gt_ann(1, body(100, 100))])}
    pred = {"vid": video([image(1)], [pred_ann(1, body(100, 100), 0.9)])}
    result = evaluate_posetrack(gt, pred)
    assert all(v == 100.0 for v in result.columns.values())
    assert result.num_frames == 1 and result.num_gt_people == 1
    assert result.num_gt_joints.tolist() == [1] * 15


@pytest.mark.parametrize("shift, expected_wrist", [(0.5 * HEAD_SIZE, 100.0),
                                                    (0.5 * HEAD_SIZE + 0.01, 50.0)])
def test_threshold_is_inclusive_at_half_head_size(shift, expected_wrist):
    xy = body(100, 100)
    moved = xy.copy()
    moved[K17["left_wrist"], 0] += shift
    gt = {"vid": video([image(1)], [gt_ann(1, xy)])}
    pred = {"vid": video([image(1)], [pred_ann(1, moved, 0.9)])}
    result = evaluate_posetrack(gt, pred)
    # left wrist: one prediction, TP (AP 100) at exactly 0.5, FP (AP 0) beyond
    assert ap_of(result, "left_wrist") == (100.0 if expected_wrist == 100.0 else 0.0)
    assert result.columns["Wrist"] == expected_wrist
    expected_total = 100.0 if expected_wrist == 100.0 else 14 / 15 * 100
    assert result.columns["Total"] == pytest.approx(expected_total, abs=1e-9)


@pytest.mark.parametrize("fp_score, expected_ap, expected_precision", [
    (0.5, 100.0, 50.0),   # TP(0.9) then FP: envelope stays 1 up to recall 1
    (0.95, 50.0, 50.0),   # FP first: precision 1/2 at recall 1 -> AP = 1 * 0.5
])
def test_false_positive_person(fp_score, expected_ap, expected_precision):
    gt = {"vid": video([image(1)], [gt_ann(1, body(100, 100))])}
    pred = {"vid": video([image(1)], [pred_ann(1, body(100, 100), 0.9, track_id=0),
                                      pred_ann(1, body(900, 900), fp_score, track_id=1)])}
    result = evaluate_posetrack(gt, pred)
    assert result.columns["Total"] == pytest.approx(expected_ap)
    assert result.precision_columns["Total"] == pytest.approx(expected_precision)
    assert result.recall_columns["Total"] == pytest.approx(100.0)


def test_missed_person_halves_recall_and_ap():
    gt = {"vid": video([image(1)], [gt_ann(1, body(100, 100), 0),
                                    gt_ann(1, body(500, 100), 1)])}
    pred = {"vid": video([image(1)], [pred_ann(1, body(500, 100), 0.7)])}
    result = evaluate_posetrack(gt, pred)
    assert result.columns["Total"] == pytest.approx(50.0)       # recall 1/2, precision 1
    assert result.recall_columns["Total"] == pytest.approx(50.0)
    assert result.precision_columns["Total"] == pytest.approx(100.0)


def _three_person_nose_case(wrong_nose_score: float):
    """Frame 1: A, B; frame 2: C. B's nose is wrong (B still matched by its other joints)."""
    a, b, c = body(100, 100), body(500, 100), body(100, 100)
    b_pred = b.copy()
    b_pred[K17["nose"]] += 200.0
    scores_b = np.full(17, 0.8)
    scores_b[K17["nose"]] = wrong_nose_score
    gt = {"vid": video([image(1), image(2)], [gt_ann(1, a, 0), gt_ann(1, b, 1), gt_ann(2, c, 0)])}
    pred = {"vid": video([image(1), image(2)], [pred_ann(1, a, 0.9, 0),
                                                pred_ann(1, b_pred, scores_b, 1),
                                                pred_ann(2, c, 0.7, 0)])}
    return evaluate_posetrack(gt, pred)


def test_scores_reorder_the_precision_curve():
    # nose: TP 0.9, FP 0.8, TP 0.7 -> P = 1, 1/2, 2/3 at R = 1/3, 1/3, 2/3
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    result = _three_person_nose_case(wrong_nose_score=0.8)
    assert ap_of(result, "nose") == pytest.approx(100 * 5 / 9)
    # FP scored first: P = 0, 1/2, 2/3 at R = 0, 1/3, 2/3 -> envelope 2/3 -> AP = 4/9
    result = _three_person_nose_case(wrong_nose_score=0.95)
    assert ap_of(result, "nose") == pytest.approx(100 * 4 / 9)
    assert result.columns["Head"] == pytest.approx((100 + 100 + 100 * 4 / 9) / 3)
    assert result.precision[J["nose"]] == pytest.approx(200 / 3)
    # every other joint is perfect
    others = [i for i in range(15) if i != J["nose"]]
    assert np.all(result.ap[others] == 100.0)


def test_joint_in_ignore_region_is_removed_from_gt_and_predictions():
    xy1, xy2 = body(100, 100), body(100, 100)
    ankle = xy1[K17["right_ankle"]]
    region = [(ankle[0] - 5, ankle[1] - 5), (ankle[0] + 5, ankle[1] - 5),
              (ankle[0] + 5, ankle[1] + 5), (ankle[0] - 5, ankle[1] + 5)]
    # an extra predicted person entirely inside a second region is dropped, not an FP
    ghost = np.tile([[1000.0, 1000.0]], (17, 1))
    box = [(990, 990), (1010, 990), (1010, 1010), (990, 1010)]
    gt = {"vid": video([image(1, regions=[region, box]), image(2)],
                       [gt_ann(1, xy1), gt_ann(2, xy2)])}
    pred = {"vid": video([image(1), image(2)],
                         [pred_ann(1, xy1, 0.9, 0), pred_ann(1, ghost, 0.99, 1),
                          pred_ann(2, xy2, 0.9, 0)])}
    result = evaluate_posetrack(gt, pred)
    assert result.num_gt_joints[J["right_ankle"]] == 1
    assert result.num_gt_joints[J["left_ankle"]] == 2
    assert result.num_pred_joints[J["right_ankle"]] == 1
    assert result.num_pred_people == 2
    assert all(v == 100.0 for v in result.columns.values())


def test_prediction_outside_region_against_ignored_gt_is_a_false_positive():
    xy = body(100, 100)
    ankle = xy[K17["right_ankle"]]
    region = [(ankle[0] - 5, ankle[1] - 5), (ankle[0] + 5, ankle[1] - 5),
              (ankle[0] + 5, ankle[1] + 5), (ankle[0] - 5, ankle[1] + 5)]
    moved = xy.copy()
    moved[K17["right_ankle"]] += 8.0                 # still within 15 px, but outside region
    gt = {"vid": video([image(1, regions=[region]), image(2)], [gt_ann(1, xy), gt_ann(2, xy)])}
    pred = {"vid": video([image(1), image(2)], [pred_ann(1, moved, 0.5), pred_ann(2, xy, 0.9)])}
    result = evaluate_posetrack(gt, pred)
    # right ankle: TP (0.9, frame 2) then FP (0.5, frame 1); 1 GT -> AP 100, precision 50
    assert ap_of(result, "right_ankle") == 100.0
    assert result.precision[J["right_ankle"]] == pytest.approx(50.0)


def test_point_on_region_boundary_is_kept():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    points = np.array([[5, 5], [0, 5], [10, 10], [5, 0], [11, 5]], float)
    assert points_in_polygon(points, square).tolist() == [True, False, False, False, False]


def test_point_in_polygon_matches_matplotlib_even_odd_rule():
    # random (often self-intersecting) outlines; random float points never hit an edge.
    # (Checked separately against shapely 2.2 on the fixtures' real ignore regions and
    # integer-grid polygons including vertices and edge midpoints: 193,700 points, 0 diffs.)
    path_module = pytest.importorskip("matplotlib.path")
    rng = np.random.default_rng(3)
    for _ in range(50):
        poly = rng.uniform(0, 100, (rng.integers(3, 12), 2))
        points = rng.uniform(-10, 110, (400, 2))
        expected = path_module.Path(poly).contains_points(points)
        assert np.array_equal(points_in_polygon(points, poly), expected)


def test_unlabelled_frames_are_ignored():
    xy = body(100, 100)
    gt = {"vid": video([image(1), image(2, labeled=False)], [gt_ann(1, xy)])}
    pred = {"vid": video([image(1), image(2)], [pred_ann(1, xy, 0.9, 0),
                                                pred_ann(2, body(700, 700), 0.99, 0)])}
    result = evaluate_posetrack(gt, pred)
    assert result.num_frames == 1
    assert all(v == 100.0 for v in result.columns.values())
    # poseval still checks the track ids of every frame
    pred["vid"]["annotations"].append(pred_ann(2, xy, 0.5, 0))
    with pytest.raises(DataError, match="prediction vid image 2: track id 0 repeated"):
        evaluate_posetrack(gt, pred)


def test_frame_whose_people_are_all_ignored_turns_predictions_into_false_positives():
    # poseval drops empty GT frames before removing ignore regions: this frame stays
    xy = body(100, 100)
    region = [(0, 0), (400, 0), (400, 400), (0, 400)]
    gt = {"vid": video([image(1, regions=[region]), image(2)],
                       [gt_ann(1, xy), gt_ann(2, body(600, 600))])}
    pred = {"vid": video([image(1), image(2)],
                         [pred_ann(1, body(450, 450), 0.9), pred_ann(2, body(600, 600), 0.5)])}
    result = evaluate_posetrack(gt, pred)
    # per joint: FP 0.9 then TP 0.5 with one GT -> AP = 1 * 1/2
    assert result.columns["Total"] == pytest.approx(50.0)


def test_image_ids_restriction():
    xy = body(100, 100)
    gt = {"vid": video([image(1), image(2)], [gt_ann(1, xy), gt_ann(2, xy)])}
    pred = {"vid": video([image(1), image(2)], [pred_ann(1, xy, 0.9),
                                                pred_ann(2, body(700, 700), 0.8)])}
    assert evaluate_posetrack(gt, pred, image_ids={1}).columns["Total"] == 100.0
    assert evaluate_posetrack(gt, pred, image_ids={2}).columns["Total"] == 0.0
    # TP 0.9, FP 0.8, 2 GT -> AP = 1/2
    assert evaluate_posetrack(gt, pred).columns["Total"] == pytest.approx(50.0)
    gt["vid"]["images"][1]["degradations"] = ["blur"]
    assert image_ids_with(gt, "degradations") == {2}
    assert image_ids_with(gt, "degradations", "blur") == {2}
    assert image_ids_with(gt, "degradations", "noise") == set()


def test_missing_scores_fall_back_to_poseval_minimum_score():
    xy = body(100, 100)
    gt = {"vid": video([image(1)], [gt_ann(1, xy, 0), gt_ann(1, body(500, 100), 1)])}
    unscored = pred_ann(1, body(500, 100), 0.1, 1)
    unscored["scores"] = []                     # poseval: [] -> score -9999
    pred = {"vid": video([image(1)], [unscored, pred_ann(1, body(900, 900), 0.01, 0)])}
    result = evaluate_posetrack(gt, pred)
    # FP (0.01) ranks above the TP (-9999): P = 0, 1/2 at R = 0, 1/2 -> AP = 1/2 * 1/2
    assert result.columns["Total"] == pytest.approx(25.0)


def test_fifteen_joint_predictions_in_poseval_order():
    xy = body(100, 100)
    gt = {"vid": video([image(1)], [gt_ann(1, xy)])}
    order = [K17["head_bottom"] if n == "neck" else K17[n] for n in POSEVAL_JOINTS]
    kps = [v for k in order for v in (float(xy[k, 0]), float(xy[k, 1]), 0.9)]
    pred = {"vid": {"images": [image(1)], "annotations": [
        {"image_id": 1, "track_id": 0, "keypoints": kps, "scores": [0.9] * 15}]}}
    assert evaluate_posetrack(gt, pred).columns["Total"] == 100.0
    # the same 15 joints named through categories, in a shuffled order
    names = list(POSEVAL_JOINTS)[::-1]
    kps_rev = [v for n in names for v in (float(xy[order[J[n]], 0]), float(xy[order[J[n]], 1]), 1)]
    pred = {"vid": {"images": [image(1)], "categories": [{"keypoints": names}], "annotations": [
        {"image_id": 1, "track_id": 0, "keypoints": kps_rev, "scores": [0.9] * 15}]}}
    assert evaluate_posetrack(gt, pred).columns["Total"] == 100.0


def test_pck_matching_tie_breaks_to_the_first_gt_and_first_prediction():
    # two identical GT people: the one prediction matches the first; the second GT is missed
    xy = body(100, 100)
    gt = {"vid": video([image(1)], [gt_ann(1, xy, 0), gt_ann(1, xy, 1)])}
    pred = {"vid": video([image(1)], [pred_ann(1, xy, 0.9, 0), pred_ann(1, xy, 0.8, 1)])}
    result = evaluate_posetrack(gt, pred)
    # both predictions pick GT 0 (first max); GT 0 takes prediction 0; prediction 1 is FP
    # per joint: TP 0.9, FP 0.8 with 2 GT -> AP = 1/2, precision 1/2
    assert result.columns["Total"] == pytest.approx(50.0)
    assert result.precision_columns["Total"] == pytest.approx(50.0)


def test_joint_without_any_prediction_scores_zero_and_without_gt_is_nan():
    xy = body(100, 100)
    gt = {"vid": video([image(1)], [gt_ann(1, xy, missing=(K17["nose"],))])}
    no_wrist = pred_ann(1, xy, 0.9)
    no_wrist["keypoints"][3 * K17["left_wrist"]:3 * K17["left_wrist"] + 3] = [0, 0, 0]
    pred = {"vid": video([image(1)], [no_wrist])}
    result = evaluate_posetrack(gt, pred)
    assert ap_of(result, "left_wrist") == 0.0             # nothing predicted -> 0
    assert math.isnan(ap_of(result, "nose"))              # predicted, no GT -> NaN
    assert math.isnan(result.columns["Head"])
    assert result.columns["Total"] == pytest.approx(13 / 14 * 100)   # mean over 14 defined
    assert "nan" in format_table(result)
    assert json.dumps(result.to_dict())                   # NaN written as null


# --------------------------------------------------------------------------- errors


def test_errors_name_the_video_and_record():
    xy = body(100, 100)
    gt = {"vid": video([image(1), image(2)], [gt_ann(1, xy)])}
    with pytest.raises(DataError, match="no prediction for GT video"):
        evaluate_posetrack(gt, {})
    short = {"vid": video([image(1)], [pred_ann(1, xy, 0.9)])}
    with pytest.raises(DataError, match="1 prediction frames but 2 GT frames"):
        evaluate_posetrack(gt, short)
    dup = {"vid": video([image(1), image(2)], [pred_ann(1, xy, 0.9, 3), pred_ann(1, xy, 0.8, 3)])}
    with pytest.raises(DataError, match="track id 3 repeated in the frame"):
        evaluate_posetrack(gt, dup)
    assert evaluate_posetrack(gt, dup, strict=False).num_pred_people == 2
    bad = {"vid": video([image(1), image(2)], [{"image_id": 1, "track_id": 0,
                                               "keypoints": [1, 2, 3]}])}
    with pytest.raises(DataError, match=r"annotations\[0\]"):
        evaluate_posetrack(gt, bad)
    no_head = copy.deepcopy(gt)
    del no_head["vid"]["annotations"][0]["bbox_head"]
    with pytest.raises(DataError, match="bbox_head"):
        evaluate_posetrack(no_head, {"vid": video([image(1), image(2)], [])})
    extra = {"vid": video([image(1), image(2)], [pred_ann(1, xy, 0.9)]), "other": video([], [])}
    with pytest.warns(UserWarning, match="without GT"):
        evaluate_posetrack(gt, extra)


def test_load_json_dir_errors_and_merged_files(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_json_dir(tmp_path / "absent")
    with pytest.raises(DataError, match="no .json files"):
        load_json_dir(tmp_path)
    (tmp_path / "a.json").write_text('{"images": [1, 2,, 3]}')
    with pytest.raises(DataError, match=r"a\.json: malformed JSON at line 1 column 18"):
        load_json_dir(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps(video([image(1)], [gt_ann(1, body(0, 0))])))
    assert list(load_json_dir(str(tmp_path) + "/")) == ["a"]
    merged = {"images": [image(1), {"id": 7, "file_name": "images/val/other/000000.jpg"}],
              "annotations": [gt_ann(1, body(0, 0)), gt_ann(7, body(0, 0))],
              "categories": [{"keypoints": list(POSETRACK18_KEYPOINTS)}]}
    parts = split_merged(merged)
    assert sorted(parts) == ["other", "vid"]
    assert [a["image_id"] for a in parts["other"]["annotations"]] == [7]
    (tmp_path / "merged.json").write_text(json.dumps(merged))
    assert sorted(load_json_dir(tmp_path / "merged.json")) == ["other", "vid"]


# --------------------------------------------------------------------------- reference


def _reference_ap(frames, nj=15, thresh=0.5):
    """Plain loops after poseval's assignGTmulti / computeRPC / VOCap (no ignore regions).

    frames: list of (gt list of (xy (nj,2), has (nj,), head), pred list of (xy, has, score)).
    """
    scores_all = [[] for _ in range(nj)]
    labels_all = [[] for _ in range(nj)]
    n_gt = np.zeros(nj)
    for gts, preds in frames:
        for g in gts:
            n_gt += g[1]
        if not preds:
            continue
        match = np.zeros((len(preds), len(gts), nj), bool)
        pck = np.zeros((len(preds), len(gts)))
        for i, p in enumerate(preds):
            for j, g in enumerate(gts):
                for k in range(nj):
                    if p[1][k] and g[1][k]:
                        dx, dy = p[0][k] - g[0][k]
                        d = math.sqrt(dx ** 2 + dy ** 2)
                        match[i, j, k] = d / g[2] <= thresh
                n = sum(g[1])
                pck[i, j] = match[i, j].sum() / n if n > 0 else match[i, j].sum()
        assigned = {}
        if gts:
            for i in range(len(preds)):
                best = max(range(len(gts)), key=lambda j: (pck[i, j], -j))
                for j in range(len(gts)):
                    if j != best:
                        pck[i, j] = 0
            for j in range(len(gts)):
                best = max(range(len(preds)), key=lambda i: (pck[i, j], -i))
                if pck[best, j] > 0:
                    assigned[best] = j
        for i, p in enumerate(preds):
            for k in range(nj):
                if p[1][k]:
                    scores_all[k].append(p[2][k])
                    labels_all[k].append(match[i, assigned[i], k] if i in assigned else False)
    aps = []
    for k in range(nj):
        if not scores_all[k]:
            aps.append(0.0)
            continue
        order = np.array(scores_all[k]).argsort()[::-1]
        tp, prec, rec = 0, [], []
        for rank, idx in enumerate(order):
            tp += labels_all[k][idx]
            prec.append(tp / (rank + 1))
            rec.append(tp / n_gt[k])
        mpre = [0.0] + prec + [0.0]
        mrec = [0.0] + rec + [1.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        aps.append(100 * sum((mrec[i] - mrec[i - 1]) * mpre[i]
                             for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))
    return np.array(aps)


def test_vectorised_metric_equals_plain_loop_reference():
    rng = np.random.default_rng(0)
    order = [K17["head_bottom"] if n == "neck" else K17[n] for n in POSEVAL_JOINTS]
    images, gt_anns, pred_anns, frames = [], [], [], []
    for image_id in range(1, 41):
        images.append(image(image_id))
        gts, preds = [], []
        for t in range(rng.integers(1, 4)):
            xy = np.round(rng.uniform(0, 200, (17, 2)) / 10) * 10   # coarse grid: PCK ties
            missing = tuple(k for k in range(17) if rng.random() < 0.2)
            ann = gt_ann(image_id, xy, t, missing)
            ann["bbox_head"] = [0, 0, 30.0, 40.0]
            gt_anns.append(ann)
            has = np.array([k not in missing for k in order], bool)
            gts.append((xy[order], has, HEAD_SIZE))
        for t in range(rng.integers(0, 5)):
            base = gts[rng.integers(len(gts))][0]
            xy17 = np.zeros((17, 2))
            xy17[order] = base + rng.choice([0.0, 10.0, 20.0], size=(15, 2))
            score = np.round(rng.uniform(0, 1, 17), 1)              # ties in scores too
            pred_anns.append(pred_ann(image_id, xy17, score, t))
            preds.append((xy17[order], np.ones(15, bool), score[order]))
        frames.append((gts, preds))
    gt = {"vid": video(images, gt_anns)}
    pred = {"vid": video(images, pred_anns)}
    result = evaluate_posetrack(gt, pred)
    np.testing.assert_allclose(result.ap, _reference_ap(frames), rtol=0, atol=1e-9)


def _to_annolist(data: dict, order: list[int]) -> dict:
    """PoseTrack17 form of a synthetic video (poseval's convert.py to_old layout)."""
    entries = []
    for im in data["images"]:
        rects = []
        for ann in data["annotations"]:
            if ann["image_id"] != im["id"]:
                continue
            kps = np.asarray(ann["keypoints"], float).reshape(17, 3)
            scores = ann.get("scores") or []
            points = [{"id": [j], "x": [kps[k, 0]], "y": [kps[k, 1]]}
                      | ({"score": [scores[k]]} if scores else {})
                      for j, k in enumerate(order) if not (kps[k] == 0).all()]
            rect = {"track_id": [ann["track_id"]], "annopoints": [{"point": points}]}
            if "bbox_head" in ann:
                x, y, w, h = ann["bbox_head"]
                rect.update(x1=[x], y1=[y], x2=[x + w], y2=[y + h])
            rects.append(rect)
        entries.append({"image": [{"name": im["file_name"]}], "annorect": rects})
    return {"annolist": entries}


def test_posetrack17_annolist_files_score_like_posetrack18():
    order = [K17["head_bottom"] if n == "neck" else K17[n] for n in POSEVAL_JOINTS]
    result18 = _three_person_nose_case(0.95)
    a, b = body(100, 100), body(500, 100)
    b_pred = b.copy()
    b_pred[K17["nose"]] += 200.0
    scores_b = np.full(17, 0.8)
    scores_b[K17["nose"]] = 0.95
    gt = video([image(1), image(2)], [gt_ann(1, a, 0), gt_ann(1, b, 1), gt_ann(2, a, 0)])
    pred = video([image(1), image(2)], [pred_ann(1, a, 0.9, 0), pred_ann(1, b_pred, scores_b, 1),
                                        pred_ann(2, a, 0.7, 0)])
    both = evaluate_posetrack({"v": _to_annolist(gt, order)}, {"v": _to_annolist(pred, order)})
    mixed = evaluate_posetrack({"v": gt}, {"v": _to_annolist(pred, order)})
    np.testing.assert_array_equal(both.ap, result18.ap)
    np.testing.assert_array_equal(mixed.ap, result18.ap)


def test_voc_ap_matches_hand_values():
    precision, recall, _ = precision_recall(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 3)
    assert precision.tolist() == [1.0, 0.5, pytest.approx(2 / 3)]
    assert voc_ap(recall, precision) == pytest.approx(5 / 9)


# --------------------------------------------------------------------------- fixtures, scale


def _gt_as_predictions(gt: dict, shift_head_sizes: float = 0.0) -> dict:
    """GT keypoints with score 1, optionally all moved down by ``shift`` head sizes."""
    pred = copy.deepcopy(gt)
    for data in pred.values():
        for ann in data["annotations"]:
            kps = np.asarray(ann["keypoints"], float).reshape(-1, 3)
            visible = ~((kps[:, 0] == 0) & (kps[:, 1] == 0) & (kps[:, 2] == 0))
            if shift_head_sizes:
                w, h = ann["bbox_head"][2:]
                kps[visible, 1] += shift_head_sizes * 0.6 * math.hypot(w, h)
            kps[visible, 2] = 1.0
            ann["keypoints"] = kps.reshape(-1).tolist()
            ann["scores"] = kps[:, 2].tolist()
    return pred


def test_real_fixture_gt_as_predictions(fixtures_dir):
    gt = load_json_dir(fixtures_dir / "posetrack18" / "annotations" / "val")
    assert len(gt) == 3
    result = evaluate_posetrack(gt, _gt_as_predictions(gt))
    assert all(v == 100.0 for v in result.columns.values())
    assert result.num_frames == 3 and result.num_gt_people == 14
    moved_pred = _gt_as_predictions(gt, 0.6)
    # precondition: no moved joint lies within 0.5 head sizes of a same-type GT joint of
    # any person of its frame (moving sideways would land some on neighbours' joints)
    for name in gt:
        for g in gt[name]["annotations"]:
            head = 0.6 * math.hypot(*g["bbox_head"][2:])
            g_kps = np.asarray(g["keypoints"], float).reshape(-1, 3)
            for p in moved_pred[name]["annotations"]:
                if p["image_id"] == g["image_id"]:
                    p_kps = np.asarray(p["keypoints"], float).reshape(-1, 3)
                    both = (g_kps[:, 2] > 0) & (p_kps[:, 2] > 0)
                    dist = np.linalg.norm(p_kps[both, :2] - g_kps[both, :2], axis=1)
                    assert np.all(dist / head > 0.5)
    moved = evaluate_posetrack(gt, moved_pred)
    assert all(v == 0.0 for v in moved.columns.values())
    annotations = fixtures_dir / "posetrack18" / "annotations"
    merged = load_json_dir(annotations / "test_posetrack18_val.json")
    assert sorted(merged) == sorted(gt)
    assert evaluate_posetrack(merged, _gt_as_predictions(gt)).columns["Total"] == 100.0


def _synthetic_benchmark(num_videos: int, frames: int, people: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    for v in range(num_videos):
        images, gt_anns, pred_anns = [], [], []
        for f in range(frames):
            image_id = v * 1000 + f
            images.append({"id": image_id, "file_name": f"images/val/v{v}/{f:06d}.jpg",
                           "ignore_regions_x": [[0, 50, 50, 0]],
                           "ignore_regions_y": [[0, 0, 50, 50]]})
            for p in range(people):
                xy = rng.uniform(0, 1000, (17, 2))
                gt_anns.append(gt_ann(image_id, xy, p))
                noisy = xy + rng.normal(0, 8, xy.shape)
                pred_anns.append(pred_ann(image_id, noisy, rng.uniform(0, 1, 17), p))
        gt[f"v{v}"] = video(images, gt_anns)
        pred[f"v{v}"] = video(images, pred_anns)
    return gt, pred


def test_scale_is_seconds_not_minutes():
    gt, pred = _synthetic_benchmark(num_videos=10, frames=30, people=30)
    start = time.perf_counter()
    result = evaluate_posetrack(gt, pred)
    elapsed = time.perf_counter() - start
    assert result.num_gt_people == 10 * 30 * 30
    assert 0 < result.columns["Total"] < 100
    assert elapsed < 15, f"{elapsed:.1f} s for 9k GT + 9k predicted people"
