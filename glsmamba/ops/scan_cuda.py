"""mamba_ssm's compiled CUDA selective-scan kernel, when it is installed.

Guarded on the compiled module ``selective_scan_cuda`` itself: recent mamba_ssm builds
ship without it unless ``MAMBA_KEEP_CUDA_BUILD=TRUE`` was set at install, and importing
``mamba_ssm`` alone also pulls in Triton. The kernel takes B, C as (B, G, N, L) with G
groups of channels, which is exactly our (B, K, N, L) layout.
"""
from __future__ import annotations

import functools
import importlib

import torch


@functools.lru_cache(maxsize=1)
def _load_kernel():
    try:
        return importlib.import_module("selective_scan_cuda")
    except Exception:  # ImportError, or an undefined-symbol OSError from a mismatched build
        return None


def is_available() -> bool:
    """True when ``selective_scan_cuda`` imports and a CUDA device is visible."""
    return torch.cuda.is_available() and _load_kernel() is not None


def _contiguous_last(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


class _CudaScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus: bool):
        kernel = _load_kernel()
        u, delta, B, C = (_contiguous_last(t) for t in (u, delta, B, C))
        D = D.contiguous() if D is not None else None
        out, states, *_ = kernel.fwd(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
        ctx.delta_softplus = delta_softplus
        ctx.has_D, ctx.has_bias = D is not None, delta_bias is not None
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        grad_out = _contiguous_last(grad_out)
        du, ddelta, dA, dB, dC, dD, dbias, *_ = _load_kernel().bwd(
            u, delta, A, B, C, D, None, delta_bias, grad_out, states, None, None, ctx.delta_softplus, False
        )
        return (
            du, ddelta, dA, dB, dC,
            dD if ctx.has_D else None,
            dbias if ctx.has_bias else None,
            None,
        )


def selective_scan_cuda(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Run the mamba_ssm kernel; shapes as ``selective_scan``. Returns float32 y.

    u, delta, B, C may be fp16/bf16 (the kernel accumulates in fp32); A, D and
    delta_bias are passed as float32.
    """
    if _load_kernel() is None:
        raise RuntimeError("selective_scan backend 'cuda' needs mamba_ssm's compiled selective_scan_cuda module")
    if not u.is_cuda:
        raise RuntimeError("selective_scan backend 'cuda' needs CUDA tensors")
    A = A.float()
    D = D.float() if D is not None else None
    delta_bias = delta_bias.float() if delta_bias is not None else None
    y = _CudaScan.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus))
    return y.float()
