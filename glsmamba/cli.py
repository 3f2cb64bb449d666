"""The ``glsmamba`` command line.

Each sub-command lives in its own module under :mod:`glsmamba.commands` and exposes
``add_parser(subparsers)`` (which registers the parser and sets ``func``) and is imported
lazily so that ``glsmamba --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# idle OpenMP threads sleep instead of spinning, unless the user chose otherwise (set
# before torch loads its OpenMP runtime): the default spin-wait burns the cores that other
# processes need. On a loaded 2-core machine (2026-12-05), `glsmamba infer` at 2 threads
# ran 0.34 frames/s spinning, 1.58 frames/s with this (docs/USAGE.md, "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# sub-command name -> module under glsmamba.commands
COMMANDS = {
    "info": "info",
    "models": "models",
    "synth": "synth",
    "eval-predictions": "eval_predictions",
    "train": "train",
    "check-data": "check_data",
    "eval": "evaluate",
    "infer": "infer",
    "convert-vitpose": "convert_vitpose",
    "demo": "demo",
    "bench": "bench",
    "export": "export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glsmamba",
        description="GLSMamba video pose estimation: models, data, training, evaluation, inference.",
    )
    from glsmamba import __version__

    parser.add_argument("--version", action="version", version=f"glsmamba {__version__}")
    progress_help = ("progress display: bar (terminal), log (one line per interval), none; "
                     "auto (default) = bar on a terminal, else log")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default=None, help=progress_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"glsmamba.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"glsmamba.commands.{module_name}":
                raise
            continue
        module.add_parser(subparsers)
    for sub in subparsers.choices.values():    # also accepted after the command name
        sub.add_argument("--progress", choices=PROGRESS_MODES, default=argparse.SUPPRESS,
                         help=progress_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from glsmamba import progress
    mode = getattr(args, "progress", None)
    if getattr(args, "no_progress", False):
        mode = "none"
    previous_mode = progress.get_mode_setting()
    progress.set_mode(mode)
    _line_buffered_stdout()
    try:
        progress.get_mode()              # an unknown GLSMAMBA_PROGRESS: one line, before work
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except GlsmambaError as err:
        print(f"glsmamba {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and not _is_allocation_failure(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        print(f"glsmamba {args.command}: error: cannot allocate memory ({first}); the crop size, "
              "batch size or clip length is too large for this machine", file=sys.stderr)
        return 2
    except OSError as err:
        # the environment, not the code: a full disk, a read-only or missing folder ...
        where = f"{err.filename}: " if err.filename else ""
        what = err.strerror or str(err)
        print(f"glsmamba {args.command}: error: {where}{what}", file=sys.stderr)
        return 2
    finally:
        progress.set_mode(previous_mode)   # main() called from Python leaves no state behind


def _is_allocation_failure(err: BaseException) -> bool:
    """A tensor that could not be allocated (torch's CPU allocator or CUDA out of memory)."""
    text = str(err).lower()
    return ("can't allocate memory" in text or "out of memory" in text
            or type(err).__name__ == "OutOfMemoryError")


def _one_line(err: BaseException) -> str:
    """The user-facing message; an error re-raised from a DataLoader worker carries the
    worker's whole traceback, of which only its last line (the original message) is kept."""
    text = str(err)
    if "\n" in text and "Traceback (most recent call last)" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
        name = type(err).__name__
        for prefix in (f"{type(err).__module__}.{name}: ", f"{name}: "):
            if last.startswith(prefix):
                return last[len(prefix):]
        return last
    return text


def _line_buffered_stdout() -> None:
    """Stage lines (stdout) and progress lines (stderr) keep their order in a piped log."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(line_buffering=True)
        except (ValueError, OSError):
            pass


from glsmamba.errors import GlsmambaError  # noqa: E402
from glsmamba.progress import MODES as PROGRESS_MODES  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
