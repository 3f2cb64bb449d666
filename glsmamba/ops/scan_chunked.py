"""Default selective scan: cache-blocked segmented scan in plain PyTorch with a hand-written backward.

Why it is shaped this way (see ``SCAN.md`` in the shared docs for the measurements):

* Bytes moved decide the time on CPU. The sequence is cut into segments of ``S`` steps
  (and the batch into blocks) so that the per-segment working buffers (S, b, K, Dk, N)
  stay in cache; the buffers are allocated once and reused (fresh large tensors cost
  page faults), every element-wise op writes into them with ``out=``.
* The inputs are transposed once to time-major (L, b, K, Dk) / (L, b, K, N) copies, so
  that each segment window is one contiguous block.
* Inside a segment the decays ``exp(delta A)`` and drives ``delta u B`` are computed in
  one vectorised op each, then the recurrence runs step by step over the segment with
  in-place ``addcmul_`` on contiguous (b, K*D*N) slices; the state is carried from one
  segment to the next. Only products of ``exp(delta A) <= 1`` are ever formed, so it is
  exactly as stable as the sequential loop (nothing is divided by a cumulative decay).
* ``exp`` is evaluated as ``exp2(delta * A log2 e)``: PyTorch's exp2 kernel is about
  twice as fast as exp on this CPU at the same accuracy. Decays are clamped at 2**-64
  (see ``MIN_LOG2_DECAY``) so that no fp32 denormals appear on worker threads.
* The first call sets ``torch.set_flush_denormal(True)`` for the calling thread.
* The forward keeps only the segment-start states. The backward walks the segments
  backwards, recomputes the states inside each segment from its start state, runs the
  adjoint recurrence ``lam_t = gy_t C_t + exp(delta_{t+1} A) lam_{t+1}`` and forms every
  gradient from (states, adjoints) with contractions into preallocated buffers.

Gradients flow to u, delta, A, B, C, D, delta_bias and through the softplus (its
derivative sigmoid(delta + bias) is applied in backward from the saved raw delta).
"""
from __future__ import annotations

import contextlib
import math

import torch

from glsmamba.ops.scan_reference import prepare_delta

LOG2E = 1.0 / math.log(2.0)
STEP_ELEMS = 1 << 15  # target elements per recurrence step (batch blocking of short sequences)
SEGMENT_ELEMS = 1 << 20  # target elements per (S, b, K, Dk, N) work buffer (~4 MB)
MAX_SEGMENT = 256
# Decays are clamped to >= 2**-64: the dropped part of a state is below 6e-20 of it, and
# no decay (or product of one with an O(1) state) becomes an fp32 denormal, which costs
# about 7x on CPU worker threads that did not inherit torch.set_flush_denormal.
MIN_LOG2_DECAY = -64.0
_denormals_flushed = False


def flush_denormals_once() -> None:
    """Decay products pass through fp32 denormals (about 7x slower): flush them to zero."""
    global _denormals_flushed
    if not _denormals_flushed:
        torch.set_flush_denormal(True)
        _denormals_flushed = True


