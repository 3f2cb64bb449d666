"""What only a CUDA device can check, besides the scan backends (tests/ops/test_scan_triton.py,
test_selective_scan.py): the deformable convolution on CUDA against the CPU, and a bf16
training step of a small model on CUDA. Marked ``cuda``: skipped without a GPU, run with
``pytest -m cuda`` (also part of ``benchmarks/gpu_check.py``).
"""
from __future__ import annotations

import pytest
import torch

from glsmamba.ops.deform_conv import modulated_deform_conv2d

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _rel(value: torch.Tensor, ref: torch.Tensor) -> float:
    value, ref = value.detach().double().cpu(), ref.detach().double().cpu()
    return float((value - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("groups", [1, 16], ids=["general", "depthwise"])
def test_deform_conv_cuda_matches_cpu_float64(groups):
    gen = torch.Generator().manual_seed(11)
    channels, height, width = 16, 12, 9
    x = torch.randn(2, channels, height, width, generator=gen)
    offset = torch.randn(2, 18, height, width, generator=gen) * 2.0
    mask = torch.rand(2, 9, height, width, generator=gen)
    weight = torch.randn(channels, channels // groups, 3, 3, generator=gen) * 0.1
    bias = torch.randn(channels, generator=gen)
    grad_out = torch.randn(2, channels, height, width, generator=gen)
    results = []
    for device, dtype in (("cuda", torch.float32), ("cpu", torch.float64)):
        leaves = [t.to(device=device, dtype=dtype, copy=True).requires_grad_()
                  for t in (x, offset, mask, weight, bias)]
        out = modulated_deform_conv2d(*leaves, padding=1)
        out.backward(grad_out.to(device=device, dtype=out.dtype))
        results.append([out] + [t.grad for t in leaves])
    for name, got, ref in zip(("out", "x", "offset", "mask", "weight", "bias"), *results):
        assert _rel(got, ref) <= 1e-4, name


def test_bf16_training_step_on_cuda_close_to_float32():
    from glsmamba.engine.trainer import heatmap_mse
    from glsmamba.models import create_model

    torch.manual_seed(0)
    model = create_model("glsmamba-tiny").cuda().train()
    width, height = model.input_size
    clip = torch.randn(2, 5, 3, height, width, device="cuda")
    targets = torch.rand(2, 17, *reversed(model.heatmap_size), device="cuda")
    weights = torch.ones(2, 17, device="cuda")
    grads, losses = [], []
    for autocast in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            heatmaps = model(clip)
        loss = heatmap_mse(heatmaps, targets, weights)
        loss.backward()
        losses.append(float(loss))
        grads.append(torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None]))
    assert all(torch.isfinite(torch.tensor(losses))) and torch.isfinite(grads[1]).all()
    assert abs(losses[1] - losses[0]) <= 2e-2 * abs(losses[0])
    assert grads[0].shape == grads[1].shape
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) <= 5e-2
