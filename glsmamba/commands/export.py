"""``glsmamba export RUN_DIR|CHECKPOINT --format onnx --out FILE``: a model for other runtimes."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from glsmamba.export.onnx_export import DEFAULT_OPSET, TOLERANCE
    parser = subparsers.add_parser(
        "export", help="export a trained model to ONNX (runs in ONNX Runtime, no custom op)",
        description="Export a run's model (frozen encoder, embedding, GSM / LRM blocks, head; "
                    "with --features-only the part after a feature cache) as a standard ONNX "
                    "graph. The export is checked before anything is written (ONNX checker, one "
                    "ONNX Runtime run against PyTorch); FILE.json beside it records the preset, "
                    "input shape, normalisation, delta, window, joints and the checkpoint's "
                    "SHA-256. See docs/EXPORT.md.")
    parser.add_argument("source", nargs="?", help="a run folder or a .safetensors checkpoint")
    parser.add_argument("--preset", help="instead of SOURCE: a preset with random weights "
                                         "(benchmarks, tests; see `glsmamba models`)")
    parser.add_argument("--format", default="onnx", help="export format (onnx)")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET}, at least 16)")
    parser.add_argument("--batch", default="dynamic",
                        help="'dynamic' (default) or a fixed batch size N")
    parser.add_argument("--features-only", action="store_true",
                        help="export the part after the frozen encoder (input: its features)")
    parser.add_argument("--clip", help="check on this clip: a video (first T frames) or a .npy "
                                       "array (T, 3, H, W) normalised; default: a random clip")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"max abs heatmap difference ORT vs PyTorch (default {TOLERANCE:g})")
    parser.add_argument("--config", help="config (default: the one stored with the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (with --preset: e.g. model.overrides.dim=64)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.errors import ConfigError
    from glsmamba.export import FORMATS
    from glsmamba.export.onnx_export import load_check_clip, load_source, preset_source
    if args.format not in FORMATS:
        raise ConfigError(f"--format {args.format!r}: choose one of {', '.join(FORMATS)}")
    if bool(args.source) == bool(args.preset):
        raise ConfigError("give either a run folder / checkpoint or --preset NAME")
    if args.preset:
        src = preset_source(args.preset, args.overrides)
    else:
        src = load_source(args.source, args.config, args.overrides)
    clip = load_check_clip(args.clip, src.model) if args.clip else None
    meta = FORMATS[args.format](src, args.out, opset=args.opset, batch=args.batch,
                                features_only=args.features_only, clip=clip,
                                overwrite=args.overwrite, tolerance=args.tolerance, log=print)
    print(f"exported {meta['preset']} ({meta['input']['name']} {meta['input']['shape']}) -> "
          f"{args.out} in {meta['export_seconds']:.1f} s; max abs diff "
          f"{meta['check']['max_abs_diff']:.2e}")
    return 0
