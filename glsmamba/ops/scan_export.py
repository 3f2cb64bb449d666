"""The selective scan in standard ONNX operators: what ``glsmamba export`` traces.

Same contract as :func:`glsmamba.ops.selective_scan.selective_scan` (backend
``"export"``). The recurrence ``h_t = a_t h_{t-1} + b_t`` (``a_t = exp(delta'_t A)``,
``b_t = delta'_t B_t u_t``) is computed as a blocked parallel scan of plain tensor ops
(Exp, CumSum, Mul, Add, Slice, Concat, Pad, ReduceSum): no loop operator, no custom op.

* The sequence is cut into chunks of ``chunk`` steps. Inside every chunk (all chunks at
  once) the local states (zero state at the chunk start) are ``chunk`` unrolled
  multiply-adds, and the decay from the chunk start, ``exp(cumsum(delta' A))``, is one
  CumSum + Exp: only products of decays <= 1 are formed, so nothing overflows (unlike the
  ``exp(-cumsum)`` factorisation, which overflows once a state forgets within a chunk).
* The states at the chunk ends obey the same recurrence one level up (decay = the chunk's
  total decay), solved the same way (recursively) and added back, times the decay, to
  every step of the next chunk.
* Long sequences go through in ``block``-token pieces (unrolled at trace time) with the
  state carried across, so the (B, K*D, block, N) intermediates bound the memory.

:func:`selective_scan_loop` is the ONNX ``Loop`` formulation (one step per iteration, a
scripted loop that the exporter turns into ``Loop``), kept for the measurement in
``benchmarks/onnx_export.py`` that chose the chunked form (docs/EXPORT.md).
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from glsmamba.ops.scan_reference import prepare_delta

CHUNK = 8          # steps unrolled inside a chunk (measured in benchmarks/onnx_export.py)
BLOCK_ELEMENTS = 1 << 23   # K*D * block * N elements per batch item of one piece


def _sequential(decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """Unrolled ``h_q = decay_q h_{q-1} + drive_q`` (h_{-1} = 0) along dim -2: (..., Q, N)."""
    states = [drive[..., 0, :]]
    for q in range(1, int(drive.shape[-2])):
        states.append(decay[..., q, :] * states[-1] + drive[..., q, :])
    return torch.stack(states, dim=-2)


def linear_recurrence(log_decay: torch.Tensor, drive: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """All states of ``h_t = exp(log_decay_t) h_{t-1} + drive_t``, h_{-1} = 0, along dim -2.

    log_decay, drive (..., L, N) -> h (..., L, N); log_decay <= 0 (not checked).
    """
    length = int(drive.shape[-2])   # static in an export (a Python int, not a traced size)
    if length <= chunk:
        return _sequential(log_decay.exp(), drive)
    chunks = (length + chunk - 1) // chunk
    pad = chunks * chunk - length
    if pad:  # padded steps: decay 1, drive 0 (they follow every real step)
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
        drive = F.pad(drive, (0, 0, 0, pad))
    lead = drive.shape[:-2]
    n_state = int(drive.shape[-1])
    log_decay = log_decay.reshape(*lead, chunks, chunk, n_state)
    drive = drive.reshape(*lead, chunks, chunk, n_state)
    local = _sequential(log_decay.exp(), drive)           # (..., M, Q, N) from a zero state
    from_start = log_decay.cumsum(-2)                     # (..., M, Q, N) log decay since chunk start
    ends = linear_recurrence(from_start[..., -1, :], local[..., -1, :], chunk)  # (..., M, N)
    entering = F.pad(ends[..., :-1, :], (0, 0, 1, 0))     # state entering chunk m (0 for m = 0)
    states = local + from_start.exp() * entering.unsqueeze(-2)
    states = states.reshape(*lead, chunks * chunk, n_state)
    return states[..., :length, :] if pad else states


def _block_length(channels: int, n_state: int, length: int, chunk: int) -> int:
    block = max(chunk, BLOCK_ELEMENTS // max(channels * n_state, 1))
    return min(length, block)


def _prepared(u, delta, A, B, C, D, delta_bias, delta_softplus):
    """float32 inputs grouped by path: u, delta (b, K, Dk, L); A (K, Dk, N); B, C (b, K, 1, L, N)."""
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    delta = prepare_delta(delta, None if delta_bias is None else delta_bias.to(dtype), delta_softplus)
    batch, channels, length = u.shape[0], int(u.shape[1]), int(u.shape[2])
    groups, n_state = int(B.shape[1]), int(A.shape[1])
    per_group = channels // groups
    shape = (batch, groups, per_group, length)
    B_t = B.transpose(-1, -2).unsqueeze(2)
    C_t = C.transpose(-1, -2).unsqueeze(2)
    return u.reshape(shape), delta.reshape(shape), A.reshape(groups, per_group, n_state), B_t, C_t


def selective_scan_export(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    chunk: int = CHUNK,
    block: int | None = None,
) -> torch.Tensor:
    """S6 scan as a blocked parallel scan. Shapes as ``selective_scan``: u, delta (B, K*D, L);
    A (K*D, N); B, C (B, K, N, L); D, delta_bias (K*D,). Returns y (B, K*D, L), float32
    (float64 for float64 inputs)."""
    batch, channels, length = u.shape[0], int(u.shape[1]), int(u.shape[2])
    x, dt, A_g, B_t, C_t = _prepared(u, delta, A, B, C, D, delta_bias, delta_softplus)
    block = block or _block_length(channels, A.shape[1], length, chunk)
    outputs, state = [], None
    for start in range(0, length, block):
        stop = min(length, start + block)
        dt_b = dt[..., start:stop, None]                              # (b, K, Dk, l, 1)
        log_decay = dt_b * A_g[:, :, None, :]                         # (b, K, Dk, l, N)
        drive = (dt_b * x[..., start:stop, None]) * B_t[:, :, :, start:stop]
        states = linear_recurrence(log_decay, drive, chunk)
        if state is not None:  # the state carried in from the previous piece
            states = states + log_decay.cumsum(-2).exp() * state.unsqueeze(-2)
        state = states[..., -1, :]
        outputs.append((states * C_t[:, :, :, start:stop]).sum(-1))  # (b, K, Dk, l)
    y = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
    y = y.reshape(batch, channels, length)
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u.to(y.dtype)
    return y


def _loop_recurrence(decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """``h_t = decay_t h_{t-1} + drive_t`` one step per iteration; decay, drive
    (L, ..., N) -> (L, ..., N). Scripted (on first use), the exporter turns it into ``Loop``."""
    state = torch.zeros_like(drive[0])
    states = []
    for t in range(drive.shape[0]):
        state = decay[t] * state + drive[t]
        states.append(state)
    return torch.stack(states, 0)


@functools.lru_cache(maxsize=1)
def _scripted_loop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # torch.jit.script's deprecation notice
        return torch.jit.script(_loop_recurrence)


def selective_scan_loop(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False) -> torch.Tensor:
    """The S6 scan as one ONNX ``Loop`` over the L steps (for the measurement only)."""
    batch, channels, length = u.shape[0], int(u.shape[1]), int(u.shape[2])
    x, dt, A_g, B_t, C_t = _prepared(u, delta, A, B, C, D, delta_bias, delta_softplus)
    dt = dt[..., None]
    decay = (dt * A_g[:, :, None, :]).exp()                       # (b, K, Dk, L, N)
    drive = (dt * x[..., None]) * B_t
    time_major = (3, 0, 1, 2, 4)                                  # (L, b, K, Dk, N)
    states = _scripted_loop()(decay.permute(time_major), drive.permute(time_major))
    states = states.permute(1, 2, 3, 0, 4)
    y = (states * C_t).sum(-1).reshape(batch, channels, length)
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u.to(y.dtype)
    return y
