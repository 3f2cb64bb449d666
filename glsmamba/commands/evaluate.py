"""``glsmamba eval CONFIG --checkpoint PATH``: predictions + metric table on the val split."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on the val split",
        description="Run a checkpoint on the val samples, write poseval-format predictions "
                    "(one JSON per GT video) and print PoseTrack mAP (or Sub-JHMDB PCK).")
    parser.add_argument("config", help="config file or bundled config name")
    parser.add_argument("--checkpoint", required=True,
                        help="a .safetensors checkpoint, or a work dir (its last epoch: the headline; "
                             "best.safetensors is selected on val)")
    parser.add_argument("--protocol", choices=("gt", "dcpose", "mmpose"),
                        help="evaluation protocol: person boxes, scores and NMS (default: config "
                             "eval.protocol; docs/EVALUATION.md)")
    parser.add_argument("--boxes", choices=("gt", "detections"),
                        help="legacy: 'gt' = --protocol gt; 'detections' needs a detected-box protocol")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test (default: config eval.flip_test)")
    parser.add_argument("--out", help="prediction folder (default: next to the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.engine import api
    from glsmamba.engine import distributed as du
    from glsmamba.engine.config import load_config
    config = load_config(args.config, args.overrides)
    try:
        _, evaluator = api.evaluate(config, args.checkpoint, boxes=args.boxes, flip=args.flip,
                                    out_dir=args.out, progress=not args.no_progress,
                                    protocol=args.protocol)
        if du.current().is_main:
            print(api.format_result(evaluator, title=evaluator.checkpoint or f"{args.checkpoint}",
                                    markdown=args.markdown))
            if evaluator.out_dir is not None and not evaluator.is_jhmdb:
                print(f"predictions written to {evaluator.out_dir} (settings in "
                      f"{evaluator.META_FILE})")
    finally:
        du.cleanup()
    return 0
