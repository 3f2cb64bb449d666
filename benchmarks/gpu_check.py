"""One-shot GPU check: correctness, speed and memory of the CUDA paths, in at most 8 minutes.

    python benchmarks/gpu_check.py --out gpu_report             # on one CUDA GPU
    python benchmarks/gpu_check.py --dry-run --out /tmp/gc      # CPU: same code, tiny shapes

Sections (each in its own child process with a time limit, so that a crash, a hang or a
poisoned CUDA context in one is recorded and the next one still runs; the report is
rewritten after every section):

- ``env``: GPU, versions, the measured device-to-device copy bandwidth (bytes read +
  written), which is the ceiling the scan rows are compared with.
- ``scan_correctness``: every CUDA scan backend (triton, chunked, mamba_ssm's cuda if it
  imports) against the float64 sequential reference, y and all seven gradients.
- ``scan_selftest``: the time of the self-test that runs before the first GPU scan of a
  process (``glsmamba/ops/selftest.py``), per GPU backend: cold (a fresh Triton cache, so
  its kernels compile) and warm (compiled), with its verdict; and its operation count
  (torch ops dispatched, Triton launches), from which ``estimate_s`` is formed.
- ``deform_conv``: the deformable convolution (general and depthwise) on the device in
  float32 against the CPU in float64, values and gradients.
- ``train_step_bf16``: one full ``glsmamba-b`` training step (frozen encoder included)
  under bf16 autocast against the same step in float32: loss and gradients finite,
  relative differences.
- ``scan_bench``: scan forward and forward + backward at glsmamba-b's widths (6 paths x
  192 channels, N = 16, L = 15,360), batch 1 and 32: triton vs chunked (vs mamba_ssm if
  it imports); each row's achieved bandwidth = bytes that must be read and written /
  time, against the copy-bandwidth bound. Also a small sweep of Triton launch configs.
  When mamba_ssm was measured, the faster of it and triton is recorded for ``auto``.
- ``train_bench``: 20 training steps of ``glsmamba-b`` at batch 32 with the bundled
  PoseTrack18 recipe's memory settings (bf16 autocast, gradient checkpointing), through
  the project's Trainer: clips per second and ``torch.cuda.max_memory_allocated``.
- ``pytest_cuda``: ``pytest -m cuda`` (the log goes to ``pytest_cuda.txt``).

``--dry-run`` runs every section on the CPU (CUDA hidden from the children): the Triton
kernels under Triton's interpreter, tiny problem sizes, ``glsmamba-tiny`` for the model
sections, so the whole script is exercised end to end without a GPU.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (name, seconds) in run order; together at most the default --budget
SECTIONS = [
    ("env", 25),
    ("scan_correctness", 60),
    ("scan_selftest", 30),
    ("deform_conv", 25),
    ("train_step_bf16", 60),
    ("scan_bench", 130),
    ("train_bench", 95),
    ("pytest_cuda", 80),
]
DEFAULT_BUDGET_S = 470  # the issue's limit is 8 minutes for the whole command

# ---------------------------------------------------------------------------- sizes
GPU_SIZES = {
    "correctness": [  # batch, paths, channels per path, N, L, dtype
        (2, 6, 16, 16, 1000, "float32"), (2, 6, 16, 1, 1000, "float32"),
        (2, 6, 16, 16, 1000, "bfloat16"), (64, 2, 3, 4, 5, "float32"),
        (1, 2, 8, 16, 15_360, "float32"),  # glsmamba-b's L: 120 segments (last, budget permitting)
    ],
    "deform": dict(batch=2, channels=64, height=32, width=24),
    "model": "glsmamba-b", "step_batch": 2,
    "bench": dict(batches=(1, 32), paths=6, per_path=192, n_state=16, length=15_360),
    "bench_reps": (3, 10, 0.5),  # min reps, max reps, target seconds per row
    "train_batch": 32, "train_steps": 20, "train_warmup": 2,
}
DRY_SIZES = {
    "correctness": [(1, 2, 2, 4, 20, "float32"), (1, 2, 2, 1, 13, "bfloat16")],
    "deform": dict(batch=1, channels=8, height=6, width=5),
    "model": "glsmamba-tiny", "step_batch": 1,
    "bench": dict(batches=(1, 2), paths=2, per_path=4, n_state=4, length=48),
    "bench_reps": (1, 1, 0.0),
    "train_batch": 2, "train_steps": 2, "train_warmup": 1,
}
TOLERANCES = {  # max |err| / max |ref| against float64 (y, gradients)
    ("triton", "float32"): (1e-5, 1e-4), ("triton", "bfloat16"): (1e-2, 1e-2),
    ("chunked", "float32"): (1e-4, 1e-4), ("chunked", "bfloat16"): (1e-2, 1e-2),
    ("cuda", "float32"): (1e-3, 1e-3), ("cuda", "bfloat16"): (1e-2, 2e-2),
}
STEP_TOLERANCE = dict(loss=2e-2, grad_rel_l2=5e-2)  # bf16 autocast vs float32, one step


# ------------------------------------------------------------------------ helpers
_RESULT_PATH: Path | None = None  # set in a child: where partial results go


def save_partial(result: dict) -> None:
    """Write a section's result so far (kept if the section is then killed at its limit)."""
    if _RESULT_PATH is not None:
        _RESULT_PATH.write_text(json.dumps(dict(result, status="partial: killed at its time limit"),
                                           indent=1, default=str))


class Deadline:
    def __init__(self, at: float):
        self.at = at

    def left(self) -> float:
        return self.at - time.time()

    def ok(self, need: float = 0.0) -> bool:
        return self.left() > need


