"""Selective-scan backends: the names ``backend=`` accepts and the call of one by name.

The bottom of ``ops``: :mod:`selective_scan` resolves ``"auto"`` and checks inputs,
:mod:`selftest` runs a backend by name through :func:`run_backend`.
"""
from __future__ import annotations

import torch

BACKENDS = ("auto", "reference", "chunked", "fused", "cuda", "triton", "export")  # export: ONNX-traceable (scan_export.py)
ENV_BACKEND = "GLSMAMBA_SCAN_BACKEND"
# backends added with register_backend: name -> fn(u, delta, A, B, C, D, delta_bias, delta_softplus)
REGISTERED_BACKENDS: dict = {}


def register_backend(name: str, fn) -> None:
    """Make ``fn`` a scan backend selectable by ``name`` (``backend=``, the models'
    ``scan_backend``, GLSMAMBA_SCAN_BACKEND). ``fn`` takes ``selective_scan``'s tensors and
    returns y (B, K*D, L) in float32; check it against ``scan_reference`` in a test."""
    REGISTERED_BACKENDS[name] = fn


def backend_names() -> tuple[str, ...]:
    """Every name ``backend`` accepts: the built-in ones, then the registered ones."""
    return BACKENDS + tuple(REGISTERED_BACKENDS)


def available_backends() -> list[str]:
    """Backends that can run here (``"cuda"``/``"fused"`` only when their compiled code loads,
    ``"triton"`` when triton imports: on CPU tensors it runs under Triton's interpreter)."""
    from glsmamba.ops import scan_cuda, scan_fused, scan_triton

    names = ["chunked", "reference"]
    if scan_fused.is_available():
        names.insert(0, "fused")
    if scan_cuda.is_available():
        names.insert(0, "cuda")
    if scan_triton.is_available():  # on CPU tensors under Triton's interpreter (slow)
        names.insert(0, "triton")
    return names


def run_backend(name, u, delta, A, B, C, D, delta_bias, delta_softplus) -> torch.Tensor:
    """The backend's y: float32 (float64 for float64 inputs on chunked / reference)."""
    if name in REGISTERED_BACKENDS:
        return REGISTERED_BACKENDS[name](u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "reference":
        from glsmamba.ops.scan_reference import selective_scan_reference

        return selective_scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "cuda":
        from glsmamba.ops.scan_cuda import selective_scan_cuda

        return selective_scan_cuda(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "triton":
        from glsmamba.ops.scan_triton import selective_scan_triton

        return selective_scan_triton(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "export":
        from glsmamba.ops.scan_export import selective_scan_export

        return selective_scan_export(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if name == "fused":
        from glsmamba.ops.scan_fused import selective_scan_fused

        return selective_scan_fused(u, delta, A, B, C, D, delta_bias, delta_softplus)
    from glsmamba.ops.scan_chunked import selective_scan_chunked

    return selective_scan_chunked(u, delta, A, B, C, D, delta_bias, delta_softplus)
