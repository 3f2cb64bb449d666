"""``glsmamba info MODEL``: parameters and GFLOPs of a preset, by part;
``glsmamba info --device [DEVICE]``: the selective-scan backend on a device and its self-test."""
from __future__ import annotations

import argparse

from glsmamba.errors import ConfigError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info", help="parameters and GFLOPs of a model preset",
        description="Trainable / frozen parameters and GFLOPs (multiply-adds counted once) "
                    "for one clip, broken down into encoder, embedding, GSM, LRM, head. "
                    "The model is built on the meta device: nothing is computed.")
    parser.add_argument("model", nargs="?", help="preset name (see `glsmamba models`)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per clip (default: the preset's, 5)")
    parser.add_argument("--size", default=None,
                        help="crop HxW, e.g. 256x192 (default: the preset's input size)")
    parser.add_argument("--device", nargs="?", const="auto", default=None, metavar="DEVICE",
                        help="print which selective-scan backend runs on DEVICE (cpu, cuda, cuda:N; "
                             "default auto) and its self-test verdict, running the self-test if "
                             "none is cached (see GLSMAMBA_SCAN_SELFTEST in docs/USAGE.md)")
    parser.set_defaults(func=run)
    return parser


def parse_size(text: str) -> tuple[int, int]:
    """'256x192' -> (256, 192) as (H, W)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 256x192 (HxW), got {text!r}") from None
    return height, width


def run(args: argparse.Namespace) -> int:
    if args.device is not None:
        from glsmamba.ops.selective_scan import scan_backend_report

        print(scan_backend_report(args.device))
    if args.model is None:
        if args.device is None:
            raise ConfigError("give a model preset (see `glsmamba models`) or --device")
        return 0
    from glsmamba.models.flops import format_report, measure_preset

    size = parse_size(args.size) if args.size else None
    report = measure_preset(args.model, frames=args.frames, size_hw=size)
    print(format_report(args.model, report))
    return 0
