"""The ``glsmamba`` command line.

Each sub-command lives in its own module under :mod:`glsmamba.commands` and exposes
``add_parser(subparsers)`` (which registers the parser and sets ``func``) and is imported
lazily so that ``glsmamba --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command name -> module under glsmamba.commands
COMMANDS = {
    "info": "info",
    "models": "models",
    "synth": "synth",
    "eval-predictions": "eval_predictions",
    "train": "train",
    "eval": "evaluate",
    "infer": "infer",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glsmamba",
        description="GLSMamba video pose estimation: models, data, training, evaluation, inference.",
    )
    from glsmamba import __version__

    parser.add_argument("--version", action="version", version=f"glsmamba {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"glsmamba.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"glsmamba.commands.{module_name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except GlsmambaError as err:
        print(f"glsmamba {args.command}: error: {err}", file=sys.stderr)
        return 2


from glsmamba.errors import GlsmambaError  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
