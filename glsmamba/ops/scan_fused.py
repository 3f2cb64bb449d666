"""Fused CPU selective scan: a C kernel compiled on first use and loaded with ctypes.

The source (``csrc/selective_scan_cpu.c``, plain C99 + OpenMP, no torch headers) is built
with the system C compiler (``$CC``, else the one Python was built with, else ``cc``) into
a shared library cached under ``$GLSMAMBA_CACHE`` (default ``~/.cache/glsmamba/kernels``),
named by a hash of the source, the flags, the compiler and the machine, so a second
process reuses it. The build is atomic (temporary name, then rename) and records the
library's SHA-256 beside it (``NAME.so.sha256``); a library is loaded only from a cache
folder owned by this user that group and others cannot write (parents writable by others
only with the sticky bit, as ``/tmp``), and only when its bytes match the recorded digest
(anything else at that name is rebuilt). If no compiler works or the cache folder is
unusable or unsafe, :func:`load_library` returns ``None`` after one warning that says why
and ``selective_scan`` falls back to the chunked backend.

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
import stat
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


def cache_dir(subdir: str = "kernels") -> Path:
    """``$GLSMAMBA_CACHE/<subdir>`` (default root ``~/.cache/glsmamba``): the compiled
    kernels, or (``subdir="selftest"``) the GPU scan self-test verdicts (``selftest.py``)."""
    root = os.environ.get(ENV_CACHE)
    base = Path(root) if root else Path.home() / ".cache" / "glsmamba"
    return base / subdir


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


class UnsafeCacheError(OSError):
    """The kernel cache folder cannot be used safely (not ours, writable by others ...)."""


def _check_private_dir(path: Path) -> None:
    """Raise UnsafeCacheError unless ``path`` is a real folder owned by us (or root when we
    are root) that neither group nor others can write."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeCacheError(f"{path} is not a folder")
    if info.st_uid != os.getuid():
        raise UnsafeCacheError(f"{path} is owned by uid {info.st_uid}, not by this user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCacheError(f"{path} is writable by group or others "
                               f"(mode {stat.S_IMODE(info.st_mode):o})")


