"""``glsmamba models``: list the model presets."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models", help="list the model presets",
        description="List the model presets (name and description).")
    parser.add_argument("--params", action="store_true",
                        help="also count trainable parameters (built on the meta device)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.models import list_models

    presets = list_models()
    width = max(len(name) for name, _ in presets)
    for name, description in presets:
        params = f"{_trainable_millions(name):>9.3f} M  " if args.params else ""
        print(f"{name:<{width}}  {params}{description}")
    return 0


def _trainable_millions(name: str) -> float:
    from glsmamba.models import create_model
    from glsmamba.models.flops import meta_construction

    with meta_construction():
        model = create_model(name)
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
