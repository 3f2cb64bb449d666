"""Plain sequential selective scan (Mamba S6): the ground truth the fast paths are tested against.

One step per time index, written with ``unbind(-1)`` slices so that the autograd backward
stays linear in L (indexing ``x[:, :, t]`` makes it quadratic). Slow; used by tests and
benchmarks only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    """delta' = softplus(delta + bias) or delta + bias; delta (B, KD, L), bias (KD,)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(delta.dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sequential S6 scan. Shapes as :func:`glsmamba.ops.selective_scan.selective_scan`.

    ``compute_dtype`` (e.g. ``torch.float64``) casts every input before the loop; the
    result is returned in that dtype (float32 by default for low-precision inputs).
    """
    dtype = compute_dtype or (u.dtype if u.dtype == torch.float64 else torch.float32)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    D = D.to(dtype) if D is not None else None
    delta_bias = delta_bias.to(dtype) if delta_bias is not None else None
    batch, channels, _ = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    per_group = channels // groups

    delta = prepare_delta(delta, delta_bias, delta_softplus)
    A_grouped = A.view(groups, per_group, n_state)  # (K, Dk, N)
    state = u.new_zeros(batch, groups, per_group, n_state)  # (B, K, Dk, N)
    outputs = []
    for u_t, delta_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        delta_t = delta_t.view(batch, groups, per_group, 1)
        decay = torch.exp(delta_t * A_grouped)  # (B, K, Dk, N)
        drive = (delta_t * u_t.view(batch, groups, per_group, 1)) * B_t[:, :, None, :]
        state = decay * state + drive
        y_t = (state * C_t[:, :, None, :]).sum(-1)  # (B, K, Dk)
        outputs.append(y_t.reshape(batch, channels))
    y = torch.stack(outputs, dim=-1)  # (B, KD, L)
    if D is not None:
        y = y + D[:, None] * u
    return y