def plan_blocks(batch: int, channels: int, n_state: int, length: int) -> tuple[int, int]:
    """Return (batch block, segment length) so that one segment's buffers fit in cache.

    Long sequences get segments of about SEGMENT_ELEMS / (channels N) steps; short ones
    (e.g. per-pixel temporal scans, L = 5) get a larger batch block instead, so that each
    recurrence step still works on at least STEP_ELEMS elements.
    """
    per_sequence = channels * n_state
    segment = max(1, min(length, MAX_SEGMENT, SEGMENT_ELEMS // per_sequence))
    by_buffer = SEGMENT_ELEMS // (segment * per_sequence)
    by_step = STEP_ELEMS // per_sequence
    return max(1, min(batch, max(by_buffer, by_step))), segment


class _Workspace:
    """Flat buffers reused by every segment; ``take(name, shape)`` views the front of one."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, *shape: int) -> torch.Tensor:
        size = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < size:
            buf = torch.empty(size, device=self.device, dtype=self.dtype)
            self.buffers[name] = buf
        return buf[:size].view(shape)


def _decays(ws: _Workspace, delta_seg: torch.Tensor, A2: torch.Tensor, name: str = "decay") -> torch.Tensor:
    """exp(delta A) for one segment: delta_seg (n, nb, K, Dk) -> (n, nb, K, Dk, N)."""
    n, nb, K, Dk = delta_seg.shape
    decay = ws.take(name, n, nb, K, Dk, A2.shape[-1])
    torch.mul(delta_seg.unsqueeze(-1), A2, out=decay)
    return decay.clamp_min_(MIN_LOG2_DECAY).exp2_()


def _drives(out: torch.Tensor, du_seg: torch.Tensor, B_seg: torch.Tensor) -> torch.Tensor:
    """delta u B: du_seg (n, nb, K, Dk), B_seg (n, nb, K, N) -> out (n, nb, K, Dk, N)."""
    return torch.mul(du_seg.unsqueeze(-1), B_seg.unsqueeze(-2), out=out)


def _run_states(states: torch.Tensor, decay: torch.Tensor, start: torch.Tensor) -> None:
    """In place: states[t] <- decay[t] * states[t-1] + states[t] (states[-1] = start)."""
    rows, decay_rows = states.unbind(0), decay.unbind(0)
    rows[0].addcmul_(decay_rows[0], start)
    for t in range(1, len(rows)):
        rows[t].addcmul_(decay_rows[t], rows[t - 1])


def _run_adjoints(lam: torch.Tensor, decay: torch.Tensor, end: torch.Tensor) -> None:
    """In place, backwards: lam[t] <- lam[t] + decay[t+1] * lam[t+1] (the term after the end is ``end``)."""
    rows, decay_rows = lam.unbind(0), decay.unbind(0)
    rows[-1].add_(end)
    for t in range(len(rows) - 2, -1, -1):
        rows[t].addcmul_(decay_rows[t + 1], rows[t + 1])


def _window(x: torch.Tensor, b0: int, b1: int, s0: int, s1: int) -> torch.Tensor:
    """One block of a time-major tensor: x (L, b, P, Q) -> (s1 - s0, b1 - b0, P, Q)."""
    return x[s0:s1, b0:b1]


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(b, P, Q, L) -> contiguous (L, b, P, Q): segment windows become contiguous blocks
    (strided windows made the per-segment ops about 2x slower)."""
    return x.permute(3, 0, 1, 2).contiguous()


def _batch_major(x: torch.Tensor) -> torch.Tensor:
    """(L, b, P, Q) -> contiguous (b, P, Q, L)."""
    return x.permute(1, 2, 3, 0).contiguous()


def scan_forward(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward without D: u, delta (b, KD, L); A (KD, N); B, C (b, K, N, L).

    Returns y (b, KD, L) and, if asked, the segment-start states (nseg, b, KD, N).
    """
    batch, channels, length = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    per_group = channels // groups
    block, segment = plan_blocks(batch, channels, n_state, length)
    n_segments = -(-length // segment)
    ws = _Workspace(u.device, u.dtype)
    A2 = (A * LOG2E).view(groups, per_group, n_state)
    grouped = (batch, groups, per_group, length)
    delta_g = _time_major(delta.view(grouped))  # (L, b, K, Dk)
    du = delta_g * _time_major(u.view(grouped))
    B, C = _time_major(B), _time_major(C)  # (L, b, K, N)
    y_g = torch.empty_like(du)
    seg_states = u.new_empty(n_segments, batch, channels, n_state) if save_states else None
    for b0 in range(0, batch, block):
        b1 = min(batch, b0 + block)
        nb = b1 - b0
        carry = u.new_zeros(nb, groups, per_group, n_state)
        for seg, s0 in enumerate(range(0, length, segment)):
            s1 = min(length, s0 + segment)
            n = s1 - s0
            if seg_states is not None:
                seg_states[seg, b0:b1] = carry.view(nb, channels, n_state)
            decay = _decays(ws, _window(delta_g, b0, b1, s0, s1), A2)
            states = ws.take("states", n, nb, groups, per_group, n_state)
            _drives(states, _window(du, b0, b1, s0, s1), _window(B, b0, b1, s0, s1))
            _run_states(states, decay, carry)
            carry.copy_(states[-1])
            prod = torch.mul(states, _window(C, b0, b1, s0, s1).unsqueeze(-2), out=decay)  # reuse the buffer
            y_seg = torch.sum(prod, -1, out=ws.take("y", n, nb, groups, per_group))
            _window(y_g, b0, b1, s0, s1).copy_(y_seg)
    return _batch_major(y_g).view_as(u), seg_states


def scan_backward(
    grad_y: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    seg_states: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`scan_forward` w.r.t. u, delta, A, B, C (same layouts as the inputs).

    With states h_t, adjoints lam_t = dL/dh_t and w_t = lam_t * exp(delta_t A) * h_{t-1}:
    dC_t = sum_d gy_t h_t; dB_t = sum_d lam_t delta_t u_t; du_t = delta_t sum_n lam_t B_t;
    ddelta_t = u_t sum_n lam_t B_t + sum_n w_t A; dA = sum_t delta_t w_t.
    """
    batch, channels, length = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    per_group = channels // groups
    block, segment = plan_blocks(batch, channels, n_state, length)
    ws = _Workspace(u.device, u.dtype)
    A_g = A.view(groups, per_group, n_state)
    A2 = A_g * LOG2E
    grouped = (batch, groups, per_group, length)
    delta_g, u_g, gy_g = (_time_major(x.view(grouped)) for x in (delta, u, grad_y))  # (L, b, K, Dk)
    du = delta_g * u_g
    B, C = _time_major(B), _time_major(C)  # (L, b, K, N)
    lam_B = torch.empty_like(du)  # sum_n lam B
    grad_delta_exp = torch.empty_like(du)  # sum_n w A
    grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
    grad_A = torch.zeros_like(A_g)
    for b0 in range(0, batch, block):
        b1 = min(batch, b0 + block)
        nb = b1 - b0
        lam_carry = u.new_zeros(nb, groups, per_group, n_state)  # exp(delta_{s1} A) lam_{s1}
        for seg in reversed(range(seg_states.shape[0])):
            s0, s1 = seg * segment, min(length, (seg + 1) * segment)
            n = s1 - s0
            win = lambda x: _window(x, b0, b1, s0, s1)  # noqa: E731
            shape5 = (n, nb, groups, per_group, n_state)
            delta_seg, du_seg, gy_seg = win(delta_g), win(du), win(gy_g)
            decay = _decays(ws, delta_seg, A2)
            # recompute the states: row 0 is the state before the segment, row t + 1 is h_t
            states = ws.take("states", n + 1, nb, groups, per_group, n_state)
            states[0] = seg_states[seg, b0:b1].view(nb, groups, per_group, n_state)
            _drives(states[1:], du_seg, win(B))
            _run_states(states[1:], decay, states[0])
            lam = torch.mul(gy_seg.unsqueeze(-1), win(C).unsqueeze(-2), out=ws.take("lam", *shape5))
            _run_adjoints(lam, decay, lam_carry)
            torch.mul(decay[0], lam[0], out=lam_carry)
            prod = ws.take("prod", *shape5)
            # dC = sum_d gy h ; dB = sum_d (delta u) lam ; sum_n lam B
            torch.mul(states[1:], gy_seg.unsqueeze(-1), out=prod)
            win(grad_C).copy_(torch.sum(prod, -2, out=ws.take("gC", n, nb, groups, n_state)))
            torch.mul(lam, du_seg.unsqueeze(-1), out=prod)
            win(grad_B).copy_(torch.sum(prod, -2, out=ws.take("gB", n, nb, groups, n_state)))
            torch.mul(lam, win(B).unsqueeze(-2), out=prod)
            win(lam_B).copy_(torch.sum(prod, -1, out=ws.take("lamB", n, nb, groups, per_group)))
            # w = lam * decay * h_{t-1}: the gradient w.r.t. the exponent delta A
            w = decay.mul_(lam).mul_(states[:-1])
            torch.mul(w, A_g, out=prod)
            win(grad_delta_exp).copy_(torch.sum(prod, -1, out=ws.take("gde", n, nb, groups, per_group)))
            torch.mul(w, delta_seg.unsqueeze(-1), out=prod)
            grad_A += torch.sum(prod.view(n * nb, groups, per_group, n_state), 0, out=ws.take("gA", *A_g.shape))
    grad_u = _batch_major(lam_B * delta_g).view_as(u)
    grad_delta = _batch_major(lam_B.mul_(u_g).add_(grad_delta_exp)).view_as(u)
    return grad_u, grad_delta, grad_A.view(channels, n_state), _batch_major(grad_B), _batch_major(grad_C)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _ChunkedScan(torch.autograd.Function):
    """autograd wrapper: keeps the inputs, in their own dtype, and the segment-start states only.

    The float32 (float64) copies, delta' = softplus(delta + bias) included, are made inside
    forward and made again in backward, so a bf16 input costs half the bytes of a float32
    copy and nothing of size (B, KD, L) is kept twice. Returns y in the compute dtype.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus: bool):
        dtype = _compute_dtype(u)
        u32, A32, B32, C32 = (x.to(dtype).contiguous() for x in (u, A, B, C))
        D32 = D.to(dtype) if D is not None else None
        bias32 = delta_bias.to(dtype) if delta_bias is not None else None
        delta32 = prepare_delta(delta.to(dtype), bias32, delta_softplus).contiguous()
        needs_grad = any(ctx.needs_input_grad)
        y, seg_states = scan_forward(u32, delta32, A32, B32, C32, save_states=needs_grad)
        if D32 is not None:
            y.addcmul_(u32, D32[:, None])
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, seg_states)
            ctx.delta_softplus = delta_softplus
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C, D, delta_bias, seg_states = ctx.saved_tensors
        dtype = seg_states.dtype
        u32, A32, B32, C32 = (x.to(dtype).contiguous() for x in (u, A, B, C))
        bias32 = delta_bias.to(dtype) if delta_bias is not None else None
        pre = delta.to(dtype)
        if bias32 is not None:
            pre = pre + bias32[:, None]
        delta32 = (torch.nn.functional.softplus(pre) if ctx.delta_softplus else pre).contiguous()
        grad_y = grad_y.to(dtype).contiguous()
        grad_u, grad_delta, grad_A, grad_B, grad_C = scan_backward(
            grad_y, u32, delta32, A32, B32, C32, seg_states)
        del delta32
        if ctx.delta_softplus:  # d softplus(z) / dz = sigmoid(z)
            grad_delta.mul_(pre.sigmoid_())
        grad_bias = grad_delta.sum((0, 2)) if delta_bias is not None and ctx.needs_input_grad[6] else None
        grad_D = None
        if D is not None:
            grad_u.addcmul_(grad_y, D.to(dtype)[:, None])
            grad_D = (grad_y * u32).sum((0, 2)) if ctx.needs_input_grad[5] else None
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_bias, None


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Segmented S6 scan; shapes as ``selective_scan``. Computes in float32 (float64 kept)
    whatever the input dtype; keeps the inputs in their own dtype for backward.

    Returns y (B, KD, L) contiguous, float32 (float64 for float64 inputs).
    """
    flush_denormals_once()
    off = torch.autocast(u.device.type, enabled=False) if u.device.type in ("cpu", "cuda") \
        else contextlib.nullcontext()
    with off:
        return _ChunkedScan.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus))
