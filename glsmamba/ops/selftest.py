"""Self-test of the GPU selective-scan backends before their first use in a process.

The first time a process resolves ``"triton"`` (or mamba_ssm's ``"cuda"``) for a CUDA
device, :func:`verdict` runs :data:`GPU_CASES` through that backend's real code path
(``backends.run_backend``, the one every scan call takes: forward and the seven
gradients) and compares each output with the chunked PyTorch backend on the same device,
in float64 on the same inputs. Any exception (compile, launch, an asynchronous CUDA error
surfacing at the synchronisation after each case), a wrong dtype or shape, a non-finite
value or an error above :data:`TOLERANCES` fails the backend. ``auto`` then warns once
(naming the failure and the verdict file) and takes the next backend (triton -> cuda ->
chunked, or cuda -> triton -> chunked where mamba_ssm was recorded faster); an explicit
backend (argument, config or ``GLSMAMBA_SCAN_BACKEND``) raises :class:`ScanSelfTestError`.

The verdict (pass or fail) is written atomically to a private folder,
``$GLSMAMBA_CACHE/selftest`` (default ``~/.cache/glsmamba/selftest``, mode 700, the same
checks as the kernel cache), one file per key: device name, compute capability, torch,
triton, glsmamba, this test's version and the kernel source (or mamba_ssm's version), so
a new driver stack or a new kernel tests again. A ``running`` marker is written there
before the check: if the process dies inside the kernels (a crash, not an exception), the
next process on that host reads it as a failure instead of crashing again (Ctrl-C during
the check removes it). ``GLSMAMBA_SCAN_SELFTEST=0`` skips the test.

Tolerances are max |err| / max |ref| per output against float64 (the test suite's bounds):
float32 y 1e-5 and gradients 1e-4 (measured about 1e-7 and 3e-7); bf16 1e-2 for all (the
rounding of a bf16 output alone is up to 2**-8 = 3.9e-3 of it; measured 3.3e-3). mamba_ssm
uses fast exponentials: 1e-3 in float32, 2e-2 for bf16 gradients.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import socket
import stat
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glsmamba.errors import ConfigError, GlsmambaError
from glsmamba.ops.backends import run_backend

ENV_SELFTEST = "GLSMAMBA_SCAN_SELFTEST"
SELFTEST_VERSION = 1  # bump when the cases, the tolerances or the comparison change
CHECKED_BACKENDS = ("triton", "cuda")
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")

# (batch, paths K, channels per path, N, L), run with the device's default launch config.
# GPU: L = 203 is two 128-step segments, the second 75 steps, not a multiple of the
# unroll (4 / 2); 20 and 12 channels per path are 3 and 2 backward channel blocks of 8
# (atomics for dB / dC, a partial block); batch 64 x L = 5 are the per-pixel temporal
# scans. Each case and dtype is its own Triton specialisation (12 compiles on the first
# run on a machine; Triton's disk cache keeps them).
GPU_CASES = ((2, 1, 20, 16, 203), (2, 6, 12, 1, 203), (64, 2, 3, 16, 5))
# CPU (Triton's interpreter: tests): L = 37 is two 16-step segments and a 5-step one; few
# programs and steps (the interpreter runs the programs one after the other)
INTERPRETER_CASES = ((2, 1, 5, 16, 37), (2, 6, 2, 1, 6))
DTYPES = (torch.float32, torch.bfloat16)
TOLERANCES = {  # (backend, dtype) -> (y, gradients)
    ("triton", torch.float32): (1e-5, 1e-4), ("triton", torch.bfloat16): (1e-2, 1e-2),
    ("cuda", torch.float32): (1e-3, 1e-3), ("cuda", torch.bfloat16): (1e-2, 2e-2),
}


class ScanSelfTestError(GlsmambaError, RuntimeError):
    """An explicitly requested scan backend failed its self-test on this device."""


@dataclass
class Verdict:
    """The outcome of one backend's self-test on one device."""

    backend: str
    device: str  # "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)"
    status: str  # "pass", "fail" or "skipped"
    failure: str | None = None
    seconds: float | None = None
    date: str | None = None
    cache_file: Path | None = None
    cached: bool = False  # read from the cache file, not run by this process
    note: str | None = None  # e.g. why the verdict could not be cached
    cases: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "skipped")

    def describe(self) -> str:
        """One phrase: 'triton passed its self-test (0.41 s, cached in PATH, 2026-12-05 19:40)'."""
        if self.status == "skipped":
            return f"{self.backend}: self-test skipped ({ENV_SELFTEST}=0)"
        where = f"cached in {self.cache_file}" if self.cache_file else f"not cached: {self.note}"
        when = f"{'read from cache, run ' if self.cached else 'run '}{self.date}"
        took = f"{self.seconds:.2f} s" if self.seconds is not None else "? s"
        head = f"{self.backend} passed its self-test" if self.status == "pass" else \
            f"{self.backend} FAILED its self-test: {self.failure}"
        return f"{head} ({took}, {when}; {where})"


