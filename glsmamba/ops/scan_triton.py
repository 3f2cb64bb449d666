"""Selective scan (Mamba S6) as Triton kernels: forward and backward, no build step.

Design (see ``SCAN.md`` in the shared docs for why):

* One program per (batch, path, block of ``BLOCK_D`` channels of that path). The
  program keeps its (N, BLOCK_D) state in registers and walks the sequence step by
  step; each step reads u, delta (BLOCK_D values) and B, C (N values, shared by the
  path's channels), and writes y. The inner loop is unrolled (``tl.static_range``) so
  that the loads of several steps are in flight together. With 32 channels per
  one-warp program each thread owns one channel and all its N states, so the sum over
  n for y stays in registers (checked on the compiled IR for sm_90 at N = 16: no
  layout conversion in the forward, 128 registers, no spills; the backward, 16
  channels a program, converts only its dB / dC sums for the atomics, 229 registers).
* The recurrence is computed in float32 whatever the input dtype (fp32 / bf16 / fp16);
  y (and du, ddelta) are written in the inputs' dtypes, rounded to nearest even on every
  target: bf16 by integer operations on the float32 bits (add 0x7FFF plus the lowest
  kept bit, keep the high half; NaN stays NaN), because Triton's interpreter truncates
  in its own float32 -> bf16 cast while a GPU rounds; fp16 by the cast (both round). ``exp(delta A)`` is evaluated as
  ``exp2(delta A log2 e)``; only products of decays <= 1 are formed, so it is as stable
  as the sequential loop.
* The forward keeps, besides its inputs, only the state at the start of every segment
  of ``SEG`` steps: (batch, K*D, n_segments, N) float32, i.e. N / SEG of one input.
* The backward walks the segments from the last to the first. For each segment it
  recomputes the states from the saved segment-start state into a per-program scratch
  of (SEG + 1, N, BLOCK_D) float32 (never a (batch, K*D, L, N) tensor), then runs the
  adjoint recurrence ``lam_t = gy_t C_t + exp(delta_{t+1} A) lam_{t+1}`` backwards over
  the segment, forming every gradient on the fly from (lam_t, h_{t-1}, h_t). dA, dD
  and d(delta_bias) are summed per program (per batch element, summed over the batch
  in torch); dB and dC are sums over a path's channels: each channel block adds its
  part either with fp32 atomics into one (batch, K, N, L) buffer (``reduce="atomic"``,
  the GPU default: at most n_channel_blocks writers per address, spread in time) or
  writes per-block partials (batch, K, n_blocks, N, L) that torch sums
  (``reduce="partials"``: deterministic, and the default under
  ``torch.use_deterministic_algorithms(True)`` and on CPU).
* (B, K, N, L) tensors are indexed with int32 offsets (fewer live registers); batches
  past 2**31 such elements run in slices.
* Only Triton features that 3.6 already has are used (``tl.static_range``, masked
  loads/stores, ``tl.reduce``, ``tl.atomic_add``, ``tl.debug_barrier``): no associative
  scans, no jit functions of Triton's library or our own (``tl.full`` not ``tl.zeros``,
  ``tl.reduce`` with the sum combiner not ``tl.sum``), so that the same source runs
  compiled on a GPU and under Triton's interpreter on CPU tensors (the CI tests; CPU
  tensors always go through the interpreter, ``TRITON_INTERPRET`` is not needed).
"""
# No ``from __future__ import annotations`` here: Triton reads the kernels' ``tl.constexpr``
# annotations as objects.
import functools
import math
import os
from dataclasses import dataclass

import torch

try:  # triton is optional: the backend is simply unavailable without it
    import triton
    import triton.language as tl
except Exception:  # ImportError, or a broken install
    triton = None
    tl = None

REDUCE_MODES = ("atomic", "partials")
INDEX_LIMIT = 2**31 - 1  # the kernels index (B, K, N, L) tensors with int32 offsets


def is_available() -> bool:
    """True when Triton imports (CPU tensors then run under its interpreter)."""
    return triton is not None


def is_available_on_cuda() -> bool:
    """True when Triton imports and a CUDA device is visible (what ``auto`` needs)."""
    return triton is not None and torch.cuda.is_available()


