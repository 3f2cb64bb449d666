"""The demo end to end in --quick mode (slow: a few minutes on a busy 2-core CPU)."""
from __future__ import annotations

import cv2
import pytest

from glsmamba.cli import main


@pytest.mark.slow
def test_demo_quick_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| GLSMamba-tiny |" in printed and "mAP degraded" in printed
    report = out / "report"
    summary = (report / "summary.md").read_text()
    assert "## Protocol" in summary and "single-frame baseline" in summary
    for name in ("loss_curves.png", "per_joint_ap.png"):
        assert cv2.imread(str(report / name)) is not None
    capture = cv2.VideoCapture(str(report / "side_by_side.mp4"))
    ok, frame = capture.read()
    assert ok and frame.shape[1] == 3 * 160             # GT | baseline | GLSMamba
    for run in ("stage1_baseline", "stage2_glsmamba", "baseline_extra"):
        assert (out / "runs" / run / "last.safetensors").is_file()


def test_clean_annotations_drop_the_labels_of_degraded_frames(tmp_path):
    import json

    from glsmamba.engine.demo import write_clean_annotations
    folder = tmp_path / "annotations" / "train"
    folder.mkdir(parents=True)
    images = [{"id": 1, "is_labeled": True, "degradations": []},
              {"id": 2, "is_labeled": True, "degradations": ["blur"]},
              {"id": 3, "is_labeled": True, "degradations": ["occluded", "crossing"]}]
    annotations = [{"id": 100 + k, "image_id": k} for k in (1, 2, 2, 3)]
    (folder / "v1.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                "categories": []}))
    relative = write_clean_annotations(tmp_path)
    assert relative == "annotations/train_clean"
    document = json.loads((tmp_path / relative / "v1.json").read_text())
    assert [a["image_id"] for a in document["annotations"]] == [1]
    assert [i["is_labeled"] for i in document["images"]] == [True, False, False]
    # the source is untouched
    assert len(json.loads((folder / "v1.json").read_text())["annotations"]) == 4


def test_demo_refuses_a_non_empty_out_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    assert main(["demo", "--out", str(out), "--quick", "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "user data"
