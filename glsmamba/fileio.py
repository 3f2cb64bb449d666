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
    process dies in the middle of them (:func:`glsmamba.checkpoint.recover_interrupted`)."""
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


def open_partial(path: str | os.PathLike, suffix: str = ""):
    """(handle, temp path): an exclusive, fresh temporary sibling of ``path`` for a stream
    that grows (a log, records); :func:`commit_partial` renames it over ``path``."""
    path = Path(path)
    tmp = temp_sibling(path)
    if suffix:
        tmp = tmp.with_name(tmp.name + suffix)
    return create_exclusive(tmp, 0o666 & ~current_umask()), tmp


def reset_fixed_partial(path: str | os.PathLike):
    """A binary handle on a new file at the fixed name ``path`` (a ``.NAME.partial.EXT`` a
    reader may watch): whatever sits there (a stale partial, a planted link) is unlinked,
    never followed, and the file is created exclusively."""
    path = Path(path)
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
    except FileNotFoundError:
        pass
    return create_exclusive(path, 0o666 & ~current_umask())


def commit_partial(handle, tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Flush, fsync and close ``handle`` (on ``tmp``), then rename ``tmp`` over ``path``."""
    if handle is not None and not handle.closed:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
    return commit_file(tmp, path)


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename a finished temporary file ``tmp`` (a regular file, not a link) over ``path``."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_symlink() or not tmp.is_file():
        raise OSError(f"{tmp}: the temporary file was replaced by something else")
    try:
        fd = os.open(tmp, os.O_RDONLY | _NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def is_own_regular_file(path: str | os.PathLike, handle) -> bool:
    """Whether ``path`` still names the regular file open in ``handle`` (no link swapped in)."""
    try:
        st_path, st_open = os.lstat(path), os.fstat(handle.fileno())
    except OSError:
        return False
    return (st_path.st_dev, st_path.st_ino) == (st_open.st_dev, st_open.st_ino)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read without following a link at ``path``)."""
    import hashlib
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def make_private_dir(beside: str | os.PathLike) -> Path:
    """A new folder ``.NAME.partial.PID.RANDOM`` beside ``beside`` (mkdir is exclusive)."""
    folder = temp_sibling(Path(beside))
    folder.mkdir(mode=0o700)
    return folder


def publish_folder(files: dict[str, bytes], folder: str | os.PathLike,
                   replace_existing: bool = False) -> Path:
    """Make ``folder`` hold exactly ``files`` (name -> bytes) as one complete set: they are
    written into a private folder beside it, fsynced, and that folder is renamed into
    place. With ``replace_existing`` an existing ``folder`` is first renamed aside and
    removed once the new one is in place (a reader sees the old set, no folder for an
    instant, or the new set, never a mix)."""
    import shutil
    folder = Path(folder)
    staging = make_private_dir(folder)
    try:
        for name, data in files.items():
            if Path(name).name != name or name in (".", ".."):
                raise ValueError(f"{name!r} is not a plain file name")
            with create_exclusive(staging / name, 0o666 & ~current_umask()) as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(staging, 0o777 & ~current_umask())
        fsync_dir(staging)
        old = None
        if folder.is_symlink() or folder.exists():
            if not replace_existing:
                raise FileExistsError(f"{folder} exists")
            old = folder.with_name(temp_sibling(folder).name + ".old")
            os.rename(folder, old)
        try:
            os.rename(staging, folder)
        except BaseException:
            if old is not None:
                os.rename(old, folder)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(folder.parent)
    if old is not None:
        if old.is_symlink() or not old.is_dir():
            old.unlink(missing_ok=True)
        else:
            shutil.rmtree(old, ignore_errors=True)
    return folder


class LockHeld(OSError):
    """Another live process holds the lock; ``pid`` is what it wrote there (or None)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is locked by process {pid if pid else '(unknown)'}")
        self.path, self.pid = path, pid


def acquire_lock(path: str | os.PathLike) -> int:
    """Hold an exclusive lock on ``path`` (created without following a link) for as long as
    the returned file descriptor stays open (``os.close`` releases it); the lock dies with
    the process, so a lock file left by a killed run is simply taken over.
    :class:`LockHeld` when a live process holds it."""
    import fcntl
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            pid = int(text) if text.isdigit() else None
        finally:
            os.close(fd)
        raise LockHeld(path, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def save_figure(figure, path: str | os.PathLike, **options) -> Path:
    """A matplotlib figure saved atomically (rendered to memory, then written as above)."""
    import io
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **options)
    return atomic_write_bytes(path, buffer.getvalue())


def open_append(path: str | os.PathLike):
    """``path`` opened for appending (a log), created exclusively when new; a link, or a
    file with other hard links, at that name is an OSError (never written through)."""
    import stat
    flags = os.O_WRONLY | os.O_APPEND | _NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666 & ~current_umask())
    except FileExistsError:
        fd = os.open(path, flags)
    info = os.fstat(fd)
    if info.st_nlink > 1 or not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(0, "it is not a plain file of its own (a hard link?)", str(path))
    return os.fdopen(fd, "ab")


def create_temp_sibling(path: str | os.PathLike) -> Path:
    """A new empty file beside ``path`` under a fresh random name (created exclusively)
    for a writer that opens files by name itself (a memory map); rename it with
    :func:`commit_file`."""
    tmp = temp_sibling(Path(path))
    create_exclusive(tmp, 0o666 & ~current_umask()).close()
    return tmp
