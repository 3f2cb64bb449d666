"""``glsmamba demo``: synthetic data -> single-frame baseline vs tiny GLSMamba -> report."""
from __future__ import annotations

import argparse

from glsmamba.commands.infer import threads_arg


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="train and compare GLSMamba (glsmamba-demo) with a single-frame "
                     "baseline (vitpose-tiny) on the CPU",
        description="Generate the synthetic benchmark, train the single-frame baseline "
                    "(preset vitpose-tiny) and GLSMamba (preset glsmamba-demo) on its frozen "
                    "encoder with the same budget, score both (overall and on degraded frames) "
                    "and write a report folder: summary.md, results.json, loss curves, "
                    "per-joint AP and a side-by-side video of the val videos (H.264 with PyAV "
                    "installed, else mp4v). `glsmamba eval OUT/runs/RUN` scores a run again.")
    parser.add_argument("--out", default="glsmamba_demo", help="output folder (default glsmamba_demo)")
    parser.add_argument("--quick", action="store_true", help="tiny data and budget (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=threads_arg, default=1,
                        help="torch CPU threads (default 1: the demo's small tensors gain little "
                             "from more, and lose a lot when the cores are busy; 0 = torch's "
                             "default)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the data, runs and report of an existing --out folder")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.recipes.demo import run_demo
    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
             threads=args.threads or None, overwrite=args.overwrite)
    return 0
