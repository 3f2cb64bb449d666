"""``glsmamba bench``: the paper's ablation tables in miniature (synthetic benchmark, CPU)."""
from __future__ import annotations

import argparse

from glsmamba.commands.infer import threads_arg


def add_parser(subparsers) -> argparse.ArgumentParser:
    from glsmamba.recipes.bench import ROWS, rows_help
    parser = subparsers.add_parser(
        "bench", help=f"the paper's ablations in miniature: {len(ROWS)} rows x 3 seeds, "
                      "mean ± std (CPU)",
        description="For each seed, generate the synthetic benchmark and train the demo's "
                    "encoder; then train and score each ablation row on its frozen 1/4 "
                    "features with the same budget; write OUT/report/bench.md (mean ± std "
                    "beside the paper's numbers), bench.png and results.json. Runs already "
                    "in OUT/results/ are reused (resume).")
    parser.add_argument("--out", default="glsmamba_bench", help="output folder (default glsmamba_bench)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data and budget, seeds 0 and 1 (a smoke test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds (default 0 1 2; --quick: 0 1)")
    parser.add_argument("--rows", nargs="+", default=None, help=f"subset of rows: {rows_help()}")
    parser.add_argument("--threads", type=threads_arg, default=1,
                        help="torch CPU threads (default 1; 0 = torch's default)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="processes running seeds / rows side by side (default: 2 on a "
                             "machine with 2 or more cores, else 1)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.recipes.bench import run_bench
    run_bench(args.out, quick=args.quick, seeds=args.seeds, rows=args.rows,
              threads=args.threads or None, jobs=args.jobs or None)
    return 0
