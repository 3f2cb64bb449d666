"""``glsmamba train CONFIG``: train a model as a config says (single process or torchrun)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train a model from a config",
        description="Train from a TOML config (a path or a bundled name such as synth_tiny). "
                    "Multi-GPU: torchrun --nproc-per-node N -m glsmamba train CONFIG.")
    parser.add_argument("config", help="config file or bundled config name")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. train.lr=2e-4")
    parser.add_argument("--work-dir", help="output folder (default work_dirs/<config name>)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --work-dir")
    group.add_argument("--overwrite", action="store_true", help="start again in --work-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the fast part of `glsmamba check-data` run before training")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.engine import api
    from glsmamba.engine import distributed as du
    from glsmamba.config import load_config, resolve_config_path
    config = load_config(args.config, args.overrides)
    work_dir = Path(args.work_dir or Path("work_dirs") / resolve_config_path(args.config).stem)
    if args.overwrite:                    # --overwrite removes the run's files: never the config
        from glsmamba.engine.trainer import RUN_FILES
        from glsmamba.outputs import refuse_inputs
        refuse_inputs([work_dir / name for name in RUN_FILES], [resolve_config_path(args.config)],
                      option="--work-dir (or copy the config elsewhere first)")
    if not args.no_check and preflight_fails(config, work_dir, resolve_config_path(args.config)):
        return 2
    try:
        result = api.train(config, work_dir, resume=args.resume, overwrite=args.overwrite,
                           progress=not args.no_progress)
        evaluator = result["evaluator"]
        if du.current().is_main:
            if evaluator is not None and evaluator.last_result is not None:
                print(api.format_result(evaluator, title=f"{config['model']['name']} (last epoch)"))
            print(checkpoint_summary(work_dir, result["best"],
                                     evaluator.metric_key if evaluator is not None else None))
    finally:
        du.cleanup()
    return 0


def preflight_fails(config: dict, work_dir: Path, source: Path) -> bool:
    """The fast part of ``glsmamba check-data`` (glsmamba/preflight.py); prints what it found
    beyond "ok" and returns True when a run would fail, before anything is trained."""
    from glsmamba.preflight import run_checks
    report = run_checks(config, work_dir, fast=True, progress=False, source=source)
    notes = [f for f in report.findings if f.level in ("warning", "fatal")]
    for finding in notes:
        print(f"check-data: {finding.level}: {finding.topic}: {finding.text}")
    if report.exit_code == 2:
        print(f"glsmamba train: not started: {len(report.fatal())} fatal finding(s) above "
              f"(glsmamba check-data {source.stem} shows the whole report; --no-check skips it)")
        return True
    return False


def checkpoint_summary(work_dir: Path, best: float | None, metric: str | None) -> str:
    """Where the checkpoints are; ``last`` is the headline, ``best`` is selected on val."""
    import json
    text = f"checkpoints in {work_dir}: last.safetensors = the last epoch (the headline result)"
    if best is None:
        return text
    epoch = None
    meta = Path(work_dir) / "best.json"
    if meta.is_file():
        epoch = json.loads(meta.read_text()).get("epoch")
    where = f" at epoch {epoch}" if epoch is not None else ""
    return (f"{text}; best.safetensors = {metric or 'metric'} {best:.2f}{where}, selected on "
            f"val (scoring it on val again is optimistic)")
