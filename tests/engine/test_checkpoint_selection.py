"""Checkpoint selection: a work dir means its last epoch; `best` is labelled as selected on val."""
from __future__ import annotations

import json

from torch import nn

from glsmamba.commands.train import checkpoint_summary
from glsmamba.engine.api import checkpoint_label
from glsmamba.checkpoint import resolve_checkpoint, save_checkpoint


def test_work_dir_resolves_to_last_and_best_is_labelled(tmp_path):
    model = nn.Linear(2, 2)
    save_checkpoint(tmp_path, "best", model, {"epoch": 3})
    assert resolve_checkpoint(tmp_path).name == "best.safetensors"     # only best: use it
    save_checkpoint(tmp_path, "last", model, {"epoch": 20})
    assert resolve_checkpoint(tmp_path).name == "last.safetensors"     # the headline
    assert checkpoint_label(tmp_path, {"epoch": 20}).endswith("(epoch 20, last epoch)")
    label = checkpoint_label(tmp_path / "best.safetensors", {"epoch": 3})
    assert label.endswith("(epoch 3, best: selected on val)")


def test_train_summary_says_selected_on_val(tmp_path):
    (tmp_path / "best.json").write_text(json.dumps({"epoch": 7}))
    text = checkpoint_summary(tmp_path, 71.234, "mAP")
    assert "last epoch (the headline result)" in text
    assert "mAP 71.23 at epoch 7, selected on val" in text
    assert "selected on val" not in checkpoint_summary(tmp_path, None, "mAP")
