"""Stage 1 of `glsmamba demo` alone: how the encoder's pre-training recipe was chosen.

Trains the demo's single-frame ViTPose-tiny (its stage 1) with the given data, crop,
augmentation and epochs, and scores it directly on the demo benchmark's val split
(poseval mAP, GT boxes, no flip test, quarter-offset decoding), clean and degraded frames:

    python benchmarks/demo_stage1.py --out /tmp/s1 --pre 400 --pre-frames 6 --epochs 6 --input 96x128
    python benchmarks/demo_stage1.py --out /tmp/s1 --epochs 12 --input 64x96   # the benchmark's clean frames

``--pre N``: a clean pre-training set of N videos (seed 1000, no hard cases); 0: the
clean frames of the benchmark's training split (its degraded frames' labels dropped).
The benchmark (seed 0, the demo's size) is generated into ``--data`` once; one torch
thread. Prints one JSON line (wall seconds under whatever load the machine had).
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
    from glsmamba.synth.generate import generate_dataset
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, help="benchmark folder (default OUT/../demo_stage1_data)")
    p.add_argument("--pre", type=int, default=0, help="pre-training videos (0: the benchmark's clean frames)")
    p.add_argument("--pre-frames", type=int, default=30)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--input", default="64x96", help="crop WxH")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--bs", type=int, default=16)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--sigma", type=float, default=1.5)
    a = p.parse_args()
    out = Path(a.out)
    t0 = time.perf_counter()
    recipe = dict(demo.FULL, input_size=[int(v) for v in a.input.split("x")],
                  stage1_epochs=a.epochs, lr1=a.lr, batch_size=a.bs, decode="quarter")
    data = Path(a.data) if a.data else out.parent / "demo_stage1_data"
    if not (data / "meta.json").exists():
        generate_dataset(data, videos=recipe["videos"], frames=recipe["frames"], seed=0,
                         size=recipe["size"], hard_rate=recipe["hard_rate"],
                         severity=recipe["severity"], overwrite=True, workers=1)
    base = demo.base_config(data, recipe, 0)
    base["data"]["sigma"] = a.sigma
    cfg = demo.baseline_config(base, recipe)
    if a.pre:
        pre = data.parent / f"demo_stage1_pre_{a.pre}x{a.pre_frames}"
        if not (pre / "meta.json").exists():
            generate_dataset(pre, videos=a.pre, frames=a.pre_frames,
                             seed=demo.PRETRAIN_SEED_OFFSET, size=recipe["size"], hard_rate=0.0,
                             severity=recipe["severity"], val_fraction=0.05, overwrite=True,
                             workers=1)
        cfg["data"]["root"] = str(pre)
    else:
        cfg["data"]["train_ann"] = demo.write_clean_annotations(data)
    cfg["data"]["augment"] = a.augment
    t1 = time.perf_counter()
    api.train(cfg, out / "run", overwrite=True, progress=False, log=lambda *x: None)
    t2 = time.perf_counter()
    scored = copy.deepcopy(cfg)
    scored["data"]["root"] = str(data)
    scored["data"]["val_ann"] = "annotations/val"
    r = demo.score(scored, out / "run" / "last.safetensors", out / "pred", False)
    steps = json.loads((out / "run" / "last.json").read_text())["step"]
    m = r["metrics"]
    print(json.dumps(dict(args=vars(a), steps=steps, data_s=round(t1 - t0),
                          train_s=round(t2 - t1), eval_s=round(time.perf_counter() - t2),
                          clean=round(m["clean"], 1), degraded=round(m["degraded"], 1),
                          overall=round(m["overall"], 1))))


if __name__ == "__main__":
    main()
