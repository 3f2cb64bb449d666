"""Prediction writer: one poseval JSON per GT video, all frames, unique track ids."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsmamba.errors import DataError
from glsmamba.evaluation.posetrack_map import evaluate_posetrack, load_json_dir
from glsmamba.evaluation.writer import MARKER, assign_track_ids, write_posetrack_predictions


def _videos():
    return {
        "v1": {"images": [{"id": 10, "file_name": "images/val/v1/000000.jpg"},
                          {"id": 11, "file_name": "images/val/v1/000001.jpg"}]},
        "v2": {"images": [{"id": 20, "file_name": "images/val/v2/000000.jpg"}]},
    }


def _pose(offset: float = 0.0) -> np.ndarray:
    kps = np.zeros((17, 3))
    kps[:, 0] = np.arange(17) * 3 + offset
    kps[:, 1] = np.arange(17) * 2 + offset
    kps[:, 2] = 0.5
    return kps


def test_assign_track_ids_keeps_valid_and_fills_the_rest():
    assert assign_track_ids([None, None]) == [0, 1]
    assert assign_track_ids([3, 3, None]) == [3, 0, 1]
    assert assign_track_ids([0, 20000, -1, 2]) == [0, 1, 3, 2]
    assert assign_track_ids([np.int64(5), 1.5, True]) == [5, 0, 1]


def test_writes_every_frame_and_unique_track_ids(tmp_path):
    preds = [{"image_id": 10, "keypoints": _pose(), "track_id": 4, "score": 0.9,
              "bbox": [1, 2, 3, 4]},
             {"image_id": np.int64(10), "keypoints": _pose(50), "track_id": 4},
             {"image_id": 20, "keypoints": _pose().tolist()}]
    paths = write_posetrack_predictions(tmp_path / "out", _videos(), preds)
    assert sorted(p.name for p in paths) == ["v1.json", "v2.json"]
    v1 = json.loads((tmp_path / "out" / "v1.json").read_text())
    assert [im["id"] for im in v1["images"]] == [10, 11]          # frame 11 has no people
    assert [a["track_id"] for a in v1["annotations"]] == [4, 0]
    first = v1["annotations"][0]
    assert len(first["keypoints"]) == 51 and first["scores"] == [0.5] * 17
    assert first["keypoints"][:3] == [0.0, 0.0, 0.5]
    assert first["bbox"] == [1.0, 2.0, 3.0, 4.0] and first["score"] == 0.9
    assert len({a["id"] for a in v1["annotations"]}) == 2
    assert v1["categories"][0]["keypoints"][1] == "head_bottom"
    assert not [p for p in (tmp_path / "out").iterdir()                 # no temp files
                if p.suffix != ".json" and p.name != MARKER]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "out"
    write_posetrack_predictions(out, _videos(), [])
    with pytest.raises(DataError, match="not empty; refusing to overwrite"):
        write_posetrack_predictions(out, _videos(), [])
    write_posetrack_predictions(out, _videos(), [{"image_id": 11, "keypoints": _pose()}],
                                overwrite=True)
    assert len(json.loads((out / "v1.json").read_text())["annotations"]) == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        write_posetrack_predictions(tmp_path / "file", _videos(), [])


@pytest.mark.parametrize("pred, message", [
    ({"image_id": 99, "keypoints": _pose()}, "image id 99 is in no GT video"),
    ({"keypoints": _pose()}, "without 'image_id'"),
    ({"image_id": 10, "keypoints": np.zeros((15, 3))}, r"must be \(17, 3\)"),
    ({"image_id": 10, "keypoints": np.full((17, 3), np.nan)}, "NaN"),
])
def test_bad_predictions_name_the_record(tmp_path, pred, message):
    with pytest.raises(DataError, match=r"predictions\[1\]"):
        write_posetrack_predictions(tmp_path / "a", _videos(),
                                    [{"image_id": 10, "keypoints": _pose()}, pred])
    with pytest.raises(DataError, match=message):
        write_posetrack_predictions(tmp_path / "b", _videos(), [pred])


def _gt_predictions(gt: dict) -> list[dict]:
    """GT keypoints as predictions with score 1; unannotated joints left at (0, 0, 0)."""
    preds = []
    for data in gt.values():
        for ann in data["annotations"]:
            kps = np.asarray(ann["keypoints"], float).reshape(17, 3)
            kps[kps[:, 2] > 0, 2] = 1.0
            preds.append({"image_id": ann["image_id"], "keypoints": kps,
                          "track_id": ann["track_id"], "bbox": ann["bbox"], "score": 1.0})
    return preds


def test_real_fixture_round_trip_through_writer(fixtures_dir, tmp_path):
    gt = load_json_dir(fixtures_dir / "posetrack18" / "annotations" / "val")
    paths = write_posetrack_predictions(tmp_path / "pred", gt, _gt_predictions(gt))
    assert len(paths) == 3
    pred = load_json_dir(tmp_path / "pred")
    for name in gt:
        assert [im["id"] for im in pred[name]["images"]] == [im["id"] for im in gt[name]["images"]]
    result = evaluate_posetrack(gt, pred)
    assert all(v == 100.0 for v in result.columns.values())
    # without track ids the writer assigns unique ones and poseval's checks still pass
    no_tracks = [{**p, "track_id": None} for p in _gt_predictions(gt)]
    write_posetrack_predictions(tmp_path / "pred2", gt, no_tracks)
    assert evaluate_posetrack(gt, load_json_dir(tmp_path / "pred2")).columns["Total"] == 100.0