# ----------------------------------------------------------------- choice on CUDA
# ``auto`` on CUDA uses this backend, except that mamba_ssm's compiled kernel is used
# when it imports *and* a benchmark on this GPU recorded it as faster
# (``benchmarks/gpu_check.py`` writes the record; ``record_cuda_choice``).
CHOICE_FILE = "scan_backend.json"


def choice_path():
    from pathlib import Path

    root = os.environ.get("GLSMAMBA_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "glsmamba") / CHOICE_FILE


def _gpu_key(device: torch.device) -> str:
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} (torch {torch.__version__}, triton {getattr(triton, '__version__', None)})"


_recorded: dict = {}  # (record file, device index) -> choice: read once per process


def recorded_cuda_choice(device: torch.device) -> str | None:
    """The backend a benchmark recorded as fastest on this GPU ("triton" / "cuda"), if any."""
    import json

    key = (str(choice_path()), device.index)
    if key not in _recorded:
        try:
            _recorded[key] = json.loads(choice_path().read_text()).get(_gpu_key(device))
        except Exception:  # no record, unreadable record, no CUDA
            _recorded[key] = None
    return _recorded[key]


def record_cuda_choice(device: torch.device, backend: str) -> None:
    """Remember that ``backend`` was measured fastest on this GPU (read by ``auto``)."""
    import json

    path = choice_path()
    try:
        data = json.loads(path.read_text())
    except Exception:
        data = {}
    data[_gpu_key(device)] = backend
    path.parent.mkdir(parents=True, exist_ok=True)
    from glsmamba.fileio import write_json_atomic

    write_json_atomic(path, data, indent=1)
    _recorded.clear()


