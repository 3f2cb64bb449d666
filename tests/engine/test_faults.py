"""Faults around training state: no code run from a state file, consistent checkpoint sets,
full disks, diverging steps, resume with changed keys, unusable work dirs, umask."""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_standins import TinyClipSet, TinyPoseModel, make_trainer  # noqa: E402
from engine_standins import tiny_config as _tiny_config  # noqa: E402

from glsmamba import fileio  # noqa: E402
from glsmamba import checkpoint as ckpt  # noqa: E402
from glsmamba.engine.trainer import Trainer, TrainingDiverged, prepare_work_dir  # noqa: E402
from glsmamba.errors import CheckpointError, ConfigError, GlsmambaError  # noqa: E402


def tiny_config(**train) -> dict:
    return _tiny_config(**{"epochs": 2, "milestones": [1], **train})


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------ code from state files
def test_crafted_state_file_does_not_run_code_on_resume(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Exploit(marker)}, tmp_path / "last_state.pt")
    with pytest.raises(CheckpointError, match="last_state.pt: cannot read training state safely"):
        make_trainer(tmp_path, tiny_config(max_steps=4), resume=True)
    assert not marker.exists()


def test_training_state_loads_with_weights_only(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    raw = torch.load(tmp_path / "last_state.pt", weights_only=True)     # no error
    state = ckpt.from_plain(raw["state"])
    assert state["step"] == 2 and torch.is_tensor(state["rng"]["torch"])
    assert state["rng"]["numpy"][1].dtype.name == "uint32"
    assert type(state["scheduler"]["milestones"]).__name__ == "Counter"


def test_state_without_optimizer_is_a_clear_error(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    meta = json.loads((tmp_path / "last.json").read_text())
    state = ckpt.from_plain(torch.load(tmp_path / "last_state.pt", weights_only=True)["state"])
    del state["optimizer"]
    (tmp_path / "last_state.pt").write_bytes(ckpt.state_bytes(state, meta["set_id"]))
    with pytest.raises(CheckpointError, match="last_state.pt: training state lacks optimizer"):
        make_trainer(tmp_path, tiny_config(max_steps=4), resume=True)


# ------------------------------------------------------------------ consistent sets
def test_state_of_another_write_is_refused(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    old_state = (tmp_path / "last_state.pt").read_bytes()
    make_trainer(tmp_path, tiny_config(max_steps=3), resume=True).fit()
    (tmp_path / "last_state.pt").write_bytes(old_state)      # weights of step 3, state of 2
    with pytest.raises(CheckpointError, match="checkpoint set is inconsistent"):
        make_trainer(tmp_path, tiny_config(max_steps=4), resume=True)


def test_weights_of_another_write_are_refused(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    old_weights = (tmp_path / "last.safetensors").read_bytes()
    make_trainer(tmp_path, tiny_config(max_steps=3), resume=True).fit()
    (tmp_path / "last.safetensors").write_bytes(old_weights)
    with pytest.raises(CheckpointError, match="come from different checkpoint writes"):
        ckpt.load_checkpoint(tmp_path / "last.safetensors")


def test_crash_between_renames_is_rolled_forward(tmp_path, monkeypatch):
    model = TinyPoseModel()
    ckpt.save_checkpoint(tmp_path, "last", model, {"step": 1}, {"step": 1})
    with torch.no_grad():
        model.head.weight.add_(1.0)
    real_replace = os.replace
    calls = {"n": 0}

    def crash_after_first_rename(src, dst):
        if str(src).endswith(".commit") or ".commit.tmp" in str(src):
            return real_replace(src, dst)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt       # killed between the renames of one set
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, "last", model, {"step": 2}, {"step": 2})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert (tmp_path / ".last.commit").exists()
    tensors, meta, _ = ckpt.load_checkpoint(tmp_path)           # rolls forward
    assert meta["step"] == 2 and torch.equal(tensors["head.weight"], model.head.weight)
    state = ckpt.load_train_state(tmp_path / "last_state.pt", set_id=meta["set_id"])
    assert state["step"] == 2 and not (tmp_path / ".last.commit").exists()


# ------------------------------------------------------------------ full disk
def test_full_disk_is_one_clear_error_and_previous_survives(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_config())

    def full_after_first_epoch(handle, data):
        if trainer.epoch >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        handle.write(data)

    monkeypatch.setattr(fileio, "write_chunk", full_after_first_epoch)
    with pytest.raises(GlsmambaError, match="cannot write checkpoint 'last': No space left "
                                            "on device; the previous 'last' checkpoint"):
        trainer.fit()
    _, meta, _ = ckpt.load_checkpoint(tmp_path)
    assert meta["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob(".*.commit"))


# ------------------------------------------------------------------ divergence
def test_non_finite_gradients_stop_before_the_step_and_keep_last_finite(tmp_path):
    poisoned = {"on": False}

    def poison(trainer):
        if trainer.step == 2 and not poisoned["on"]:
            poisoned["on"] = True
            trainer.model.head.weight.register_hook(lambda g: g * float("inf"))

    config = tiny_config(checkpoint_interval=1, grad_clip=0.0)
    trainer = make_trainer(tmp_path, config, step_callback=poison)
    with pytest.raises(TrainingDiverged, match="gradients are not finite at epoch 0, step 3"):
        trainer.fit()
    tensors, meta, _ = ckpt.load_checkpoint(tmp_path)
    assert meta["step"] == 2
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert torch.isfinite(trainer.model.head.weight).all()        # the bad step was not taken


def test_non_finite_weights_are_never_written(tmp_path):
    trainer = make_trainer(tmp_path, tiny_config(max_steps=1))
    trainer.fit()
    before = (tmp_path / "last.safetensors").read_bytes()
    with torch.no_grad():
        trainer.model.head.bias[0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"not writing checkpoint 'last'.*head.bias"):
        trainer.save("last")
    assert (tmp_path / "last.safetensors").read_bytes() == before


# ------------------------------------------------------------------ resume with --set
def test_resume_applies_a_changed_lr_and_logs_it(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    logs: list[str] = []
    config = tiny_config(max_steps=3, lr=2e-3)
    resumed = make_trainer(tmp_path, config, resume=True, logs=logs)
    # epoch 0, milestone 1 not reached: the lr is the new one, not the stored 1e-2
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert any("train.lr changed from 0.01 to 0.002 (applied)" in line for line in logs)
    resumed.fit()
    assert json.loads((tmp_path / "last.json").read_text())["config"]["train"]["lr"] == 2e-3
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any(r["type"] == "resume" and "train.lr" in r["changed"] for r in records)


def test_resume_applies_lr_after_a_milestone(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=5)).fit()      # 4 steps per epoch: epoch 1
    resumed = make_trainer(tmp_path, tiny_config(max_steps=6, lr=4e-2), resume=True)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(4e-3)   # x gamma 0.1


def test_resume_refuses_keys_that_cannot_change(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    config = tiny_config(max_steps=3, seed=5)
    config["data"]["batch_size"] = 2
    with pytest.raises(ConfigError, match=r"cannot resume with changed data.batch_size: 4 -> 2; "
                                          r"train.seed: 0 -> 5"):
        prepare_work_dir(tmp_path, resume=True, overwrite=False, config=config)
    with pytest.raises(ConfigError, match="train.seed"):
        make_trainer(tmp_path, config, resume=True)


# ------------------------------------------------------------------ work dirs, umask
def test_work_dir_that_is_a_file(tmp_path):
    target = tmp_path / "run"
    target.write_text("x")
    with pytest.raises(ConfigError, match="run: the work dir exists and is not a folder"):
        prepare_work_dir(target, resume=False, overwrite=False)
    with pytest.raises(ConfigError, match="cannot be created or written"):
        prepare_work_dir(target / "sub", resume=False, overwrite=False)


def test_read_only_work_dir(tmp_path, monkeypatch):
    target = tmp_path / "run"
    target.mkdir()
    import glsmamba.engine.trainer as trainer_module
    real_create = trainer_module.create_exclusive

    def read_only(path, *args):
        if Path(path).parent == target:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_create(path, *args)

    monkeypatch.setattr(trainer_module, "create_exclusive", read_only)
    with pytest.raises(ConfigError, match="run: the work dir cannot be created or written: "
                                          "Read-only file system"):
        prepare_work_dir(target, resume=False, overwrite=False)


def test_output_files_follow_the_umask(tmp_path):
    from glsmamba.fileio import write_json_atomic
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "p.json", {"a": 1})
        ckpt.save_checkpoint(tmp_path, "last", TinyPoseModel(), {"step": 1}, {"step": 1})
    finally:
        os.umask(old)
    for name in ("p.json", "last.safetensors", "last.json", "last_state.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


# ------------------------------------------------------------------ invalid config values
@pytest.mark.parametrize("item, message", [
    ("train.epochs=-1", r"train.epochs = -1 is out of range \(must be >= 1\)"),
    ("train.epochs=0", r"train.epochs = 0 is out of range"),
    ("data.batch_size=0", r"data.batch_size = 0 is out of range \(must be >= 1\)"),
    ("train.lr=-1", r"train.lr = -1.0 is out of range \(must be > 0\)"),
    ("train.lr=nan", r"train.lr = nan must be a finite number"),
    ("train.gamma=inf", r"train.gamma = inf must be a finite number"),
    ("data.workers=-2", r"data.workers = -2 is out of range"),
    ("data.sigma=0", r"data.sigma = 0.0 is out of range \(must be > 0\)"),
    ("train.milestones=[0, 3]", r"train.milestones = \[0, 3\]: milestones must be epoch numbers"),
    ("data.split=4", r"data.split = 4 is out of range \(must be >= 1 and <= 3\)"),
])
def test_invalid_config_values_are_config_errors(item, message):
    from glsmamba.config import load_config
    with pytest.raises(ConfigError, match=r"--set: " + message):
        load_config("synth_tiny", [item])


def test_invalid_value_in_a_toml_file_names_the_file(tmp_path):
    from glsmamba.config import load_config
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepochs = -1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: train.epochs = -1 is out of range"):
        load_config(path)


def test_cli_epochs_minus_one_is_one_line_and_writes_nothing(tmp_path, capsys):
    from glsmamba.cli import main
    rc = main(["train", "synth_tiny", "--set", "train.epochs=-1", "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "train.epochs = -1" in err
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------ neighbours
def test_checkpoint_with_nan_weights_is_refused_for_eval_and_init(tmp_path):
    model = TinyPoseModel()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    ckpt.save_checkpoint(tmp_path, "best", model, {})
    tensors, _, path = ckpt.load_checkpoint(tmp_path / "best.safetensors")
    with pytest.raises(CheckpointError, match=r"best.safetensors: 1 tensor\(s\) hold NaN/inf "
                                              r"\(e.g. head.weight\)"):
        ckpt.load_model_weights(TinyPoseModel(), tensors, path)


def test_os_errors_reach_the_user_as_one_line(tmp_path, capsys):
    from glsmamba.cli import main
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["synth", "--out", str(blocker / "data"), "--videos", "1", "--frames", "2",
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "file/data" in err


@pytest.mark.parametrize("damage", ["bad_rng", "bad_step", "bad_optimizer"])
def test_damaged_state_entries_are_checkpoint_errors(tmp_path, damage):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    meta = json.loads((tmp_path / "last.json").read_text())
    state = ckpt.from_plain(torch.load(tmp_path / "last_state.pt", weights_only=True)["state"])
    if damage == "bad_rng":
        state["rng"]["torch"] = torch.zeros(3)
    elif damage == "bad_step":
        state["step"] = "two"
    else:
        state["optimizer"]["param_groups"] = []
    (tmp_path / "last_state.pt").write_bytes(ckpt.state_bytes(state, meta["set_id"]))
    with pytest.raises(CheckpointError, match="last_state.pt: "):
        make_trainer(tmp_path, tiny_config(max_steps=4), resume=True)


def test_api_train_checks_a_config_built_in_python(tmp_path):
    from glsmamba.engine import api
    config = tiny_config()
    config["train"]["epochs"] = -1
    with pytest.raises(ConfigError, match=r"config: train.epochs = -1 is out of range"):
        api.train(config, tmp_path / "w", progress=False, log=lambda *_: None)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("override", [{"dim": -1}, {"d_state": 0}, {"dim": 2.5}])
def test_bad_model_size_overrides_are_config_errors(override):
    from glsmamba.models import create_model
    key = next(iter(override))
    with pytest.raises(ConfigError, match=rf"model 'glsmamba-tiny': {key} must be an integer >= 1"):
        create_model("glsmamba-tiny", num_joints=17, **override)


def test_resume_refuses_a_training_set_of_another_size(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match=r"last.json: the run trained on 16 samples, the training "
                                          r"set now has 12"):
        Trainer(TinyPoseModel(), TinyClipSet(count=12), tiny_config(max_steps=4), tmp_path,
                resume=True, progress=False, log=lambda *_: None)


def test_resume_refuses_another_number_of_processes(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=2)).fit()
    meta = json.loads((tmp_path / "last.json").read_text())
    meta["world_size"] = 4                            # as if trained with torchrun x 4
    (tmp_path / "last.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"last.json: the run used 4 process\(es\), this one 1"):
        make_trainer(tmp_path, tiny_config(max_steps=4), resume=True)


def test_resume_applies_changed_milestones_and_weight_decay(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=5)).fit()      # epoch 1: past milestone 1
    resumed = make_trainer(tmp_path, tiny_config(max_steps=6, milestones=[3], weight_decay=2e-4),
                           resume=True)
    group = resumed.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(1e-2)                   # milestone moved to epoch 3
    assert resumed.scheduler.milestones == {3: 1}
    decays = sorted(g["weight_decay"] for g in resumed.optimizer.param_groups)
    assert decays[-1] == pytest.approx(2e-4)                    # the decayed group
    assert all(d == 0 or d == pytest.approx(2e-4) for d in decays)
    resumed.fit()
