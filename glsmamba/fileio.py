"""The one place that writes files: atomic, link-safe, fsynced.

Every writer of the package goes through here. A file is first written to a temporary
sibling created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW`` under a random name, so a
link planted at any name is never followed), flushed and fsynced, then renamed over the
final name (a rename replaces a link itself, never its target) and the folder is
fsynced. A crash leaves the old file or the new one, never a mix.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_chunk(handle, data: memoryview) -> None:
    """One write call (a seam for tests that simulate a full disk)."""
    handle.write(data)


def create_exclusive(path: str | os.PathLike, mode: int = 0o666):
    """Open a new file for binary writing; fails if anything (a link included) is there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    return os.fdopen(fd, "wb")


def temp_sibling(path: Path) -> Path:
    """A fresh, unpredictable name beside ``path`` for its temporary copy."""
    return path.with_name(f".{path.name}.partial.{os.getpid()}.{secrets.token_hex(6)}")


def write_tmp(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to an exclusive temporary sibling of ``path``, fsynced; return it."""
    tmp = temp_sibling(Path(path))
    try:
        with create_exclusive(tmp, 0o666 & ~current_umask()) as handle:
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):
                write_chunk(handle, view[start:start + CHUNK])
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the renames in ``folder`` durable (best effort where the OS refuses)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_files(files: dict[Path, bytes], journal: Path | None = None) -> None:
    """Write several files so that either all are replaced or none is.

    With ``journal`` (a path in the files' folder), the list of renames is written there
    once every temporary file is complete, so that a reader can finish the renames if the
    process dies in the middle of them (:func:`glsmamba.engine.checkpoint.recover_interrupted`)."""
    tmps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            tmps.append((write_tmp(path, data), Path(path)))
        if journal is not None:
            moves = [[tmp.name, path.name] for tmp, path in tmps]
            tmp = write_tmp(journal, json.dumps({"moves": moves}).encode())
            os.replace(tmp, journal)
            fsync_dir(journal.parent)
    except BaseException:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in tmps:
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            if journal is None or not path.exists():
                raise
            # a reader rolled this committed write forward from the journal meanwhile
    for folder in {path.parent for _, path in tmps}:
        fsync_dir(folder)
    if journal is not None:
        journal.unlink(missing_ok=True)
        fsync_dir(journal.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; return the path."""
    atomic_write_files({Path(path): data})
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data, **dump_options) -> Path:
    """JSON (no NaN unless ``allow_nan=True`` is given) written atomically."""
    options = {"allow_nan": False, **dump_options}
    return atomic_write_bytes(path, json.dumps(data, **options).encode("utf-8"))