def _check_ancestor(path: Path) -> None:
    """An ancestor may be shared (``/tmp``) only if others cannot rename our folder in it."""
    info = os.stat(path)
    if info.st_uid not in (0, os.getuid()):
        raise UnsafeCacheError(f"{path} is owned by uid {info.st_uid}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise UnsafeCacheError(f"{path} is writable by group or others without the sticky bit")


def secure_cache_dir(subdir: str = "kernels") -> Path:
    """The cache folder, created private (mode 700) if missing; UnsafeCacheError (an
    OSError) when it or a parent could let another user plant or swap a library."""
    folder = cache_dir(subdir)
    missing = []
    probe = Path(os.path.abspath(folder))
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        os.mkdir(path, 0o700)
    folder = Path(os.path.realpath(folder))
    _check_private_dir(folder)
    for parent in folder.parents:
        _check_ancestor(parent)
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def verified(target: Path) -> bool:
    """True when ``target`` is a regular file of ours whose bytes match the digest recorded
    beside it at build time."""
    digest_file = _digest_path(target)
    try:
        for path in (target, digest_file):
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() \
                    or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
        recorded = digest_file.read_text().strip()
        return recorded == _sha256(target)
    except (OSError, UnicodeDecodeError):
        return False


def _compile(compiler: list[str], flags: list[str], target: Path) -> str | None:
    """Build ``target`` atomically with its digest; None on success, else the message."""
    fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    digest_tmp = None
    try:
        done = subprocess.run(
            compiler + flags + [str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip()[-500:] or f"exit status {done.returncode}"
        os.chmod(tmp, 0o700)
        from glsmamba.fileio import write_tmp
        digest_tmp = write_tmp(_digest_path(target), (_sha256(Path(tmp)) + "\n").encode())
        os.replace(tmp, target)
        os.replace(digest_tmp, _digest_path(target))
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        for path in (tmp, digest_tmp):
            if path and os.path.exists(path):
                os.unlink(path)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.glsmamba_scan_forward.argtypes = [ptr] * 7 + [i32, ptr] + [i64] * 5 + [i32]
    lib.glsmamba_scan_forward.restype = None
    lib.glsmamba_scan_backward.argtypes = [ptr] * 7 + [i32] + [ptr] * 8 + [i64] * 5 + [i32]
    lib.glsmamba_scan_backward.restype = i32
    lib.glsmamba_scan_has_openmp.restype = i32
    return lib


def build_library() -> tuple[Path | None, list[str]]:
    """Return (path of a built or cached library, errors of the variants that failed).

    Only a library whose bytes match the digest recorded when it was built, in a private
    cache folder, is returned; anything else at the expected name is rebuilt."""
    compiler = compiler_command()
    if not compiler:
        return None, ["no C compiler found ($CC, sysconfig CC, cc, gcc)"]
    try:
        secure_cache_dir()
    except OSError as exc:
        return None, [f"kernel cache folder {cache_dir()} cannot be used safely: {exc}"]
    errors = []
    for extra in FLAG_VARIANTS:
        flags = BASE_FLAGS + extra
        target = Path(os.path.realpath(library_path(compiler, flags)))
        if os.path.lexists(target):
            if verified(target):
                return target, errors
            why = ("does not match the digest recorded when it was built"
                   if os.path.lexists(_digest_path(target)) else
                   "has no recorded digest (not built by this glsmamba, or by an older one)")
            warnings.warn(f"glsmamba: {target} {why}; rebuilding it instead of loading it",
                          RuntimeWarning, stacklevel=4)
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
            except (OSError, AttributeError) as exc:
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


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.to(torch.float32).contiguous() if t is not None else None


def _path_slices(channels: int, paths: int, batch: int, length: int, *tensors: torch.Tensor):
    """Groups of whole paths per kernel call, so that the float32 working copies of one
    call hold about PATH_CHUNK_ELEMS elements (at least one path); one call for all paths
    when ``tensors`` (the big inputs) are float32 and contiguous already (no copies)."""
    per_path = channels // paths
    if tensors and all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
        return [(0, paths, per_path)]
    step = max(1, min(paths, PATH_CHUNK_ELEMS // max(1, batch * per_path * length)))
    return [(p0, min(paths, p0 + step), per_path) for p0 in range(0, paths, step)]


PATH_CHUNK_ELEMS = 1 << 22  # 16 MB of float32 per working copy (one GSM path at batch 1: 2.9 M)


class _FusedScan(torch.autograd.Function):
    """u, delta (B, KD, L); A (KD, N); Bt, Ct (B, K, L, N); D, bias (KD,) or None.

    Any floating dtype. The kernel runs on float32 copies of a few whole paths at a time
    (``PATH_CHUNK_ELEMS``): paths are independent, so the full-size float32 copies of u
    and delta (and of y, grad_y, du, ddelta in backward) never exist. Only the inputs, in
    their own dtype, are kept for backward. Returns y and the gradients of u / delta in
    u's / delta's dtype, the others in float32 (autograd casts them to each input's dtype).
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bt, Ct, D, bias, softplus: bool):
        lib = load_library()
        batch, channels, length = u.shape
        paths, n_state = Bt.shape[1], A.shape[1]
        y = torch.empty(u.shape, dtype=u.dtype)
        A32, D32, bias32 = _f32(A), _f32(D), _f32(bias)
        for p0, p1, per_path in _path_slices(channels, paths, batch, length, u, delta):
            c0, c1 = p0 * per_path, p1 * per_path
            u_p, delta_p = _f32(u[:, c0:c1]), _f32(delta[:, c0:c1])
            Bt_p, Ct_p = _f32(Bt[:, p0:p1]), _f32(Ct[:, p0:p1])
            whole = c0 == 0 and c1 == channels
            y_p = y if whole and y.dtype == torch.float32 else torch.empty_like(u_p)
            lib.glsmamba_scan_forward(
                _ptr(u_p), _ptr(delta_p), _ptr(A32[c0:c1]), _ptr(Bt_p), _ptr(Ct_p),
                _ptr(D32[c0:c1] if D32 is not None else None),
                _ptr(bias32[c0:c1] if bias32 is not None else None), int(softplus), _ptr(y_p),
                batch, c1 - c0, p1 - p0, length, n_state, torch.get_num_threads(),
            )
            if y_p is not y:
                y[:, c0:c1] = y_p
        ctx.save_for_backward(u, delta, A, Bt, Ct, D, bias)
        ctx.softplus = softplus
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, Bt, Ct, D, bias = ctx.saved_tensors
        lib = load_library()
        batch, channels, length = u.shape
        paths, n_state = Bt.shape[1], A.shape[1]
        A32, D32, bias32 = _f32(A), _f32(D), _f32(bias)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dA = torch.empty_like(A32)
        dBt = torch.empty(Bt.shape, dtype=torch.float32)
        dCt = torch.empty(Ct.shape, dtype=torch.float32)
        dD = torch.empty_like(D32) if D is not None else None
        dbias = torch.empty_like(bias32) if bias is not None else None
        for p0, p1, per_path in _path_slices(channels, paths, batch, length, u, delta, grad_y):
            c0, c1 = p0 * per_path, p1 * per_path
            whole = c0 == 0 and c1 == channels
            u_p, delta_p, gy_p = (_f32(t[:, c0:c1]) for t in (u, delta, grad_y))
            Bt_p, Ct_p = _f32(Bt[:, p0:p1]), _f32(Ct[:, p0:p1])
            f32_out = whole and du.dtype == ddelta.dtype == torch.float32
            du_p, ddelta_p = (du, ddelta) if f32_out else (torch.empty_like(u_p), torch.empty_like(delta_p))
            dBt_p, dCt_p = (dBt, dCt) if whole else (torch.empty_like(Bt_p), torch.empty_like(Ct_p))
            status = lib.glsmamba_scan_backward(
                _ptr(u_p), _ptr(delta_p), _ptr(A32[c0:c1]), _ptr(Bt_p), _ptr(Ct_p),
                _ptr(D32[c0:c1] if D32 is not None else None),
                _ptr(bias32[c0:c1] if bias32 is not None else None), int(ctx.softplus),
                _ptr(gy_p), _ptr(du_p), _ptr(ddelta_p), _ptr(dA[c0:c1]), _ptr(dBt_p), _ptr(dCt_p),
                _ptr(dD[c0:c1] if dD is not None else None),
                _ptr(dbias[c0:c1] if dbias is not None else None),
                batch, c1 - c0, p1 - p0, length, n_state, torch.get_num_threads(),
            )
            if status != 0:
                raise MemoryError("selective_scan (fused): could not allocate the backward work buffers")
            if du_p is not du:
                du[:, c0:c1], ddelta[:, c0:c1] = du_p, ddelta_p
            if dBt_p is not dBt:
                dBt[:, p0:p1], dCt[:, p0:p1] = dBt_p, dCt_p
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
    """Fused CPU scan; shapes as ``selective_scan``. Computes in float32, returns u's dtype.

    Raises ``RuntimeError`` if the kernel cannot be built (``selective_scan`` checks
    :func:`is_available` first and falls back to chunked instead).
    """
    if load_library() is None:
        raise RuntimeError("selective_scan: the fused CPU kernel could not be built (see the warning)")
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan: the fused backend runs on CPU only, got {u.device}")
    # float32 copies are made inside the Function, so that backward keeps the inputs in
    # their own dtype; B and C are small (N per path, not per channel): transposed here
    Bt = B.transpose(-1, -2).contiguous()  # (B, K, L, N)
    Ct = C.transpose(-1, -2).contiguous()
    with torch.autocast("cpu", enabled=False):
        return _FusedScan.apply(u, delta, A, Bt, Ct, D, delta_bias, bool(delta_softplus))
