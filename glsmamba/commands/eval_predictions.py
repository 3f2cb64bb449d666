"""``glsmamba eval-predictions``: poseval's PoseTrack mAP table (and, with ``--tracking``, its
MOT table) for any prediction folder."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from glsmamba.errors import ConfigError, DataError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval-predictions",
        help="score PoseTrack-format predictions with poseval's mAP (and MOTA) rules",
        description="Score one PoseTrack18-format prediction JSON per GT video (any method's "
                    "output) with poseval's exact AP rules and print its table.",
    )
    parser.add_argument("--gt", required=True,
                        help="folder of per-video GT JSON files, or one merged annotation file")
    parser.add_argument("--pred", required=True,
                        help="folder of per-video prediction JSON files (or one merged file)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", metavar="OUT", help="also write the full result as JSON")
    parser.add_argument("--frames-with", metavar="KEY[=VALUE]",
                        help="only GT frames whose image record has a truthy KEY (or KEY "
                             "equal to / listing VALUE), e.g. degradations=blur")
    parser.add_argument("--title", default=None, help="title line above the table")
    from glsmamba.commands.choices import LazyChoices, rules_names
    parser.add_argument("--rules", choices=LazyChoices(rules_names), default="poseval",
                        metavar="RULES",
                        help="AP rules, one of %(choices)s: poseval (PoseTrack17/18) or the "
                             "PoseTrack21 kit's (docs/EVALUATION.md)")
    parser.add_argument("--lenient", action="store_true",
                        help="accept files poseval rejects (missing frames, missing or "
                             "repeated track ids)")
    parser.add_argument("--tracking", action="store_true",
                        help="also score pose tracking (MOTA, MOTP, precision, recall) with "
                             "poseval's --evalPoseTracking rules; --json then writes poseval's "
                             "total_MOT_metrics.json layout")
    parser.set_defaults(func=run)
    return parser


def _frame_filter(spec: str | None):
    if spec is None:
        return None, None
    key, sep, value = spec.partition("=")
    if not key:
        raise ConfigError(f"--frames-with needs KEY or KEY=VALUE, got {spec!r}")
    return key, (value if sep else None)


def _check_json_target(out: Path, *inputs: Path) -> None:
    """The --json result must not replace an input file, nor land among the per-video
    files of an input folder (it would overwrite or later pass for a video)."""
    target = out.resolve()
    for source in inputs:
        resolved = source.resolve()
        if target == resolved or (resolved.is_dir() and target.parent == resolved
                                  and target.suffix.lower() == ".json"):
            raise DataError(f"--json would write into the input {source}; choose another path",
                            str(out))


def run(args: argparse.Namespace) -> int:
    from glsmamba.evaluation.metrics import file_rules
    from glsmamba.evaluation.posetrack_map import image_ids_with, load_json_dir
    from glsmamba.fileio import write_json_atomic

    key, value = _frame_filter(args.frames_with)
    if getattr(args, "tracking", False) and key is not None:
        raise ConfigError("--tracking scores whole videos; it cannot be combined with "
                          "--frames-with")
    if args.json:
        _check_json_target(Path(args.json), Path(args.gt), Path(args.pred))
    gt = load_json_dir(Path(args.gt))
    pred = load_json_dir(Path(args.pred), prediction=True, strict=not args.lenient)
    image_ids = None
    title = args.title or "Average Precision (AP) metric:"
    if key is not None:
        image_ids = image_ids_with(gt, key, value)
        if not image_ids:
            raise DataError(f"no GT frame has {args.frames_with!r}", args.gt)
        title = args.title or f"Average Precision (AP) metric, frames with {args.frames_with}:"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        pred_path = Path(args.pred)
        sources = {name: str(pred_path / f"{name}.json") if pred_path.is_dir() else str(pred_path)
                   for name in pred}
        metric = file_rules()[args.rules]()
        result = metric.evaluate(gt, pred, image_ids=image_ids, strict=not args.lenient,
                                 sources=sources)
    print(metric.format_table(result, title=title, markdown=args.markdown))
    print(f"({result.num_frames} labelled frames, {result.num_videos} videos, "
          f"{result.num_gt_people} GT / {result.num_pred_people} predicted people)")
    if args.json and not Path(args.json).parent.is_dir():
        raise DataError("folder of the --json file does not exist", str(Path(args.json).parent))
    if getattr(args, "tracking", False):
        return _run_tracking(args, gt, pred, sources)
    if args.json:
        write_json_atomic(Path(args.json), {**result.to_dict(), "gt": str(args.gt),
                                            "pred": str(args.pred),
                                            "frames_with": args.frames_with})
    return 0


def _run_tracking(args: argparse.Namespace, gt: dict, pred: dict, sources: dict) -> int:
    """poseval's MOT table after the mAP one; --json gets total_MOT_metrics.json's layout."""
    from glsmamba.evaluation.tracking import evaluate_tracking, format_tracking_table
    from glsmamba.fileio import write_json_atomic

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = evaluate_tracking(gt, pred, strict=not args.lenient, sources=sources)
    print()
    print(format_tracking_table(result, markdown=args.markdown))
    print(f"({result.num_frames} frames tracked, {result.num_videos} videos, "
          f"{result.num_switches} identity switches over the 15 joints)")
    if args.json:
        write_json_atomic(Path(args.json), result.to_poseval_json(), allow_nan=True)
    return 0
