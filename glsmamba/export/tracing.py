"""What changes while a model is traced for ONNX: only ops that have an exportable twin.

:func:`export_mode` switches, for the duration of a ``with`` block,

* every selective scan to the ``"export"`` backend (:mod:`glsmamba.ops.scan_export`:
  standard ONNX operators only), and
* the depthwise deformable convolution of the STMM from its memory-lean autograd Function
  (in-place slices, no ONNX symbolic) to the generic ``grid_sample`` + ``matmul`` form of
  :mod:`glsmamba.ops.deform_conv`, which exports as ``GridSample`` + ``MatMul``.

Both twins compute the same function (tests/ops/test_scan_export.py,
tests/export/test_export.py); everything is restored on exit, also after an error.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from glsmamba.ops import deform_conv


class _TraceableDepthwiseDeformConv:
    """Stand-in for ``deform_conv._DepthwiseDeformConv`` with the same ``apply`` signature:
    x (B, C, H, W), grid (B*G, taps*Ho, Wo, 2), mask, weight (C, 1, kh, kw) -> (B, C, Ho, Wo)."""

    @staticmethod
    def apply(x: torch.Tensor, grid: torch.Tensor, mask: torch.Tensor | None,
              weight: torch.Tensor, offset_groups: int) -> torch.Tensor:
        taps = weight.shape[-2] * weight.shape[-1]
        out_hw = (grid.shape[1] // taps, grid.shape[2])
        out = deform_conv._sample_and_contract(x, grid, mask, weight, None, offset_groups,
                                               groups=x.shape[1])  # (B, C, Ho*Wo)
        return out.reshape(x.shape[0], x.shape[1], *out_hw)


def scan_modules(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` that runs a selective scan (has ``scan_backend``)."""
    return [m for m in model.modules() if hasattr(m, "scan_backend")]


@contextlib.contextmanager
def export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with export_mode(model):`` trace ``model`` with exportable scan and deformable conv."""
    scans = scan_modules(model)
    saved = [m.scan_backend for m in scans]
    depthwise = deform_conv._DepthwiseDeformConv
    try:
        for module in scans:
            module.scan_backend = "export"
        deform_conv._DepthwiseDeformConv = _TraceableDepthwiseDeformConv
        yield model
    finally:
        deform_conv._DepthwiseDeformConv = depthwise
        for module, backend in zip(scans, saved):
            module.scan_backend = backend
