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
    assert "mAP degraded" in printed
    for label in ("backbone only: single-frame ViTPose-tiny, encoder frozen",
                  "single-frame ViTPose-tiny, encoder fine-tuned (same budget)",
                  "GLSMamba-tiny, T = 1 (no temporal context)", "GLSMamba-tiny, T = 5"):
        assert f"| {label} |" in printed
    report = out / "report"
    summary = (report / "summary.md").read_text()
    assert "## Protocol" in summary and "## What the rows measure" in summary
    assert "1/4 features (16x24 x T tokens)" in summary
    for name in ("loss_curves.png", "per_joint_ap.png"):
        assert cv2.imread(str(report / name)) is not None
    capture = cv2.VideoCapture(str(report / "side_by_side.mp4"))
    ok, frame = capture.read()
    assert ok and frame.shape[1] == 3 * 160             # GT | backbone only | GLSMamba T = 5
    for run in ("stage1_baseline", "glsmamba_t5", "glsmamba_t1", "baseline_frozen",
                "baseline_finetuned"):
        assert (out / "runs" / run / "last.safetensors").is_file()
    # the controls: same budget; T = 1 reads one frame; the encoder frozen or fine-tuned
    import json
    steps = {run: json.loads((out / "runs" / run / "last.json").read_text())["step"]
             for run in ("glsmamba_t5", "glsmamba_t1", "baseline_frozen", "baseline_finetuned")}
    assert len(set(steps.values())) == 1, steps
    from glsmamba.engine.config import load_config
    t1 = load_config(out / "runs" / "glsmamba_t1" / "config.toml")
    assert t1["data"]["delta"] == 0 and t1["model"]["overrides"]["feature_stride"] == 4
    frozen = load_config(out / "runs" / "baseline_frozen" / "config.toml")
    tuned = load_config(out / "runs" / "baseline_finetuned" / "config.toml")
    assert frozen["model"]["overrides"]["freeze_encoder"] is True
    assert tuned["model"]["overrides"]["freeze_encoder"] is False
    # stage 1 trained on the separate clean pre-training set
    stage1 = load_config(out / "runs" / "stage1_baseline" / "config.toml")
    assert stage1["data"]["root"].endswith("pretrain_data")
    assert stage1["data"]["augment"] is False
    assert "dark decoding" in summary and "cpu: child processes" in summary


def test_clean_annotations_drop_the_labels_of_degraded_frames(tmp_path):
    import json

    from glsmamba.recipes.demo import write_clean_annotations
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


def test_full_recipe_reads_quarter_resolution_features(tmp_path):
    from glsmamba.recipes import demo
    recipe = demo.FULL
    assert recipe["feature_stride"] == 4 and recipe["input_size"] == [96, 128]
    base = demo.base_config(tmp_path, recipe, 0)
    t5 = demo.glsmamba_config(base, recipe, "enc.safetensors", delta=2)
    t1 = demo.glsmamba_config(base, recipe, "enc.safetensors", delta=0)
    assert t5["model"]["overrides"] == t1["model"]["overrides"]
    assert (t5["data"]["delta"], t1["data"]["delta"]) == (2, 0)
    from glsmamba.engine.builder import build_model
    model = build_model(t5, log=lambda *_: None, for_training=False)
    assert model.feature_size == (24, 32) and model.feature_stride == 4
    frozen = demo.extra_baseline_config(base, recipe, "enc.safetensors", t5, 0, frozen=True)
    tuned = demo.extra_baseline_config(base, recipe, "enc.safetensors", t5, 0, frozen=False)
    assert frozen["model"]["overrides"]["freeze_encoder"] is True
    assert tuned["model"]["overrides"]["freeze_encoder"] is False
    for config in (frozen, tuned):      # the same epochs and schedule as stage 2
        assert config["train"]["epochs"] == t5["train"]["epochs"]
        assert config["train"]["milestones"] == t5["train"]["milestones"]
        assert config["train"]["lr"] == t5["train"]["lr"]
        assert config["data"]["batch_size"] == t5["data"]["batch_size"]
    # stage 2 (all four rows) in its own batch size, stage 1 in the recipe's
    assert t5["data"]["batch_size"] == t1["data"]["batch_size"] == recipe["stage2_batch_size"]
    stage1 = demo.stage1_config(base, recipe, tmp_path, tmp_path / "pretrain")
    assert stage1["data"]["batch_size"] == recipe["batch_size"] != recipe["stage2_batch_size"]


def test_a_failing_second_process_reports_its_exit_code(tmp_path):
    from glsmamba.recipes import demo
    from glsmamba.engine.config import DEFAULTS
    import copy
    config = copy.deepcopy(DEFAULTS)
    config["data"]["root"] = str(tmp_path / "missing")
    process = demo.start_training(config, tmp_path / "run", 1)
    process.join(120)
    assert process.exitcode not in (0, None)
