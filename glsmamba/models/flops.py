"""Parameter and FLOP counting, with formulas for what PyTorch's counter does not see.

Convention (the ViTPose / GLSMamba papers', fvcore's, mmcv's): one multiply-add = one
FLOP. Linear layers, convolutions (incl. transposed), matmuls and attention come from
``torch.utils.flop_counter.FlopCounterMode`` (which counts a multiply-add as 2, so its
totals are halved). Norms, activations, biases and element-wise adds are not counted.
Added by formula:

* selective scan, per (batch, path, channel, step): ``5 * N + 5`` operations:
  per state n: dA = exp(delta * A) (1 mul + 1 exp), the input term (delta * u) * B
  (1 mul), the state update h = dA * h + input (1 multiply-add) and the read-out
  y += C * h (1 multiply-add); per channel: delta + bias and softplus (exp + log1p),
  delta * u (1 mul) and the skip D * u + y (1 multiply-add). Padding steps of
  windowed scans are computed, so they are counted.
* modulated deformable conv: the contraction with the weight is a matmul (counted by
  the counter; the depthwise path does it by element-wise multiply-adds, added here as
  1 per (channel, tap, output position)); the bilinear sampling (4 multiply-adds) and the
  mask (1 mul) add ``5`` per (input channel, kernel tap, output position).

Models are built and run on the ``meta`` device: nothing is allocated or computed.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from glsmamba.models.mixer import S6Paths
from glsmamba.ops.deform_conv import ModulatedDeformConv2d

SCAN_OPS_PER_STATE = 5
SCAN_OPS_PER_CHANNEL = 5
DCN_SAMPLING_OPS = 5


def scan_flops(batch: int, num_paths: int, channels: int, length: int, d_state: int) -> int:
    """Operations of one selective scan (u (batch, K*channels, length), N = d_state)."""
    return batch * num_paths * channels * length * (
        SCAN_OPS_PER_STATE * d_state + SCAN_OPS_PER_CHANNEL)


def deform_sampling_flops(batch: int, in_channels: int, taps: int, out_positions: int) -> int:
    """Bilinear sampling + mask of a modulated deformable conv (the contraction excluded)."""
    return batch * in_channels * taps * out_positions * DCN_SAMPLING_OPS


@dataclass
class CostReport:
    """Per part: trainable / frozen parameters and FLOPs (multiply-adds) for one clip."""

    frames: int
    size_hw: tuple[int, int]
    trainable: dict[str, int] = field(default_factory=dict)
    frozen: dict[str, int] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)
    extra_flops: dict[str, int] = field(default_factory=dict)  # the formula part of ``flops``

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    @property
    def total_trainable(self) -> int:
        return sum(self.trainable.values())

    @property
    def total_frozen(self) -> int:
        return sum(self.frozen.values())


def _part_of(name: str, module: nn.Module) -> str:
    """Report bucket of a top-level child (blocks are split by class)."""
    cls = type(module).__name__
    if cls == "GSMBlock":
        return "gsm"
    if cls == "LRMBlock":
        return "lrm"
    if cls == "TransformerBlock":
        return "attention"
    return {"embed": "embedding", "keypoint_head": "head"}.get(name, name)


def _named_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    parts = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            parts += [(_part_of(name, block), block) for block in child]
        else:
            parts.append((_part_of(name, child), child))
    return parts


def count_parameters(model: nn.Module) -> tuple[dict[str, int], dict[str, int]]:
    """(trainable, frozen) parameter counts per part."""
    trainable: dict[str, int] = defaultdict(int)
    frozen: dict[str, int] = defaultdict(int)
    for part, module in _named_parts(model):
        for param in module.parameters():
            (trainable if param.requires_grad else frozen)[part] += param.numel()
    return dict(trainable), dict(frozen)


class _ExtraCounter:
    """Forward hooks that add the scan and deformable-sampling formulas to a bucket."""

    def __init__(self, model: nn.Module):
        self.current = "other"
        self.counts: dict[str, int] = defaultdict(int)
        self.handles = []
        for module in model.modules():
            if isinstance(module, S6Paths):
                self.handles.append(module.register_forward_hook(self._scan_hook))
            elif isinstance(module, ModulatedDeformConv2d):
                self.handles.append(module.register_forward_hook(self._dcn_hook))

    def _scan_hook(self, module: S6Paths, inputs, output) -> None:
        batch, K, E, L = inputs[0].shape
        self.counts[self.current] += scan_flops(batch, K, E, L, module.d_state)

    def _dcn_hook(self, module: ModulatedDeformConv2d, inputs, output) -> None:
        x = inputs[0]
        taps = module.kernel_size[0] * module.kernel_size[1]
        positions = output.shape[-2] * output.shape[-1]
        self.counts[self.current] += deform_sampling_flops(x.shape[0], x.shape[1], taps, positions)
        if module.groups == x.shape[1] == module.weight.shape[0]:
            # the depthwise path contracts with the weight by element-wise multiply-adds
            # inside its autograd Function, which the counter does not see: 1 per tap
            self.counts[self.current] += x.shape[0] * x.shape[1] * taps * positions

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def meta_construction():
    """Build modules on the meta device (no memory, no init cost)."""
    real_linspace = torch.linspace

    def linspace_cpu(*args, **kwargs):  # drop-path schedules call .tolist() on it
        kwargs.setdefault("device", "cpu")
        return real_linspace(*args, **kwargs)

    torch.linspace = linspace_cpu
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.linspace = real_linspace


def measure(model: nn.Module, frames: int | None = None,
            size_hw: tuple[int, int] | None = None) -> CostReport:
    """Parameters and FLOPs of ``model`` for one clip (run on meta tensors if the model is)."""
    frames = frames or getattr(model, "num_frames", 1)
    width, height = model.input_size
    size_hw = size_hw or (height, width)
    device = next(model.parameters()).device
    report = CostReport(frames, tuple(size_hw))
    report.trainable, report.frozen = count_parameters(model)
    clip = torch.zeros(1, frames, 3, *size_hw, device=device)
    extra = _ExtraCounter(model)
    try:
        with torch.no_grad():
            _run_by_part(model, clip, report, extra)
    finally:
        extra.close()
    report.extra_flops = {k: v for k, v in extra.counts.items() if v}
    for part, value in report.extra_flops.items():
        report.flops[part] = report.flops.get(part, 0) + value
    return report


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# real CPU tensors take a fused SDPA kernel that the counter does not know
_CUSTOM = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def _counted(fn, *args):
    with FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
        out = fn(*args)
    return out, counter.get_total_flops() // 2  # the counter's multiply-add = 2


def _add(report: CostReport, part: str, flops: int) -> None:
    report.flops[part] = report.flops.get(part, 0) + flops


def _run_by_part(model: nn.Module, clip: torch.Tensor, report: CostReport, extra) -> None:
    extra.current = "encoder"
    feats, flops = _counted(model.encode, clip)
    _add(report, "encoder", flops)
    if not hasattr(model, "blocks"):  # single-frame baseline
        extra.current = "head"
        _, flops = _counted(model.forward_features, feats)
        _add(report, "head", flops)
        return
    extra.current = "embedding"
    tokens, flops = _counted(model.embed, feats)
    _add(report, "embedding", flops)
    for block in model.blocks:
        extra.current = _part_of("blocks", block)
        tokens, flops = _counted(block, tokens)
        _add(report, extra.current, flops)
    extra.current = "head"
    _, flops = _counted(model.head, tokens[:, tokens.shape[1] // 2])
    _add(report, "head", flops)


def measure_preset(name: str, frames: int | None = None, size_hw: tuple[int, int] | None = None,
                   **overrides) -> CostReport:
    """Build preset ``name`` on the meta device and measure it (``input_size`` follows size_hw)."""
    from glsmamba.models.registry import create_model

    if frames is not None:
        overrides.setdefault("num_frames", frames)
    if size_hw is not None:
        overrides.setdefault("input_size", (size_hw[1], size_hw[0]))
    with meta_construction():
        model = create_model(name, **overrides)
    return measure(model.eval(), frames, size_hw)


def format_report(name: str, report: CostReport) -> str:
    """Human-readable table: parts, trainable / frozen parameters, GFLOPs."""
    parts = list(dict.fromkeys([*report.trainable, *report.frozen, *report.flops]))
    lines = [f"{name}: clip {report.frames} x {report.size_hw[0]} x {report.size_hw[1]} "
             "(FLOPs = multiply-adds, counted once)",
             f"{'part':<12}{'trainable':>14}{'frozen':>14}{'GFLOPs':>10}{'of which scan/DCN':>20}"]
    for part in parts:
        lines.append(
            f"{part:<12}{report.trainable.get(part, 0):>14,}{report.frozen.get(part, 0):>14,}"
            f"{report.flops.get(part, 0) / 1e9:>10.2f}{report.extra_flops.get(part, 0) / 1e9:>20.2f}")
    lines.append(
        f"{'total':<12}{report.total_trainable:>14,}{report.total_frozen:>14,}"
        f"{report.total_flops / 1e9:>10.2f}{sum(report.extra_flops.values()) / 1e9:>20.2f}")
    return "\n".join(lines)
