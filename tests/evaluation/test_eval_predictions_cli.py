"""``glsmamba eval-predictions`` end to end on tmp folders."""
from __future__ import annotations

import json

import pytest

from glsmamba.cli import main
from glsmamba.evaluation.posetrack_map import POSETRACK18_KEYPOINTS


def _pose(x0: float) -> list[float]:
    kps = []
    for k in range(17):
        kps += [0, 0, 0] if k in (3, 4) else [x0 + 10.0 * k, 50.0 + 5.0 * k, 1]
    return kps


def _write(folder, name, images, annotations):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations,
            "categories": [{"name": "person", "keypoints": list(POSETRACK18_KEYPOINTS)}]}
    (folder / f"{name}.json").write_text(json.dumps(data))


@pytest.fixture
def folders(tmp_path):
    images = [{"id": 1, "file_name": "images/val/vid/000000.jpg", "is_labeled": True},
              {"id": 2, "file_name": "images/val/vid/000001.jpg", "is_labeled": True,
               "degradations": ["blur"]}]
    gt = [{"image_id": i, "track_id": 0, "keypoints": _pose(100), "bbox_head": [100, 50, 30, 40]}
          for i in (1, 2)]
    good = {"image_id": 1, "track_id": 0, "keypoints": _pose(100), "scores": [0.9] * 17}
    bad = {"image_id": 2, "track_id": 0, "keypoints": _pose(900), "scores": [0.8] * 17}
    _write(tmp_path / "gt", "vid", images, gt)
    _write(tmp_path / "pred", "vid", images, [good, bad])
    return tmp_path


def test_prints_the_poseval_table(folders, capsys):
    assert main(["eval-predictions", "--gt", str(folders / "gt") + "/",
                 "--pred", str(folders / "pred")]) == 0
    out = capsys.readouterr().out
    assert "& Head & Shou & Elb  & Wri  & Hip  & Knee & Ankl & Total\\\\" in out
    assert "& 50.0 & 50.0 & 50.0 & 50.0 & 50.0 & 50.0 & 50.0 & 50.0 \\\\" in out


def test_markdown_json_and_frame_filter(folders, capsys):
    out_json = folders / "result.json"
    assert main(["eval-predictions", "--gt", str(folders / "gt"), "--pred",
                 str(folders / "pred"), "--markdown", "--json", str(out_json),
                 "--frames-with", "degradations=blur"]) == 0
    out = capsys.readouterr().out
    assert "| Head | Shoulder |" in out and "| 0.0 | 0.0 |" in out
    saved = json.loads(out_json.read_text())
    assert saved["columns"]["Total"] == 0.0 and saved["num_frames"] == 1
    assert saved["frames_with"] == "degradations=blur"


def test_merged_gt_file(folders, capsys):
    merged = json.loads((folders / "gt" / "vid.json").read_text())
    (folders / "merged.json").write_text(json.dumps(merged))
    assert main(["eval-predictions", "--gt", str(folders / "merged.json"),
                 "--pred", str(folders / "pred")]) == 0
    assert "50.0" in capsys.readouterr().out


def test_errors_are_reported_cleanly(folders, capsys):
    assert main(["eval-predictions", "--gt", str(folders / "nope"), "--pred",
                 str(folders / "pred")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    (folders / "empty").mkdir()
    _write(folders / "other", "other", [], [])
    assert main(["eval-predictions", "--gt", str(folders / "gt"), "--pred",
                 str(folders / "other")]) == 2
    assert "no prediction for GT video(s): vid" in capsys.readouterr().err
    assert main(["eval-predictions", "--gt", str(folders / "gt"), "--pred",
                 str(folders / "pred"), "--frames-with", "occlusion"]) == 2
    assert "no GT frame has 'occlusion'" in capsys.readouterr().err
    (folders / "pred" / "vid.json").write_text("{\"images\": ")
    assert main(["eval-predictions", "--gt", str(folders / "gt"), "--pred",
                 str(folders / "pred")]) == 2
    assert "vid.json: malformed JSON at line 1" in capsys.readouterr().err


def test_lenient_accepts_repeated_track_ids(folders, capsys):
    data = json.loads((folders / "pred" / "vid.json").read_text())
    data["annotations"][1]["image_id"] = 1                       # both people in frame 1, id 0
    (folders / "pred" / "vid.json").write_text(json.dumps(data))
    assert main(["eval-predictions", "--gt", str(folders / "gt"), "--pred",
                 str(folders / "pred")]) == 2
    assert "repeated in the frame" in capsys.readouterr().err
    assert main(["eval-predictions", "--gt", str(folders / "gt"), "--pred",
                 str(folders / "pred"), "--lenient"]) == 0
    # frame 1: TP 0.9 + FP 0.8; frame 2: missed -> recall 1/2 at precision 1 -> AP 50
    assert "& 50.0 &" in capsys.readouterr().out
