"""The selective scan in standard ONNX operators: what ``glsmamba export`` traces.

Same contract as :func:`glsmamba.ops.selective_scan.selective_scan` (backend
``"export"``): the recurrence ``h_t = a_t h_{t-1} + b_t`` (``a_t = exp(delta'_t A)``,
``b_t = delta'_t B_t u_t``), ``y_t = C_t h_t + D u_t``, written three ways, all of
standard operators only (measured in ``benchmarks/onnx_export.py``, docs/EXPORT.md):

* :func:`selective_scan_export` (the one exported): one ONNX ``Loop`` over chunks of
  ``CHUNK`` steps. Each iteration forms its chunk's decays and drives, runs the steps
  (written out in the loop body: plain Mul / Add) and keeps only y, so no (L, ..., N)
  tensor exists and the loop has L / CHUNK iterations. Fastest at GLSMamba-B's scan size.
* :func:`selective_scan_parallel`: a blocked parallel scan without any loop operator.
  Inside every chunk (all chunks at once) the states from a zero start are unrolled
  multiply-adds and the decay since the chunk start is ``exp(cumsum(delta' A))`` (only
  products of decays <= 1 are formed: nothing overflows, unlike the ``exp(-cumsum)``
  factorisation); the states at the chunk ends follow the same recurrence one level up
  (recursively) and are added back. It streams (L, ..., N) tensors through memory many
  times: on a par for small scans, several times slower for GLSMamba-B's.
* :func:`selective_scan_loop`: one ONNX ``Loop`` iteration per step (slowest).
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from glsmamba.ops.scan_reference import prepare_delta

CHUNK = 8          # steps per chunk (8 measured fastest, benchmarks/onnx_export.py)
BLOCK_ELEMENTS = 1 << 23   # K*D * block * N elements per batch item of one piece


def _sequential(decay: torch.Tensor, drive: torch.Tensor, dim: int) -> torch.Tensor:
    """Unrolled ``h_q = decay_q h_{q-1} + drive_q`` (h_{-1} = 0) along ``dim`` (0 or 1)."""
    def step(t: torch.Tensor, q: int) -> torch.Tensor:
        return t[q] if dim == 0 else t[:, q]
    states = [step(drive, 0)]
    for q in range(1, int(drive.shape[dim])):
        states.append(step(decay, q) * states[-1] + step(drive, q))
    return torch.stack(states, dim=dim)


def _pad_time(x: torch.Tensor, steps: int, front: bool = False) -> torch.Tensor:
    """Zeros added along dim 0 (after, or before with ``front``)."""
    return F.pad(x, (0, 0) * (x.dim() - 1) + ((steps, 0) if front else (0, steps)))


def linear_recurrence(log_decay: torch.Tensor, drive: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """All states of ``h_t = exp(log_decay_t) h_{t-1} + drive_t``, h_{-1} = 0, time-major:
    log_decay, drive (L, ...) -> h (L, ...); log_decay <= 0 (not checked).

    Time-major, every step of a chunk is ``chunks`` contiguous runs of the other axes.
    """
    length = int(drive.shape[0])   # static in an export (a Python int, not a traced size)
    if length <= chunk:
        return _sequential(log_decay.exp(), drive, 0)
    chunks = (length + chunk - 1) // chunk
    pad = chunks * chunk - length
    if pad:  # padded steps: decay 1, drive 0 (they follow every real step)
        log_decay, drive = _pad_time(log_decay, pad), _pad_time(drive, pad)
    rest = drive.shape[1:]
    log_decay = log_decay.reshape(chunks, chunk, *rest)
    drive = drive.reshape(chunks, chunk, *rest)
    local = _sequential(log_decay.exp(), drive, 1)        # (M, Q, ...) from a zero state
    from_start = log_decay.cumsum(1)                      # (M, Q, ...) log decay since chunk start
    ends = linear_recurrence(from_start[:, -1], local[:, -1], chunk)  # (M, ...) state at chunk ends
    entering = _pad_time(ends[:-1], 1, front=True)        # state entering chunk m (0 for m = 0)
    states = local + from_start.exp() * entering.unsqueeze(1)
    states = states.reshape(chunks * chunk, *rest)
    return states[:length] if pad else states


def _block_length(channels: int, n_state: int, length: int, chunk: int) -> int:
    block = max(chunk, BLOCK_ELEMENTS // max(channels * n_state, 1))
    return min(length, block)


def _prepared(u, delta, A, B, C, D, delta_bias, delta_softplus):
    """float inputs, time-major and grouped by path: u, delta (L, b, K, Dk); A (K, Dk, N);
    B, C (L, b, K, 1, N)."""
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    delta = prepare_delta(delta, None if delta_bias is None else delta_bias.to(dtype), delta_softplus)
    channels, length = int(u.shape[1]), int(u.shape[2])
    groups, n_state = int(B.shape[1]), int(A.shape[1])
    per_group = channels // groups

    def time_major(t: torch.Tensor) -> torch.Tensor:
        return t.permute(2, 0, 1).reshape(length, -1, groups, per_group)
    B_t = B.permute(3, 0, 1, 2).unsqueeze(3)
    C_t = C.permute(3, 0, 1, 2).unsqueeze(3)
    return time_major(u), time_major(delta), A.reshape(groups, per_group, n_state), B_t, C_t


def _output(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """y (L, b, K, Dk) -> (b, K*D, L), plus D u."""
    y = y.reshape(y.shape[0], -1, int(u.shape[1])).permute(1, 2, 0)
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u.to(y.dtype)
    return y


def selective_scan_parallel(
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
    """S6 scan as a blocked parallel scan (no loop operator). Shapes as ``selective_scan``: u, delta (B, K*D, L);
    A (K*D, N); B, C (B, K, N, L); D, delta_bias (K*D,). Returns y (B, K*D, L), float32
    (float64 for float64 inputs)."""
    channels, length = int(u.shape[1]), int(u.shape[2])
    x, dt, A_g, B_t, C_t = _prepared(u, delta, A, B, C, D, delta_bias, delta_softplus)
    block = block or _block_length(channels, int(A.shape[1]), length, chunk)
    outputs, state = [], None
    for start in range(0, length, block):
        stop = min(length, start + block)
        dt_b = dt[start:stop, ..., None]                              # (l, b, K, Dk, 1)
        log_decay = dt_b * A_g                                        # (l, b, K, Dk, N)
        drive = (dt_b * x[start:stop, ..., None]) * B_t[start:stop]
        states = linear_recurrence(log_decay, drive, chunk)
        if state is not None:  # the state carried in from the previous piece
            states = states + log_decay.cumsum(0).exp() * state
        state = states[-1]
        outputs.append((states * C_t[start:stop]).sum(-1))            # (l, b, K, Dk)
    return _output(torch.cat(outputs) if len(outputs) > 1 else outputs[0], u, D)


@functools.lru_cache(maxsize=4)
def _chunk_loop(chunk: int):
    """A TorchScript function (exported as one ONNX ``Loop``) that scans ``chunk`` steps per
    iteration, the steps written out (so that they are plain ops in the loop body)::

        (dt, x (L, b, K, Dk), A (K, Dk, N), B, C (L, b, K, 1, N), h (b, K, Dk, N)) -> y (L, b, K, Dk)

    with L a multiple of ``chunk``; per iteration it forms the chunk's decays and drives,
    runs the steps and keeps only y, so no (L, ..., N) tensor ever exists.
    """
    steps = []
    for q in range(chunk):
        steps.append(f"        h = decay[{q}] * h + drive[{q}]\n        states.append(h)\n")
    source = (
        "def chunk_loop(dt, x, A, B, C, h):\n"
        "    ys = []\n"
        f"    for i in range(dt.shape[0] // {chunk}):\n"
        f"        s = i * {chunk}\n"
        f"        d = dt[s:s + {chunk}].unsqueeze(-1)\n"
        "        decay = torch.exp(d * A)\n"
        f"        drive = d * x[s:s + {chunk}].unsqueeze(-1) * B[s:s + {chunk}]\n"
        "        states = []\n"
        + "".join(steps) +
        f"        ys.append((torch.stack(states) * C[s:s + {chunk}]).sum(-1))\n"
        "    return torch.cat(ys, 0)\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # TorchScript's deprecation notice
        return torch.jit.CompilationUnit(source).chunk_loop


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
) -> torch.Tensor:
    """S6 scan as one ONNX ``Loop`` over chunks of ``chunk`` steps (what the export traces).
    Shapes as ``selective_scan``: u, delta (B, K*D, L); A (K*D, N); B, C (B, K, N, L);
    D, delta_bias (K*D,). Returns y (B, K*D, L), float32 (float64 for float64 inputs)."""
    length = int(u.shape[2])
    x, dt, A_g, B_t, C_t = _prepared(u, delta, A, B, C, D, delta_bias, delta_softplus)
    pad = -length % chunk
    if pad:  # padded steps: dt 0 (decay 1), x 0 (drive 0), after every real step
        x, dt, B_t, C_t = (_pad_time(t, pad) for t in (x, dt, B_t, C_t))
    state = torch.zeros_like(dt[0]).unsqueeze(-1) * A_g          # (b, K, Dk, N)
    y = _chunk_loop(chunk)(dt, x, A_g, B_t, C_t, state)
    return _output(y[:length] if pad else y, u, D)


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
    x, dt, A_g, B_t, C_t = _prepared(u, delta, A, B, C, D, delta_bias, delta_softplus)
    dt = dt[..., None]
    decay = (dt * A_g).exp()                                      # (L, b, K, Dk, N)
    drive = (dt * x[..., None]) * B_t
    states = _scripted_loop()(decay, drive)
    return _output((states * C_t).sum(-1), u, D)
