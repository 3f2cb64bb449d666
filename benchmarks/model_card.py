"""Print the model presets as a markdown table (for the README).

Parameters and GFLOPs (multiply-adds counted once, the paper's convention) for one clip
of the preset's frames and input size, next to the paper's figures where it gives them.
Models are built on the meta device: nothing is computed, it takes seconds.

    python benchmarks/model_card.py [--presets glsmamba-b vitpose-b ...]
"""
from __future__ import annotations

import argparse
import sys

# preset -> (trainable params in M, GFLOPs) as printed in the paper (PoseTrack2017 tables)
PAPER = {
    "glsmamba-b": ("9.8", "138.9"),
    "glsmamba-b-lr": ("9.8", "85.1"),
    "glsmamba-b-unified": ("9.1", "137.4"),
    "glsmamba-b-unified-spatial": ("9.4", "138.1"),
    "glsmamba-b-no-stmm": ("9.1", "137.4"),
    "trans-b-lr": ("46.3", "125.7"),
    "trans-b-nr": ("47", "315.2"),
    "trans-b-hr": ("-", "out of memory"),
}


def table(presets: list[str]) -> str:
    from glsmamba.models import list_models
    from glsmamba.models.flops import measure_preset

    descriptions = dict(list_models())
    rows = [
        "| preset | description | trainable params | frozen params | GFLOPs / clip "
        "| of which encoder | paper params / GFLOPs |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name in presets:
        report = measure_preset(name)
        paper = PAPER.get(name)
        paper_text = "-"
        if paper:
            paper_text = f"{paper[0]} M / {paper[1]}" if paper[0] != "-" else f"- / {paper[1]}"
        rows.append(
            f"| `{name}` | {descriptions[name]} | {report.total_trainable / 1e6:.3f} M "
            f"| {report.total_frozen / 1e6:.1f} M | {report.total_flops / 1e9:.1f} "
            f"| {report.flops.get('encoder', 0) / 1e9:.1f} | {paper_text} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from glsmamba.models import list_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=None, help="default: all presets")
    args = parser.parse_args(argv)
    presets = args.presets or [name for name, _ in list_models()]
    print(table(presets))
    print("\nGFLOPs: multiply-adds counted once, one clip of 5 frames incl. the frozen encoder; "
          "selective scans and deformable sampling by formula (glsmamba/models/flops.py).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
