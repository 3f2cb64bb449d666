"""``glsmamba check-data CONFIG``: check everything a run needs before it starts."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check-data", help="check data, detections, weights, scan, disk and memory for a config",
        description="Check what a run of CONFIG needs before it starts: layout, split sizes "
                    "against the official ones, annotations, frames (a sample decoded; all with "
                    "--full), detections, encoder weights, the scan backend, disk space for the "
                    "feature cache and the projected memory peak. Exit 0 = ready, 1 = warnings, "
                    "2 = a run would fail. docs/DATASETS.md describes the expected data.")
    parser.add_argument("config", help="config file or bundled config name")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, as for train")
    parser.add_argument("--full", action="store_true",
                        help="decode every frame and measure one training step (slow)")
    parser.add_argument("--work-dir", help="the run's output folder, for the disk check "
                                           "(default work_dirs/<config name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.config import load_config, resolve_config_path
    from glsmamba.preflight import run_checks
    config = load_config(args.config, args.overrides)
    source = resolve_config_path(args.config)
    work_dir = Path(args.work_dir or Path("work_dirs") / source.stem)
    report = run_checks(config, work_dir, full=args.full, progress=not args.no_progress,
                        source=source)
    print(report.format())
    return report.exit_code
