"""Where commands may write: never over their own inputs, never over a file glsmamba did
not write unless the user passed ``--overwrite``.

Commands name their inputs (files or folders read) and their output paths; a target
that is the same file as an input (by device and inode, so links and hard links count)
is refused even with ``--overwrite``. Whether an existing target was written by
glsmamba is decided by a marker the project writes (a prediction folder's manifest,
an ``infer`` JSON's ``glsmamba`` record), never guessed from the content.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from glsmamba.errors import GlsmambaError


class OutputRefused(GlsmambaError):
    """An output would replace an input or a file glsmamba did not write."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def input_files(inputs: Iterable[str | os.PathLike | None]) -> dict[tuple[int, int], Path]:
    """Identity -> path of every input file; a folder counts with the files directly in it."""
    found: dict[tuple[int, int], Path] = {}
    for item in inputs:
        if item is None or str(item) == "":
            continue
        path = Path(item)
        paths = [path]
        if path.is_dir():
            try:
                paths += sorted(p for p in path.iterdir() if not p.is_dir())
            except OSError:
                pass
        for each in paths:
            ident = _identity(each)
            if ident is not None:
                found.setdefault(ident, each)
    return found


def refuse_inputs(targets: Iterable[str | os.PathLike], inputs, option: str = "--out") -> None:
    """OutputRefused when a target is (the same file or folder as) one of ``inputs``."""
    known = inputs if isinstance(inputs, dict) else input_files(inputs)
    for target in targets:
        ident = _identity(Path(target))
        if ident is not None and ident in known:
            raise OutputRefused(
                f"{target}: this is an input of the command ({known[ident]}); an output never "
                f"replaces an input, even with --overwrite: choose another {option}")


def refuse_input_folder(folder: str | os.PathLike, inputs, option: str = "--out") -> None:
    """OutputRefused when ``folder`` directly holds one of ``inputs`` (a folder of outputs
    that are read back as a set, such as predictions, must not mix with what was read)."""
    known = inputs if isinstance(inputs, dict) else input_files(inputs)
    ident = _identity(Path(folder))
    if ident is None:
        return
    for path in known.values():
        if _identity(Path(path).parent) == ident:
            raise OutputRefused(
                f"{folder}: this folder holds an input of the command ({path}); outputs are "
                f"never written among the inputs, even with --overwrite: choose another {option}")


def refuse_foreign(target: str | os.PathLike, owned: bool, overwrite: bool,
                   command: str, option: str = "--out") -> None:
    """OutputRefused when ``target`` exists, was not written by ``command`` (``owned``
    False) and ``overwrite`` is not given."""
    target = Path(target)
    if not (target.exists() or target.is_symlink()) or owned or overwrite:
        return
    kind = "link" if target.is_symlink() else "folder" if target.is_dir() else "file"
    raise OutputRefused(f"{target}: this {kind} exists and was not written by {command}; "
                        f"refusing to replace it (choose another {option}, or pass "
                        "--overwrite to replace it)")


def default_prediction_dir(checkpoint: str | os.PathLike, protocol: str) -> Path:
    """Where ``eval`` writes without ``--out``: inside the run it evaluates, so that two
    runs never share a folder (``RUN/predictions_PROTOCOL``; a checkpoint file other than
    ``last`` gets ``predictions_STEM_PROTOCOL`` beside it)."""
    path = Path(checkpoint).resolve()
    if path.is_dir():
        return path / f"predictions_{protocol}"
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.stem == "last":
        return path.parent / f"predictions_{protocol}"
    return path.parent / f"predictions_{path.stem}_{protocol}"


LOCK_FILE = ".glsmamba.lock"
_LOCKS: dict[str, int] = {}             # resolved folder -> the lock's file descriptor


def lock_folder(folder: str | os.PathLike, doing: str, option: str) -> None:
    """Hold ``FOLDER/.glsmamba.lock`` for this process (the folder is created if needed):
    a second process gets a ConfigError naming the holder's pid. The lock dies with its
    process, so a killed run's lock file is simply taken over; a second call from the
    same process is a no-op."""
    from glsmamba.errors import ConfigError
    from glsmamba.fileio import LockHeld, acquire_lock
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _LOCKS:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _LOCKS[key] = acquire_lock(folder / LOCK_FILE)
    except LockHeld as held:
        raise ConfigError(f"{folder}: another process (pid {held.pid or 'unknown'}) is {doing} "
                          f"(lock file {held.path}); wait for it to finish or use another "
                          f"{option}") from None
    except OSError as err:
        raise ConfigError(f"{folder}: the work dir cannot be created or written: "
                          f"{err.strerror or err}") from None


def unlock_folder(folder: str | os.PathLike) -> None:
    """Release the lock :func:`lock_folder` took (no-op when not held)."""
    fd = _LOCKS.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)
