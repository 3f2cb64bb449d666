"""eval-predictions on bad prediction files: NaN scores, NaN/inf keypoints, a file without
annotations, annotations of unknown image ids -> one line naming the file and the record."""
from __future__ import annotations

import json

import pytest

from glsmamba.cli import main
from glsmamba.errors import DataError
from glsmamba.evaluation.posetrack_map import (POSETRACK18_KEYPOINTS, evaluate_posetrack,
                                               load_json_dir)

CATEGORIES = [{"name": "person", "keypoints": list(POSETRACK18_KEYPOINTS)}]
IMAGES = [{"id": 1, "file_name": "images/val/vid/000000.jpg"},
          {"id": 2, "file_name": "images/val/vid/000001.jpg"}]


def _pose(x0: float) -> list:
    kps = []
    for k in range(17):
        kps += [0, 0, 0] if k in (3, 4) else [x0 + 10.0 * k, 50.0 + 5.0 * k, 1]
    return kps


def _gt() -> dict:
    return {"images": IMAGES, "categories": CATEGORIES,
            "annotations": [{"image_id": i, "track_id": 0, "keypoints": _pose(100),
                             "bbox_head": [100, 50, 30, 40]} for i in (1, 2)]}


def _pred(*annotations) -> dict:
    return {"images": IMAGES, "categories": CATEGORIES, "annotations": list(annotations)}


def _person(image_id=1, x0=100.0, score=0.9, track_id=0):
    return {"image_id": image_id, "track_id": track_id, "keypoints": _pose(x0),
            "scores": [score] * 17}


def _run(tmp_path, pred: dict, capsys, *extra):
    (tmp_path / "gt").mkdir(exist_ok=True)
    (tmp_path / "pred").mkdir(exist_ok=True)
    (tmp_path / "gt" / "vid.json").write_text(json.dumps(_gt()))
    (tmp_path / "pred" / "vid.json").write_text(json.dumps(pred))   # NaN -> JSON NaN literal
    rc = main(["eval-predictions", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
               *extra])
    return rc, capsys.readouterr()


def test_nan_score_is_an_error_not_the_most_confident(tmp_path, capsys):
    bad = _person(2, x0=900.0)
    bad["scores"][5] = float("nan")
    rc, out = _run(tmp_path, _pred(_person(1), bad), capsys)
    assert rc == 2
    line = out.err.strip()
    assert len(line.splitlines()) == 1
    assert "pred/vid.json [annotations[1]]: 'scores' value 5 (joint 5) is nan" in line


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_keypoint_is_an_error(tmp_path, capsys, value):
    bad = _person(2)
    bad["keypoints"][6 * 3] = value
    rc, out = _run(tmp_path, _pred(_person(1), bad), capsys)
    assert rc == 2 and "[annotations[1]]: 'keypoints' value 18 (joint 6)" in out.err


def test_prediction_without_annotations_is_an_error(tmp_path, capsys):
    rc, out = _run(tmp_path, {"images": IMAGES, "categories": CATEGORIES}, capsys)
    assert rc == 2 and "pred/vid.json: prediction file has no 'annotations' list" in out.err


def test_annotation_of_unknown_image_is_an_error_or_dropped_with_a_warning(tmp_path, capsys):
    stray = _person(77)
    rc, out = _run(tmp_path, _pred(_person(1), _person(2), stray), capsys)
    assert rc == 2 and "[annotations[2]]: annotation's image_id 77 is not among" in out.err
    with pytest.warns(UserWarning, match=r"vid.json \[annotations\[2\]\].*dropped, as poseval does"):
        rc, out = _run(tmp_path, _pred(_person(1), _person(2), stray), capsys, "--lenient")
    assert rc == 0 and "&100.0" in out.out


def test_merged_prediction_file_checks(tmp_path):
    merged = tmp_path / "merged.json"
    merged.write_text(json.dumps({"images": IMAGES, "categories": CATEGORIES}))
    with pytest.raises(DataError, match="merged.json: prediction file has no 'annotations'"):
        load_json_dir(merged, prediction=True)
    merged.write_text(json.dumps(_pred(_person(1), _person(5))))
    with pytest.raises(DataError, match=r"merged.json \[annotations\[1\]\]: annotation's image_id 5"):
        load_json_dir(merged, prediction=True)
    with pytest.warns(UserWarning, match="dropped"):
        assert len(load_json_dir(merged, prediction=True, strict=False)["vid"]["annotations"]) == 1


def test_nan_in_gt_is_an_error_too():
    gt = _gt()
    gt["annotations"][0]["keypoints"][1] = float("nan")
    with pytest.raises(DataError, match=r"GT vid \[annotations\[0\]\]: 'keypoints' value 1"):
        evaluate_posetrack({"vid": gt}, {"vid": _pred(_person(1), _person(2))})


def test_predictions_never_replace_a_ground_truth_file(tmp_path):
    from glsmamba.evaluation.writer import write_posetrack_predictions
    gt_dir = tmp_path / "annotations"
    gt_dir.mkdir()
    (gt_dir / "vid.json").write_text(json.dumps(_gt()))
    before = (gt_dir / "vid.json").read_text()
    person = {"image_id": 1, "keypoints": [[100.0, 50.0, 0.9]] * 17}
    with pytest.raises(DataError, match=r"vid.json: refusing to replace this file: it is not a "
                                        r"prediction file"):
        write_posetrack_predictions(gt_dir, {"vid": {"images": IMAGES}}, [person], overwrite=True)
    assert (gt_dir / "vid.json").read_text() == before
    out = tmp_path / "pred"
    write_posetrack_predictions(out, {"vid": {"images": IMAGES}}, [person])
    write_posetrack_predictions(out, {"vid": {"images": IMAGES}}, [person], overwrite=True)


def test_nan_head_box_in_gt_is_an_error():
    gt = _gt()
    gt["annotations"][1]["bbox_head"] = [100, 50, float("nan"), 40]
    with pytest.raises(DataError, match=r"GT vid \[annotations\[1\]\]: 'bbox_head' .* is not finite"):
        evaluate_posetrack({"vid": gt}, {"vid": _pred(_person(1), _person(2))})


def test_json_result_never_replaces_an_input(tmp_path, capsys):
    rc, _ = _run(tmp_path, _pred(_person(1), _person(2)), capsys)
    assert rc == 0
    gt_file = tmp_path / "gt" / "vid.json"
    before = gt_file.read_text()
    for target in (gt_file, tmp_path / "pred" / "result.json"):
        rc, out = _run(tmp_path, _pred(_person(1), _person(2)), capsys, "--json", str(target))
        assert rc == 2 and "--json would write into the input" in out.err
    assert not (tmp_path / "pred" / "result.json").exists()
    rc = main(["eval-predictions", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
               "--json", str(gt_file)])                        # no rewrite of the inputs here
    assert rc == 2 and gt_file.read_text() == before
