"""Optional: our MOT metrics against the official poseval (+ py-motmetrics) on random files.

Skipped unless ``poseval`` (github.com/leonid-pishchulin/poseval, the ``poseval`` package
with ``evaluateTracking``) and ``motmetrics`` import. The random videos hold crossings (two
predicted ids swapped), misses, false positives, frames without predictions, unlabelled
frames, people without joints and ignore regions.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsmamba.evaluation.poseval_format import POSETRACK18_KEYPOINTS
from glsmamba.evaluation.poseval_io import load_json_dir
from glsmamba.evaluation.tracking import evaluate_tracking

evaluate_tracking_ref = pytest.importorskip("poseval.evaluateTracking").evaluateTracking
eval_helpers = pytest.importorskip("poseval.eval_helpers")
pytest.importorskip("motmetrics")

CATEGORIES = [{"name": "person", "keypoints": list(POSETRACK18_KEYPOINTS)}]


def _keypoints(rng, centre, visible_p):
    xy = centre + rng.normal(0, 25, size=(17, 2))
    visible = rng.random(17) < visible_p
    visible[3:5] = False
    return np.concatenate([np.where(visible[:, None], xy, 0), visible[:, None] * 1.0], 1)


def _video(rng, index: int) -> tuple[dict, dict]:
    name = f"{index + 1:06d}_mpii_test"
    people = int(rng.integers(1, 5))
    start = rng.uniform(50, 400, size=(people, 2))
    velocity = rng.normal(0, 15, size=(people, 2))
    ids = rng.permutation(50)[:people]
    images, gt, pred = [], [], []
    frames = int(rng.integers(3, 9))
    swap = int(rng.integers(1, frames)) if people > 1 else frames
    for f in range(frames):
        if f == swap:
            ids[[0, 1]] = ids[[1, 0]]
        image_id = 10000 * (index + 1) + f
        image = {"id": image_id, "file_name": f"images/val/{name}/{f:06d}.jpg"}
        labelled = f < 2 or rng.random() > 0.2
        if labelled and rng.random() < 0.3:
            image["ignore_regions_x"] = [rng.uniform(0, 450, 4).tolist()]
            image["ignore_regions_y"] = [rng.uniform(0, 450, 4).tolist()]
        images.append(image)
        for p in range(people):
            centre = start[p] + velocity[p] * f
            if labelled and rng.random() > 0.1:
                gt.append({"image_id": image_id, "track_id": p,
                           "keypoints": _keypoints(rng, centre, 0.75).ravel().tolist(),
                           "bbox_head": [*(centre - 10).tolist(), 20 + 20 * rng.random(),
                                         20 + 20 * rng.random()]})
            if rng.random() > 0.15:
                pred.append({"image_id": image_id, "track_id": int(ids[p]),
                             "keypoints": _keypoints(rng, centre, 0.85).ravel().tolist(),
                             "scores": rng.random(17).tolist()})
        if rng.random() < 0.1:
            pred = [a for a in pred if a["image_id"] != image_id]
    return ({"images": images, "annotations": gt, "categories": CATEGORIES},
            {"images": images, "annotations": pred, "categories": CATEGORIES})


@pytest.mark.parametrize("seed", range(5))
def test_matches_official_poseval(tmp_path, seed):
    rng = np.random.default_rng(seed)
    for folder in ("gt", "pred", "out"):
        (tmp_path / folder).mkdir()
    for index in range(3):
        gt, pred = _video(rng, index)
        (tmp_path / "gt" / f"v{index}.json").write_text(json.dumps(gt))
        (tmp_path / "pred" / f"v{index}.json").write_text(json.dumps(pred))
    frames_gt, frames_pred = eval_helpers.load_data_dir(
        ["", str(tmp_path / "gt") + "/", str(tmp_path / "pred") + "/"])
    ref = evaluate_tracking_ref(frames_gt, frames_pred, str(tmp_path / "out"), False, False)
    ours = evaluate_tracking(load_json_dir(tmp_path / "gt"),
                             load_json_dir(tmp_path / "pred", prediction=True))
    for key, values in (("mota", ours.mota), ("motp", ours.motp), ("pre", ours.precision),
                        ("rec", ours.recall)):
        np.testing.assert_allclose(values, np.asarray(ref[key]).ravel(), rtol=0, atol=1e-9,
                                   equal_nan=True, err_msg=key)
