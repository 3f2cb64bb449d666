"""Named model presets: ``create_model(name, **overrides)``, ``list_models()``.

A preset is a builder (a model class), its default keyword arguments and a one-line
description. Overrides are keyword arguments of the builder; anything else is a
:class:`~glsmamba.errors.ConfigError` that lists what is accepted.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from glsmamba.errors import ConfigError

# GLSMamba-B's widths (docs/MODEL.md, "Widths"): D = 192 with expand 1 scans 6 paths of
# 192 channels; FFN ratio 3; the sequential channel attention's MLP keeps its full width
# (hidden = T*D), which holds most parameters at a per-clip cost. 10.08 M trainable
# parameters (paper 9.8 M) and 140.8 GFLOPs a clip (paper 138.9).
GLSMAMBA_B_DIM = 192
GLSMAMBA_B_WIDTHS = dict(dim=GLSMAMBA_B_DIM, expand=1.0, mlp_ratio=3.0, ca_reduction=1.0)
# the model of `glsmamba demo` (and of `glsmamba bench`'s rows): 1 GSM + 1 LRM, D = 32,
# d_state 1, on the 1/4-resolution features of the vit-tiny encoder of `vitpose-tiny`
GLSMAMBA_DEMO_WIDTHS = dict(dim=32, d_state=1, gsm_depth=1, lrm_depth=1, mlp_ratio=2.0)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def accepted(self) -> list[str]:
        params = inspect.signature(self.builder).parameters
        return sorted(p for p in params if p not in ("self",))

    def kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        accepted = set(self.accepted())
        unknown = sorted(set(overrides) - accepted)
        if unknown:
            raise ConfigError(
                f"model {self.name!r}: unknown override(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted))}")
        return {**self.defaults, **overrides}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], description: str = "",
                   **defaults: Any) -> ModelSpec:
    """Register a preset (replaces one of the same name)."""
    spec = ModelSpec(name, builder, dict(defaults), description)
    spec.kwargs(defaults)  # defaults must be valid arguments too
    _REGISTRY[name] = spec
    return spec


def unregister_model(name: str) -> None:
    """Remove a preset registered with :func:`register_model` (a plugin's, a test's)."""
    _REGISTRY.pop(name, None)


def get_spec(name: str) -> ModelSpec:
    _ensure_presets()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


# overrides that are sizes: 0 or less builds a degenerate model or fails deep in torch
POSITIVE_SIZES = {"dim", "d_state", "num_joints", "num_frames", "d_conv", "num_heads",
                  "window_size"}


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build preset ``name`` with keyword overrides (e.g. ``num_joints=15``)."""
    spec = get_spec(name)
    kwargs = spec.kwargs(overrides)
    for key in POSITIVE_SIZES & set(overrides):
        value = overrides[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {name!r}: {key} must be an integer >= 1, got {value!r}")
    try:
        return spec.builder(**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:   # RuntimeError: e.g. a negative size
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model {name!r}: {err}") from err


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description) of every preset, in registration order."""
    _ensure_presets()
    return [(spec.name, spec.description) for spec in _REGISTRY.values()]


_PRESETS_DONE = False


def _ensure_presets() -> None:
    global _PRESETS_DONE
    if _PRESETS_DONE:
        return
    _PRESETS_DONE = True
    _register_presets()


def _register_presets() -> None:
    from glsmamba.models.glsmamba import GLSMamba, ViTPoseBaseline
    from glsmamba.models.transformer import TransformerPose

    b = dict(encoder_arch="vit-b", input_size=(192, 256), num_frames=5, **GLSMAMBA_B_WIDTHS)
    register_model("glsmamba-b", GLSMamba, "GLSMamba-B: frozen ViTPose-B, 1/4 res, 4 GSM + 2 LRM", **b)
    register_model("glsmamba-h", GLSMamba, "GLSMamba-H: frozen ViTPose-H, 1/4 res, 4 GSM + 2 LRM",
                   **{**b, "encoder_arch": "vit-h"})
    register_model("glsmamba-b-lr", GLSMamba,
                   "GLSMamba-BLR: ViT-B tokens at 1/16, heatmaps up-sampled x4 in the head",
                   **b, feature_stride=16)
    # small CPU model (synth_tiny), sized for training on 2 cores: features at 1/8 (16 x 12, the head
    # up-samples to 32 x 24), D = 32, expand 1, d_state 1 (VMamba's later default)
    register_model("glsmamba-tiny", GLSMamba,
                   "small CPU model (synth_tiny): vit-tiny, 128x96 input, features 1/8, D=32, "
                   "2 GSM + 1 LRM, d_state 1",
                   encoder_arch="vit-tiny", input_size=(96, 128), num_frames=5, dim=32,
                   feature_stride=8, gsm_depth=2, lrm_depth=1, d_state=1, expand=1.0,
                   mlp_ratio=2.0)
    register_model("glsmamba-demo", GLSMamba,
                   "the demo's GLSMamba: vit-tiny (as vitpose-tiny), 128x96 input, features 1/4, "
                   "D=32, 1 GSM + 1 LRM, d_state 1", encoder_arch="vit-tiny", input_size=(96, 128),
                   num_frames=5, feature_stride=4, expand=1.0, **GLSMAMBA_DEMO_WIDTHS)
    register_model("glsmamba-b-unified", GLSMamba, "ablation: unified scan only (2 paths, no STMM)",
                   **b, scan_types=("unified",))
    register_model("glsmamba-b-unified-spatial", GLSMamba,
                   "ablation: unified + spatial scans (4 paths) with STMM", **b,
                   scan_types=("unified", "spatial"))
    register_model("glsmamba-b-no-stmm", GLSMamba,
                   "ablation: full STS6D, scan types summed instead of STMM", **b, use_stmm=False)
    register_model("glsmamba-b-no-lrm", GLSMamba, "ablation: 4 GSM blocks, no LRM", **b, lrm_depth=0)
    # the paper's open choices as switches (docs/MODEL.md, "Open choices as switches")
    register_model("glsmamba-b-shared-s6", GLSMamba,
                   "switch: one S6 parameter set shared by the six STS6D paths", **b, share_s6=True)
    register_model("glsmamba-b-stmm-neighbours", GLSMamba,
                   "switch: STMM offsets / masks from frames t-1 and t+1", **b,
                   stmm_temporal="neighbours")
    register_model("vitpose-b", ViTPoseBaseline, "backbone only: single-frame ViTPose-B + 1x1 head",
                   encoder_arch="vit-b", input_size=(192, 256), num_frames=5)
    register_model("vitpose-tiny", ViTPoseBaseline, "backbone only: single-frame vit-tiny, 128x96",
                   encoder_arch="vit-tiny", input_size=(96, 128), num_frames=5)
    trans = dict(encoder_arch="vit-b", input_size=(192, 256), num_frames=5, dim=768, depth=6,
                 num_heads=12)
    for suffix, stride, label in (("lr", 16, "1/16"), ("nr", 8, "1/8"), ("hr", 4, "1/4")):
        register_model(f"trans-b-{suffix}", TransformerPose,
                       f"attention baseline: global MHSA over T*H*W tokens at {label} (D=768, 6 blocks)",
                       **trans, feature_stride=stride)
