"""`glsmamba train` with train.grad_checkpointing and bf16 autocast on the CPU."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_standins import TinyClipSet, TinyPoseModel  # noqa: E402

from glsmamba.cli import main  # noqa: E402
from glsmamba.config import DEFAULTS, dump_config  # noqa: E402
from glsmamba.engine.trainer import Trainer, amp_dtype, read_log  # noqa: E402
from glsmamba.errors import ConfigError  # noqa: E402
from glsmamba.models.glsmamba import VideoPoseModel  # noqa: E402


def train_losses(tiny_config, tmp_path, name, *sets):
    config = copy.deepcopy(tiny_config)
    config["data"].update(max_train_samples=2, batch_size=2)
    config["train"].update(epochs=3, lr=5e-3, milestones=[10])
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_config(config))
    args = ["train", str(path), "--work-dir", str(tmp_path / name), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    return [r["loss"] for r in read_log(tmp_path / name / "log.jsonl") if r["type"] == "train"]


def test_train_with_grad_checkpointing_decreases_loss_as_without(tiny_config, tmp_path,
                                                                  monkeypatch):
    calls = []
    original = VideoPoseModel.set_grad_checkpointing

    def record(self, enable=True):
        calls.append(enable)
        original(self, enable)
    monkeypatch.setattr(VideoPoseModel, "set_grad_checkpointing", record)
    plain = train_losses(tiny_config, tmp_path, "plain")
    assert calls == []
    checkpointed = train_losses(tiny_config, tmp_path, "ckpt", "train.grad_checkpointing=true")
    assert calls == [True]
    assert len(checkpointed) == 3 and checkpointed[2] < checkpointed[0]
    assert checkpointed == pytest.approx(plain, rel=1e-4)  # recomputation changes nothing


def test_train_bf16_autocast_on_cpu_decreases_loss(tiny_config, tmp_path):
    fp32 = train_losses(tiny_config, tmp_path, "fp32")
    bf16 = train_losses(tiny_config, tmp_path, "bf16", "train.amp=bf16",
                        "train.grad_checkpointing=true")
    assert len(bf16) == 3 and bf16[2] < bf16[0]
    assert bf16[0] == pytest.approx(fp32[0], rel=0.05)  # same first batch, bf16 rounding


def test_amp_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    assert amp_dtype("fp16", cpu) is None  # fp16 autocast is CUDA only
    assert amp_dtype("off", cuda) is None and amp_dtype("fp16", cuda) == torch.float16
    assert amp_dtype("bf16", cuda) == torch.bfloat16


def test_grad_checkpointing_needs_a_model_that_supports_it(tmp_path):
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(batch_size=4, workers=0)
    config["train"].update(grad_checkpointing=True)
    with pytest.raises(ConfigError, match="set_grad_checkpointing"):
        Trainer(TinyPoseModel(), TinyClipSet(), config, tmp_path, progress=False,
                log=lambda *_: None)


def test_bundled_gpu_configs_turn_checkpointing_on():
    from glsmamba.config import load_config
    for name in ("posetrack17_glsmamba_b", "posetrack18_glsmamba_b", "posetrack21_glsmamba_b",
                 "jhmdb_glsmamba_b"):
        assert load_config(name)["train"]["grad_checkpointing"] is True, name
    assert load_config("synth_tiny")["train"]["grad_checkpointing"] is False