# -------------------------------------------------------------- device, key, cache
def device_identity(device: torch.device) -> dict:
    """{"name", "capability"} of a CUDA device (a seam: tests give a fake GPU)."""
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "capability": f"{props.major}.{props.minor}"}


def check_device(device: torch.device) -> torch.device:
    """Where the check's tensors live: the device itself (a seam: tests run a fake GPU's
    check on the CPU, through Triton's interpreter)."""
    return device


def normalize(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def backend_build(backend: str) -> str:
    """What identifies the backend's code: the Triton kernels' source, or mamba_ssm's version."""
    if backend == "triton":
        from glsmamba.ops import scan_triton

        return "scan_triton.py " + _source_digest(Path(scan_triton.__file__))
    try:
        from importlib.metadata import version

        return "mamba_ssm " + version("mamba_ssm")
    except Exception:  # noqa: BLE001 - a selective_scan_cuda built without the package
        from glsmamba.ops import scan_cuda

        module = scan_cuda._load_kernel()
        return f"selective_scan_cuda {getattr(module, '__file__', '?')}"


def cache_key(backend: str, device: torch.device) -> dict:
    """Everything a verdict depends on; a change in any field runs the test again."""
    import glsmamba
    from glsmamba.ops import scan_triton

    ident = device_identity(device)
    return {"backend": backend, "device": ident["name"], "capability": ident["capability"],
            "torch": torch.__version__, "triton": getattr(scan_triton.triton, "__version__", None),
            "glsmamba": glsmamba.__version__, "selftest": SELFTEST_VERSION, "build": backend_build(backend)}


def cache_path(key: dict) -> Path:
    """``$GLSMAMBA_CACHE/selftest/scan-<backend>-<hash of the key>.json`` (not created)."""
    from glsmamba.ops.scan_fused import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("selftest") / f"scan-{key['backend']}-{digest}.json"


def _read_cached(path: Path, key: dict) -> dict | None:
    """The stored record when it is a regular file of ours (not a link) for exactly this
    key (the folder itself was checked private)."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return None
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    if record.get("status") == "running":  # a self-test under way, or one whose process died
        return _died_during_test(record)
    return record if record.get("status") in ("pass", "fail") else None


def _died_during_test(record: dict) -> dict | None:
    """A fail record when the process that left this 'running' marker on this host is
    gone (it died inside the kernels: a crash is a failure too); None while it runs, or
    when it ran on another host (a shared home folder): then this process tests itself."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
        return None  # still running (another rank starting at the same time)
    except ProcessLookupError:
        pass
    except OSError:  # exists, not ours to signal
        return None
    return dict(record, status="fail", failure=f"the self-test of process {pid} (started {record.get('date')}) "
                                              "never finished: that process died during it")


def _load(key: dict, label: str) -> Verdict | None:
    """A cached verdict for ``key`` (None when absent, unreadable or the folder is unsafe)."""
    from glsmamba.ops.scan_fused import secure_cache_dir

    try:
        secure_cache_dir("selftest")
    except OSError:
        return None
    path = cache_path(key)
    record = _read_cached(path, key)
    if record is None:
        return None
    return Verdict(key["backend"], label, record["status"], record.get("failure"), record.get("seconds"),
                   record.get("date"), path, cached=True, cases=record.get("cases", []))


def _store(key: dict, result: Verdict) -> None:
    """Write the verdict atomically into the private folder; on failure say why in ``note``.
    A ``running`` verdict is the marker left while the test runs (see _died_during_test)."""
    from glsmamba.fileio import write_json_atomic
    from glsmamba.ops.scan_fused import secure_cache_dir

    record = {"key": key, "status": result.status, "failure": result.failure, "seconds": result.seconds,
              "date": result.date, "cases": result.cases}
    if result.status == "running":
        record.update(pid=os.getpid(), host=socket.gethostname())
    try:
        secure_cache_dir("selftest")
        path = cache_path(key)
        write_json_atomic(path, record, indent=1)
        result.cache_file = path
    except OSError as exc:
        result.note = f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------ the check
def make_inputs(batch, paths, per_path, n_state, length, dtype, device, seed=0) -> list:
    """Mamba-like inputs drawn on the CPU (the same on every device): u, delta, B, C in
    ``dtype``; A (negative), D, delta_bias in float32, as under autocast."""
    gen = torch.Generator().manual_seed(1234 + seed)
    channels = paths * per_path
    u = torch.randn(batch, channels, length, generator=gen)
    delta = torch.randn(batch, channels, length, generator=gen) - 1.0
    A = -torch.exp(torch.rand(channels, n_state, generator=gen) * 3)
    B = torch.randn(batch, paths, n_state, length, generator=gen)
    C = torch.randn(batch, paths, n_state, length, generator=gen)
    D = torch.randn(channels, generator=gen)
    bias = torch.randn(channels, generator=gen) * 0.5
    low = {0, 1, 3, 4}
    return [x.to(device=device, dtype=dtype if i in low else torch.float32) for i, x in
            enumerate((u, delta, A, B, C, D, bias))]


def _forward_backward(backend: str, inputs: list, grad_out: torch.Tensor | None):
    """y and the seven gradients through ``backend``'s real path (the one of every scan call)."""

    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    y = run_backend(backend, *leaves, True).to(inputs[0].dtype)
    if grad_out is None:
        gen = torch.Generator().manual_seed(99)
        grad_out = torch.randn(y.shape, generator=gen).to(device=y.device, dtype=y.dtype)
    y.backward(grad_out)
    return y.detach(), [x.grad for x in leaves], grad_out


def _relative_error(value: torch.Tensor, ref: torch.Tensor) -> float:
    value, ref = value.detach().double(), ref.detach().double()
    if not torch.isfinite(value).all():
        return float("inf")
    return float((value - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _compare(backend, inputs, y, grads, y_ref, grads_ref) -> tuple[str | None, dict]:
    """(first failure or None, {output: error}) for one case."""
    dtype = inputs[0].dtype
    tol_y, tol_grad = TOLERANCES.get((backend, dtype), (1e-2, 2e-2))
    outputs = [("y", y, y_ref, inputs[0], tol_y)]
    outputs += [(f"gradient of {n}", g, r, x, tol_grad) for n, g, r, x in zip(GRAD_NAMES, grads, grads_ref, inputs)]
    errors = {}
    for name, value, ref, like, tol in outputs:
        if value is None:
            return f"{name}: missing", errors
        if value.shape != like.shape or value.dtype != like.dtype:
            return (f"{name}: shape {tuple(value.shape)} {value.dtype}, expected "
                    f"{tuple(like.shape)} {like.dtype}"), errors
        err = _relative_error(value, ref)
        errors[name] = float(f"{err:.3g}")
        if not err <= tol:  # NaN / inf fail too
            what = "NaN/inf values" if err == float("inf") else f"max|err|/max|ref| = {err:.2e}"
            return f"{name}: {what} > tolerance {tol:g}", errors
    return None, errors


def _run_case(backend: str, case: tuple, dtype: torch.dtype, device: torch.device) -> tuple[str | None, dict]:
    """One case in one dtype: (failure or None, its record)."""
    label = "{} B={} K={} D={} N={} L={}".format(str(dtype).replace("torch.", ""), *case)
    inputs = make_inputs(*case, dtype, device)
    stage = "forward/backward"
    try:
        y, grads, grad_out = _forward_backward(backend, inputs, None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # asynchronous launch errors surface here
        stage = "reference (chunked, float64)"
        y_ref, grads_ref, _ = _forward_backward("chunked", [x.double() for x in inputs], grad_out.double())
    except Exception as exc:  # noqa: BLE001 - compile, launch, CUDA errors: all fail the backend
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return f"{label}: {stage} raised {text}", {"case": label, "error": text}
    failure, errors = _compare(backend, inputs, y, grads, y_ref, grads_ref)
    return (f"{label}: {failure}" if failure else None), {"case": label, "errors": errors}


def cases_for(device: torch.device) -> tuple:
    """GPU_CASES on a GPU; INTERPRETER_CASES on the CPU (Triton's interpreter: tests)."""
    return GPU_CASES if device.type == "cuda" else INTERPRETER_CASES


def run_checks(backend: str, device: torch.device) -> tuple[str | None, list]:
    """Run every case in float32 and bf16; stop at the first failure. Returns
    (failure or None, per-case records). Autocast off, gradients on, whatever the caller's
    context."""
    records = []
    guards = contextlib.ExitStack()
    with guards:
        guards.enter_context(torch.inference_mode(False))
        guards.enter_context(torch.enable_grad())
        if device.type in ("cuda", "cpu"):
            guards.enter_context(torch.autocast(device.type, enabled=False))
        for case in cases_for(device):
            for dtype in DTYPES:
                failure, record = _run_case(backend, case, dtype, device)
                records.append(record)
                if failure:
                    return failure, records
    return None, records


# --------------------------------------------------------------- verdicts, fallbacks
_lock = threading.RLock()
_verdicts: dict = {}  # (backend, device) -> Verdict, per process


def selftest_enabled() -> bool:
    return os.environ.get(ENV_SELFTEST, "1").strip().lower() not in ("0", "false", "no", "off")


def device_label(device: torch.device) -> str:
    try:
        ident = device_identity(device)
        return f"{device} ({ident['name']}, sm_{ident['capability'].replace('.', '')})"
    except Exception:  # noqa: BLE001
        return str(device)


def _run_and_store(backend: str, device: torch.device) -> Verdict:
    label = device_label(device)
    try:
        key = cache_key(backend, device)
    except Exception as exc:  # noqa: BLE001 - no device properties: the device is unusable
        return Verdict(backend, label, "fail", f"cannot query the device: {type(exc).__name__}: {exc}",
                       date=_now(), note="not cached")
    cached = _load(key, label)
    if cached is not None:
        return cached
    marker = Verdict(backend, label, "running", date=_now())
    _store(key, marker)  # a crash inside the kernels leaves it: the next process fails the backend
    start = time.perf_counter()
    try:
        failure, records = run_checks(backend, check_device(device))
    except BaseException:  # Ctrl-C, SystemExit: no verdict, and no marker that reads as a crash
        if marker.cache_file is not None:
            marker.cache_file.unlink(missing_ok=True)
        raise
    result = Verdict(backend, label, "fail" if failure else "pass", failure,
                     round(time.perf_counter() - start, 3), _now(), cases=records)
    _store(key, result)
    return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def verdict(backend: str, device: torch.device, run: bool = True) -> Verdict | None:
    """This process's verdict for ``backend`` on ``device``: memoised, else read from the
    cache, else (``run``) run now and cached; None when not run and not cached. Warns
    once per process when the backend fails."""
    device = normalize(device)
    memo = (backend, str(device))
    if not selftest_enabled():
        return Verdict(backend, str(device), "skipped")
    with _lock:
        if memo in _verdicts:
            return _verdicts[memo]
        if not run:
            try:
                return _load(cache_key(backend, device), device_label(device))
            except Exception:  # noqa: BLE001
                return None
        result = _run_and_store(backend, device)
        _verdicts[memo] = result
        if not result.ok:
            _warn(result)
        return result


def _warn(result: Verdict) -> None:
    where = f"verdict cached in {result.cache_file} (delete it to test again)" if result.cache_file \
        else f"verdict not cached ({result.note})"
    origin = "cached verdict of " + result.date if result.cached else "self-test"
    warnings.warn(
        f"glsmamba: the '{result.backend}' selective-scan backend failed its {origin} on "
        f"{result.device}: {result.failure}; {where}. 'auto' uses the next backend; "
        f"{ENV_SELFTEST}=0 skips the test.", RuntimeWarning, stacklevel=5)


def first_passing(order: list[str], device: torch.device) -> str:
    """The first backend of ``order`` (e.g. triton, cuda, chunked) whose self-test passes
    on ``device``; backends without a self-test are taken as they come."""
    for backend in order:
        if backend not in CHECKED_BACKENDS or verdict(backend, device).ok:
            return backend
    return "chunked"


def require(backend: str, device: torch.device) -> None:
    """For an explicitly requested backend: raise ScanSelfTestError when it fails."""
    result = verdict(backend, device)
    if result is not None and not result.ok:
        where = f"verdict in {result.cache_file}; delete it to test again" if result.cache_file else result.note
        raise ScanSelfTestError(
            f"selective-scan backend '{backend}' failed its self-test on {result.device}: {result.failure} "
            f"({where}). Use backend 'auto' (falls back) or 'chunked', or set {ENV_SELFTEST}=0 to skip the test")


def reset() -> None:
    """Forget this process's verdicts (tests; the cache files stay)."""
    with _lock:
        _verdicts.clear()


def parse_device(device: torch.device | str) -> torch.device:
    """A torch.device from 'cpu', 'cuda', 'cuda:1' or 'auto'; ConfigError when unusable."""
    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {text!r}: use cpu, cuda, cuda:N or auto") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {text!r}: no CUDA device is visible to torch")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif parsed.type != "cpu":
        raise ConfigError(f"device {text!r}: the selective scan runs on cpu or cuda")
    return normalize(parsed)