def cuda_auto_order(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The backends ``auto`` tries for CUDA tensors, best first, ending with chunked:
    triton when it imports (float32 / bf16 / fp16), then mamba_ssm's kernel where it
    imports (first where it was recorded faster); chunked alone for float64. The first
    whose self-test passes runs (``selftest.first_passing``)."""
    from glsmamba.ops import scan_cuda

    if dtype == torch.float64:
        return ["chunked"]
    order = ["triton"] if is_available_on_cuda() else []
    if scan_cuda.is_available():
        order.insert(0 if order and recorded_cuda_choice(device) == "cuda" else len(order), "cuda")
    return order + ["chunked"]


def cuda_auto_backend(device: torch.device, dtype: torch.dtype) -> str:
    """What ``auto`` prefers for CUDA tensors before any self-test (``cuda_auto_order``'s first)."""
    return cuda_auto_order(device, dtype)[0]


@dataclass(frozen=True)
class ScanConfig:
    """Launch parameters. ``None`` fields are picked by :func:`pick_config`."""

    block_d: int | None = None  # channels per program, forward (power of two)
    block_d_bwd: int | None = None  # the same for the backward
    seg: int | None = None  # steps per saved segment (multiple of both unrolls)
    unroll: int | None = None  # steps per unrolled loop body, forward
    unroll_bwd: int | None = None  # the same for the backward (more live registers per step)
    num_warps: int | None = None
    reduce: str | None = None  # "atomic" or "partials" for dB / dC


def _pow2_ceil(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def pick_config(batch: int, paths: int, per_path: int, n_state: int, length: int, device: torch.device,
                config: ScanConfig | None = None) -> ScanConfig:
    """Fill the unset fields of ``config`` for this problem and device.

    GPU: the forward 32 channels per program (one warp, a thread per channel holding
    its N states), halved down to 8 while there are fewer than 4 programs per
    multiprocessor (batch 1); the backward at most 16 (at 32 it needs more than 255
    registers); the forward unrolled 4x, the backward 2x; more warps only when N > 16.
    (ptxas for sm_90 at N = 16: forward 128 registers, backward 229, no spills.)
    Interpreter (CPU): large blocks, no unrolling, so that few interpreted steps run;
    segments of 16 steps, so that the small shapes of the tests cross segments.
    """
    config = config or ScanConfig()
    block_n = _pow2_ceil(n_state)
    on_gpu = device.type == "cuda"
    block_d = config.block_d
    if block_d is None:
        block_d = min(_pow2_ceil(per_path), 32 if on_gpu else 64)
        if on_gpu:
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            while block_d > 8 and batch * paths * math.ceil(per_path / block_d) < 4 * sms:
                block_d //= 2
    # backward: 16 channels a program on the GPU (32 would need more than 255 registers)
    block_d_bwd = config.block_d_bwd or (min(block_d, 16) if on_gpu else block_d)
    unroll = config.unroll or (4 if on_gpu else 1)
    unroll_bwd = config.unroll_bwd or (min(unroll, 2) if on_gpu else unroll)
    step = math.lcm(unroll, unroll_bwd)
    seg = config.seg or (128 if on_gpu else 16)  # CPU: small test shapes cross segments too
    seg = max(step, seg - seg % step)
    num_warps = config.num_warps or max(1, min(8, block_d * block_n // 512))
    # fp32 atomics add in a varying order: under torch.use_deterministic_algorithms(True)
    # the GPU default is the per-block partials instead
    deterministic = torch.are_deterministic_algorithms_enabled()
    reduce = config.reduce or ("atomic" if on_gpu and not deterministic else "partials")
    if reduce not in REDUCE_MODES:
        raise ValueError(f"scan_triton: reduce must be one of {REDUCE_MODES}, got {reduce!r}")
    for value in (block_d, block_d_bwd):
        if value < 1 or value & (value - 1):
            raise ValueError(f"scan_triton: block_d / block_d_bwd must be powers of two, got {value}")
    return ScanConfig(block_d=block_d, block_d_bwd=block_d_bwd, seg=seg, unroll=unroll, unroll_bwd=unroll_bwd,
                      num_warps=num_warps, reduce=reduce)


# ----------------------------------------------------------------------------- kernels
# Plain Python functions, wrapped by triton.jit (GPU) or the interpreter (CPU) on first
# use. They call no other jit function, so either wrapper runs them unchanged.


if tl is None:  # annotations of the kernel signatures below
    class _NoTriton:
        constexpr = None

    tl = _NoTriton()


def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
    length, n_paths, per_path, n_state, n_seg, unit,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, SEG: tl.constexpr, UNROLL: tl.constexpr,
):
    # Tiles are (BLOCK_N states, BLOCK_D channels): with BLOCK_D = 32 lanes a thread owns
    # one channel and all its states, so sums over n stay in registers. (B, K, N, L)
    # offsets are int32 (the wrapper checks the sizes), added before the pointer so
    # that no per-element 64-bit pointers stay live across the loop.
    pid_bk = tl.program_id(0)  # batch * n_paths + path
    pid_d = tl.program_id(1)  # channel block inside the path
    batch = pid_bk // n_paths
    path = pid_bk % n_paths
    channels = n_paths * per_path
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]  # [1, BD]
    offs_n = tl.arange(0, BLOCK_N)[:, None]  # [BN, 1]
    mask_d = offs_d < per_path
    mask_n = offs_n < n_state
    mask_nd = mask_n & mask_d
    chan = path * per_path + offs_d
    # (N, BD) offsets step over n by `unit` (= 1, a run-time value the compiler does not
    # specialise): it then sees no contiguity, so that these loads / stores keep the
    # arithmetic's layout instead of a vectorised one that needs conversions
    n_off = offs_n * unit
    a_off = chan * n_state + n_off
    A2 = tl.load(A_ptr + a_off, mask=mask_nd, other=0.0).to(tl.float32) * 1.4426950408889634
    bias = tl.full([1, BLOCK_D], 0.0, dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    Dv = tl.full([1, BLOCK_D], 0.0, dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    seq = (batch * channels + chan).to(tl.int64)  # [1, BD]
    row = seq * length  # offsets of the channels' sequences in u, delta, y
    bc = (pid_bk * n_state + offs_n) * length  # [BN, 1] rows of B, C

    h = tl.full([BLOCK_N, BLOCK_D], 0.0, dtype=tl.float32)
    for s in range(0, n_seg):
        tl.store(states_ptr + ((seq * n_seg + s) * n_state + n_off), h, mask=mask_nd)
        t_start = s * SEG
        t_end = t_start + SEG
        if t_end > length:
            t_end = length
        for t0 in range(t_start, t_end, UNROLL):
            for j in tl.static_range(UNROLL):
                t = t0 + j
                ok = t < t_end
                m = tl.where(ok, mask_d, False)  # (ok is a python bool under the interpreter)
                mn = tl.where(ok, mask_n, False)
                u = tl.load(u_ptr + (row + t), mask=m, other=0.0).to(tl.float32)
                dt = tl.load(delta_ptr + (row + t), mask=m, other=0.0).to(tl.float32) + bias
                if SOFTPLUS:
                    e = tl.exp(tl.minimum(dt, 20.0))
                    w = 1.0 + e
                    # log1p(e), accurate for small e (Kahan): log(w) * e / (w - 1)
                    lp = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
                    dt = tl.where(dt > 20.0, dt, lp)
                dt = tl.where(m, dt, 0.0)
                Bt = tl.load(B_ptr + (bc + t), mask=mn, other=0.0).to(tl.float32)  # [BN, 1]
                Ct = tl.load(C_ptr + (bc + t), mask=mn, other=0.0).to(tl.float32)
                h = tl.exp2(dt * A2) * h + (dt * u) * Bt
                y = tl.reduce(h * Ct, 0, tl.standard._sum_combine, keep_dims=True)  # [1, BD]
                if HAS_D:
                    y += Dv * u
                if y_ptr.dtype.element_ty == tl.bfloat16:  # round to nearest even (see the docstring)
                    yb = y.to(tl.uint32, bitcast=True)
                    yb = tl.where(y == y, yb + (0x7FFF + ((yb >> 16) & 1)), 0x7FC00000)
                    tl.store(y_ptr + (row + t), (yb >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=m)
                else:
                    tl.store(y_ptr + (row + t), y.to(y_ptr.dtype.element_ty), mask=m)


def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    length, n_paths, per_path, n_state, n_seg, n_dblocks, unit,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ATOMIC_BC: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, SEG: tl.constexpr, UNROLL: tl.constexpr,
):
    pid_bk = tl.program_id(0)
    pid_d = tl.program_id(1)
    batch = pid_bk // n_paths
    path = pid_bk % n_paths
    channels = n_paths * per_path
    local_d = tl.arange(0, BLOCK_D)[None, :]  # [1, BD]
    offs_n = tl.arange(0, BLOCK_N)[:, None]  # [BN, 1]
    offs_d = pid_d * BLOCK_D + local_d
    mask_d = offs_d < per_path
    mask_n = offs_n < n_state
    mask_nd = mask_n & mask_d
    chan = path * per_path + offs_d
    # (N, BD) offsets step over n by `unit` (= 1, a run-time value the compiler does not
    # specialise): it then sees no contiguity, so that these loads / stores keep the
    # arithmetic's layout instead of a vectorised one that needs conversions
    n_off = offs_n * unit
    a_off = chan * n_state + n_off
    A2 = tl.load(A_ptr + a_off, mask=mask_nd, other=0.0).to(tl.float32) * 1.4426950408889634
    bias = tl.full([1, BLOCK_D], 0.0, dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    Dv = tl.full([1, BLOCK_D], 0.0, dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    seq = (batch * channels + chan).to(tl.int64)
    row = seq * length
    bc = (pid_bk * n_state + offs_n) * length  # [BN, 1]
    if ATOMIC_BC:
        dbc = bc  # (batch, K, N, L) float32, every channel block adds into it
    else:
        dbc = ((pid_bk * n_dblocks + pid_d) * n_state + offs_n) * length  # (batch, K, nblk, N, L)
    tile = BLOCK_D * BLOCK_N
    # per-program scratch of SEG + 1 states: slot 0 the state before the segment, slot k
    # the state after its k-th step
    scr_base = scratch_ptr + (pid_bk.to(tl.int64) * n_dblocks + pid_d) * ((SEG + 1) * tile)
    scr_off = n_off * BLOCK_D + local_d * unit

    lam = tl.full([BLOCK_N, BLOCK_D], 0.0, dtype=tl.float32)  # exp(delta_{t+1} A) lam_{t+1}
    dA_acc = tl.full([BLOCK_N, BLOCK_D], 0.0, dtype=tl.float32)
    dD_acc = tl.full([1, BLOCK_D], 0.0, dtype=tl.float32)
    dbias_acc = tl.full([1, BLOCK_D], 0.0, dtype=tl.float32)
    for i in range(0, n_seg):
        s = n_seg - 1 - i
        t_start = s * SEG
        t_end = t_start + SEG
        if t_end > length:
            t_end = length
        # 1) the segment's states, recomputed from its saved start state, into the scratch
        h = tl.load(states_ptr + ((seq * n_seg + s) * n_state + n_off), mask=mask_nd,
                    other=0.0)
        tl.store(scr_base + scr_off, h)
        for t0 in range(t_start, t_end, UNROLL):
            for j in tl.static_range(UNROLL):
                t = t0 + j
                ok = t < t_end
                m = tl.where(ok, mask_d, False)
                mn = tl.where(ok, mask_n, False)
                u = tl.load(u_ptr + (row + t), mask=m, other=0.0).to(tl.float32)
                dt = tl.load(delta_ptr + (row + t), mask=m, other=0.0).to(tl.float32) + bias
                if SOFTPLUS:
                    e = tl.exp(tl.minimum(dt, 20.0))
                    w = 1.0 + e
                    lp = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
                    dt = tl.where(dt > 20.0, dt, lp)
                dt = tl.where(m, dt, 0.0)
                Bt = tl.load(B_ptr + (bc + t), mask=mn, other=0.0).to(tl.float32)
                h = tl.exp2(dt * A2) * h + (dt * u) * Bt
                tl.store(scr_base + (scr_off + (t - t_start + 1) * tile), h)
        tl.debug_barrier()
        # 2) the adjoint recurrence, backwards over the segment
        n_rounds = (t_end - t_start + UNROLL - 1) // UNROLL
        for r in range(0, n_rounds):
            for j in tl.static_range(UNROLL):
                t = t_end - 1 - (r * UNROLL + j)
                ok = t >= t_start
                m = tl.where(ok, mask_d, False)
                mn = tl.where(ok, mask_n, False)
                u = tl.load(u_ptr + (row + t), mask=m, other=0.0).to(tl.float32)
                z = tl.load(delta_ptr + (row + t), mask=m, other=0.0).to(tl.float32) + bias
                dt = z
                sig = tl.full([1, BLOCK_D], 1.0, dtype=tl.float32)
                if SOFTPLUS:
                    e = tl.exp(tl.minimum(z, 20.0))
                    w = 1.0 + e
                    lp = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
                    dt = tl.where(z > 20.0, z, lp)
                    sig = tl.where(z > 20.0, 1.0, e / w)
                dt = tl.where(m, dt, 0.0)
                gy = tl.load(dy_ptr + (row + t), mask=m, other=0.0).to(tl.float32)
                Bt = tl.load(B_ptr + (bc + t), mask=mn, other=0.0).to(tl.float32)
                Ct = tl.load(C_ptr + (bc + t), mask=mn, other=0.0).to(tl.float32)
                idx = t - t_start
                okk = tl.where(ok, mask_nd, False)
                h_t = tl.load(scr_base + (scr_off + (idx + 1) * tile), mask=okk, other=0.0)
                h_prev = tl.load(scr_base + (scr_off + idx * tile), mask=okk, other=0.0)
                lam = lam + gy * Ct  # the adjoint of h_t
                a = tl.exp2(dt * A2)
                dCt = tl.reduce(gy * h_t, 1, tl.standard._sum_combine, keep_dims=True)  # [BN, 1]
                dBt = tl.reduce(lam * (dt * u), 1, tl.standard._sum_combine, keep_dims=True)
                lam_b = tl.reduce(lam * Bt, 0, tl.standard._sum_combine, keep_dims=True)  # [1, BD]
                ga = lam * a * h_prev  # d loss / d(delta A) at this step
                ddt = lam_b * u + tl.reduce(ga * A2, 0, tl.standard._sum_combine, keep_dims=True) * 0.6931471805599453
                dA_acc += ga * dt
                du = dt * lam_b
                if HAS_D:
                    du += Dv * gy
                    dD_acc += gy * u
                ddelta = tl.where(m, ddt * sig, 0.0)
                dbias_acc += ddelta
                if du_ptr.dtype.element_ty == tl.bfloat16:  # round to nearest even
                    db = du.to(tl.uint32, bitcast=True)
                    db = tl.where(du == du, db + (0x7FFF + ((db >> 16) & 1)), 0x7FC00000)
                    tl.store(du_ptr + (row + t), (db >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=m)
                else:
                    tl.store(du_ptr + (row + t), du.to(du_ptr.dtype.element_ty), mask=m)
                if ddelta_ptr.dtype.element_ty == tl.bfloat16:
                    db = ddelta.to(tl.uint32, bitcast=True)
                    db = tl.where(ddelta == ddelta, db + (0x7FFF + ((db >> 16) & 1)), 0x7FC00000)
                    tl.store(ddelta_ptr + (row + t), (db >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=m)
                else:
                    tl.store(ddelta_ptr + (row + t), ddelta.to(ddelta_ptr.dtype.element_ty), mask=m)
                if ATOMIC_BC:
                    tl.atomic_add(dB_ptr + (dbc + t), dBt, mask=mn)
                    tl.atomic_add(dC_ptr + (dbc + t), dCt, mask=mn)
                else:
                    tl.store(dB_ptr + (dbc + t), dBt, mask=mn)
                    tl.store(dC_ptr + (dbc + t), dCt, mask=mn)
                lam = lam * a
        tl.debug_barrier()  # the next segment overwrites the scratch
    tl.store(dA_ptr + (seq * n_state + n_off), dA_acc, mask=mask_nd)
    tl.store(dD_ptr + seq, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + seq, dbias_acc, mask=mask_d)


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """(forward, backward) kernels: compiled (GPU) or interpreted (CPU tensors)."""
    if triton is None:
        raise RuntimeError("selective_scan backend 'triton' needs the triton package")
    if interpret:  # works whatever TRITON_INTERPRET said: the kernels use builtins only
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_scan_fwd_kernel), InterpretedFunction(_scan_bwd_kernel)
    return (triton.jit(_scan_fwd_kernel, do_not_specialize=["unit"]),
            triton.jit(_scan_bwd_kernel, do_not_specialize=["unit"]))


def _grid_and_blocks(u: torch.Tensor, B: torch.Tensor, cfg: ScanConfig, block_d: int):
    batch, channels, length = u.shape
    paths, n_state = B.shape[1], B.shape[2]
    per_path = channels // paths
    n_dblocks = math.ceil(per_path / block_d)
    n_seg = max(1, math.ceil(length / cfg.seg))
    return (batch * paths, n_dblocks), per_path, n_dblocks, n_seg, _pow2_ceil(n_state)


def _contig(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.is_contiguous() else t.contiguous()


def _on_device(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensors' one."""
    import contextlib

    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def scan_forward(u, delta, A, B, C, D, delta_bias, softplus: bool, cfg: ScanConfig):
    """Run the forward kernel. Returns (y in u.dtype, segment-start states float32)."""
    batch, channels, length = u.shape
    grid, per_path, _, n_seg, block_n = _grid_and_blocks(u, B, cfg, cfg.block_d)
    y = torch.empty_like(u)
    states = torch.empty(batch, channels, n_seg, A.shape[1], device=u.device, dtype=torch.float32)
    fwd, _ = _kernels(u.device.type != "cuda")
    dummy = A  # unused pointer when D / delta_bias are absent
    with _on_device(u.device):
        fwd[grid](
            u, delta, A, B, C, D if D is not None else dummy, delta_bias if delta_bias is not None else dummy,
            y, states, length, B.shape[1], per_path, A.shape[1], n_seg, 1,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
            BLOCK_D=cfg.block_d, BLOCK_N=block_n, SEG=cfg.seg, UNROLL=cfg.unroll, num_warps=cfg.num_warps,
        )
    return y, states


def scan_backward(u, delta, A, B, C, D, delta_bias, softplus: bool, states, grad_y, cfg: ScanConfig):
    """Run the backward kernel. Returns (du, ddelta, dA, dB, dC, dD, dbias) in the inputs' dtypes."""
    batch, channels, length = u.shape
    grid, per_path, n_dblocks, n_seg, block_n = _grid_and_blocks(u, B, cfg, cfg.block_d_bwd)
    n_state = A.shape[1]
    dev, f32 = u.device, torch.float32
    du = torch.empty_like(u)
    ddelta = torch.empty_like(delta)
    dA = torch.empty(batch, channels, n_state, device=dev, dtype=f32)
    dD = torch.empty(batch, channels, device=dev, dtype=f32)
    dbias = torch.empty(batch, channels, device=dev, dtype=f32)
    atomic = cfg.reduce == "atomic" and n_dblocks > 1
    if atomic:
        dB = torch.zeros(B.shape, device=dev, dtype=f32)
        dC = torch.zeros(B.shape, device=dev, dtype=f32)
    elif n_dblocks == 1:  # one writer per element: the partials layout is (batch, K, N, L)
        dB = torch.empty(B.shape, device=dev, dtype=f32)
        dC = torch.empty(B.shape, device=dev, dtype=f32)
    else:
        shape = (batch, B.shape[1], n_dblocks, n_state, length)
        dB = torch.empty(shape, device=dev, dtype=f32)
        dC = torch.empty(shape, device=dev, dtype=f32)
    num_warps = max(1, cfg.num_warps * cfg.block_d_bwd // cfg.block_d)  # same warps per channel
    scratch = torch.empty(grid[0] * grid[1] * (cfg.seg + 1) * cfg.block_d_bwd * block_n, device=dev, dtype=f32)
    _, bwd = _kernels(u.device.type != "cuda")
    dummy = A
    with _on_device(u.device):
        bwd[grid](
            u, delta, A, B, C, D if D is not None else dummy, delta_bias if delta_bias is not None else dummy,
            grad_y, states, scratch, du, ddelta, dA, dB, dC, dD, dbias,
            length, B.shape[1], per_path, n_state, n_seg, n_dblocks, 1,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
            ATOMIC_BC=atomic,
            BLOCK_D=cfg.block_d_bwd, BLOCK_N=block_n, SEG=cfg.seg, UNROLL=cfg.unroll_bwd, num_warps=num_warps,
        )
    if dB.dim() == 5:
        dB, dC = dB.sum(2), dC.sum(2)
    dA = dA.sum(0).to(A.dtype)
    dD = dD.sum(0).to(D.dtype) if D is not None else None
    dbias = dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dbias


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, softplus: bool, cfg: ScanConfig):
        u, delta, A, B, C, D, delta_bias = (_contig(t) for t in (u, delta, A, B, C, D, delta_bias))
        y, states = scan_forward(u, delta, A, B, C, D, delta_bias, softplus, cfg)
        ctx.softplus, ctx.cfg = softplus, cfg
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        grads = scan_backward(u, delta, A, B, C, D, delta_bias, ctx.softplus, states, grad_y.contiguous(), ctx.cfg)
        grads = [g if need else None for g, need in zip(grads, ctx.needs_input_grad)]
        return (*grads, None, None)


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    config: ScanConfig | None = None,
) -> torch.Tensor:
    """S6 scan as Triton kernels; shapes as ``selective_scan``.

    u, delta, B, C may be float32, bfloat16 or float16 (each may differ); the recurrence
    runs in float32 and y is returned in u's dtype; gradients come back in each input's
    dtype. CUDA tensors run the compiled kernels, CPU tensors Triton's interpreter
    (slow: for tests on small shapes).
    """
    if triton is None:
        raise RuntimeError("selective_scan backend 'triton' needs the triton package (pip install triton)")
    if u.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"selective_scan backend 'triton' computes in float32; got u of dtype {u.dtype}")
    batch, channels, length = u.shape
    paths, n_state = B.shape[1], A.shape[1]
    cfg = pick_config(batch, paths, channels // paths, n_state, length, u.device, config)
    # (B, K, N, L) offsets are int32 inside the kernels: split very large batches
    n_blocks = math.ceil(channels // paths / cfg.block_d_bwd) if cfg.reduce == "partials" else 1
    per_clip = paths * n_blocks * n_state * length
    if per_clip > INDEX_LIMIT:
        raise ValueError(f"selective_scan backend 'triton': one sequence of {per_clip} (K, N, L) elements "
                         "is too large for its int32 offsets; use backend='chunked'")
    max_batch = max(1, INDEX_LIMIT // per_clip)
    if batch > max_batch:
        parts = [
            _TritonScan.apply(u[i:i + max_batch], delta[i:i + max_batch], A, B[i:i + max_batch],
                              C[i:i + max_batch], D, delta_bias, bool(delta_softplus), cfg)
            for i in range(0, batch, max_batch)
        ]
        return torch.cat(parts)
    return _TritonScan.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus), cfg)
