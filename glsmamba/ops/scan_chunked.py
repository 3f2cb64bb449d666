"""Default selective scan: cache-blocked segmented scan in plain PyTorch with a hand-written backward.

Why it is shaped this way (see ``SCAN.md`` in the shared docs for the measurements):

* Bytes moved decide the time on CPU. The sequence is cut into segments of ``S`` steps
  (and the batch into blocks) so that the per-segment working buffers (S, b, K, Dk, N)
  stay in cache; the buffers are allocated once and reused (fresh large tensors cost
  page faults), every element-wise op writes into them with ``out=``.
* Inside a segment the decays ``exp(delta A)`` and drives ``delta u B`` are computed in
  one vectorised op each, then the recurrence runs step by step over the segment with
  in-place ``addcmul_`` on contiguous (b, K*D*N) slices; the state is carried from one
  segment to the next. Only products of ``exp(delta A) <= 1`` are ever formed, so it is
  exactly as stable as the sequential loop (nothing is divided by a cumulative decay).
* ``exp`` is evaluated as ``exp2(delta * A log2 e)``: PyTorch's exp2 kernel is about
  twice as fast as exp on this CPU at the same accuracy.
* The forward keeps only the segment-start states. The backward walks the segments
  backwards, recomputes the states inside each segment from its start state, runs the
  adjoint recurrence ``lam_t = gy_t C_t + exp(delta_{t+1} A) lam_{t+1}`` and forms every
  gradient from (states, adjoints) with contractions into preallocated buffers.

Gradients flow to u, delta, A, B, C, D and, through autograd on the small (B, KD, L)
tensors, to delta_bias and through the softplus.
"""
from __future__ import annotations

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
    """Return (batch block, segment length) so that one step and one segment fit in cache."""
    per_sequence = channels * n_state
    batch_block = max(1, min(batch, STEP_ELEMS // per_sequence))
    segment = SEGMENT_ELEMS // (batch_block * per_sequence)
    return batch_block, max(1, min(length, MAX_SEGMENT, segment))


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
    states[0].addcmul_(decay[0], start)
    for t in range(1, states.shape[0]):
        states[t].addcmul_(decay[t], states[t - 1])


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(b, ..., L) -> contiguous (L, b, ...)."""
    return x.movedim(-1, 0).contiguous()


def scan_forward(
    u_t: torch.Tensor,
    delta_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Time-major forward without D: u_t, delta_t (L, b, KD); B_t, C_t (L, b, K, N).

    Returns y (L, b, KD) and, if asked, the segment-start states (nseg, b, KD, N).
    """
    length, batch, channels = u_t.shape
    groups, n_state = B_t.shape[2], B_t.shape[3]
    per_group = channels // groups
    block, segment = plan_blocks(batch, channels, n_state, length)
    n_segments = -(-length // segment)
    ws = _Workspace(u_t.device, u_t.dtype)
    A2 = (A * LOG2E).view(groups, per_group, n_state)
    du_t = (delta_t * u_t).view(length, batch, groups, per_group)
    delta_g = delta_t.view(length, batch, groups, per_group)
    y_t = torch.empty_like(u_t)
    y_g = y_t.view(length, batch, groups, per_group)
    seg_states = u_t.new_empty(n_segments, batch, channels, n_state) if save_states else None
    for b0 in range(0, batch, block):
        b1 = min(batch, b0 + block)
        carry = u_t.new_zeros(b1 - b0, groups, per_group, n_state)
        for seg, s0 in enumerate(range(0, length, segment)):
            s1 = min(length, s0 + segment)
            n, nb = s1 - s0, b1 - b0
            if seg_states is not None:
                seg_states[seg, b0:b1] = carry.view(nb, channels, n_state)
            decay = _decays(ws, delta_g[s0:s1, b0:b1], A2)
            states = _drives(ws.take("states", n, nb, groups, per_group, n_state), du_t[s0:s1, b0:b1], B_t[s0:s1, b0:b1])
            _run_states(states, decay, carry)
            carry.copy_(states[-1])
            prod = torch.mul(states, C_t[s0:s1, b0:b1].unsqueeze(-2), out=decay)  # reuse the decay buffer
            torch.sum(prod, -1, out=ws.take("y", n, nb, groups, per_group))
            y_g[s0:s1, b0:b1] = ws.buffers["y"][: n * nb * channels].view(n, nb, groups, per_group)
    return y_t, seg_states


def scan_backward(
    grad_y_t: torch.Tensor,
    u_t: torch.Tensor,
    delta_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    seg_states: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the time-major forward (without D) w.r.t. u, delta, A, B, C.

    With states h_t, adjoints lam_t = dL/dh_t and w_t = lam_t * exp(delta_t A) * h_{t-1}:
    dC_t = sum_d gy_t h_t; dB_t = sum_d lam_t delta_t u_t; du_t = delta_t sum_n lam_t B_t;
    ddelta_t = u_t sum_n lam_t B_t + sum_n w_t A; dA = sum_t delta_t w_t.
    """
    length, batch, channels = u_t.shape
    groups, n_state = B_t.shape[2], B_t.shape[3]
    per_group = channels // groups
    block, segment = plan_blocks(batch, channels, n_state, length)
    ws = _Workspace(u_t.device, u_t.dtype)
    A2 = (A * LOG2E).view(groups, per_group, n_state)
    A_g = A.view(groups, per_group, n_state)
    shape_g = (length, batch, groups, per_group)
    du_t = (delta_t * u_t).view(shape_g)
    delta_g, gy_g = delta_t.view(shape_g), grad_y_t.view(shape_g)
    grad_du = torch.empty(shape_g, device=u_t.device, dtype=u_t.dtype)  # sum_n lam B
    grad_delta_exp = torch.empty_like(grad_du)  # sum_n w A
    grad_B, grad_C = torch.empty_like(B_t), torch.empty_like(C_t)
    grad_A = torch.zeros_like(A_g)
    n_segments = seg_states.shape[0]
    for b0 in range(0, batch, block):
        b1 = min(batch, b0 + block)
        nb = b1 - b0
        lam_carry = u_t.new_zeros(nb, groups, per_group, n_state)  # exp(delta_{s1} A) lam_{s1}
        for seg in reversed(range(n_segments)):
            s0, s1 = seg * segment, min(length, (seg + 1) * segment)
            n = s1 - s0
            blk = (slice(s0, s1), slice(b0, b1))
            shape5 = (n, nb, groups, per_group, n_state)
            decay = _decays(ws, delta_g[blk], A2)
            # states (n + 1): row 0 is the state before the segment, row t + 1 is h_t
            states = ws.take("states", n + 1, nb, groups, per_group, n_state)
            states[0] = seg_states[seg, b0:b1].view(nb, groups, per_group, n_state)
            _drives(states[1:], du_t[blk], B_t[blk])
            _run_states(states[1:], decay, states[0])
            # adjoints, backwards in time
            lam = torch.mul(gy_g[blk].unsqueeze(-1), C_t[blk].unsqueeze(-2), out=ws.take("lam", *shape5))
            lam[-1].add_(lam_carry)
            for t in range(n - 2, -1, -1):
                lam[t].addcmul_(decay[t + 1], lam[t + 1])
            torch.mul(decay[0], lam[0], out=lam_carry)
            prod = ws.take("prod", *shape5)
            # dC = sum_d gy h ; dB = sum_d (delta u) lam ; sum_n lam B
            torch.mul(states[1:], gy_g[blk].unsqueeze(-1), out=prod)
            torch.sum(prod, -2, out=ws.take("gC", n, nb, groups, n_state))
            grad_C[blk] = ws.buffers["gC"][: n * nb * groups * n_state].view(n, nb, groups, n_state)
            torch.mul(lam, du_t[blk].unsqueeze(-1), out=prod)
            torch.sum(prod, -2, out=ws.take("gB", n, nb, groups, n_state))
            grad_B[blk] = ws.buffers["gB"][: n * nb * groups * n_state].view(n, nb, groups, n_state)
            torch.mul(lam, B_t[blk].unsqueeze(-2), out=prod)
            torch.sum(prod, -1, out=ws.take("gdu", n, nb, groups, per_group))
            grad_du[blk] = ws.buffers["gdu"][: n * nb * channels].view(n, nb, groups, per_group)
            # w = lam * decay * h_{t-1}: gradient w.r.t. the exponent delta A
            w = decay.mul_(lam).mul_(states[:-1])
            torch.mul(w, A_g, out=prod)
            torch.sum(prod, -1, out=ws.take("gde", n, nb, groups, per_group))
            grad_delta_exp[blk] = ws.buffers["gde"][: n * nb * channels].view(n, nb, groups, per_group)
            torch.mul(w, delta_g[blk].unsqueeze(-1), out=prod)
            grad_A += prod.view(n * nb, groups, per_group, n_state).sum(0)
    grad_u = (grad_du * delta_g).view(length, batch, channels)
    grad_delta = (grad_du * u_t.view(shape_g) + grad_delta_exp).view(length, batch, channels)
    return grad_u, grad_delta, grad_A.view(channels, n_state), grad_B, grad_C


class _ChunkedScan(torch.autograd.Function):
    """autograd wrapper: keeps the time-major inputs and the segment-start states only."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D):
        u_t, delta_t, B_t, C_t = (_time_major(x) for x in (u, delta, B, C))
        needs_grad = any(ctx.needs_input_grad)
        y_t, seg_states = scan_forward(u_t, delta_t, A, B_t, C_t, save_states=needs_grad)
        if D is not None:
            y_t.addcmul_(u_t, D)
        if needs_grad:
            ctx.save_for_backward(u_t, delta_t, A, B_t, C_t, D, seg_states)
        return y_t.movedim(0, -1)  # (B, KD, L), a view with time as the outer stride

    @staticmethod
    def backward(ctx, grad_y):
        u_t, delta_t, A, B_t, C_t, D, seg_states = ctx.saved_tensors
        grad_y_t = _time_major(grad_y)
        grad_u_t, grad_delta_t, grad_A, grad_B_t, grad_C_t = scan_backward(
            grad_y_t, u_t, delta_t, A, B_t, C_t, seg_states
        )
        grad_D = None
        if D is not None:
            grad_u_t.addcmul_(grad_y_t, D)
            grad_D = (grad_y_t * u_t).sum((0, 1)) if ctx.needs_input_grad[5] else None
        back = lambda x: x.movedim(0, -1)  # noqa: E731
        return back(grad_u_t), back(grad_delta_t), grad_A, back(grad_B_t), back(grad_C_t), grad_D


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
    """Segmented S6 scan; shapes as ``selective_scan``. Computes in float32 (float64 kept).

    Returns y (B, KD, L) contiguous.
    """
    flush_denormals_once()
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (x.to(dtype) for x in (u, delta, A, B, C))
    D = D.to(dtype) if D is not None else None
    delta_bias = delta_bias.to(dtype) if delta_bias is not None else None
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    return _ChunkedScan.apply(u, delta, A, B, C, D).contiguous()
