"""Stage 2 of `glsmamba demo` alone: how its schedule (epochs, lr, batch) was chosen.

Trains the demo's GLSMamba-tiny at T = 5 (``--delta 2``) or T = 1 (``--delta 0``) on the
stage-1 encoder of a finished demo run, reusing that run's feature cache, and scores it on
the val split of the demo's benchmark and of any other benchmarks given (``glsmamba synth
--out DIR --seed S`` with the demo's size: ``--videos 40 --frames 30 --size 240x180
--hard-rate 0.5 --severity 2.5``), poseval mAP overall / degraded / clean:

    python benchmarks/demo_stage2.py --demo glsmamba_demo --out /tmp/s2_t5_b4 --batch 4
    python benchmarks/demo_stage2.py --demo glsmamba_demo --out /tmp/s2_t1_b4 --batch 4 --delta 0 \\
        --score-on /tmp/synth_seed1 /tmp/synth_seed2

One torch thread. Prints one JSON line (wall seconds under whatever load the machine had).
"""
import argparse
import copy
import json
import time
from pathlib import Path


def main() -> None:
    import torch
    from glsmamba.engine import api
    from glsmamba.recipes import demo
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", required=True, help="a finished `glsmamba demo --out` folder")
    p.add_argument("--out", required=True)
    p.add_argument("--delta", type=int, default=2, help="2: T = 5; 0: T = 1")
    p.add_argument("--epochs", type=int, default=demo.FULL["stage2_epochs"])
    p.add_argument("--lr", type=float, default=demo.FULL["lr2"])
    p.add_argument("--batch", type=int, default=demo.FULL["stage2_batch_size"])
    p.add_argument("--decay-at", type=float, default=demo.FULL["stage2_decay_at"],
                   help="lr x0.1 after this fraction of the epochs (1.0: constant)")
    p.add_argument("--score-on", nargs="*", default=[], help="other benchmark folders")
    a = p.parse_args()
    demo_dir, out = Path(a.demo), Path(a.out)
    encoder = demo_dir / "runs" / "stage1_baseline" / "last.safetensors"
    if not encoder.is_file():
        raise SystemExit(f"{encoder}: not found (run `glsmamba demo --out {demo_dir}` first)")
    recipe = dict(demo.FULL, stage2_epochs=a.epochs, lr2=a.lr, stage2_batch_size=a.batch,
                  stage2_decay_at=a.decay_at)
    base = demo.base_config(demo_dir / "data", recipe, 0)
    config = demo.glsmamba_config(base, recipe, str(encoder), delta=a.delta)
    out.mkdir(parents=True, exist_ok=True)
    cache = demo_dir / "runs" / ("glsmamba_t5" if a.delta == 2 else "glsmamba_t1") / "feature_cache"
    if cache.is_dir():
        api.link_feature_cache(out, cache)
    started = time.perf_counter()
    api.train(config, out, overwrite=True, progress=False, log=lambda *_: None)
    result = {"args": vars(a), "train_s": round(time.perf_counter() - started),
              "steps": json.loads((out / "last.json").read_text())["step"]}
    for root in [demo_dir / "data", *map(Path, a.score_on)]:
        scoring = copy.deepcopy(config)
        scoring["data"]["root"] = str(root)
        scoring["train"]["cache_features"] = False
        metrics = demo.score(scoring, out / "last.safetensors", out / f"pred_{root.name}",
                             False)["metrics"]
        result[str(root)] = {k: round(metrics[k], 1) for k in ("overall", "degraded", "clean")}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
