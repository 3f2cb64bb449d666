"""End to end on a tiny synthetic dataset: train, eval (CLI), corrupt frames, missing keys."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from glsmamba.cli import main
from glsmamba.engine import api
from glsmamba.config import dump_config
from glsmamba.engine.trainer import read_log
from glsmamba.errors import DataError


def test_train_then_eval_cli(tiny_config, tmp_path, capsys):
    config_path = tmp_path / "run.toml"
    config_path.write_text(dump_config(tiny_config))
    train = ["train", str(config_path), "--work-dir", str(tmp_path / "run"), "--no-progress",
             "--set", "train.max_steps=2", "--set", "train.val_interval=1"]
    assert main(train) == 0
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert len(losses) == 2
    assert (tmp_path / "run" / "last.safetensors").is_file()
    assert "Total" in capsys.readouterr().out           # the val table after the last epoch
    assert main(train) == 2                              # refuses to clobber the run
    assert "--resume" in capsys.readouterr().err
    assert main(train[:-2] + ["--set", "train.lrr=1"]) == 2
    assert "unknown key train.lrr" in capsys.readouterr().err
    code = main(["eval", str(config_path), "--checkpoint", str(tmp_path / "run"),
                 "--out", str(tmp_path / "pred"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "Total" in out
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.json"))
    assert written and all(json.loads((tmp_path / "pred" / n).read_text())["images"] for n in written)


def test_real_model_loss_decreases_on_synthetic_clips(tiny_config, tmp_path):
    """glsmamba-tiny, the real pipeline: three steps on the same batch lower the loss."""
    config = copy.deepcopy(tiny_config)
    config["data"].update(max_train_samples=2, batch_size=2)
    config["train"].update(epochs=3, lr=5e-3, milestones=[10])
    api.train(config, tmp_path / "run", progress=False, log=lambda *_: None)
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert len(losses) == 3 and losses[2] < losses[0]


def test_eval_missing_checkpoint_key(tiny_config, tmp_path, capsys):
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    model = build_model(tiny_config, log=lambda *_: None)
    save_checkpoint(tmp_path, "last", model, {"config": tiny_config})
    tensors = load_file(tmp_path / "last.safetensors")
    dropped = sorted(k for k in tensors if k.startswith("head"))
    save_file({k: v for k, v in tensors.items() if k not in dropped}, tmp_path / "last.safetensors")
    config_path = tmp_path / "run.toml"
    config_path.write_text(dump_config(tiny_config))
    code = main(["eval", str(config_path), "--checkpoint", str(tmp_path / "last.safetensors"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "missing keys" in err
    assert all(key in err for key in dropped[:3])


def test_corrupt_frame_names_the_file(tiny_config, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(tiny_config["data"]["root"], root)
    frame = sorted((root / "images" / "train").rglob("*.jpg"))[0]
    frame.write_bytes(b"\xff\xd8 not really a jpeg")
    config = copy.deepcopy(tiny_config)
    config["data"]["root"] = str(root)
    with pytest.raises(DataError) as err:
        api.train(config, tmp_path / "run", progress=False, log=lambda *_: None)
    assert str(frame) in str(err.value)


def test_feature_cache_matches_encoder(tiny_config, tmp_path):
    from glsmamba.engine.builder import build_model, build_split
    from glsmamba.engine.feature_cache import FeatureCacheDataset
    model = build_model(tiny_config, log=lambda *_: None).eval()
    split = build_split(tiny_config, model, "train")
    logs = []
    cached = FeatureCacheDataset(split.clips, model, tmp_path, batch_size=3, dtype="float32",
                                 log=logs.append, progress=False)
    again = FeatureCacheDataset(split.clips, model, tmp_path, batch_size=3, dtype="float32",
                                log=logs.append, progress=False)
    assert "encoding" in logs[0] and "using cached" in logs[1] and again.key == cached.key
    item, raw = cached[1], split.clips[1]
    with torch.no_grad():
        feats = model.encode(raw["clip"][None])[0]
    torch.testing.assert_close(item["feats"], feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(item["heatmaps"], raw["heatmaps"])
    with torch.no_grad():
        model.encoder.backbone.patch_embed.proj.weight.add_(1.0)   # new encoder -> new key
    fresh = FeatureCacheDataset(split.clips, model, tmp_path, batch_size=3, log=logs.append,
                                progress=False)
    assert fresh.key != cached.key


def test_eval_on_real_posetrack18_fixture(tiny_config, tmp_path, fixtures_dir, capsys):
    """The real PoseTrack18 val files (ignore regions, head boxes) through `glsmamba eval`."""
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    config = copy.deepcopy(tiny_config)
    config["data"].update(root=str(fixtures_dir / "posetrack18"), val_ann="annotations/val")
    model = build_model(config, log=lambda *_: None)
    save_checkpoint(tmp_path, "last", model, {"config": config})
    config_path = tmp_path / "run.toml"
    config_path.write_text(dump_config(config))
    code = main(["eval", str(config_path), "--checkpoint", str(tmp_path), "--flip",
                 "--out", str(tmp_path / "pred"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Total" in captured.out
    names = sorted(p.stem for p in (tmp_path / "pred").glob("*.json"))
    assert names == ["003418_mpii_test", "009473_mpii_test", "012834_mpii_test"]
    for name in names:
        gt = json.loads((fixtures_dir / "posetrack18/annotations/val" / f"{name}.json").read_text())
        pred = json.loads((tmp_path / "pred" / f"{name}.json").read_text())
        assert len(pred["images"]) == len(gt["images"])


def _trained_run(tiny_config, tmp_path):
    """A two-step run of the tiny config (its config stored with the checkpoint)."""
    run = tmp_path / "run"
    config = copy.deepcopy(tiny_config)
    config["train"].update(max_steps=2)
    api.train(config, run, progress=False, log=lambda *_: None)
    return run, config


def _total(printed: str) -> str:
    """The mAP table's last row (the numbers, Total included)."""
    lines = [line for line in printed.splitlines() if line.strip()]
    return lines[lines.index(next(line for line in lines if "Total" in line)) + 1]


