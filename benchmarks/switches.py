"""Ablation of the paper's open choices (docs/MODEL.md, "Open choices as switches").

On the embedded synthetic benchmark, with the demo's protocol (`glsmamba.recipes.demo`):
one shared stage 1 (the single-frame ViTPose-tiny trained end to end on the clean training
frames; its encoder is then frozen for every run), then for each variant and seed the
demo's GLSMamba-tiny (1 GSM + 1 LRM, D = 32, d_state 1) is trained on top with the same
budget and scored with poseval's mAP on the val split (GT boxes, no flip test):

* ``default`` / ``share-s6`` / ``stmm-neighbours``: cached frozen-encoder features
  (no pixel augmentation), one shared cache;
* ``half-body-extent`` / ``half-body-mean``: pixel augmentation on (flip, half body,
  scale / rotation; the encoder runs every step), the half-body crop centred on the
  selected joints' extent with P(upper) 0.5 (ours) or on their mean with P(upper) 0.69
  (HRNet / DCPose);
* ``half-body-only-extent`` / ``half-body-only-mean``: the same with half body (p 0.3) as
  the only augmentation (no flip, scale or rotation), which isolates the switch.

    python benchmarks/switches.py --out /tmp/switches [--seeds 0 1] [--jobs 2]
    python benchmarks/switches.py --out /tmp/switches --table     # just print the table

Each run writes ``OUT/results/<variant>_seed<k>.json``; runs already done are skipped,
so an interrupted ablation resumes. Every run uses one torch thread.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# the demo's data (40 videos x 30 frames) with a reduced budget (the demo: 12 + 5 epochs)
RECIPE = dict(videos=40, frames=30, size=(240, 180), hard_rate=0.5, severity=2.5,
              input_size=[64, 96], stage1_epochs=10, stage2_epochs=4, batch_size=16,
              lr1=2e-3, lr2=4e-3, baseline_extra_frozen=True, workers=1)
DATA_SEED = 0  # the benchmark and stage 1 are shared by every run

HALF_BODY_ONLY = dict(flip_p=0.0, scale_sigma=0.0, rot_prob=0.0)  # build_pipeline kwargs
VARIANTS: dict[str, dict] = {
    "default": dict(overrides={}, data={}),
    "share-s6": dict(overrides={"share_s6": True}, data={}),
    "stmm-neighbours": dict(overrides={"stmm_temporal": "neighbours"}, data={}),
    "half-body-extent": dict(overrides={}, augment=True,
                             data={"half_body_center": "extent", "half_body_upper_prob": 0.5}),
    "half-body-mean": dict(overrides={}, augment=True,
                           data={"half_body_center": "mean", "half_body_upper_prob": 0.6915}),
    # half body as the only augmentation (no flip, scale or rotation): the switch isolated
    "half-body-only-extent": dict(overrides={}, augment=True, pipeline=dict(HALF_BODY_ONLY),
                                  data={"half_body_center": "extent", "half_body_upper_prob": 0.5}),
    "half-body-only-mean": dict(overrides={}, augment=True, pipeline=dict(HALF_BODY_ONLY),
                                data={"half_body_center": "mean", "half_body_upper_prob": 0.6915}),
}
COLUMNS = ("overall", "degraded", "clean")


def variant_config(out: Path, variant: str, seed: int) -> dict:
    from glsmamba.recipes import demo
    spec = VARIANTS[variant]
    base = demo.base_config(out / "data", RECIPE, seed)
    stage1 = str(out / "runs" / "stage1_baseline" / "last.safetensors")
    config = demo.glsmamba_config(base, RECIPE, stage1,
                                  {**demo.GLSMAMBA_OVERRIDES, **spec["overrides"]})
    config["data"].update(spec["data"])
    if spec.get("augment"):
        config["data"]["augment"] = True
        config["train"]["cache_features"] = False
    return config


def prepare(out: Path, log=print) -> None:
    """Data, the shared stage 1 and the shared feature cache (once)."""
    import torch
    from glsmamba.engine import api
    from glsmamba.recipes import demo
    from glsmamba.synth.generate import generate_dataset
    torch.set_num_threads(1)
    data = out / "data"
    if not (data / "annotations" / "val").is_dir():
        t = time.perf_counter()
        generate_dataset(data, videos=RECIPE["videos"], frames=RECIPE["frames"], seed=DATA_SEED,
                         size=RECIPE["size"], hard_rate=RECIPE["hard_rate"],
                         severity=RECIPE["severity"], overwrite=True, progress=False, workers=1)
        log(f"[switches] data: {time.perf_counter() - t:.0f} s")
    stage1_dir = out / "runs" / "stage1_baseline"
    if not (stage1_dir / "last.safetensors").is_file():
        t = time.perf_counter()
        base = demo.base_config(data, RECIPE, DATA_SEED)
        stage1 = demo.baseline_config(base, RECIPE)
        stage1["data"]["train_ann"] = demo.write_clean_annotations(data)
        api.train(stage1, stage1_dir, overwrite=True, progress=False, log=lambda *_: None)
        log(f"[switches] stage 1: {time.perf_counter() - t:.0f} s")
    if not (out / "shared" / "built").is_file():
        t = time.perf_counter()
        api.build_shared_cache(variant_config(out, "default", DATA_SEED), out / "shared")
        log(f"[switches] feature cache: {time.perf_counter() - t:.0f} s")


def run_one(out: Path, variant: str, seed: int) -> dict:
    import torch
    from glsmamba.engine import api
    from glsmamba.recipes import demo
    torch.set_num_threads(1)
    config = variant_config(out, variant, seed)
    extra = VARIANTS[variant].get("pipeline")
    if extra:  # the data config has no keys for these: set them on the train pipeline
        from glsmamba.engine import builder
        original = builder.build_pipeline

        def build_pipeline(mode, *args, **kwargs):
            if mode == "train":
                kwargs.update(extra)
            return original(mode, *args, **kwargs)
        builder.build_pipeline = build_pipeline
    work = out / "runs" / f"{variant}_seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    if config["train"]["cache_features"]:
        api.link_feature_cache(work, out / "shared" / "feature_cache")
    t = time.perf_counter()
    result = api.train(config, work, overwrite=True, progress=False, log=lambda *_: None)
    train_s = time.perf_counter() - t
    steps = json.loads((work / "last.json").read_text())["step"]
    scored = demo.score(config, work / "last.safetensors", out / "predictions" / work.name, False)
    model = result["model"]
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    record = {"variant": variant, "seed": seed, "metrics": scored["metrics"], "steps": steps,
              "train_s": round(train_s, 1), "total_s": round(time.perf_counter() - t, 1),
              "trainable_params": params, "overrides": config["model"]["overrides"],
              "data": {k: config["data"][k] for k in ("augment", "half_body_center",
                                                       "half_body_upper_prob")},
              "pipeline": extra or {},
              "counts": scored["counts"]}
    results = out / "results"
    results.mkdir(exist_ok=True)
    (results / f"{variant}_seed{seed}.json").write_text(json.dumps(record, indent=1))
    return record


def table(out: Path) -> str:
    records: dict[str, list[dict]] = {}
    for path in sorted((out / "results").glob("*.json")):
        record = json.loads(path.read_text())
        records.setdefault(record["variant"], []).append(record)
    lines = ["| variant | trainable params | steps | seeds | " + " | ".join(
        f"mAP {c} (mean; per seed)" for c in COLUMNS) + " | train s / run |",
        "|---|---:|---:|---|" + "---|" * len(COLUMNS) + "---:|"]
    for variant in VARIANTS:
        runs = sorted(records.get(variant, []), key=lambda r: r["seed"])
        if not runs:
            continue
        cells = []
        for column in COLUMNS:
            values = [r["metrics"].get(column, float("nan")) for r in runs]
            mean = sum(values) / len(values)
            cells.append(f"{mean:.1f} ({'; '.join(f'{v:.1f}' for v in values)})")
        seconds = sum(r["train_s"] for r in runs) / len(runs)
        lines.append(f"| {variant} | {runs[0]['trainable_params']:,} | {runs[0]['steps']} | "
                     f"{', '.join(str(r['seed']) for r in runs)} | " + " | ".join(cells)
                     + f" | {seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument("--table", action="store_true", help="only print the table")
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.table:
        print(table(out))
        return 0
    if args.run:
        record = run_one(out, args.run[0], int(args.run[1]))
        print(json.dumps({k: record[k] for k in ("variant", "seed", "metrics", "train_s")}))
        return 0
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    prepare(out)
    todo = [(v, s) for s in args.seeds for v in args.variants
            if not (out / "results" / f"{v}_seed{s}.json").is_file()]
    running: list[tuple[subprocess.Popen, str]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    while todo or running:
        while todo and len(running) < args.jobs:
            variant, seed = todo.pop(0)
            name = f"{variant}_seed{seed}"
            handle = open(logs / f"{name}.log", "w")
            proc = subprocess.Popen([sys.executable, __file__, "--out", str(out), "--run",
                                     variant, str(seed)], stdout=handle, stderr=subprocess.STDOUT,
                                    env=env)
            running.append((proc, name))
            print(f"[switches] started {name}", flush=True)
        time.sleep(2)
        for proc, name in list(running):
            if proc.poll() is not None:
                running.remove((proc, name))
                print(f"[switches] {name} finished (exit {proc.returncode}) at "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
    print(f"[switches] total {time.perf_counter() - started:.0f} s")
    print(f"recipe: {RECIPE}")
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
