"""Progress reporting that reads well in a terminal and in a log file.

One entry point, :func:`progress`, used by training, the feature cache, evaluation and
inference. The mode is one of

- ``"bar"``: a tqdm bar (redrawn in place: for terminals);
- ``"log"``: plain lines, one every ``interval`` seconds and one when the loop ends, e.g.
  ``epoch 2/20: 120/300 it (40%), 3.21 it/s, elapsed 0:37, ETA 0:56, loss=2.1e-03``;
- ``"none"``: nothing;
- ``"auto"`` (default): ``bar`` when the stream (stderr) is a terminal, else ``log``.

The process-wide default comes from :func:`set_mode` (the CLI's ``--progress``) or the
``GLSMAMBA_PROGRESS`` environment variable; ``GLSMAMBA_PROGRESS_INTERVAL`` sets the
seconds between log lines (default 30).

>>> from glsmamba.progress import progress
>>> for item in progress(range(3), desc="demo", mode="none"):
...     pass
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Iterable, Iterator

MODES = ("auto", "bar", "log", "none")
DEFAULT_INTERVAL = 30.0
_mode: str | None = None


def set_mode(mode: str | None) -> None:
    """Set the process-wide progress mode (``None`` = back to the environment/default)."""
    global _mode
    if mode is not None and mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
    _mode = mode


def get_mode_setting() -> str | None:
    """What :func:`set_mode` last set (``None``: not set), to restore it afterwards."""
    return _mode


def get_mode() -> str:
    mode = _mode or os.environ.get("GLSMAMBA_PROGRESS", "auto") or "auto"
    if mode not in MODES:
        from glsmamba.errors import ConfigError      # a ValueError the CLI prints in one line
        raise ConfigError(f"GLSMAMBA_PROGRESS must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def resolve_mode(mode: str | None = None, stream: IO | None = None) -> str:
    """``auto`` -> ``bar`` or ``log`` by whether ``stream`` (default stderr) is a terminal."""
    mode = mode or get_mode()
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "auto":
        stream = stream or sys.stderr
        isatty = getattr(stream, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "log"
    return mode


def _interval() -> float:
    try:
        return float(os.environ.get("GLSMAMBA_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


def log_interval() -> float:
    """Seconds between log lines (``GLSMAMBA_PROGRESS_INTERVAL``, default 30): for loops
    that report progress their own way (e.g. waiting for another process)."""
    return _interval()


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A counter shown as a bar, as log lines, or not at all (see the module docstring).

    Use it as an iterable wrapper or call :meth:`update` / :meth:`set_postfix` yourself,
    and :meth:`close` at the end (or use it as a context manager).
    """

    def __init__(self, iterable: Iterable | None = None, total: int | None = None,
                 desc: str = "", unit: str = "it", mode: str | None = None,
                 interval: float | None = None, stream: IO | None = None,
                 leave: bool = True):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total or None, desc, unit
        self.stream = stream
        self.mode = resolve_mode(mode, stream)
        self.interval = _interval() if interval is None else float(interval)
        self.n, self.postfix = 0, {}
        self.started = self.last_line = time.perf_counter()
        self.closed = False
        self._pending = False      # a log line is due: written at set_postfix or next update
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=leave,
                             dynamic_ncols=True, file=stream)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this Progress wraps no iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            if self._pending:                     # due last time, no postfix came since
                self._flush()
            now = time.perf_counter()
            # the next update is about one mean step away: a line due before then is
            # written now, so that slow steps do not stretch the gaps past the interval
            per_update = (now - self.started) / self.n if self.n > 0 else 0.0
            if now - self.last_line + per_update >= self.interval:
                self._pending = True              # wait for this step's set_postfix

    def set_postfix(self, **values) -> None:
        self.postfix.update(values)
        if self._bar is not None:
            self._bar.set_postfix(**values)
        elif self._pending:
            self._flush()

    def _flush(self) -> None:
        self._pending = False
        self.last_line = time.perf_counter()
        self._write(self.line(self.last_line))

    def line(self, now: float | None = None, done: bool = False) -> str:
        """The log line for the current state (``done``: the closing line)."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        parts = [f"{self.desc}: {count}" if self.desc else count]
        if self.total and not done:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.2f} {self.unit}/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and not done and rate > 0:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        line = ", ".join(parts)
        if self.postfix:
            line += ", " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        return line + (" (done)" if done else "")

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log":
            self._write(self.line(done=True))


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, mode: str | None = None,
             interval: float | None = None, stream: IO | None = None,
             leave: bool = True) -> Progress:
    """A :class:`Progress`; ``enabled=False`` forces mode ``none`` (callers' on/off switch)."""
    return Progress(iterable, total=total, desc=desc, unit=unit,
                    mode="none" if not enabled else mode, interval=interval, stream=stream,
                    leave=leave)
