"""`glsmamba check-data` (glsmamba/preflight.py) and the check `glsmamba train` runs first.

A PoseTrack18-shaped tree is built from the real fixture (val, and a copy as train), with a
ViTPose-tiny encoder checkpoint and the fixture's detections; each test then breaks it in one
way the code is not told about and expects exit 2 with the problem named, before training.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from glsmamba.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"input_size": [48, 64], "dim": 16, "d_state": 1, "gsm_depth": 1, "lrm_depth": 1,
        "mlp_ratio": 1.0}


def encoder_checkpoint(path: Path, arch: str = "vit-tiny") -> Path:
    """An official-layout ({"state_dict": ...}) ViTPose checkpoint of ``arch``."""
    from glsmamba.models.vitpose import ViTPoseEncoder
    encoder = ViTPoseEncoder(arch, img_size=(64, 48), deconv_channels=64)
    torch.save({"state_dict": {k: v.half() for k, v in encoder.state_dict().items()}}, path)
    return path


@pytest.fixture()
def pt18(tmp_path, fixtures_dir):
    """A PoseTrack18-shaped tree: images/{train,val}, annotations/{train,val}, detections."""
    source = fixtures_dir / "posetrack18"
    root = tmp_path / "posetrack18"
    shutil.copytree(source / "images" / "val", root / "images" / "val")
    shutil.copytree(source / "annotations" / "val", root / "annotations" / "val")
    shutil.copytree(source / "images" / "val", root / "images" / "train")
    (root / "annotations" / "train").mkdir(parents=True)
    for file in sorted((source / "annotations" / "val").glob("*.json")):
        data = json.loads(file.read_text())
        for image in data["images"]:            # train ids differ from val ids, as in PoseTrack
            image["file_name"] = image["file_name"].replace("images/val/", "images/train/")
            image["id"] += 5
        for ann in data["annotations"]:
            ann["image_id"] += 5
        (root / "annotations" / "train" / file.name).write_text(json.dumps(data))
    (root / "detections").mkdir()
    shutil.copy(source / "annotations" / "test_posetrack18_human_detections.json",
                root / "detections" / "val.json")
    return root


def check_args(root: Path, weights: Path, *extra: str) -> list[str]:
    """The bundled PoseTrack18 config, pointed at ``root`` with a tiny model."""
    sets = [f"data.root={root}", "data.val_detections=detections/val.json",
            "model.name=glsmamba-tiny", f"model.pretrained={weights}", "data.batch_size=2",
            "data.workers=0", *(f"model.overrides.{k}={json.dumps(v)}" for k, v in TINY.items())]
    return ["posetrack18_glsmamba_b", *[a for s in sets for a in ("--set", s)], *extra]


def run(capsys, args: list[str]) -> tuple[int, str]:
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.fixture()
def weights(tmp_path):
    return encoder_checkpoint(tmp_path / "vitpose_tiny.pth")


def test_good_tree_passes_with_the_split_size_warning(pt18, weights, tmp_path, capsys):
    rc, out = run(capsys, ["check-data", *check_args(pt18, weights), "--no-progress",
                           "--work-dir", str(tmp_path / "w")])
    assert rc == 1, out                                  # 3 val videos, not the official 170
    assert "fatal" not in out.replace("0 fatal", "")
    assert "videos 3 (official 170)" in out
    assert "sha256" in out and "finite" in out
    assert "boxes kept by protocol dcpose on 3 of 3 labelled val frames" in out


def test_missing_frame_is_named(pt18, weights, capsys):
    frame = sorted((pt18 / "images" / "val").rglob("*.jpg"))[1]
    frame.unlink()
    rc, out = run(capsys, ["check-data", *check_args(pt18, weights), "--no-progress"])
    assert rc == 2
    assert "1 of 6 frames missing" in out and str(frame) in out


def test_renamed_split_folders_are_named(pt18, weights, capsys):
    (pt18 / "annotations" / "val").rename(pt18 / "annotations" / "validation")
    rc, out = run(capsys, ["check-data", *check_args(pt18, weights), "--no-progress"])
    assert rc == 2
    assert f"val annotations (data.val_ann): {pt18 / 'annotations' / 'val'}: not found" in out
    assert "holds: train, validation" in out
    (pt18 / "annotations" / "validation").rename(pt18 / "annotations" / "val")
    (pt18 / "images" / "train").rename(pt18 / "images" / "training")
    rc, out = run(capsys, ["check-data", *check_args(pt18, weights), "--no-progress"])
    assert rc == 2 and "3 of 6 frames missing" in out and "holds: training, val" in out


def test_detections_of_another_split_are_refused(pt18, weights, capsys):
    train_ids = [json.loads(f.read_text())["images"][0]["id"]
                 for f in sorted((pt18 / "annotations" / "train").glob("*.json"))]
    dets = [{"image_id": i, "bbox": [10, 10, 50, 100], "score": 0.9, "category_id": 1}
            for i in train_ids]
    (pt18 / "detections" / "train.json").write_text(json.dumps(dets))
    args = check_args(pt18, weights, "--set", "data.val_detections=detections/train.json")
    rc, out = run(capsys, ["check-data", *args, "--no-progress"])
    assert rc == 2
    assert "names an image not in the annotations" in out and "another split" in out


def test_weights_of_another_arch_are_refused(pt18, tmp_path, capsys):
    wrong = encoder_checkpoint(tmp_path / "vitpose_s.pth", arch="vit-s")
    rc, out = run(capsys, ["check-data", *check_args(pt18, wrong), "--no-progress"])
    assert rc == 2
    assert f"{wrong}: does not match ViTPose encoder 'vit-tiny'" in out
    assert "shape mismatch" in out


def test_no_weights_names_the_key_and_the_variable(pt18, monkeypatch, capsys):
    monkeypatch.delenv("VITPOSE_B_CKPT", raising=False)
    args = check_args(pt18, Path("x"))
    args = [a for a in args if not a.startswith("model.pretrained=")]
    args = [a for i, a in enumerate(args) if not (a == "--set" and args[i + 1] == "--set")]
    rc, out = run(capsys, ["check-data", *args, "--no-progress"])
    assert rc == 2
    assert "model.pretrained" in out and "VITPOSE_B_CKPT" in out


def test_train_stops_before_training_on_a_fatal_finding(pt18, weights, tmp_path, capsys):
    min((pt18 / "images" / "train").rglob("*.jpg")).unlink()
    work_dir = tmp_path / "run"
    rc, out = run(capsys, ["train", *check_args(pt18, weights), "--work-dir", str(work_dir),
                           "--no-progress"])
    assert rc == 2
    assert "frames missing" in out and "not started" in out
    assert not (work_dir / "log.jsonl").exists() and not (work_dir / "config.toml").exists()


def test_corrupt_jpeg_deep_in_the_list_is_found_without_and_with_full(tmp_path, capsys):
    """Synthetic data with more frames than the default decode sample: one truncated JPEG
    outside the sample is named by the default check (its end is read) and by --full."""
    from glsmamba.config import load_config
    from glsmamba.preflight import (DECODE_SAMPLE, Report, check_annotations, decode_sample,
                                    needed_frames)
    from glsmamba.synth.generate import generate_dataset
    root = tmp_path / "synth"
    generate_dataset(root, videos=2, frames=40, seed=3, size=(96, 64), people=(1, 1),
                     val_fraction=0.5)
    args = ["synth_tiny", "--set", f"data.root={root}", "--no-progress", "--work-dir",
            str(tmp_path / "w")]
    parsed = check_annotations(load_config("synth_tiny", [f"data.root={root}"]), Report())
    paths = needed_frames(parsed)
    unsampled = sorted(set(paths) - set(decode_sample(paths, DECODE_SAMPLE)))
    victim = Path(unsampled[len(unsampled) // 2])
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])   # cut short
    rc, out = run(capsys, ["check-data", *args])
    assert rc == 2 and str(victim) in out and "truncated JPEG" in out, out
    rc, out = run(capsys, ["check-data", *args, "--full"])
    assert rc == 2
    assert str(victim) in out and "truncated JPEG" in out
    assert "projected training peak at batch 16" in out          # --full measures a step


def test_image_file_problem_reads_the_ends_and_falls_back_to_the_whole_file(tmp_path):
    import cv2
    import numpy as np
    from glsmamba.data.transforms import image_file_problem
    ok, jpeg = cv2.imencode(".jpg", np.full((64, 48, 3), 128, np.uint8))
    whole = tmp_path / "a.jpg"
    whole.write_bytes(jpeg.tobytes())
    assert image_file_problem(whole) is None
    trailing = tmp_path / "b.jpg"                 # bytes after the end marker are fine
    trailing.write_bytes(jpeg.tobytes() + b"\0" * 10_000)
    assert image_file_problem(trailing) is None
    cut = tmp_path / "c.jpg"
    cut.write_bytes(jpeg.tobytes()[:-40])
    assert "truncated JPEG" in image_file_problem(cut)
    empty = tmp_path / "d.jpg"
    empty.write_bytes(b"")
    assert image_file_problem(empty) == "empty file"
    text = tmp_path / "e.jpg"
    text.write_text("not an image")
    assert "not a JPEG" in image_file_problem(text)


def test_missing_synthetic_root_says_how_to_make_it(tmp_path, capsys):
    rc, out = run(capsys, ["check-data", "synth_tiny", "--set", f"data.root={tmp_path / 'none'}",
                           "--no-progress"])
    assert rc == 2
    assert "glsmamba synth --out DIR" in out and "GLSMAMBA_SYNTH_ROOT" in out


def test_split_sizes_name_their_sources():
    from glsmamba.preflight import load_split_sizes
    sizes = load_split_sizes()
    assert {"posetrack17", "posetrack18", "posetrack21", "jhmdb"} <= set(sizes)
    for dataset, splits in sizes.items():
        if dataset.startswith("_"):
            continue
        for split, numbers in splits.items():
            given = [k for k in ("videos", "frames", "labelled_frames", "people")
                     if numbers[k] is not None]
            assert not given or numbers["source"], (dataset, split)


def test_scan_verdict_levels(monkeypatch):
    """A backend whose failed self-test makes scans raise is fatal; a fallback a warning."""
    from glsmamba.ops import selective_scan
    from glsmamba.preflight import Report, check_scan
    lines = {"ok": "selective scan on cuda:0: triton; triton passed its self-test",
             "warning": "selective scan on cuda:0: chunked; triton FAILED its self-test: y",
             "fatal": "selective scan on cuda:0: triton (GLSMAMBA_SCAN_BACKEND: scans raise); "
                      "triton FAILED its self-test: y"}
    for level, line in lines.items():
        monkeypatch.setattr(selective_scan, "scan_backend_report", lambda device, run=True, text=line: text)
        report = Report()
        check_scan(report)
        assert [(f.level, f.text) for f in report.findings] == [(level, line)]


def test_feature_cache_estimate_matches_the_cache_a_run_writes(tmp_path, monkeypatch):
    """The disk check's projection against the folder training really writes; too little
    free space is fatal."""
    import shutil as shutil_module

    from glsmamba.engine import api
    from glsmamba.config import load_config
    from glsmamba.preflight import (Report, cache_bytes, check_annotations, check_disk,
                                    check_weights)
    from glsmamba.synth.generate import generate_dataset
    root = tmp_path / "synth"
    generate_dataset(root, videos=2, frames=8, seed=4, size=(96, 64), people=(1, 1),
                     val_fraction=0.5)
    config = load_config("synth_tiny", [f"data.root={root}", "train.epochs=1", "data.workers=0",
                                        "train.max_steps=1", "train.val_interval=0",
                                        "data.batch_size=4"])
    report = Report()
    parsed = check_annotations(config, report)
    model = check_weights(config, parsed, report)
    estimate = cache_bytes(config, model, parsed)
    api.train(config, tmp_path / "run", progress=False, log=lambda *_: None)
    written = sum(f.stat().st_size for f in (tmp_path / "run" / "feature_cache").rglob("*")
                  if f.is_file())
    assert written > 0 and abs(estimate - written) / written < 0.1, (estimate, written)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: shutil_module._ntuple_diskusage(
        10, 10, 1))
    report = Report()
    check_disk(config, model, parsed, tmp_path / "run", report)
    assert report.findings[-1].level == "fatal" and "0.0 MiB free" in report.findings[-1].text
