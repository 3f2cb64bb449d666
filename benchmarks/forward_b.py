"""Time one forward of a preset on one random clip and report peak memory.

    python benchmarks/forward_b.py [--model glsmamba-b] [--frames 5]

The first forward (untimed) builds the scan kernel and the cached scan paths.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from glsmamba.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="glsmamba-b")
    parser.add_argument("--frames", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    width, height = model.input_size
    clip = torch.randn(1, args.frames, 3, height, width)  # (B, T, 3, H, W)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    with torch.inference_mode():
        model(clip)
        start = time.perf_counter()
        heatmaps = model(clip)
        total = time.perf_counter() - start
        start = time.perf_counter()
        model.encode(clip)
        encoder = time.perf_counter() - start
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"{args.model} forward 1x{args.frames}x3x{height}x{width} -> {tuple(heatmaps.shape)}: "
          f"{total:.2f} s (encoder {encoder:.2f} s), peak RSS {rss_peak:.2f} GB "
          f"(model built: {rss_built:.2f} GB), {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
