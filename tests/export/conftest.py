"""Export test fixtures: tiny models whose heatmaps and STMM offsets are far from zero."""
from __future__ import annotations

import copy

import pytest
import torch

from ..inference.conftest import make_frames

pytest.importorskip("onnxruntime")

TINY = {"input_size": [48, 64], "dim": 16, "d_state": 2, "gsm_depth": 1, "lrm_depth": 1,
        "mlp_ratio": 1.0}


def excite(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random (non-zero) STMM offset / mask predictors and a head with O(1) outputs, so
    that the deformable sampling is fractional and a 1e-4 heatmap tolerance is strict."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "conv_offset"):
                module.conv_offset.weight.copy_(torch.randn(module.conv_offset.weight.shape, generator=g) * 0.3)
                module.conv_offset.bias.copy_(torch.randn(module.conv_offset.bias.shape, generator=g))
            if name.endswith("final_layer"):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.3)
    return model


def tiny_config(delta: int = 1, window: str | None = None) -> dict:
    from glsmamba.config import DEFAULTS
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(name="glsmamba-tiny", overrides=dict(TINY), random_encoder_ok=True)
    config["data"].update(type="posetrack18", root="unused", delta=delta, workers=0)
    if window is not None:
        config["data"]["window"] = window
    config["eval"].update(flip_test=False)
    return config


def save_tiny(folder, delta: int = 1, window: str | None = None):
    """A tiny checkpoint folder (``last``) with excited weights."""
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    config = tiny_config(delta, window)
    torch.manual_seed(0)
    model = excite(build_model(config, log=lambda *_: None))
    save_checkpoint(folder, "last", model, {"config": config})
    return folder


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    return save_tiny(tmp_path / "ckpt")


def walking_frames(count: int = 6, size=(128, 96)):
    """RGB frames of a textured rectangle walking right, and its boxes (xywh)."""
    return make_frames(count, size)
