"""The demo end to end in --quick mode (slow: a few minutes on a busy 2-core CPU), its
configs, the second-process wait, and the report's pictures and video."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from glsmamba.cli import main
from glsmamba.config import load_config
from glsmamba.recipes import demo


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.slow
def test_demo_quick_writes_report(tmp_path, capsys, monkeypatch):
    # the quick start's folder name, so that the README's API snippet runs as printed
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "glsmamba_demo"
    assert main(["demo", "--out", "glsmamba_demo", "--quick", "--no-progress",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "mAP degraded" in printed
    for _, label in demo.ROWS:
        assert f"| {label} |" in printed
    assert [label for _, label in demo.ROWS] == [
        "backbone only: single-frame vitpose-tiny, encoder frozen",
        "single-frame vitpose-tiny, encoder fine-tuned (same budget)",
        "glsmamba-demo, T = 1 (no temporal context)", "glsmamba-demo, T = 5"]
    report = out / "report"
    summary = (report / "summary.md").read_text()
    assert "## Protocol" in summary and "## What the rows measure" in summary
    assert "1/4 features (16x24 x T tokens)" in summary
    for name in ("loss_curves.png", "per_joint_ap.png"):
        assert cv2.imread(str(report / name)) is not None
    _check_video(report, out / "data", summary)
    for run in ("stage1_baseline", "glsmamba_t5", "glsmamba_t1", "baseline_frozen",
                "baseline_finetuned"):
        assert (out / "runs" / run / "last.safetensors").is_file()
    _check_controls(out)
    assert "dark decoding" in summary and "cpu: child processes" in summary
    _check_eval_gives_the_demo_numbers(out, tmp_path, capsys)
    _check_readme_snippet_runs()


def _check_video(report: Path, data_root: Path, summary: str) -> None:
    """Every frame of every val video, panels >= 320 px high, the codec in the summary."""
    frames = sum(len(list(v.glob("*.jpg"))) for v in (data_root / "images" / "val").iterdir())
    capture = cv2.VideoCapture(str(report / "side_by_side.mp4"))
    count, shape = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, frame.shape
    assert count == frames and shape[0] >= demo.VIDEO_PANEL_HEIGHT
    assert shape[1] == 3 * 480                  # GT | backbone only | T = 5, 160 px x 3
    codec = "H.264 (PyAV)" if importlib.util.find_spec("av") else "mp4v"
    assert codec in summary and f"all {frames} frames" in summary


def _check_controls(out: Path) -> None:
    """The controls: same budget; T = 1 reads one frame; the encoder frozen or
    fine-tuned; the runs name the presets `glsmamba models` lists."""
    steps = {run: json.loads((out / "runs" / run / "last.json").read_text())["step"]
             for run in ("glsmamba_t5", "glsmamba_t1", "baseline_frozen", "baseline_finetuned")}
    assert len(set(steps.values())) == 1, steps
    t1 = load_config(out / "runs" / "glsmamba_t1" / "config.toml")
    assert t1["data"]["delta"] == 0 and t1["model"]["overrides"]["feature_stride"] == 4
    assert t1["model"]["name"] == "glsmamba-demo"
    frozen = load_config(out / "runs" / "baseline_frozen" / "config.toml")
    tuned = load_config(out / "runs" / "baseline_finetuned" / "config.toml")
    assert frozen["model"]["name"] == tuned["model"]["name"] == "vitpose-tiny"
    assert frozen["model"]["overrides"]["freeze_encoder"] is True
    assert tuned["model"]["overrides"]["freeze_encoder"] is False
    # stage 1 trained on the separate clean pre-training set
    stage1 = load_config(out / "runs" / "stage1_baseline" / "config.toml")
    assert stage1["data"]["root"].endswith("pretrain_data")
    assert stage1["data"]["augment"] is False


def _check_eval_gives_the_demo_numbers(out: Path, tmp_path: Path, capsys) -> None:
    """`glsmamba eval RUN_DIR` (config from the run) prints the demo's T = 5 numbers;
    a config naming another preset scores the run's model instead of failing."""
    expected = json.loads((out / "report" / "results.json").read_text())["glsmamba_t5"]
    run = str(out / "runs" / "glsmamba_t5")
    assert main(["eval", run, "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for subset in ("overall", "degraded", "clean"):
        assert f"{subset} {expected[subset]:.1f}" in printed, (subset, printed)
    code = main(["eval", "synth_tiny", "--checkpoint", run, "--set", f"data.root={out / 'data'}",
                 "--out", str(tmp_path / "synth_tiny"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "was trained as glsmamba-demo" in captured.err and "Total" in captured.out


def _check_readme_snippet_runs() -> None:
    """The README's Python API snippet, as printed, in the folder the quick start fills."""
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["keypoints"].shape == (1, 17, 3)
    assert len(namespace["frames"]) == 10               # the quick demo's val video


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
    from glsmamba.config import DEFAULTS
    import copy
    config = copy.deepcopy(DEFAULTS)
    config["data"]["root"] = str(tmp_path / "missing")
    process = demo.start_training(config, tmp_path / "run", 1)
    process.join(120)
    assert process.exitcode not in (0, None)


def test_demo_configs_name_the_presets_and_build_the_same_model(tmp_path):
    """The demo's GLSMamba is the preset `glsmamba-demo`: built from its run config, from
    the preset alone, and from the old spelling (glsmamba-tiny + overrides) it is the same
    architecture, so runs of either spelling load into it."""
    from glsmamba.engine.builder import build_model
    from glsmamba.models import create_model, list_models
    assert {"glsmamba-demo", "vitpose-tiny"} <= {name for name, _ in list_models()}
    base = demo.base_config(tmp_path, demo.FULL, 0)
    t5 = demo.glsmamba_config(base, demo.FULL, "enc.safetensors", delta=2)
    assert t5["model"]["name"] == "glsmamba-demo"
    from_config = build_model(t5, log=lambda *_: None, for_training=False).state_dict()
    preset = create_model("glsmamba-demo", num_joints=17).state_dict()
    old = create_model("glsmamba-tiny", num_joints=17, feature_stride=4,
                       **demo.GLSMAMBA_OVERRIDES).state_dict()
    shapes = {k: tuple(v.shape) for k, v in from_config.items()}
    assert shapes == {k: tuple(v.shape) for k, v in preset.items()}
    assert shapes == {k: tuple(v.shape) for k, v in old.items()}
    baseline = demo.baseline_config(base, demo.FULL)
    assert baseline["model"]["name"] == "vitpose-tiny"


class _SlowChild:
    """A stand-in for the second process: exits after ``joins`` calls to join()."""

    def __init__(self, joins: int):
        self.joins, self.exitcode = joins, None

    def join(self, timeout=None):
        self.joins -= 1
        if self.joins <= 0:
            self.exitcode = 0


def test_waiting_for_the_second_process_logs_its_progress(tmp_path):
    lines = []
    demo.wait_for_second_process(_SlowChild(2), tmp_path, True, lines.append, total=10,
                                 interval=0.0)
    assert len(lines) == 1 and "no step yet" in lines[0]
    (tmp_path / "log.jsonl").write_text(
        json.dumps({"type": "train", "step": 3, "loss": 0.0123}) + "\n")
    lines.clear()
    demo.wait_for_second_process(_SlowChild(3), tmp_path, True, lines.append, total=10,
                                 interval=0.0)
    assert len(lines) == 2 and all("step 3/10, loss 1.230e-02" in line for line in lines)
    lines.clear()
    demo.wait_for_second_process(_SlowChild(3), tmp_path, False, lines.append, interval=0.0)
    assert lines == []                                   # --no-progress: silent


def test_moving_average_is_centred_and_keeps_the_length():
    values = np.array([1.0, 1.0, 4.0, 1.0, 1.0])
    smoothed = demo.moving_average(values, 3)
    np.testing.assert_allclose(smoothed, [1.0, 2.0, 2.0, 2.0, 1.0])
    np.testing.assert_allclose(demo.moving_average(values, 1), values)
    np.testing.assert_allclose(demo.moving_average(np.full(50, 0.5), 7), np.full(50, 0.5))


def _fake_results(runs: int = 4) -> dict:
    joints = [f"joint{i}" for i in range(15)]
    rng = np.random.default_rng(0)
    results = {}
    for run, label in demo.ROWS[:runs]:
        ap = (rng.random(15) * 100).tolist()
        results[label] = {"run": run, "joints": joints, "per_joint": {"degraded": ap},
                          "metrics": {"degraded": float(np.mean(ap))}, "counts": {"degraded": 9},
                          "gt": {}}
    return results


def _overlaps_axes(fig, ax, legend) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_per_joint_legend_is_outside_the_bars():
    fig = demo.per_joint_figure(_fake_results())
    ax = fig.axes[0]
    assert len(ax.patches) == 4 * 15 and ax.get_ylim() == (0, 100)
    assert not _overlaps_axes(fig, ax, ax.get_legend())


def test_loss_curves_one_panel_per_stage_smoothed_legends_outside(tmp_path):
    rng = np.random.default_rng(0)
    for run in ("stage1_baseline", *[run for run, _ in demo.ROWS]):
        (tmp_path / run).mkdir()
        records = [{"type": "train", "step": s + 1, "loss": float(0.01 + rng.random() * 0.005)}
                   for s in range(200)]
        (tmp_path / run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    fig = demo.loss_figure(tmp_path)
    stage1, stage2 = fig.axes
    assert len(stage1.get_lines()) == 1 and len(stage2.get_lines()) == 4
    assert "moving average over 10 steps" in stage2.get_title()
    raw_spread = 0.005
    spread = np.ptp(stage2.get_lines()[0].get_ydata())
    assert spread < raw_spread * 0.8                    # smoothed, not the raw steps
    for ax in (stage1, stage2):
        assert not _overlaps_axes(fig, ax, ax.get_legend())


def _tiny_benchmark(tmp_path: Path) -> tuple[Path, dict]:
    """Two val 'videos' of 3 and 2 frames (180 px high) and their GT / predictions."""
    root = tmp_path / "data"
    gt, pred = {}, {}
    for video, frames in (("v1", 3), ("v2", 2)):
        images, annotations = [], []
        for index in range(frames):
            name = f"images/val/{video}/{index:06d}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name), np.full((180, 240, 3), 90, np.uint8))
            image_id = len(images) + (100 if video == "v2" else 0)
            images.append({"id": image_id, "file_name": name,
                           "degradations": ["blur"] if index == 1 else []})
            angles = np.linspace(0, 2 * np.pi, 17, endpoint=False)   # joints on a circle
            points = np.stack([120 + 60 * np.cos(angles), 90 + 60 * np.sin(angles),
                               np.ones(17)], axis=1)
            annotations.append({"image_id": image_id, "keypoints": points.ravel().tolist()})
        gt[video] = {"images": images, "annotations": annotations}
        pred[video] = {"images": images,
                       "annotations": [dict(a, scores=[0.9] * 17) for a in annotations]}
    return root, {"model A": {"gt": gt, "pred": pred}, "model B": {"gt": gt, "pred": pred}}


@pytest.mark.parametrize("hide_av", [False, True])
def test_side_by_side_video_covers_every_val_frame(tmp_path, monkeypatch, hide_av):
    import sys
    if hide_av:        # neither PyAV nor imageio-ffmpeg: the demo still writes its video
        monkeypatch.setitem(sys.modules, "av", None)
        monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    elif importlib.util.find_spec("av") is None:
        pytest.skip("PyAV is not installed (pip install av)")
    root, results = _tiny_benchmark(tmp_path)
    media = demo.side_by_side_video(results, tmp_path / "video.mp4", root)
    assert media["videos"] == 2 and media["frames"] == 5
    assert media["codec"].startswith("MPEG-4 Part 2" if hide_av else "H.264 (PyAV)")
    width, height = media["panel"]
    assert height >= demo.VIDEO_PANEL_HEIGHT and width == 480    # 240 px frames x 2
    capture = cv2.VideoCapture(str(tmp_path / "video.mp4"))
    ok, frame = capture.read()
    assert ok and frame.shape[1] == 3 * 480
    # the GT panel: the skeleton in one colour (yellow, BGR (0, 230, 255)) on grey
    gt_panel = frame[:, :480].astype(int)
    yellow = (np.abs(gt_panel - np.array([0, 230, 255])).sum(axis=2) < 90).sum()
    assert yellow > 200
    assert not list(tmp_path.glob(".video.mp4.partial*"))      # committed, nothing left over