def test_eval_run_dir_uses_the_config_the_run_stored(tiny_config, tmp_path, capsys):
    run, config = _trained_run(tiny_config, tmp_path)
    assert main(["eval", str(run), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    from_run = capsys.readouterr().out
    config_path = tmp_path / "run.toml"
    config_path.write_text(dump_config(config))
    assert main(["eval", str(config_path), "--checkpoint", str(run / "last.safetensors"),
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert _total(from_run) == _total(captured.out)
    assert "was trained as" not in captured.err       # same model: no note
    assert sorted(p.name for p in (tmp_path / "a").glob("*.json")) == \
        sorted(p.name for p in (tmp_path / "b").glob("*.json"))


def test_eval_with_a_config_of_another_preset_scores_the_run_model(tiny_config, tmp_path,
                                                                     capsys):
    """A config naming a preset other than the run's (e.g. synth_tiny for a demo run) scores
    the run's own model with a one-line note, instead of failing with missing keys."""
    run, config = _trained_run(tiny_config, tmp_path)
    assert main(["eval", str(run), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    expected = _total(capsys.readouterr().out)
    other = copy.deepcopy(config)
    other["model"].update(name="glsmamba-demo", overrides={})
    other["data"]["delta"] = 2
    config_path = tmp_path / "other.toml"
    config_path.write_text(dump_config(other))
    code = main(["eval", str(config_path), "--checkpoint", str(run), "--out",
                 str(tmp_path / "b"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    note = [line for line in captured.err.splitlines() if "was trained as" in line]
    assert len(note) == 1 and "glsmamba-tiny" in note[0] and "T = 3" in note[0]
    assert "the config says glsmamba-demo, T = 5" in note[0]
    assert _total(captured.out) == expected


def test_eval_target_must_be_a_run_or_a_checkpoint(tmp_path, capsys):
    assert main(["eval", "synth_tiny", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a run folder or checkpoint file" in err and "--checkpoint" in err
    assert "Traceback" not in err
    assert main(["eval", "synth_tiny", "--checkpoint", str(tmp_path), "--config",
                 "synth_tiny"]) == 2
    assert "two configs" in capsys.readouterr().err


def test_missing_data_root_says_how_to_make_or_point_to_it(tiny_config, tmp_path):
    from glsmamba.engine.builder import data_root
    config = copy.deepcopy(tiny_config)
    config["data"]["root"] = str(tmp_path / "data" / "synth")
    with pytest.raises(DataError) as err:
        data_root(config)
    message = str(err.value)
    assert f"run: glsmamba synth --out {tmp_path / 'data' / 'synth'}" in message
    assert "GLSMAMBA_DATA" in message and "\n" not in message
    config["data"]["root"] = str(tmp_path / "posetrack18")
    with pytest.raises(DataError, match="GLSMAMBA_DATA.*docs/DATASETS.md"):
        data_root(config)
