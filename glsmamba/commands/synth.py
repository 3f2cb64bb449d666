"""``glsmamba synth``: generate the embedded synthetic video pose benchmark."""
from __future__ import annotations

import argparse
import os
import time

from glsmamba.errors import ConfigError


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 320x240, got {text!r}") from None


def _range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX like 1-3, got {text!r}") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic video pose benchmark (PoseTrack18 layout)",
        description="Render people driven by pybullet's DeepMimic motion capture into a small "
                    "PoseTrack18-format benchmark (images, per-video annotations, detections) "
                    "with occluders, motion blur, defocus and crossing people as hard cases.",
    )
    parser.add_argument("--out", required=True, help="output folder (created; must be empty)")
    parser.add_argument("--videos", type=int, default=24, help="number of videos (default 24)")
    parser.add_argument("--frames", type=int, default=40, help="frames per video (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT (default 320x240)")
    parser.add_argument("--people", type=_range, default=(1, 3), help="people per video, N or MIN-MAX (default 1-3)")
    parser.add_argument("--severity", type=float, default=1.0,
                        help="scale of the hard cases: occluder size, blur length, defocus radius "
                             "(default 1.0; the demo uses 2.5)")
    parser.add_argument("--hard-rate", type=float, default=0.3,
                        help="target fraction of frames with an occluder, blur or defocus "
                             "(default 0.3; saturates near 0.43)")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="share of videos in val (default 0.25)")
    parser.add_argument("--fps", type=float, default=20.0, help="video frame rate (default 20)")
    parser.add_argument("--label-stride", type=int, default=1, help="label every Nth frame (default 1: all)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--det-jitter", type=float, default=0.05, help="detection box noise, relative (default 0.05)")
    parser.add_argument("--det-miss", type=float, default=0.1, help="probability a person is not detected (default 0.1)")
    parser.add_argument("--det-fp", type=float, default=0.1, help="false positive boxes per frame (default 0.1)")
    parser.add_argument("--motions", default=None,
                        help="comma-separated clip names (default: all; e.g. walk,run,dance_a)")
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes (default 0: one per CPU core, at most 4); "
                             "the output does not depend on it")
    parser.add_argument("--overwrite", action="store_true", help="replace a previously generated benchmark in --out")
    parser.add_argument("--preview", action="store_true", help="also write OUT/preview.png (contact sheet)")
    parser.add_argument("--preview-only", action="store_true",
                        help="only write OUT/preview.png for an existing benchmark in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.synth import generate_dataset, make_preview

    if args.preview_only:
        path = make_preview(args.out)
        print(f"wrote {path}")
        return 0
    motions = None
    if args.motions:
        motions = [name.strip() for name in args.motions.split(",") if name.strip()]
        if not motions:
            raise ConfigError("--motions is empty")
    workers = args.workers if args.workers > 0 else min(4, os.cpu_count() or 1)
    start = time.perf_counter()
    root = generate_dataset(
        args.out, videos=args.videos, frames=args.frames, seed=args.seed, size=args.size,
        people=args.people, hard_rate=args.hard_rate, severity=args.severity, val_fraction=args.val_fraction,
        fps=args.fps, label_stride=args.label_stride, jpeg_quality=args.jpeg_quality,
        det_jitter=args.det_jitter, det_miss=args.det_miss, det_false_positives=args.det_fp,
        motions=motions, workers=workers, overwrite=args.overwrite,
        preview=args.preview, progress=not args.quiet,
    )
    print(f"wrote {args.videos} videos x {args.frames} frames to {root} "
          f"in {time.perf_counter() - start:.1f} s")
    if args.preview:
        print(f"preview: {root / 'preview.png'}")
    return 0
