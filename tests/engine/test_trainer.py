"""Training loop: loss decreases, exact kill-and-resume, NaN stop, Ctrl-C, work-dir guard."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_standins import TinyClipSet, TinyPoseModel, make_trainer, tiny_config  # noqa: E402

from glsmamba.checkpoint import load_checkpoint  # noqa: E402
from glsmamba.engine.trainer import Trainer, TrainingDiverged, read_log  # noqa: E402
from glsmamba.errors import ConfigError  # noqa: E402


def params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_decreases(tmp_path):
    trainer = make_trainer(tmp_path / "run", tiny_config(epochs=2))
    trainer.fit()
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert len(losses) == 8
    assert losses[-1] < 0.7 * losses[0]
    tensors, meta, _ = load_checkpoint(tmp_path / "run")
    assert meta["epoch"] == 2 and meta["step"] == 8
    assert set(tensors) == set(trainer.model.state_dict())


def test_two_steps_reduce_loss_on_same_batch(tmp_path):
    data = TinyClipSet(count=4)              # one batch of 4: every step sees the same data
    trainer = Trainer(TinyPoseModel(dropout=0.0), data, tiny_config(epochs=2, lr=5e-2), tmp_path,
                      progress=False, log=lambda *_: None)
    trainer.fit()
    losses = [r["loss"] for r in read_log(tmp_path / "log.jsonl") if r["type"] == "train"]
    assert len(losses) == 2 and losses[1] < losses[0]


@pytest.mark.parametrize("stop_at", [2, 4])
def test_kill_and_resume_matches_uninterrupted(tmp_path, stop_at):
    """Stop after `stop_at` steps (mid-epoch or on a boundary), resume, compare bitwise."""
    full = make_trainer(tmp_path / "full", tiny_config())
    full.fit()
    part = make_trainer(tmp_path / "part", tiny_config(max_steps=stop_at))
    part.fit()
    assert part.step == stop_at
    resumed = make_trainer(tmp_path / "part", tiny_config(), resume=True)
    assert resumed.step == stop_at
    resumed.fit()
    assert resumed.step == full.step == 12
    expected, got = params(full.model), params(resumed.model)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
    assert resumed.scheduler.get_last_lr() == full.scheduler.get_last_lr()


def test_work_dir_is_not_clobbered(tmp_path):
    make_trainer(tmp_path, tiny_config(max_steps=1)).fit()
    with pytest.raises(ConfigError, match="--resume"):
        make_trainer(tmp_path, tiny_config())
    make_trainer(tmp_path, tiny_config(max_steps=1), overwrite=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        make_trainer(tmp_path / "empty", tiny_config(), resume=True)


class NaNAfter(torch.nn.Module):
    """Wraps a model; its output becomes NaN from the n-th forward pass on."""

    def __init__(self, model, after: int):
        super().__init__()
        self.inner, self.after, self.calls = model, after, 0
        self.input_size, self.heatmap_size = model.input_size, model.heatmap_size

    def forward_features(self, feats):
        return self.inner.forward_features(feats)

    def forward(self, clip):
        self.calls += 1
        out = self.inner(clip)
        return out * float("nan") if self.calls > self.after else out


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    model = NaNAfter(TinyPoseModel(), after=5)
    trainer = Trainer(model, TinyClipSet(), tiny_config(), tmp_path, progress=False,
                      log=lambda *_: None)
    with pytest.raises(TrainingDiverged, match="not finite at epoch 1, step 6") as err:
        trainer.fit()
    assert "last good checkpoint is kept" in str(err.value)
    tensors, meta, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert meta["step"] == 4 and meta["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_ctrl_c_writes_checkpoint_and_resumes(tmp_path):
    def interrupt(trainer):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = make_trainer(tmp_path / "run", tiny_config(), step_callback=interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    _, meta, _ = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert meta["step"] == 3 and meta["step_in_epoch"] == 3
    resumed = make_trainer(tmp_path / "run", tiny_config(), resume=True)
    resumed.fit()
    full = make_trainer(tmp_path / "full", tiny_config())
    full.fit()
    for key, value in params(full.model).items():
        torch.testing.assert_close(params(resumed.model)[key], value, rtol=0, atol=1e-6)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_validation_writes_best(tmp_path):
    scores = iter([1.0, 3.0, 2.0])
    trainer = make_trainer(tmp_path, tiny_config(val_interval=1),
                           validate=lambda model: {"mAP": next(scores)}, metric_key="mAP")
    trainer.fit()
    _, meta, _ = load_checkpoint(tmp_path / "best.safetensors")
    assert meta["epoch"] == 2 and meta["metrics"]["mAP"] == 3.0
    assert not (tmp_path / "best_state.pt").exists()
    vals = [r for r in read_log(tmp_path / "log.jsonl") if r["type"] == "val"]
    assert [v["mAP"] for v in vals] == [1.0, 3.0, 2.0]
