"""``glsmamba eval RUN_DIR | CHECKPOINT`` (or ``eval CONFIG --checkpoint PATH``):
predictions + metric table on the val split."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on the val split",
        description="Run a checkpoint on the val samples, write poseval-format predictions "
                    "(one JSON per GT video) and print PoseTrack mAP (or Sub-JHMDB PCK). "
                    "The config is the one the run stored, unless --config (or the legacy "
                    "form `eval CONFIG --checkpoint PATH`) names another: then its data and "
                    "evaluation settings score the run's own model.")
    parser.add_argument("target", metavar="RUN_DIR|CHECKPOINT",
                        help="a work dir (its last epoch: the headline; best.safetensors is "
                             "selected on val) or a .safetensors checkpoint; with --checkpoint, "
                             "a config file or bundled config name (legacy form)")
    parser.add_argument("--checkpoint", help="the checkpoint or work dir when TARGET is a config")
    parser.add_argument("--config", help="score with this config's data and evaluation settings "
                                         "(default: the config stored with the checkpoint)")
    from glsmamba.commands.choices import LazyChoices, protocol_names
    parser.add_argument("--protocol", choices=LazyChoices(protocol_names), metavar="NAME",
                        help="evaluation protocol: person boxes, scores and NMS, one of "
                             "%(choices)s (default: config eval.protocol; docs/EVALUATION.md)")
    parser.add_argument("--boxes", choices=("gt", "detections"),
                        help="legacy: 'gt' = --protocol gt; 'detections' needs a detected-box protocol")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test (default: config eval.flip_test)")
    parser.add_argument("--out", help="prediction folder (default: RUN/predictions_PROTOCOL "
                                      "inside the evaluated run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in an --out folder glsmamba did not write (never "
                             "an input: annotations, boxes, checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.engine import api
    from glsmamba.engine import distributed as du
    checkpoint, config_name = checkpoint_and_config(args)
    config = api.config_for_eval(checkpoint, config_name, args.overrides, log=_note)
    try:
        _, evaluator = api.evaluate(config, checkpoint, boxes=args.boxes, flip=args.flip,
                                    out_dir=args.out, progress=not args.no_progress,
                                    protocol=args.protocol,
                                    overwrite=getattr(args, "overwrite", False))
        if du.current().is_main:
            print(api.format_result(evaluator, title=evaluator.checkpoint or f"{checkpoint}",
                                    markdown=args.markdown))
            print_subsets(evaluator)
            if evaluator.out_dir is not None and evaluator.metric.uses_protocol:
                print(f"predictions written to {evaluator.out_dir} (settings in "
                      f"{evaluator.META_FILE})")
    finally:
        du.cleanup()
    return 0


def checkpoint_and_config(args: argparse.Namespace) -> tuple[str, str | None]:
    """(checkpoint, config or None) from ``eval TARGET [--checkpoint] [--config]``."""
    from pathlib import Path
    from glsmamba.errors import ConfigError
    if args.checkpoint is not None:                  # legacy: eval CONFIG --checkpoint PATH
        if args.config is not None:
            raise ConfigError(f"two configs ({args.target} and --config {args.config}): name "
                              "the run or checkpoint as TARGET and the config with --config")
        return args.checkpoint, args.target
    target = Path(args.target)
    if target.is_dir() or (target.suffix in (".safetensors", ".json") and target.is_file()):
        return args.target, args.config
    raise ConfigError(f"{args.target}: not a run folder or checkpoint file (to score a config, "
                      f"name the checkpoint: glsmamba eval {args.target} --checkpoint PATH)")


def print_subsets(evaluator) -> None:
    """mAP per frame subset when the GT lists degradations (the synthetic benchmark): the
    columns of ``glsmamba demo``'s table."""
    gt, pred = getattr(evaluator, "gt", None), getattr(evaluator, "pred_json", None)
    from glsmamba.recipes.demo import has_degradations, subset_scores
    if not gt or not pred or not has_degradations(gt):
        return
    scored = subset_scores(gt, pred)
    print("mAP by frame subset (image records' degradations): " + ", ".join(
        f"{name} {value:.1f} ({_frames(scored['counts'][name])})" if scored["counts"].get(name)
        else f"{name} {value:.1f}" for name, value in scored["metrics"].items()))


def _frames(count: int) -> str:
    return f"{count} frame{'' if count == 1 else 's'}"


def _note(message: str) -> None:
    import sys
    print(message, file=sys.stderr)
