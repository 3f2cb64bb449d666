"""Score a finished `glsmamba demo` run's checkpoints on benchmarks of other seeds.

The demo's table is one seed's val split; this scores the same checkpoints (all four rows)
on the val splits of other benchmarks, generated like the demo's (``--seeds`` are
generated into ``--data`` when missing), so a reader sees how much of a difference is
that split's luck:

    python benchmarks/demo_other_seeds.py --demo glsmamba_demo --data /tmp/other_seeds --seeds 3 4

Prints one JSON line per (benchmark, row): mAP overall / degraded / clean. One torch thread.
"""
import argparse
import copy
import json
from pathlib import Path


def main() -> None:
    import torch
    from glsmamba.recipes import demo
    from glsmamba.config import load_config
    from glsmamba.synth.generate import generate_dataset
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", required=True, help="a finished `glsmamba demo --out` folder")
    p.add_argument("--data", required=True, help="folder for the other benchmarks")
    p.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
    p.add_argument("--rows", nargs="+", default=[name for name, _ in demo.ROWS])
    a = p.parse_args()
    demo_dir, recipe = Path(a.demo), demo.FULL
    for seed in a.seeds:
        root = Path(a.data) / f"seed{seed}"
        if not (root / "meta.json").is_file():
            generate_dataset(root, videos=recipe["videos"], frames=recipe["frames"], seed=seed,
                             size=recipe["size"], hard_rate=recipe["hard_rate"],
                             severity=recipe["severity"], overwrite=True, progress=False,
                             workers=1)
        for row in a.rows:
            run = demo_dir / "runs" / row
            config = copy.deepcopy(load_config(run / "config.toml"))
            config["data"].update(root=str(root), val_ann="annotations/val")
            config["train"]["cache_features"] = False
            metrics = demo.score(config, run / "last.safetensors",
                                 Path(a.data) / "predictions" / f"seed{seed}_{row}", False)["metrics"]
            print(json.dumps({"seed": seed, "row": row,
                              **{k: round(metrics[k], 1) for k in ("overall", "degraded", "clean")}}),
                  flush=True)


if __name__ == "__main__":
    main()
