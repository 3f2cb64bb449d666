"""Fused CPU selective scan: a C kernel compiled on first use and loaded with ctypes.

The source (``csrc/selective_scan_cpu.c``, plain C99 + OpenMP, no torch headers) is built
with the system C compiler (``$CC``, else the one Python was built with, else ``cc``) into
a shared library cached under ``$GLSMAMBA_CACHE`` (default ``~/.cache/glsmamba/kernels``),
named by a hash of the source, the flags, the compiler and the machine, so a second
process reuses it. The build is atomic (temporary name, then rename). If no compiler
works, :func:`load_library` returns ``None`` after one warning and ``selective_scan``
falls back to the chunked backend.

Per channel the kernel forms delta' = softplus(delta + bias) for the row (vectorised),
keeps the N-state in registers and walks t once (forward); the backward recomputes the
states segment by segment from checkpoints, then runs the adjoint recurrence and chains
the gradient through the softplus and the bias. Only the inputs are saved for backward.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.c"
ENV_CACHE = "GLSMAMBA_CACHE"
BASE_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-fno-math-errno", "-Wno-psabi"]
# tried in order; the first that compiles wins
FLAG_VARIANTS = (
    ["-march=native", "-fopenmp"],
    ["-fopenmp"],
    ["-march=native", "-fopenmp-simd", "-DGLSMAMBA_OMP_SIMD"],
    ["-fopenmp-simd", "-DGLSMAMBA_OMP_SIMD"],
    [],
)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_load_failed = False


def cache_dir() -> Path:
    root = os.environ.get(ENV_CACHE)
    base = Path(root) if root else Path.home() / ".cache" / "glsmamba"
    return base / "kernels"


def compiler_command() -> list[str]:
    """The C compiler as an argv prefix: ``$CC``, then sysconfig's CC, then ``cc``."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc"):
        if candidate:
            argv = shlex.split(candidate)
            if argv and shutil.which(argv[0]):
                return argv
    return []


def library_path(compiler: list[str], flags: list[str]) -> Path:
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join(compiler + flags).encode())
    key.update(platform.machine().encode())
    return cache_dir() / f"selective_scan_cpu-{key.hexdigest()[:16]}.so"


def _compile(compiler: list[str], flags: list[str], target: Path) -> str | None:
    """Build ``target`` atomically; return None on success, else the compiler's message."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            compiler + flags + [str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip()[-500:] or f"exit status {done.returncode}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.glsmamba_scan_forward.argtypes = [ptr] * 7 + [i32, ptr] + [i64] * 5 + [i32]
    lib.glsmamba_scan_forward.restype = None
    lib.glsmamba_scan_backward.argtypes = [ptr] * 7 + [i32] + [ptr] * 8 + [i64] * 5 + [i32]
    lib.glsmamba_scan_backward.restype = i32
    lib.glsmamba_scan_has_openmp.restype = i32
    return lib


def build_library() -> tuple[Path | None, list[str]]:
    """Return (path of a built or cached library, errors of the variants that failed)."""
    compiler = compiler_command()
    if not compiler:
        return None, ["no C compiler found ($CC, sysconfig CC, cc, gcc)"]
    errors = []
    for extra in FLAG_VARIANTS:
        flags = BASE_FLAGS + extra
        target = library_path(compiler, flags)
        if target.is_file():
            return target, errors
        error = _compile(compiler, flags, target)
        if error is None:
            return target, errors
        errors.append(f"{' '.join(compiler + flags)}: {error}")
    return None, errors


def load_library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None (after one warning) if it cannot be built."""
    global _library, _load_failed
    if _library is not None or _load_failed:
        return _library
    with _lock:
        if _library is None and not _load_failed:
            path, errors = build_library()
            try:
                _library = _bind(ctypes.CDLL(str(path))) if path else None
            except OSError as exc:
                errors.append(f"loading {path}: {exc}")
                _library = None
            if _library is None:
                _load_failed = True
                warnings.warn(
                    "glsmamba: could not build the fused CPU selective scan, using the slower "
                    "'chunked' backend. " + " | ".join(errors)[-1500:],
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _library


def is_available() -> bool:
    return load_library() is not None


def reset() -> None:
    """Forget the loaded library (tests)."""
    global _library, _load_failed
    with _lock:
        _library, _load_failed = None, False


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


class _FusedScan(torch.autograd.Function):
    """u, delta (B, KD, L); A (KD, N); Bt, Ct (B, K, L, N); D, bias (KD,) or None;
    all float32 and contiguous."""

    @staticmethod
    def forward(ctx, u, delta, A, Bt, Ct, D, bias, softplus: bool):
        lib = load_library()
        batch, channels, length = u.shape
        paths, n_state = Bt.shape[1], A.shape[1]
        y = torch.empty_like(u)
        lib.glsmamba_scan_forward(
            _ptr(u), _ptr(delta), _ptr(A), _ptr(Bt), _ptr(Ct), _ptr(D), _ptr(bias), int(softplus), _ptr(y),
            batch, channels, paths, length, n_state, torch.get_num_threads(),
        )
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, bias)
        ctx.softplus = softplus
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, Bt, Ct, D, bias = ctx.saved_tensors
        lib = load_library()
        grad_y = grad_y.to(torch.float32).contiguous()
        batch, channels, length = u.shape
        paths, n_state = Bt.shape[1], A.shape[1]
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dA, dBt, dCt = torch.empty_like(A), torch.empty_like(Bt), torch.empty_like(Ct)
        dD = torch.empty_like(D) if D is not None else None
        dbias = torch.empty_like(bias) if bias is not None else None
        status = lib.glsmamba_scan_backward(
            _ptr(u), _ptr(delta), _ptr(A), _ptr(Bt), _ptr(Ct), _ptr(D), _ptr(bias), int(ctx.softplus),
            _ptr(grad_y), _ptr(du), _ptr(ddelta), _ptr(dA), _ptr(dBt), _ptr(dCt), _ptr(dD), _ptr(dbias),
            batch, channels, paths, length, n_state, torch.get_num_threads(),
        )
        if status != 0:
            raise MemoryError("selective_scan (fused): could not allocate the backward work buffers")
        return du, ddelta, dA, dBt, dCt, dD, dbias, None


def selective_scan_fused(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Fused CPU scan; shapes as ``selective_scan``. Computes in float32 and returns float32.

    Raises ``RuntimeError`` if the kernel cannot be built (``selective_scan`` checks
    :func:`is_available` first and falls back to chunked instead).
    """
    if load_library() is None:
        raise RuntimeError("selective_scan: the fused CPU kernel could not be built (see the warning)")
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan: the fused backend runs on CPU only, got {u.device}")
    f32 = torch.float32
    u, delta, A = (t.to(f32).contiguous() for t in (u, delta, A))
    Bt = B.to(f32).transpose(-1, -2).contiguous()  # (B, K, L, N)
    Ct = C.to(f32).transpose(-1, -2).contiguous()
    D = D.to(f32).contiguous() if D is not None else None
    delta_bias = delta_bias.to(f32).contiguous() if delta_bias is not None else None
    return _FusedScan.apply(u, delta, A, Bt, Ct, D, delta_bias, bool(delta_softplus))
