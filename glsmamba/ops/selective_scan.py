"""The selective scan (Mamba S6) used by every GLSMamba mixer, with several backends.

``selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus, backend)`` computes,
per channel d and state n (VMamba style: K scan paths batched along the channels, each
path's D channels sharing one B and one C)::

    delta' = softplus(delta + delta_bias)  (or delta + delta_bias)
    h_t    = exp(delta'_t A) * h_{t-1} + delta'_t B_t u_t,   h_0 = 0
    y_t    = sum_n C_tn h_tn + D u_t

Backends: ``"fused"`` (C kernel compiled on first use with the system compiler, CPU,
float32; ``scan_fused.py``), ``"chunked"`` (plain PyTorch, CPU and GPU, float32 or
float64), ``"cuda"`` (mamba_ssm's compiled kernel), ``"reference"`` (sequential loop, for
tests), ``"triton"`` (Triton kernels, forward and backward, no build step:
``scan_triton.py``; CPU tensors run under Triton's interpreter, for tests). ``"auto"``
on CUDA picks triton when it imports (mamba_ssm's cuda kernel instead only where it
imports and ``benchmarks/gpu_check.py`` recorded it faster on that GPU; cuda when triton
is missing; chunked for float64 or without either); on CPU fused when it builds
(chunked for float64 inputs, or after one warning when no C compiler works); else
chunked. On CUDA, triton and cuda are used only after their self-test passed on that
device (``selftest.py``: ``auto`` falls back to the next backend, an explicit one raises;
``GLSMAMBA_SCAN_SELFTEST=0`` skips it). The environment variable ``GLSMAMBA_SCAN_BACKEND``
overrides what ``"auto"`` picks. An explicit ``"fused"`` that cannot be built falls back
to chunked (after the same warning).
"""
from __future__ import annotations

import os

import torch

from glsmamba.errors import ConfigError
from glsmamba.ops.backends import (  # noqa: F401  (re-exported: the scan API)
    BACKENDS, ENV_BACKEND, REGISTERED_BACKENDS, available_backends, backend_names, register_backend,
    run_backend)

def check_scan_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    """Raise ``ValueError`` naming the argument whose shape does not fit the others."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (B, K*D, L), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta shape {tuple(delta.shape)} != u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"selective_scan: A must be (K*D={channels}, N), got {tuple(A.shape)}")
    n_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != n_state or t.shape[3] != length:
            raise ValueError(
                f"selective_scan: {name} must be (B={batch}, K, N={n_state}, L={length}), got {tuple(t.shape)}"
            )
    if B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B has {B.shape[1]} paths but C has {C.shape[1]}")
    groups = B.shape[1]
    if groups == 0 or channels % groups:
        raise ValueError(f"selective_scan: K*D={channels} channels not divisible by K={groups} paths")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"selective_scan: {name} must be (K*D={channels},), got {tuple(t.shape)}")
    devices = {t.device for t in (u, delta, A, B, C, D, delta_bias) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"selective_scan: inputs on different devices {sorted(map(str, devices))}")


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """Turn ``"auto"`` (or the env override) into a concrete backend name.

    ``"fused"`` resolves to ``"chunked"`` when its kernel cannot be built or the device
    is not the CPU; ``"auto"`` also keeps float64 inputs on chunked (fused is float32).
    """
    if backend not in backend_names():
        raise ConfigError(f"unknown selective-scan backend {backend!r}; choose from {backend_names()}")
    if backend == "auto":
        backend = os.environ.get(ENV_BACKEND, "auto") or "auto"
        if backend not in backend_names():
            raise ConfigError(f"{ENV_BACKEND}={backend!r} is not one of {backend_names()}")
    if backend == "auto":
        if device.type == "cuda":  # the first of triton / cuda / chunked that passes its self-test
            from glsmamba.ops import scan_triton, selftest

            return selftest.first_passing(scan_triton.cuda_auto_order(device, dtype), device)
        backend = "fused" if device.type == "cpu" and dtype != torch.float64 else "chunked"
    if backend == "fused":
        from glsmamba.ops import scan_fused

        return "fused" if device.type == "cpu" and scan_fused.is_available() else "chunked"
    if backend == "triton":
        from glsmamba.ops import scan_triton

        if not scan_triton.is_available():
            raise ConfigError("selective-scan backend 'triton' needs the triton package (pip install triton)")
    if backend in ("triton", "cuda") and device.type == "cuda":  # asked for by name: raise if it fails
        from glsmamba.ops import selftest

        selftest.require(backend, device)
    return backend


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """S6 scan over K paths batched along channels.

    u, delta: (B, K*D, L); A: (K*D, N); B, C: (B, K, N, L); D, delta_bias: (K*D,).
    Returns y (B, K*D, L) in u's dtype. The recurrence always runs in float32 (float64
    for float64 inputs on chunked / reference; fused computes float64 inputs in float32),
    whatever the input dtype: bf16 / fp16 inputs (autocast) are upcast inside the
    backend, which keeps the inputs in their own dtype for backward.
    """
    check_scan_inputs(u, delta, A, B, C, D, delta_bias)
    name = resolve_backend(backend, u.device, u.dtype)
    return run_backend(name, u, delta, A, B, C, D, delta_bias, delta_softplus).to(u.dtype)


def scan_backend_report(device: torch.device | str, run: bool = True) -> str:
    """One line: which selective-scan backend ``auto`` runs on ``device`` (a torch.device,
    or 'cpu' / 'cuda' / 'cuda:N' / 'auto') for float32 / bf16 inputs and the self-test
    verdict of each GPU backend it tried on the way. ``run=False`` runs no self-test:
    only verdicts of this process or of the cache are shown ('not run yet' otherwise)."""
    from glsmamba.ops import scan_triton, selftest

    device = selftest.normalize(device) if isinstance(device, torch.device) else selftest.parse_device(device)
    if device.type != "cuda":
        backend = resolve_backend("auto", device, torch.float32)
        return (f"selective scan on {device}: {backend}; no self-test on the CPU "
                "(its backends are checked against the float64 loop by the test suite)")
    forced = os.environ.get(ENV_BACKEND, "auto") or "auto"
    order = [forced] if forced != "auto" else scan_triton.cuda_auto_order(device, torch.float32)
    parts, chosen = [], "chunked"
    for backend in order:
        result = selftest.verdict(backend, device, run) if backend in selftest.CHECKED_BACKENDS else None
        if backend in selftest.CHECKED_BACKENDS:
            parts.append(result.describe() if result else
                         f"{backend}: self-test not run yet (it runs before the first scan of a process)")
        if result is None or result.ok or forced != "auto":
            chosen = backend if result is None or result.ok else f"{backend} ({ENV_BACKEND}: scans raise)"
            break
    return f"selective scan on {selftest.device_label(device)}: {chosen}; " + "; ".join(parts or ["no GPU backend to test"])
