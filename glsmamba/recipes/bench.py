"""``glsmamba bench``: the paper's ablation tables in miniature on the embedded benchmark.

For every seed: the demo's data and stage 1 (:mod:`glsmamba.recipes.demo`: the synthetic
benchmark of that seed, a clean pre-training set, the single-frame ViTPose-tiny trained
on it, its encoder then frozen), then one stage-2 run per row on the cached 1/4-resolution
features with the same budget (epochs, batch size, lr, schedule), scored with poseval's
mAP on the val split (GT boxes, no flip test). Rows:

- backbone only: the frozen-encoder single-frame baseline (its 1x1 head trains);
- GLSMamba-tiny at T = 1 (no temporal context);
- + GSM (no LRM), + GSM + LRM (the full GLSMamba-tiny);
- the scan ablations of the registry's presets (``glsmamba-b-unified``,
  ``glsmamba-b-unified-spatial``, ``glsmamba-b-no-stmm``), applied to GLSMamba-tiny;
- the attention baseline (``trans-b-hr``: global MHSA over all T x h x w tokens) at the
  same resolution and width (D = 32, as many blocks as GLSMamba-tiny);
- the online mode: the full GLSMamba-tiny on causal clips (frames t-4..t estimate frame t,
  ``data.window = "causal"``), the same T = 5 and budget.

Each row is reported as mean and standard deviation over the seeds, in the order the
rows run, beside the paper's PoseTrack2017 numbers (which are not comparable in level:
another dataset, model size and budget). ``OUT/report/`` gets ``bench.md``,
``bench.png`` and ``results.json``; every run's record is kept in
``OUT/results/<row>_seed<k>.json`` and runs already done are skipped (resume).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from glsmamba.fileio import atomic_write_text, save_figure
from glsmamba.engine import api
from glsmamba.recipes import demo
from glsmamba.errors import ConfigError

# the demo's data and encoder pre-training; stage 2 one epoch (442 steps of 4 clips), so
# that 8 rows x 3 seeds fit an hour on 2 cores (measured: 35 min; a full-row run trains in
# about 150 s, the attention row in about 370 s)
FULL = {**demo.FULL, "stage2_epochs": 1}
QUICK = {**demo.QUICK}
SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)

# (key, label, spec, paper's PoseTrack2017 mAP for GLSMamba-B or its peer)
# spec: kind baseline | glsmamba | attention; preset: a registry preset whose switches
# (its defaults that differ from glsmamba-b's) are applied to GLSMamba-tiny; delta: 2 or 0;
# window: the clip window (glsmamba.data.windows.WINDOWS; default centered)
ROWS: tuple[tuple[str, str, dict, str], ...] = (
    ("backbone", "backbone only (frozen encoder, 1x1 head)", dict(kind="baseline"), "74.2"),
    ("t1", "GLSMamba-tiny, T = 1", dict(kind="glsmamba", delta=0), "-"),
    ("gsm", "+ GSM (no LRM)", dict(kind="glsmamba", preset="glsmamba-b-no-lrm"), "86.0"),
    ("full", "+ GSM + LRM (full)", dict(kind="glsmamba"), "86.9"),
    ("unified", "unified scan only", dict(kind="glsmamba", preset="glsmamba-b-unified"), "85.8"),
    ("unified_spatial", "unified + spatial",
     dict(kind="glsmamba", preset="glsmamba-b-unified-spatial"), "86.5"),
    ("no_stmm", "full STS6D without STMM", dict(kind="glsmamba", preset="glsmamba-b-no-stmm"),
     "86.2"),
    ("attention", "attention baseline (global MHSA, same resolution and width)",
     dict(kind="attention"), "84.8 at 1/8; out of memory at 1/4"),
    ("causal", "GLSMamba-tiny, causal T = 5 (frames t-4..t, online)",
     dict(kind="glsmamba", window="causal"), "-"),
)
COLUMNS = ("overall", "degraded", "clean")


def preset_switches(preset: str) -> dict:
    """The keyword arguments in which ``preset`` differs from ``glsmamba-b``."""
    from glsmamba.models.registry import get_spec
    reference, spec = get_spec("glsmamba-b").defaults, get_spec(preset).defaults
    return {k: list(v) if isinstance(v, tuple) else v      # lists: the config is TOML
            for k, v in spec.items() if reference.get(k, object()) != v}


def row_config(base: dict, recipe: dict, stage1_ckpt: str, spec: dict,
               overrides: dict | None = None) -> dict:
    """The stage-2 config of a GLSMamba / attention row (the baseline row: see run_row)."""
    overrides = dict(demo.GLSMAMBA_OVERRIDES if overrides is None else overrides)
    if spec["kind"] == "attention":
        attention = dict(encoder_arch="vit-tiny", dim=overrides["dim"],
                         depth=overrides["gsm_depth"] + overrides["lrm_depth"],
                         num_heads=max(1, overrides["dim"] // 16),
                         mlp_ratio=overrides["mlp_ratio"])
        return demo.glsmamba_config(base, recipe, stage1_ckpt, attention, delta=2,
                                    model="trans-b-hr")
    if spec.get("preset"):
        switches = preset_switches(spec["preset"])
        switches.pop("input_size", None)
        overrides.update(switches)
    config = demo.glsmamba_config(base, recipe, stage1_ckpt, overrides, delta=spec.get("delta", 2))
    config["data"]["window"] = spec.get("window", "centered")
    return config


def prepare_seed(out: Path, recipe: dict, seed: int, threads: int | None = None,
                 log=print) -> tuple[dict, str]:
    """Data, pre-training set, stage 1 and the shared T = 5 feature cache of one seed
    (each skipped when already there)."""
    from glsmamba.synth.generate import generate_dataset
    if threads:
        import torch
        torch.set_num_threads(threads)
    folder = out / f"seed{seed}"
    data_root = folder / "data"
    t = time.perf_counter()
    if not (folder / "data.done").is_file():
        generate_dataset(data_root, videos=recipe["videos"], frames=recipe["frames"], seed=seed,
                         size=recipe["size"], hard_rate=recipe["hard_rate"],
                         severity=recipe["severity"], overwrite=True, progress=False,
                         workers=1)
        if recipe.get("pretrain_videos"):
            demo.generate_pretrain(folder / "pretrain_data", {**recipe, "workers": 1}, seed)
        atomic_write_text(folder / "data.done", "ok")
    base = demo.base_config(data_root, recipe, seed)
    stage1_dir = folder / "runs" / "stage1_baseline"
    ckpt = stage1_dir / "last.safetensors"
    if not ckpt.is_file():
        pretrain = folder / "pretrain_data" if recipe.get("pretrain_videos") else None
        stage1 = demo.stage1_config(base, recipe, data_root, pretrain)
        api.train(stage1, stage1_dir, overwrite=True, progress=False, log=lambda *_: None)
    # built once here, so that rows running in parallel only read it
    api.build_shared_cache(row_config(base, recipe, str(ckpt), dict(kind="glsmamba")),
                           folder / "feature_cache_t5")
    log(f"[bench] seed {seed}: data, stage 1, feature cache {time.perf_counter() - t:.0f} s")
    return base, str(ckpt)


def run_row(out: Path, recipe: dict, base: dict, stage1_ckpt: str, key: str, spec: dict,
            seed: int, overrides: dict | None = None) -> dict:
    """Train and score one row at one seed (same epochs, hence steps, for every row)."""
    folder = out / f"seed{seed}"
    work = folder / "runs" / key
    t = time.perf_counter()
    if spec["kind"] == "baseline":
        reference = row_config(base, recipe, stage1_ckpt, dict(kind="glsmamba"), overrides)
        config = demo.extra_baseline_config(base, recipe, stage1_ckpt, reference, 0,
                                            frozen=True)
    else:
        config = row_config(base, recipe, stage1_ckpt, spec, overrides)
        if config["data"]["delta"] == 2 and config["data"].get("window") == "centered":
            # rows with the same frozen features share a cache
            api.link_feature_cache(work, folder / "feature_cache_t5" / "feature_cache")
    result = api.train(config, work, overwrite=True, progress=False, log=lambda *_: None)
    train_s = time.perf_counter() - t
    run_steps = json.loads((work / "last.json").read_text())["step"]
    scored = demo.score(config, work / "last.safetensors", folder / "predictions" / key, False)
    params = sum(p.numel() for p in result["model"].parameters() if p.requires_grad)
    return {"row": key, "seed": seed, "metrics": scored["metrics"], "steps": run_steps,
            "train_s": round(train_s, 1), "total_s": round(time.perf_counter() - t, 1),
            "trainable_params": params, "model": config["model"]["name"],
            "overrides": config["model"]["overrides"], "delta": config["data"]["delta"],
            "window": config["data"].get("window", "centered"),
            "counts": scored["counts"]}


def _prepare_task(args: tuple) -> int:
    out, recipe, seed, threads = args
    prepare_seed(Path(out), recipe, seed, threads)
    return seed


def _row_task(args: tuple) -> dict:
    out, recipe, key, seed, threads, overrides = args
    if threads:
        import torch
        torch.set_num_threads(threads)
    out = Path(out)
    base = demo.base_config(out / f"seed{seed}" / "data", recipe, seed)
    ckpt = str(out / f"seed{seed}" / "runs" / "stage1_baseline" / "last.safetensors")
    spec = {k: sp for k, _, sp, _ in ROWS}[key]
    record = run_row(out, recipe, base, ckpt, key, spec, seed, overrides)
    atomic_write_text(out / "results" / f"{key}_seed{seed}.json", json.dumps(record, indent=1))
    m = record["metrics"]
    print(f"[bench] seed {seed} {key}: degraded {m.get('degraded', float('nan')):.1f} "
          f"clean {m.get('clean', float('nan')):.1f} ({record['total_s']:.0f} s)", flush=True)
    return record


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaNs are dropped."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired_gain(mine: list[dict], reference: list[dict], column: str = "degraded"):
    """Mean ± std over seeds of (this row - the reference row) on the same seed's split.

    The seeds' benchmarks differ in difficulty (a few mAP), which the per-row spread
    includes; the difference on the same split cancels it. NaN without a common seed."""
    ref = {r["seed"]: r["metrics"].get(column, float("nan")) for r in reference}
    return mean_std([r["metrics"].get(column, float("nan")) - ref[r["seed"]]
                     for r in mine if r["seed"] in ref])


def aggregate(records: list[dict]) -> list[dict]:
    """One entry per row (in ROWS order, rows without records left out)."""
    rows = []
    t1 = [r for r in records if r["row"] == "t1"]
    for key, label, _, paper in ROWS:
        mine = [r for r in records if r["row"] == key]
        if not mine:
            continue
        entry = {"row": key, "label": label, "paper": paper, "seeds": [r["seed"] for r in mine],
                 "trainable_params": mine[0]["trainable_params"],
                 "train_s": mean_std([r["train_s"] for r in mine])[0]}
        for column in COLUMNS:
            values = [r["metrics"].get(column, float("nan")) for r in mine]
            entry[column] = mean_std(values)
            entry[f"{column}_n"] = sum(not math.isnan(v) for v in values)
        entry["degraded_vs_t1"] = paired_gain(mine, t1)
        rows.append(entry)
    return rows


def bench_table(rows: list[dict]) -> str:
    lines = ["| row | trainable params | " + " | ".join(f"mAP {c}" for c in COLUMNS)
             + " | degraded minus T = 1, same seed | seeds | train s / run "
             "| paper (PoseTrack2017 val, B) |",
             "|---|---:|" + "---:|" * len(COLUMNS) + "---:|---:|---:|---|"]
    for row in rows:
        cells = []
        for c in COLUMNS:   # a subset missing from a seed's val split: say over how many
            n = row.get(f"{c}_n", len(row["seeds"]))
            cells.append(f"{row[c][0]:.1f} ± {row[c][1]:.1f}"
                         + (f" (n = {n})" if n < len(row["seeds"]) else ""))
        gain = row.get("degraded_vs_t1", (float("nan"),) * 2)
        gain = "-" if row["row"] == "t1" or math.isnan(gain[0]) else f"{gain[0]:+.1f} ± {gain[1]:.1f}"
        lines.append(f"| {row['label']} | {row['trainable_params'] / 1e3:.1f} k | "
                     + " | ".join(cells) + f" | {gain} | {len(row['seeds'])} | "
                     f"{row['train_s']:.0f} | {row['paper']} |")
    return "\n".join(lines)


def plot_bench(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(COLUMNS)
    x = np.arange(len(rows))
    for i, column in enumerate(COLUMNS):
        means = [r[column][0] for r in rows]
        stds = [r[column][1] for r in rows]
        ax.bar(x + i * width, np.nan_to_num(means), width, yerr=np.nan_to_num(stds), capsize=3,
               label=f"{column} frames" if column != "overall" else "overall")
    ax.set_xticks(x + width, [r["label"].split(" (")[0] for r in rows], rotation=25, ha="right")
    ax.set_ylabel("PoseTrack mAP (mean ± std over seeds)")
    ax.set_title("glsmamba bench: ablations in miniature (synthetic benchmark, val split)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def run_bench(out_dir: str | Path, quick: bool = False, seeds=None, rows=None,
              threads: int | None = None, log=print, recipe: dict | None = None,
              overrides: dict | None = None, jobs: int | None = None) -> dict:
    """Run (or resume) the bench; returns {"table", "rows", "wall_s", "report"}.

    ``jobs`` processes (default: 2 when the machine has 2 or more cores) run the seeds'
    preparation, then the (row, seed) runs, each with ``threads`` torch threads."""
    recipe = {**(QUICK if quick else FULL), **(recipe or {})}
    seeds = tuple(QUICK_SEEDS if quick else SEEDS) if seeds is None else tuple(seeds)
    known = [key for key, *_ in ROWS]
    rows = known if rows is None else list(rows)
    unknown = sorted(set(rows) - set(known))
    if unknown:
        raise ConfigError(f"unknown bench row(s) {', '.join(unknown)}; rows: {', '.join(known)}")
    jobs = jobs or (2 if (os.cpu_count() or 1) >= 2 else 1)
    threads = threads or 1
    out = Path(out_dir)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tasks = [(str(out), recipe, key, seed, threads, overrides) for seed in seeds
             for key in known if key in rows
             and not (results / f"{key}_seed{seed}.json").is_file()]
    needed = sorted({task[3] for task in tasks})
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for seed in pool.imap_unordered(_prepare_task, [(str(out), recipe, s, threads)
                                                            for s in needed]):
                log(f"[bench] seed {seed} prepared ({time.perf_counter() - started:.0f} s)")
            for _ in pool.imap_unordered(_row_task, tasks):
                pass
    else:
        for seed in needed:
            _prepare_task((str(out), recipe, seed, threads))
        for task in tasks:
            _row_task(task)
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*_seed*.json"))]
    records = [r for r in records if r["row"] in rows and r["seed"] in seeds]
    table_rows = aggregate(records)
    table = bench_table(table_rows)
    wall = time.perf_counter() - started
    report = out / "report"
    report.mkdir(exist_ok=True)
    plot_bench(table_rows, report / "bench.png")
    atomic_write_text(report / "results.json", json.dumps({"rows": table_rows, "records": records,
                                                     "recipe": recipe, "wall_s": wall,
                                                     "jobs": jobs, "threads": threads},
                                                    indent=1, default=list))
    write_report(report / "bench.md", table, recipe, seeds, wall, jobs)
    log(table)
    log(f"[bench] {wall:.0f} s; report in {report}")
    return {"table": table, "rows": table_rows, "wall_s": wall, "report": report}


def write_report(path: Path, table: str, recipe: dict, seeds, wall: float, jobs: int = 1) -> None:
    w, h = recipe["input_size"]
    stride = recipe.get("feature_stride", 8)
    lines = [
        "# glsmamba bench: the paper's ablations in miniature", "",
        f"PoseTrack mAP (poseval rules, GT boxes, no flip test, {recipe.get('decode', 'quarter')} "
        "decoding) on the synthetic benchmark's "
        f"val split, mean ± standard deviation over seeds {', '.join(map(str, seeds))} (each "
        "seed: its own benchmark, pre-training set, stage-1 encoder and stage-2 runs); rows "
        "in the order they are defined, values as measured. The paper's column is "
        "GLSMamba-B on PoseTrack2017 val (its ablation tables): another dataset, model size "
        "and budget, so only the direction of a difference can be compared, not the level. "
        "The seeds' val splits differ in difficulty by a few mAP, which the per-row spread "
        "includes; 'degraded minus T = 1, same seed' is the mean ± std of the difference "
        "to the T = 1 row on the same seed's split, which cancels it: compare rows with it.",
        "", table, "",
        "## Protocol", "",
        f"- data as `glsmamba demo`: {recipe['videos']} videos x {recipe['frames']} frames, "
        f"hard-case rate {recipe['hard_rate']}, severity {recipe['severity']}; stage 1 on "
        f"{recipe.get('pretrain_videos', 0)} clean pre-training videos for "
        f"{recipe['stage1_epochs']} epochs;",
        f"- crops {w}x{h}, every row reads the frozen encoder's 1/{stride} features "
        f"({w // stride}x{h // stride} x T tokens), trained {recipe['stage2_epochs']} epochs "
        f"(the same steps for every row; batch "
        f"{recipe.get('stage2_batch_size', recipe['batch_size'])}, lr {recipe['lr2']});",
        "- GLSMamba rows: GLSMamba-tiny (D = 32, d_state 1, 1 GSM + 1 LRM) with the "
        "registry preset's switch (`glsmamba-b-no-lrm`, `-unified`, `-unified-spatial`, "
        "`-no-stmm`); T = 1 is the full model on one frame;",
        "- attention: `trans-b-hr` (global multi-head attention over all T x h x w tokens) "
        "with the same encoder, resolution, width and number of blocks;",
        "- backbone only: the single-frame baseline, its encoder frozen, its 1x1 head "
        "trained for the same steps;",
        "- causal: the full GLSMamba-tiny on clips t-4..t (`data.window = \"causal\"`, "
        "no future frame: 0 frames of delay on a live video), same T = 5 and budget.", "",
        "What it does not measure: the paper's absolute accuracy (real video, ViTPose-B, "
        "20 epochs on a GPU), speed (see `glsmamba info` and benchmarks/), or detected boxes.",
        "", f"Wall time: {wall:.0f} s with {jobs} process(es) (runs resumed from `results/` "
        "are not counted again).", "",
    ]
    atomic_write_text(path, "\n".join(lines))


def rows_help() -> str:
    return ", ".join(key for key, *_ in ROWS)


__all__ = ["ROWS", "FULL", "QUICK", "run_bench", "aggregate", "bench_table", "mean_std",
           "paired_gain", "preset_switches", "row_config"]
