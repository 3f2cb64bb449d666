"""Evaluation protocols (gt / dcpose / mmpose): box filtering, scores, OKS-NMS.

Unit cases by hand, then the real PoseTrack18 fixture and its detections file through
`glsmamba eval` with a tiny randomly initialised checkpoint.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from glsmamba.evaluation.protocols import (PROTOCOLS, apply_protocol, get_protocol, oks_iou,
                                           oks_nms, rescore)
from glsmamba.errors import ConfigError

SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                   0.107, 0.107, 0.087, 0.087, 0.089, 0.089])


def _pose(offset=(0.0, 0.0), peaks=0.5, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(100, 200, size=(17, 2)) + np.asarray(offset)
    peaks = np.broadcast_to(np.asarray(peaks, dtype=np.float64), (17,))
    return np.concatenate([xy, peaks[:, None]], axis=1)


def _pred(image_id, keypoints, bbox_score, area=10000.0, index=0):
    return {"image_id": image_id, "keypoints": keypoints, "bbox_score": bbox_score,
            "area": area, "index": index, "score": -1.0}


def test_unknown_protocol():
    with pytest.raises(ConfigError, match="dcpose"):
        get_protocol("coco")


def test_dcpose_threshold_and_products():
    peaks = np.linspace(0.05, 0.9, 17)
    preds = [_pred(1, _pose(peaks=peaks), 0.19999, index=0),    # under 0.2: no person
             _pred(1, _pose(peaks=peaks, seed=1), 0.2, index=1),  # at 0.2: kept (DCPose drops < 0.2)
             _pred(2, _pose(peaks=peaks, seed=2), 0.93, index=2)]
    out = apply_protocol("dcpose", preds)
    assert [p["index"] for p in out] == [1, 2]
    for p, box in zip(out, (0.2, 0.93)):
        np.testing.assert_allclose(p["keypoints"][:, 2], peaks * box)      # joint = peak x box
        np.testing.assert_allclose(p["peak_scores"], peaks)
        assert p["score"] == pytest.approx(box)                              # person = box
    assert preds[1]["keypoints"][0, 2] == pytest.approx(peaks[0])           # inputs untouched


def test_mmpose_rescoring_and_threshold():
    peaks = np.array([0.1, 0.2, 0.3, 0.9] + [0.05] * 13)
    preds = [_pred(1, _pose(peaks=peaks), 0.8, index=0),
             _pred(2, _pose(peaks=0.2), 0.9, index=1),                 # no joint strictly > 0.2
             _pred(3, _pose(peaks=peaks), 0.39, index=2)]               # under 0.4: no person
    out = apply_protocol("mmpose", preds, SIGMAS)
    assert [p["index"] for p in out] == [0, 1]
    assert out[0]["score"] == pytest.approx(0.8 * (0.3 + 0.9) / 2)      # 0.2 itself is not > 0.2
    assert out[1]["score"] == 0.0
    np.testing.assert_allclose(out[0]["keypoints"][:, 2], peaks)        # per-joint peaks kept
    np.testing.assert_allclose(rescore(np.array([0.5]), peaks[None]), [0.5 * 0.6])


def test_gt_protocol_keeps_everything():
    preds = [_pred(1, _pose(peaks=0.7), 0.01, index=0), _pred(1, _pose(peaks=0.7), 1.0, index=1)]
    out = apply_protocol("gt", preds)
    assert len(out) == 2                                                 # no box filter, no NMS
    assert out[1]["score"] == pytest.approx(0.7)
    np.testing.assert_allclose(out[0]["keypoints"][:, 2], 0.7)


def test_oks_formula_by_hand():
    a = _pose()
    b = a.copy()
    b[:, 0] += 3.0                                                       # every joint 3 px right
    area_a, area_b = 4000.0, 6000.0
    expected = np.mean(np.exp(-9.0 / (2 * SIGMAS) ** 2 / ((area_a + area_b) / 2) / 2))
    assert oks_iou(a, b[None], area_a, np.array([area_b]), SIGMAS)[0] == pytest.approx(expected)
    assert oks_iou(a, a[None], area_a, np.array([area_a]), SIGMAS)[0] == pytest.approx(1.0)


def test_near_duplicates_collapse_under_oks_nms():
    base = _pose(peaks=0.8)
    near = base.copy()
    near[:, :2] += 1.0                                                   # 1.4 px apart
    far = _pose(offset=(400, 0), peaks=0.9, seed=3)
    preds = [_pred(1, base, 0.9, index=0), _pred(1, near, 0.7, index=1),
             _pred(1, far, 0.6, index=2), _pred(2, near, 0.5, index=3)]   # other frame: kept
    out = apply_protocol("mmpose", preds, SIGMAS)
    assert [p["index"] for p in out] == [0, 2, 3]
    # the same pair is *not* merged under dcpose (no NMS)
    assert len(apply_protocol("dcpose", preds)) == 4


def test_oks_nms_depends_on_the_area():
    """OKS scales distances by the mean area: the same offset separates small people only."""
    base = _pose()
    shifted = base.copy()
    shifted[:, :2] += 6.0
    scores = np.array([0.9, 0.8])
    big = oks_nms(np.stack([base, shifted]), scores, np.array([4e5, 4e5]), SIGMAS, 0.9)
    small = oks_nms(np.stack([base, shifted]), scores, np.array([4e3, 4e3]), SIGMAS, 0.9)
    assert big == [0] and small == [0, 1]
    # the lower-scored one is the one dropped, whatever the input order
    assert oks_nms(np.stack([shifted, base]), scores[::-1], np.array([4e5, 4e5]), SIGMAS, 0.9) == [1]


def test_oks_nms_threshold_is_exclusive():
    """mmpose keeps OKS <= thr: a pair exactly at the threshold survives."""
    base = _pose()
    shifted = base.copy()
    shifted[:, 0] += 2.0
    areas = np.array([5000.0, 5000.0])
    oks = oks_iou(base, shifted[None], areas[0], areas[1:], SIGMAS)[0]
    keep = oks_nms(np.stack([base, shifted]), np.array([0.9, 0.1]), areas, SIGMAS, thr=oks)
    assert keep == [0, 1]
    keep = oks_nms(np.stack([base, shifted]), np.array([0.9, 0.1]), areas, SIGMAS, thr=oks - 1e-9)
    assert keep == [0]


def test_describe_states_the_flip_setting():
    line = PROTOCOLS["dcpose"].describe(flip_test=True)
    assert "protocol dcpose" in line and "flip test on" in line and "off" in line
    assert "flip test off" in PROTOCOLS["mmpose"].describe(flip_test=False)


# ---------------------------------------------------------------------------- real fixture
FIXTURE_VAL = None


@pytest.fixture()
def fixture_run(tmp_path, fixtures_dir):
    """A tiny random checkpoint and a config on the real PoseTrack18 fixture + detections."""
    global FIXTURE_VAL
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    from glsmamba.config import DEFAULTS, dump_config
    FIXTURE_VAL = fixtures_dir / "posetrack18/annotations/val"
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(name="glsmamba-tiny", random_encoder_ok=True, overrides={
        "input_size": [48, 64], "dim": 16, "d_state": 1, "gsm_depth": 1, "lrm_depth": 1,
        "mlp_ratio": 1.0})
    config["data"].update(type="posetrack18", root=str(fixtures_dir / "posetrack18"),
                          val_ann="annotations/val",
                          val_detections="annotations/test_posetrack18_human_detections.json",
                          val_batch_size=64, workers=0, augment=False, delta=1)
    config["train"].update(val_interval=0, amp="off")
    config["eval"].update(flip_test=False)
    model = build_model(config, log=lambda *_: None)
    save_checkpoint(tmp_path / "ckpt", "last", model, {"config": config})
    path = tmp_path / "run.toml"
    path.write_text(dump_config(config))
    detections = json.loads((fixtures_dir / "posetrack18/annotations/"
                             "test_posetrack18_human_detections.json").read_text())
    return path, tmp_path, detections


def _written(folder):
    people = {}
    for file in sorted(folder.glob("*.json")):
        for ann in json.loads(file.read_text())["annotations"]:
            people.setdefault(ann["image_id"], []).append(ann)
    return people


@pytest.mark.slow
def test_protocols_on_real_fixture(fixture_run, capsys):
    from glsmamba.cli import main
    from glsmamba.engine.builder import Evaluator
    config_path, tmp, detections = fixture_run
    per_image = {}
    for det in detections:
        per_image.setdefault(det["image_id"], []).append(det)
    outputs = {}
    for name in ("gt", "dcpose", "mmpose"):
        out = tmp / f"pred_{name}"
        code = main(["eval", str(config_path), "--checkpoint", str(tmp / "ckpt"), "--no-flip",
                     "--set", f"eval.protocol={name}", "--out", str(out), "--no-progress"])
        printed = capsys.readouterr().out
        assert code == 0
        assert "Total" in printed and f"protocol {name}:" in printed and "flip test off" in printed
        meta = (out / Evaluator.META_FILE).read_text()
        assert f'protocol = "{name}"' in meta
        outputs[name] = _written(out)

    # dcpose: one person per detection with score >= 0.2, its box as given, scores = products
    dcpose = outputs["dcpose"]
    for image_id, dets in per_image.items():
        kept = sorted((d for d in dets if d["score"] >= 0.2), key=lambda d: -d["score"])
        people = sorted(dcpose.get(image_id, []), key=lambda p: -p["score"])
        assert len(people) == len(kept) > 0
        for person, det in zip(people, kept):
            assert person["score"] == pytest.approx(det["score"], rel=1e-6)
            np.testing.assert_allclose(person["bbox"], det["bbox"], rtol=1e-5)   # not clipped
            scores = np.asarray(person["scores"])
            assert (scores <= det["score"] + 1e-6).all()       # peak (<= 1 here) x box score
            np.testing.assert_allclose(np.asarray(person["keypoints"]).reshape(17, 3)[:, 2], scores)
    assert sum(len(v) for v in dcpose.values()) == sum(d["score"] >= 0.2 for d in detections)

    # mmpose: boxes >= 0.4 only, NMS can only remove people, person score = rescored
    mmpose = outputs["mmpose"]
    for image_id, dets in per_image.items():
        kept_boxes = [d for d in dets if d["score"] >= 0.4]
        people = mmpose.get(image_id, [])
        assert 0 < len(people) <= len(kept_boxes)
        box_scores = np.array([d["score"] for d in kept_boxes])
        for person in people:
            match = np.flatnonzero(np.all(np.isclose(np.array([d["bbox"] for d in kept_boxes]),
                                                     person["bbox"], rtol=1e-5), axis=1))
            assert len(match) >= 1
            expected = rescore(box_scores[match[:1]], np.asarray(person["scores"])[None])[0]
            assert person["score"] == pytest.approx(expected, rel=1e-5)

    # gt: one person per annotated GT person, person score = mean of the joints above 0.2
    annotated = sum(1 for f in FIXTURE_VAL.glob("*.json")
                    for ann in json.loads(f.read_text())["annotations"]
                    if any(v > 0 for v in ann["keypoints"][2::3]))
    assert sum(len(v) for v in outputs["gt"].values()) == annotated > 0
    for people in outputs["gt"].values():
        for person in people:
            expected = rescore(np.array([1.0]), np.asarray(person["scores"])[None])[0]
            assert person["score"] == pytest.approx(expected, rel=1e-5)


def test_duplicate_detection_collapses_on_real_fixture(fixture_run, tmp_path, monkeypatch):
    """Two near-identical detected boxes of one real person: mmpose writes one, dcpose two."""
    from glsmamba.engine import api
    from glsmamba.config import load_config
    config_path, tmp, detections = fixture_run
    image_id = 10034180000
    best = max((d for d in detections if d["image_id"] == image_id), key=lambda d: d["score"])
    twin = dict(best, bbox=[v + 0.5 for v in best["bbox"][:2]] + best["bbox"][2:], score=0.9)
    low = dict(best, score=0.1)                                  # under both thresholds
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps([best, twin, low]))
    config = load_config(config_path, [f"data.val_detections={det_file}",
                                       "data.max_val_samples=0"])
    counts = {}
    for name in ("dcpose", "mmpose"):
        _, evaluator = api.evaluate(config, tmp / "ckpt", out_dir=tmp_path / name,
                                    progress=False, protocol=name, log=lambda *_: None)
        assert len(evaluator.raw_predictions) == 2               # the 0.1 box gave no crop
        counts[name] = len(_written(tmp_path / name).get(image_id, []))
        if name == "dcpose":
            raw = evaluator.raw_predictions
            for written in evaluator.predictions:
                source = next(r for r in raw if r["index"] == written["index"])
                np.testing.assert_allclose(written["keypoints"][:, 2],
                                           source["keypoints"][:, 2] * source["bbox_score"])
    assert counts == {"dcpose": 2, "mmpose": 1}
    assert not math.isnan(evaluator.last_result.total)
