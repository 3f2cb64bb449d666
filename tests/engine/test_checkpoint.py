"""Checkpoints: round trip, frozen parts left out, missing keys, full disk mid-write."""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_standins import TinyPoseModel  # noqa: E402

from glsmamba import fileio  # noqa: E402
from glsmamba import checkpoint as ckpt  # noqa: E402
from glsmamba.errors import CheckpointError  # noqa: E402


def test_round_trip_and_meta(tmp_path):
    model = TinyPoseModel()
    ckpt.save_checkpoint(tmp_path, "last", model, {"epoch": 3, "metrics": {"mAP": 1.5}},
                         {"step": 7})
    tensors, meta, path = ckpt.load_checkpoint(tmp_path)
    assert path.name == "last.safetensors" and meta["epoch"] == 3
    other = TinyPoseModel()
    ckpt.load_model_weights(other, tensors, path)
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)
    assert ckpt.load_train_state(tmp_path / "last_state.pt")["step"] == 7


def test_frozen_parts_left_out(tmp_path):
    model = TinyPoseModel()
    model.encoder.requires_grad_(False)
    ckpt.save_checkpoint(tmp_path, "best", model, {}, save_frozen=False)
    tensors, meta, path = ckpt.load_checkpoint(tmp_path / "best.json")
    assert set(meta["omitted_keys"]) == {"encoder.0.weight", "encoder.0.bias"}
    assert set(tensors) == {"head.weight", "head.bias"}
    with pytest.raises(CheckpointError, match="2 missing keys: encoder.0.bias, encoder.0.weight"):
        ckpt.load_model_weights(TinyPoseModel(), tensors, path)
    ckpt.load_model_weights(TinyPoseModel(), tensors, path, set(meta["omitted_keys"]))


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path):
    model = TinyPoseModel()
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    del tensors["head.weight"]
    tensors["extra.thing"] = torch.zeros(1)
    tensors["head.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as err:
        ckpt.load_model_weights(model, tensors, tmp_path / "x.safetensors")
    message = str(err.value)
    assert "x.safetensors" in message and "1 missing keys: head.weight" in message
    assert "1 unexpected keys: extra.thing" in message and "head.bias: checkpoint (5,)" in message


def test_unreadable_or_absent_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no best.safetensors or last.safetensors"):
        ckpt.load_checkpoint(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage that is not a safetensors header")
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        ckpt.load_checkpoint(bad)


def test_full_disk_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = TinyPoseModel()
    ckpt.save_checkpoint(tmp_path, "last", model, {"epoch": 1}, {"step": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        model.head.weight.add_(1.0)
    calls = {"n": 0}
    real_write = fileio.write_chunk

    def full_disk(handle, data):
        calls["n"] += 1
        if calls["n"] == 2:   # the second file: the first tmp is complete, this one is half
            handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(handle, data)

    monkeypatch.setattr(fileio, "write_chunk", full_disk)
    with pytest.raises(OSError) as err:
        ckpt.save_checkpoint(tmp_path, "last", model, {"epoch": 2}, {"step": 2})
    assert err.value.errno == errno.ENOSPC
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before                      # old files intact, no tmp left behind
    _, meta, _ = ckpt.load_checkpoint(tmp_path)
    assert meta["epoch"] == 1


def test_full_disk_in_training_keeps_last_good(tmp_path, monkeypatch):
    import copy
    from engine_standins import TinyClipSet
    from glsmamba.config import DEFAULTS
    from glsmamba.engine.trainer import Trainer
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(batch_size=4, workers=0)
    config["train"].update(epochs=2, val_interval=0)
    trainer = Trainer(TinyPoseModel(), TinyClipSet(), config, tmp_path, progress=False,
                      log=lambda *_: None)

    def fail_second_epoch(handle, data):
        if trainer.epoch >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        handle.write(data)

    monkeypatch.setattr(fileio, "write_chunk", fail_second_epoch)
    with pytest.raises(OSError):
        trainer.fit()
    _, meta, _ = ckpt.load_checkpoint(tmp_path / "last.safetensors")
    assert meta["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*"))