def _device(dry: bool):
    import torch

    return torch.device("cpu") if dry else torch.device("cuda")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rel(value, ref) -> float:
    import torch

    value, ref = value.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(value).all():
        return float("inf")
    return float((value - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def measure_copy_bandwidth(device, n_bytes: int) -> float:
    """Device-to-device copy, bytes read + written per second (median of 10)."""
    import torch

    n = n_bytes // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n * 4 / statistics.median(times)


def scan_inputs(batch, paths, per_path, n_state, length, device, dtype, seed=0):
    """Mamba-like scan inputs; activations in ``dtype``, A / D / delta_bias in float32."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)  # drawn on the device: GBs at batch 32
    channels = paths * per_path
    kw = dict(generator=gen, device=device)
    u = torch.randn(batch, channels, length, **kw)
    delta = torch.randn(batch, channels, length, **kw) - 1.0
    A = -torch.exp(torch.rand(channels, n_state, **kw) * 3)
    B = torch.randn(batch, paths, n_state, length, **kw)
    C = torch.randn(batch, paths, n_state, length, **kw)
    D = torch.randn(channels, **kw)
    bias = torch.randn(channels, **kw) * 0.5
    act = [x.to(device=device, dtype=dtype) for x in (u, delta)]
    bc = [x.to(device=device, dtype=dtype) for x in (B, C)]
    return [act[0], act[1], A.to(device), bc[0], bc[1], D.to(device), bias.to(device)]


def cuda_backends(dry: bool) -> list[str]:
    from glsmamba.ops import scan_cuda, scan_triton

    names = []
    if scan_triton.is_available() and (dry or scan_triton.is_available_on_cuda()):
        names.append("triton")
    names.append("chunked")
    if not dry and scan_cuda.is_available():
        names.append("cuda")
    return names


# ------------------------------------------------------------------------ sections
def section_env(dry: bool, sizes: dict, deadline: Deadline) -> dict:
    import torch

    from glsmamba.ops import scan_cuda, scan_triton
    from glsmamba.ops.selective_scan import available_backends, resolve_backend

    device = _device(dry)
    out = {
        "torch": torch.__version__, "python": platform.python_version(),
        "triton": getattr(scan_triton.triton, "__version__", None),
        "cuda_runtime": torch.version.cuda, "mamba_ssm_selective_scan_cuda": scan_cuda.is_available(),
        "available_backends": available_backends(), "device": str(device),
        "auto_backend_float32": resolve_backend("auto", device, torch.float32),
        "auto_backend_bfloat16": resolve_backend("auto", device, torch.bfloat16),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1))
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            out["nvidia_smi"] = smi.stdout.strip()
        except Exception as err:  # noqa: BLE001
            out["nvidia_smi"] = f"unavailable: {err}"
    else:
        out.update(gpu="none (dry run on CPU)", cpu=platform.processor() or platform.machine())
    n_bytes = (1 << 30) if device.type == "cuda" else (1 << 24)
    out["copy_bandwidth_GBs"] = round(measure_copy_bandwidth(device, n_bytes) / 1e9, 1)
    out["copy_bytes"] = n_bytes
    return out


def _scan_with_grads(fn, inputs, grad_seed=5):
    import torch

    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    y = fn(*leaves)
    gen = torch.Generator().manual_seed(grad_seed)
    grad_out = torch.randn(y.shape, generator=gen).to(device=y.device, dtype=y.dtype)
    y.backward(grad_out)
    return y.detach(), [x.grad for x in leaves], grad_out


def section_scan_correctness(dry: bool, sizes: dict, deadline: Deadline) -> dict:
    import torch

    from glsmamba.ops.scan_reference import selective_scan_reference
    from glsmamba.ops.scan_triton import ScanConfig, selective_scan_triton
    from glsmamba.ops.selective_scan import selective_scan

    device = _device(dry)
    names = ("y", "u", "delta", "A", "B", "C", "D", "delta_bias")
    variants = [(b, None) for b in cuda_backends(dry)]
    if "triton" in cuda_backends(dry):  # the other dB / dC reduction and no unrolling
        variants.insert(1, ("triton", ScanConfig(reduce="partials", unroll=1)))
    rows = []
    for batch, paths, per_path, n_state, length, dtype_name in sizes["correctness"]:
        if length > 2000 and not deadline.ok(45):  # the float64 loop alone takes a while
            rows.append(dict(backend="all", shape=[batch, paths, per_path, n_state, length], dtype=dtype_name,
                             status="skipped: section time budget"))
            continue
        dtype = getattr(torch, dtype_name)
        inputs = scan_inputs(batch, paths, per_path, n_state, length, device, dtype)
        ref_cache = None
        for backend, config in variants:
            label = backend if config is None else f"{backend}[{config.reduce}, unroll {config.unroll}]"
            row = dict(backend=label, shape=[batch, paths, per_path, n_state, length], dtype=dtype_name)
            if not deadline.ok(5):
                row["status"] = "skipped: section time budget"
                rows.append(row)
                continue
            try:
                if config is None:
                    fn = lambda *xs, _b=backend: selective_scan(*xs, delta_softplus=True, backend=_b)  # noqa: E731
                else:
                    fn = lambda *xs, _c=config: selective_scan_triton(  # noqa: E731
                        *xs, delta_softplus=True, config=_c)
                start = time.perf_counter()
                y, grads, grad_out = _scan_with_grads(fn, inputs)
                _sync(device)
                row["seconds"] = round(time.perf_counter() - start, 3)
                if ref_cache is None:
                    inputs64 = [x.double() for x in inputs]
                    ref_fn = lambda *xs: selective_scan_reference(*xs, delta_softplus=True)  # noqa: E731
                    leaves = [x.detach().clone().requires_grad_() for x in inputs64]
                    y_ref = ref_fn(*leaves)
                    y_ref.backward(grad_out.double())
                    ref_cache = (y_ref.detach(), [x.grad for x in leaves])
                y_ref, grads_ref = ref_cache
                errs = [_rel(y, y_ref)] + [_rel(g, r) for g, r in zip(grads, grads_ref)]
                row["errors"] = {n: float(f"{e:.3g}") for n, e in zip(names, errs)}
                row["y_dtype"] = str(y.dtype).replace("torch.", "")
                tol_y, tol_g = TOLERANCES.get((backend, dtype_name), (1e-2, 1e-2))
                row["tolerance"] = [tol_y, tol_g]
                row["max_grad_error"] = max(errs[1:])
                row["status"] = "pass" if errs[0] <= tol_y and max(errs[1:]) <= tol_g else "FAIL"
            except Exception as err:  # noqa: BLE001
                row["status"] = f"error: {type(err).__name__}: {err}"[:400]
            rows.append(row)
            save_partial({"rows": rows})
    return {"rows": rows, "all_pass": all(r["status"] == "pass" for r in rows)}


# per-operation costs behind the self-test's time estimate: an eager torch op on a GPU
# (Python dispatch + launch, small tensors), and one Triton scan launch at L <= 203
# (launch + the sequential walk over the sequence)
EST_OP_S, EST_LAUNCH_S = 10e-6, 50e-6


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def count_selftest_ops(backend: str, device, gpu_cases: bool = False) -> dict:
    """Run the self-test once counting the torch ops it dispatches (outside the Triton
    kernels: the interpreter's own work is not counted) and the Triton kernel launches.
    ``gpu_cases`` (on the CPU): the GPU's cases, with the Triton launches left out (their
    outputs are garbage, every comparison is let pass), to count a GPU run's operations."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from glsmamba.ops import scan_triton, selftest

    if gpu_cases:
        saved = selftest.cases_for, selftest._compare, scan_triton._kernels
        compare = selftest._compare
        selftest.cases_for = lambda device: selftest.GPU_CASES
        selftest._compare = lambda *args: (None, compare(*args)[1])
        scan_triton._kernels = lambda interpret: (_NoLaunch(), _NoLaunch())
        try:
            return count_selftest_ops(backend, device)
        finally:
            selftest.cases_for, selftest._compare, scan_triton._kernels = saved

    counts = {"torch_ops": 0, "triton_launches": 0}
    paused = [False]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not paused[0]:
                counts["torch_ops"] += 1
            return func(*args, **(kwargs or {}))

    real_kernels = scan_triton._kernels

    class Launcher:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                counts["triton_launches"] += 1
                paused[0] = True
                try:
                    return self.kernel[grid](*args, **kwargs)
                finally:
                    paused[0] = False
            return launch

    scan_triton._kernels = lambda interpret: tuple(Launcher(k) for k in real_kernels(interpret))
    try:
        with Count():
            failure, _ = selftest.run_checks(backend, device)
    finally:
        scan_triton._kernels = real_kernels
    counts["estimate_s"] = round(counts["torch_ops"] * EST_OP_S + counts["triton_launches"] * EST_LAUNCH_S, 3)
    counts["estimate_rule"] = f"torch ops x {EST_OP_S * 1e6:.0f} us + Triton launches x {EST_LAUNCH_S * 1e6:.0f} us"
    counts["failure"] = failure
    return counts


def section_scan_selftest(dry: bool, sizes: dict, deadline: Deadline) -> dict:
    """The self-test's time per GPU backend: cold (fresh Triton cache) and warm."""
    from glsmamba.ops import selective_scan, selftest

    device = _device(dry)
    out = {"cases": [list(c) for c in selftest.cases_for(device)],
           "dtypes": [str(d).replace("torch.", "") for d in selftest.DTYPES], "rows": []}
    if not dry:
        out["report_before"] = selective_scan.scan_backend_report(device, run=False)
    with tempfile.TemporaryDirectory() as triton_cache:
        os.environ["TRITON_CACHE_DIR"] = triton_cache  # cold: the kernels compile
        for backend in (b for b in ("triton", "cuda") if b in cuda_backends(dry)):
            row = {"backend": backend}
            for label in ("cold_s",) if dry else ("cold_s", "warm_s"):  # the interpreter compiles nothing
                start = time.perf_counter()
                failure, _ = selftest.run_checks(backend, device)
                _sync(device)
                row[label] = round(time.perf_counter() - start, 3)
                row["verdict"] = "pass" if failure is None else f"FAIL: {failure}"
            if backend == "triton":  # dry run: what a GPU run of GPU_CASES dispatches
                out["op_count_gpu_cases" if dry else "op_count"] = count_selftest_ops(backend, device, gpu_cases=dry)
            out["rows"].append(row)
            save_partial(out)
    if not dry:
        out["report_after"] = selective_scan.scan_backend_report(device)  # runs (and caches) it as a user would
    out["status"] = "ok" if all(r["verdict"] == "pass" for r in out["rows"]) else "FAIL"
    return out


def section_deform_conv(dry: bool, sizes: dict, deadline: Deadline) -> dict:
    import torch

    from glsmamba.ops.deform_conv import modulated_deform_conv2d

    device = _device(dry)
    s = sizes["deform"]
    rows = []
    for label, groups, offset_groups in (("general (groups 1)", 1, 1), ("depthwise (STMM)", s["channels"], 1)):
        gen = torch.Generator().manual_seed(3)
        c, h, w = s["channels"], s["height"], s["width"]
        x = torch.randn(s["batch"], c, h, w, generator=gen)
        offset = torch.randn(s["batch"], 2 * 9 * offset_groups, h, w, generator=gen) * 2.0
        mask = torch.rand(s["batch"], 9 * offset_groups, h, w, generator=gen)
        weight = torch.randn(c, c // groups, 3, 3, generator=gen) * 0.1
        bias = torch.randn(c, generator=gen)
        grad_out = torch.randn(s["batch"], c, h, w, generator=gen)
        results = {}
        for where, dev, dtype in (("device", device, torch.float32), ("cpu64", torch.device("cpu"), torch.float64)):
            leaves = [t.to(device=dev, dtype=dtype, copy=True).requires_grad_()
                      for t in (x, offset, mask, weight, bias)]
            out = modulated_deform_conv2d(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], padding=1)
            out.backward(grad_out.to(device=dev, dtype=out.dtype))
            results[where] = [out.detach()] + [t.grad for t in leaves]
        errs = {n: float(f"{_rel(a, b):.3g}") for n, a, b in
                zip(("out", "x", "offset", "mask", "weight", "bias"), results["device"], results["cpu64"])}
        worst = max(errs.values())
        rows.append(dict(case=label, device=str(device), errors=errs, tolerance=1e-4,
                         status="pass" if worst <= 1e-4 else "FAIL"))
    return {"rows": rows, "all_pass": all(r["status"] == "pass" for r in rows)}


def _fake_batch(model, batch: int, device, seed: int = 0) -> dict:
    import torch

    gen = torch.Generator().manual_seed(seed)
    width, height = model.input_size
    hw, hh = model.heatmap_size
    frames = getattr(model, "num_frames", 5)
    joints = getattr(model, "num_joints", 17)
    return {
        "clip": torch.randn(batch, frames, 3, height, width, generator=gen).to(device),
        "heatmaps": torch.rand(batch, joints, hh, hw, generator=gen).to(device),
        "target_weight": torch.ones(batch, joints).to(device),
    }


def section_train_step_bf16(dry: bool, sizes: dict, deadline: Deadline) -> dict:
    import torch

    from glsmamba.engine.trainer import amp_dtype, heatmap_mse
    from glsmamba.models import create_model
    from glsmamba.ops.selective_scan import resolve_backend

    device = _device(dry)
    torch.manual_seed(0)
    model = create_model(sizes["model"]).to(device)
    model.train()
    checkpointing = hasattr(model, "set_grad_checkpointing")
    if checkpointing:
        model.set_grad_checkpointing(True)
    batch = _fake_batch(model, sizes["step_batch"], device)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out = {"model": sizes["model"], "batch": sizes["step_batch"], "grad_checkpointing": checkpointing,
           "scan_backend_bf16": resolve_backend("auto", device, torch.bfloat16)}
    results = {}
    for label, dtype in (("float32", None), ("bf16", amp_dtype("bf16", device))):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            heatmaps = model(batch["clip"])
        loss = heatmap_mse(heatmaps, batch["heatmaps"], batch["target_weight"])
        loss.backward()
        _sync(device)
        grads = {n: p.grad.detach().float().clone() for n, p in params if p.grad is not None}
        results[label] = (float(loss), grads)
        out[f"seconds_{label}"] = round(time.perf_counter() - start, 3)
        out[f"heatmaps_dtype_{label}"] = str(heatmaps.dtype).replace("torch.", "")
    (loss32, g32), (loss16, g16) = results["float32"], results["bf16"]
    flat32 = torch.cat([g32[n].flatten() for n in g32])
    flat16 = torch.cat([g16[n].flatten() for n in g32 if n in g16])
    per_param = sorted(((float((g16[n] - g32[n]).norm() / g32[n].norm().clamp_min(1e-30)), n)
                        for n in g32 if n in g16), reverse=True)
    out.update(
        loss_float32=loss32, loss_bf16=loss16, loss_rel_diff=abs(loss16 - loss32) / max(abs(loss32), 1e-30),
        loss_finite=math.isfinite(loss16) and math.isfinite(loss32),
        grads_finite=bool(torch.isfinite(flat16).all() and torch.isfinite(flat32).all()),
        grads_missing_in_bf16=[n for n in g32 if n not in g16],
        grad_rel_l2=float((flat16 - flat32).norm() / flat32.norm()),
        grad_cosine=float(torch.nn.functional.cosine_similarity(flat16, flat32, dim=0)),
        worst_params=[dict(name=n, rel_l2=float(f"{e:.3g}")) for e, n in per_param[:3]],
        n_params_with_grad=len(g32), tolerance=STEP_TOLERANCE,
    )
    out["status"] = "pass" if (out["loss_finite"] and out["grads_finite"] and not out["grads_missing_in_bf16"]
                               and out["loss_rel_diff"] <= STEP_TOLERANCE["loss"]
                               and out["grad_rel_l2"] <= STEP_TOLERANCE["grad_rel_l2"]) else "FAIL"
    return out


def scan_bytes(batch, paths, per_path, n_state, length, itemsize, mode) -> int:
    """Bytes a scan must move at least: forward reads u, delta, B, C and writes y; the
    backward (which keeps only the inputs) reads u, delta, B, C, dy and writes du,
    ddelta, dB, dC. A, D, delta_bias are negligible."""
    act = batch * paths * per_path * length * itemsize
    bc = batch * paths * n_state * length * itemsize
    forward = 2 * act + 2 * bc + act
    if mode == "fwd":
        return forward
    return forward + (3 * act + 2 * bc) + (2 * act + 2 * bc)


def _time_call(fn, device, reps: tuple, deadline: Deadline) -> list[float]:
    min_reps, max_reps, target = reps
    times = []
    while len(times) < max_reps and (len(times) < min_reps or sum(times) < target) and deadline.ok(2):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


_INPUT_CACHE: dict = {}


def _cached_inputs(shape, device, dtype):
    """Benchmark inputs, drawn once per (shape, dtype); the cache holds one shape."""
    key = (shape, dtype)
    if key not in _INPUT_CACHE:
        if any(k[0] != shape for k in _INPUT_CACHE):
            _INPUT_CACHE.clear()
        _INPUT_CACHE[key] = scan_inputs(*shape, device, dtype)
    return _INPUT_CACHE[key]


def _bench_scan(method, config, dtype, batch, mode, bench, device, reps, deadline, bandwidth):
    import torch

    from glsmamba.ops.scan_triton import selective_scan_triton
    from glsmamba.ops.selective_scan import selective_scan

    shape = (batch, bench["paths"], bench["per_path"], bench["n_state"], bench["length"])
    row = dict(method=method, dtype=str(dtype).replace("torch.", ""), batch=batch, mode=mode)
    if config is not None:
        row["config"] = dict(block_d=config.block_d, block_d_bwd=config.block_d_bwd, unroll=config.unroll,
                             unroll_bwd=config.unroll_bwd, reduce=config.reduce, seg=config.seg,
                             num_warps=config.num_warps)
    inputs = [x.detach().requires_grad_(mode == "fwd+bwd") for x in _cached_inputs(shape, device, dtype)]

    def call():
        if config is not None:
            return selective_scan_triton(*inputs, delta_softplus=True, config=config)
        return selective_scan(*inputs, delta_softplus=True, backend=method)

    grad_out = None

    def run_once():
        nonlocal grad_out
        if mode == "fwd":
            with torch.no_grad():
                call()
            return
        for x in inputs:
            x.grad = None
        y = call()
        if grad_out is None:
            grad_out = torch.randn_like(y)
        y.backward(grad_out)

    start = time.perf_counter()
    run_once()  # warm-up: compiles the Triton kernels on first use
    _sync(device)
    row["first_call_s"] = round(time.perf_counter() - start, 3)
    if row["first_call_s"] > 1.0:  # compile time, or a slow path (chunked at batch 32)
        start = time.perf_counter()
        run_once()
        _sync(device)
        if time.perf_counter() - start > 1.0:  # slow: one timed run is enough
            reps = (1, 1, 0.0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = _time_call(run_once, device, reps, deadline)
    if not times:
        row["status"] = "skipped: section time budget"
        return row
    if device.type == "cuda":
        row["extra_MB"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
    seconds = statistics.median(times)
    n_bytes = scan_bytes(*shape, inputs[0].element_size(), mode)
    row.update(ms=round(seconds * 1e3, 3), reps=len(times), bytes=n_bytes,
               achieved_GBs=round(n_bytes / seconds / 1e9, 1),
               bound_ms=round(n_bytes / bandwidth * 1e3, 3), status="ok")
    row["x_bound"] = round(row["ms"] / row["bound_ms"], 2)
    return row


def section_scan_bench(dry: bool, sizes: dict, deadline: Deadline) -> dict:
    import torch

    from glsmamba.ops import scan_triton
    from glsmamba.ops.scan_triton import ScanConfig

    device = _device(dry)
    bench = sizes["bench"]
    bandwidth = measure_copy_bandwidth(device, (1 << 30) if device.type == "cuda" else (1 << 24))
    backends = cuda_backends(dry)
    f32, bf16 = torch.float32, torch.bfloat16
    plan = []  # most important first: the section stops where its budget ends
    big = max(bench["batches"])
    for batch in sorted(bench["batches"], reverse=True):
        for mode in ("fwd+bwd", "fwd"):
            if "triton" in backends:
                plan += [("triton", None, bf16, batch, mode), ("triton", None, f32, batch, mode)]
            plan.append(("chunked", None, f32, batch, mode))
            if "cuda" in backends:
                plan += [("cuda", None, bf16, batch, mode), ("cuda", None, f32, batch, mode)]
    sweep = []  # the default (32 / 16 channels, unroll 4 / 2, atomics) is in the main rows
    if "triton" in backends:
        for block_d, block_d_bwd, unroll, unroll_bwd in ((32, 8, 4, 2), (32, 32, 4, 2), (32, 16, 4, 1),
                                                         (32, 16, 8, 2), (32, 16, 2, 2), (16, 16, 4, 2)):
            sweep.append(ScanConfig(block_d=block_d, block_d_bwd=block_d_bwd, unroll=unroll, unroll_bwd=unroll_bwd))
        sweep.append(ScanConfig(reduce="partials"))
        if dry:
            sweep = [ScanConfig(block_d=2, block_d_bwd=1, unroll=2, unroll_bwd=1), ScanConfig(reduce="partials")]
    rows, sweep_rows = [], []
    for method, config, dtype, batch, mode in plan:
        if not deadline.ok(10):
            rows.append(dict(method=method, dtype=str(dtype), batch=batch, mode=mode,
                             status="skipped: section time budget"))
            continue
        try:
            rows.append(_bench_scan(method, config, dtype, batch, mode, bench, device, sizes["bench_reps"],
                                    deadline, bandwidth))
        except Exception as err:  # noqa: BLE001
            rows.append(dict(method=method, dtype=str(dtype), batch=batch, mode=mode,
                             status=f"error: {type(err).__name__}: {err}"[:400]))
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save_partial({"shape": dict(bench), "copy_bandwidth_GBs": round(bandwidth / 1e9, 1), "rows": rows})
    for config in sweep:
        if not deadline.ok(15):
            break
        try:
            sweep_rows.append(_bench_scan("triton", scan_triton.pick_config(
                big, bench["paths"], bench["per_path"], bench["n_state"], bench["length"], device, config),
                bf16, big, "fwd+bwd", bench, device, (2, 3, 0.2), deadline, bandwidth))
        except Exception as err:  # noqa: BLE001
            sweep_rows.append(dict(config=str(config), status=f"error: {type(err).__name__}: {err}"[:400]))
        save_partial({"shape": dict(bench), "copy_bandwidth_GBs": round(bandwidth / 1e9, 1), "rows": rows,
                      "sweep": sweep_rows})
    out = {"shape": dict(bench), "copy_bandwidth_GBs": round(bandwidth / 1e9, 1), "rows": rows, "sweep": sweep_rows}

    def find(method, dtype, batch, mode):
        for r in rows:
            if (r.get("method"), r.get("dtype"), r.get("batch"), r.get("mode"), r.get("status")) == \
                    (method, dtype, batch, mode, "ok"):
                return r
        return None

    summary = {}
    tri = find("triton", "bfloat16", big, "fwd+bwd") or find("triton", "float32", big, "fwd+bwd")
    chk = find("chunked", "float32", big, "fwd+bwd")
    if tri:
        summary["triton_fwd_bwd_x_bound"] = tri["x_bound"]
        summary["target_within_3x_bound"] = tri["x_bound"] <= 3.0
    if tri and chk:
        summary["triton_vs_chunked_speedup"] = round(chk["ms"] / tri["ms"], 1)
        summary["target_5x_faster_than_chunked"] = chk["ms"] / tri["ms"] >= 5.0
    mamba = find("cuda", tri["dtype"] if tri else "float32", big, "fwd+bwd")
    if tri and mamba:
        faster = "cuda" if mamba["ms"] < tri["ms"] else "triton"
        summary["faster_of_triton_and_mamba_ssm"] = faster
        if not dry:
            scan_triton.record_cuda_choice(device, faster)
            summary["recorded_for_auto"] = str(scan_triton.choice_path())
    ok_sweep = [r for r in sweep_rows if r.get("status") == "ok"]
    if ok_sweep:
        best = min(ok_sweep, key=lambda r: r["ms"])
        summary["best_sweep_config"] = dict(best["config"], ms=best["ms"], x_bound=best["x_bound"])
    out["summary"] = summary
    return out


def section_train_bench(dry: bool, sizes: dict, deadline: Deadline) -> dict:
    import torch

    from glsmamba.config import load_config
    from glsmamba.engine.trainer import Trainer
    from glsmamba.models import create_model
    from glsmamba.ops.selective_scan import resolve_backend

    device = _device(dry)
    config = load_config("posetrack18_glsmamba_b")
    batch = sizes["train_batch"]
    config["model"]["name"] = sizes["model"]
    config["data"]["batch_size"] = batch
    config["train"]["log_interval"] = 10**9
    model = create_model(sizes["model"])
    out = {"config": "posetrack18_glsmamba_b", "model": sizes["model"], "batch": batch,
           "amp": config["train"].get("amp"), "grad_checkpointing": bool(config["train"].get("grad_checkpointing")),
           "scan_backend_bf16": resolve_backend("auto", device, torch.bfloat16),
           "data": "random tensors on the device"}
    if out["grad_checkpointing"] and not hasattr(model, "set_grad_checkpointing"):
        config["train"]["grad_checkpointing"] = False
        out["grad_checkpointing"] = "requested by the recipe, model has no set_grad_checkpointing"
    with tempfile.TemporaryDirectory() as work_dir:
        # the steps below get their batch directly; the split only has to hold one batch
        trainer = Trainer(model, [None] * batch, config, work_dir, progress=False, log=lambda *a, **k: None)
        out["autocast"] = str(trainer.autocast_dtype)
        data = _fake_batch(trainer.model, batch, device)
        losses = []
        for _ in range(sizes["train_warmup"]):
            losses.append(trainer._train_step(data, False))
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(sizes["train_steps"]):
            if times and not deadline.ok(2 * max(times) + 3):
                break
            _sync(device)
            start = time.perf_counter()
            losses.append(trainer._train_step(data, False))
            _sync(device)
            times.append(time.perf_counter() - start)
    out.update(steps=len(times), step_s_median=round(statistics.median(times), 3),
               clips_per_s=round(batch * len(times) / sum(times), 2), losses=[round(x, 6) for x in losses],
               loss_finite=all(math.isfinite(x) for x in losses))
    if device.type == "cuda":
        out["max_memory_allocated_GB"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
        out["max_memory_reserved_GB"] = round(torch.cuda.max_memory_reserved(device) / 1e9, 2)
        out["target_under_22GB"] = out["max_memory_allocated_GB"] < 22.0
    out["status"] = "ok" if out["loss_finite"] and len(times) == sizes["train_steps"] else \
        ("partial: time budget" if out["loss_finite"] else "FAIL: loss not finite")
    return out


SECTION_FUNCS = {
    "env": section_env, "scan_correctness": section_scan_correctness, "scan_selftest": section_scan_selftest,
    "deform_conv": section_deform_conv,
    "train_step_bf16": section_train_step_bf16, "scan_bench": section_scan_bench,
    "train_bench": section_train_bench,
}


def run_pytest_cuda(dry: bool, out_dir: Path, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", "tests"]
    env = _child_env(dry)
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(5, timeout))
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        text, rc = text + f"\n[timed out after {timeout:.0f} s]", "timeout"
    (out_dir / "pytest_cuda.txt").write_text(text)
    summary = [line for line in text.strip().splitlines() if " in " in line and ("passed" in line or
                                                                                  "skipped" in line or
                                                                                  "failed" in line or
                                                                                  "deselected" in line)]
    counts = {}
    if summary:
        for part in summary[-1].strip("= ").split(" in ")[0].split(","):
            bits = part.strip().split(" ")
            if len(bits) == 2 and bits[0].isdigit():
                counts[bits[1].rstrip("s")] = int(bits[0])  # "errors" -> "error"
    ok = rc == 0 or (rc == 5 and not counts.get("failed"))  # 5: nothing collected
    return {"command": " ".join(cmd[1:]), "returncode": rc, "counts": counts,
            "summary": summary[-1].strip("= ") if summary else None, "seconds": round(time.time() - start, 1),
            "status": "pass" if ok and not counts.get("failed") and not counts.get("error") else "FAIL",
            "log": "pytest_cuda.txt"}


# ------------------------------------------------------------------------ driver
def _child_env(dry: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def child_main(name: str, dry: bool, result_path: Path, deadline_at: float) -> int:
    global _RESULT_PATH
    _RESULT_PATH = result_path
    sizes = DRY_SIZES if dry else GPU_SIZES
    start = time.time()
    try:
        result = SECTION_FUNCS[name](dry, sizes, Deadline(deadline_at))
    except Exception as err:  # noqa: BLE001
        result = {"status": f"error: {type(err).__name__}: {err}"[:600], "traceback": traceback.format_exc()[-3000:]}
    result.setdefault("status", "ok")
    result["seconds"] = round(time.time() - start, 1)
    result_path.write_text(json.dumps(result, indent=1, default=str))
    return 0


def run_section(name: str, dry: bool, timeout: float, tmp: Path, log) -> dict:
    result_path = tmp / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--result", str(result_path),
           "--deadline", str(time.time() + max(1.0, timeout - 8))]
    if dry:
        cmd.append("--dry-run")
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=_child_env(dry), capture_output=True, text=True, timeout=timeout)
        tail = (proc.stdout + proc.stderr)[-2000:]
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        tail, rc = "", "timeout"
    if result_path.is_file():  # complete, or what a killed section had saved
        result = json.loads(result_path.read_text())
        if rc == "timeout":
            result["status"] = f"timed out after {timeout:.0f} s (partial results)"
    else:
        result = {"status": f"crashed (exit {rc})" if rc != "timeout" else f"timed out after {timeout:.0f} s",
                  "output_tail": tail}
    result["wall_s"] = round(time.time() - start, 1)
    log(f"[gpu_check] {name}: {result.get('status')} ({result['wall_s']} s)")
    return result


def _fmt(x, digits=3):
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def render_markdown(report: dict) -> str:
    env = report["sections"].get("env", {})
    lines = [f"# GPU check ({'DRY RUN on CPU: tiny shapes, Triton interpreter' if report['dry_run'] else 'GPU'})",
             "", f"- date (UTC): {report['date']}",
             f"- device: {env.get('gpu', '?')} ({env.get('capability', '-')}, {env.get('sms', '-')} SMs, "
             f"{env.get('memory_gib', '-')} GiB); {env.get('nvidia_smi', '')}",
             f"- torch {env.get('torch')}, triton {env.get('triton')}, CUDA {env.get('cuda_runtime')}, "
             f"python {env.get('python')}; mamba_ssm selective_scan_cuda: {env.get('mamba_ssm_selective_scan_cuda')}",
             f"- auto scan backend: float32 -> {env.get('auto_backend_float32')}, bf16 -> "
             f"{env.get('auto_backend_bfloat16')}; measured copy bandwidth {env.get('copy_bandwidth_GBs')} GB/s "
             "(read + write)",
             f"- total wall time {report.get('wall_s')} s (budget {report['budget_s']} s)", "",
             "| section | status | wall s |", "|---|---|---|"]
    for name, _ in SECTIONS:
        sec = report["sections"].get(name)
        if sec is not None:
            lines.append(f"| {name} | {sec.get('status')} | {sec.get('wall_s')} |")
    sec = report["sections"].get("scan_correctness", {})
    if sec.get("rows"):
        lines += ["", "## Scan backends vs the float64 reference (max |err| / max |ref|)", "",
                  "| backend | B, K, D, N, L | dtype | y | worst grad | tol (y, grad) | status |",
                  "|---|---|---|---|---|---|---|"]
        for r in sec["rows"]:
            errs = r.get("errors", {})
            lines.append(f"| {r['backend']} | {r['shape']} | {r['dtype']} | {_fmt(errs.get('y', '-'))} | "
                         f"{_fmt(r.get('max_grad_error', '-'))} | {r.get('tolerance', '-')} | {r['status']} |")
    sec = report["sections"].get("scan_selftest", {})
    if sec.get("rows"):
        ops = sec.get("op_count", {})
        lines += ["", "## Scan self-test (before the first GPU scan of a process)", "",
                  "| backend | cold s (compiles) | warm s | verdict |", "|---|---|---|---|"]
        for r in sec["rows"]:
            lines.append(f"| {r['backend']} | {r.get('cold_s')} | {r.get('warm_s', '-')} | {r.get('verdict')} |")
        for label, ops in (("", ops), (" (GPU cases, counted on the CPU)", sec.get("op_count_gpu_cases"))):
            if ops:
                lines += ["", f"- {ops.get('torch_ops')} torch ops + {ops.get('triton_launches')} Triton launches"
                          f"{label}: estimate {ops.get('estimate_s')} s on a GPU ({ops.get('estimate_rule')})"]
        for key in ("report_before", "report_after"):
            if sec.get(key):
                lines.append(f"- {key.replace('_', ' ')}: {sec[key]}")
    sec = report["sections"].get("deform_conv", {})
    if sec.get("rows"):
        lines += ["", "## Deformable conv, device float32 vs CPU float64", "",
                  "| case | worst error | status |", "|---|---|---|"]
        for r in sec["rows"]:
            lines.append(f"| {r['case']} | {_fmt(max(r['errors'].values()))} | {r['status']} |")
    sec = report["sections"].get("train_step_bf16", {})
    if "grad_rel_l2" in sec:
        lines += ["", f"## One {sec['model']} training step, bf16 autocast vs float32 (batch {sec['batch']})", "",
                  f"- loss {sec['loss_float32']:.6g} (fp32) vs {sec['loss_bf16']:.6g} (bf16): relative "
                  f"difference {sec['loss_rel_diff']:.3g}; gradients relative L2 {sec['grad_rel_l2']:.3g}, "
                  f"cosine {sec['grad_cosine']:.6f}; finite: loss {sec['loss_finite']}, grads "
                  f"{sec['grads_finite']}; scan backend {sec['scan_backend_bf16']}; {sec['status']}"]
    sec = report["sections"].get("scan_bench", {})
    if sec.get("rows"):
        shape = sec["shape"]
        lines += ["", f"## Scan speed: {shape['paths']} paths x {shape['per_path']} channels, N = "
                  f"{shape['n_state']}, L = {shape['length']:,}", "",
                  "bound = bytes that must be read and written / measured copy bandwidth "
                  f"({sec['copy_bandwidth_GBs']} GB/s).", "",
                  "| method | dtype | batch | mode | ms | GB/s | bound ms | x bound | extra MB | status |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sec["rows"]:
            lines.append(f"| {r.get('method')} | {r.get('dtype')} | {r.get('batch')} | {r.get('mode')} | "
                         f"{r.get('ms', '-')} | {r.get('achieved_GBs', '-')} | {r.get('bound_ms', '-')} | "
                         f"{r.get('x_bound', '-')} | {r.get('extra_MB', '-')} | {r.get('status')} |")
        if sec.get("sweep"):
            lines += ["", "Triton launch configs (bf16, fwd+bwd, largest batch):", "",
                      "| block_d fwd / bwd | warps | unroll fwd / bwd | seg | reduce | ms | x bound | status |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in sec["sweep"]:
                c = r.get("config", {}) if isinstance(r.get("config"), dict) else {}
                lines.append(f"| {c.get('block_d', '-')} / {c.get('block_d_bwd', '-')} | {c.get('num_warps', '-')} | "
                             f"{c.get('unroll', '-')} / "
                             f"{c.get('unroll_bwd', '-')} | {c.get('seg', '-')} | {c.get('reduce', '-')} | "
                             f"{r.get('ms', '-')} | {r.get('x_bound', '-')} | {r.get('status')} |")
        lines += ["", "Summary: " + json.dumps(sec.get("summary", {}))]
    sec = report["sections"].get("train_bench", {})
    if "clips_per_s" in sec:
        lines += ["", f"## Training: {sec['steps']} steps of {sec['model']}, batch {sec['batch']}, "
                  f"recipe {sec['config']} (amp {sec['amp']} -> {sec.get('autocast')}, checkpointing "
                  f"{sec['grad_checkpointing']}, scan {sec['scan_backend_bf16']})", "",
                  f"- {sec['clips_per_s']} clips/s ({sec['step_s_median']} s/step, median); "
                  f"max_memory_allocated {sec.get('max_memory_allocated_GB', '-')} GB (reserved "
                  f"{sec.get('max_memory_reserved_GB', '-')} GB); losses finite: {sec['loss_finite']}; "
                  f"{sec['status']}"]
    sec = report["sections"].get("pytest_cuda", {})
    if sec:
        lines += ["", f"## pytest -m cuda: {sec.get('summary')} ({sec.get('status')}; log in pytest_cuda.txt)"]
    failed = [n for n, s in report["sections"].items() if not str(s.get("status", "")).startswith(("ok", "pass"))]
    lines += ["", f"Sections not ok: {', '.join(failed) if failed else 'none'}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check_report", help="folder for gpu_check.json / .md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, Triton interpreter")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for everything")
    parser.add_argument("--only", nargs="*", help="run only these sections")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.dry_run, Path(args.result), args.deadline)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + args.budget
    report = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "dry_run": args.dry_run,
              "budget_s": args.budget, "sections": {}}
    planned = [(n, s) for n, s in SECTIONS if not args.only or n in args.only]
    scale = args.budget / sum(s for _, s in planned)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, share) in enumerate(planned):
            left = deadline - time.time()
            # its share, plus what earlier sections left unused
            slack = left - scale * sum(s for _, s in planned[i:])
            timeout = min(share * scale + max(0.0, slack), left)
            if timeout < 5:
                report["sections"][name] = {"status": "skipped: no time left", "wall_s": 0}
                continue
            if name == "pytest_cuda":
                result = run_pytest_cuda(args.dry_run, out_dir, timeout)
                result["wall_s"] = result["seconds"]
                print(f"[gpu_check] pytest_cuda: {result['status']} ({result['wall_s']} s)", flush=True)
            else:
                result = run_section(name, args.dry_run, timeout, Path(tmp), lambda m: print(m, flush=True))
            report["sections"][name] = result
            report["wall_s"] = round(time.time() - started, 1)
            (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
            (out_dir / "gpu_check.md").write_text(render_markdown(report))
    report["wall_s"] = round(time.time() - started, 1)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / "gpu_check.md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
