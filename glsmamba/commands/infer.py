"""``glsmamba infer VIDEO|FRAMES_DIR --checkpoint PATH``: poses on any video -> JSON + MP4."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "infer", help="estimate poses on a video or a folder of frames",
        description="Person boxes come from a detections JSON or OpenCV's built-in HOG people "
                    "detector, are tracked by IoU, and each person's clip t-δ..t+δ goes through "
                    "the model while the video streams (2δ+1 frames in memory). Writes "
                    "OUT/<name>.json (PoseTrack format) and OUT/<name>.mp4 (skeletons drawn).")
    parser.add_argument("source", help="a video file or a folder of frames")
    parser.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint or work dir")
    parser.add_argument("--config", help="config (default: the one stored with the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--detections", help="JSON list of {frame_index | image_name, bbox, score}")
    parser.add_argument("--detector", choices=("hog", "torchvision"), default="hog",
                        help="built-in detector when no --detections (torchvision needs "
                             "--detector-weights and an installed torchvision)")
    parser.add_argument("--detector-weights", help="Faster R-CNN weights for --detector torchvision")
    parser.add_argument("--det-thr", type=float, default=0.3, help="minimum box score")
    parser.add_argument("--det-upscale", type=float, default=1.0,
                        help="enlarge frames before HOG detection (finds smaller people)")
    parser.add_argument("--out", default="glsmamba_infer", help="output folder")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = all)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default; 1 helps on a busy CPU)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch
    from glsmamba.engine.api import infer
    if args.threads:
        torch.set_num_threads(args.threads)
    stats = infer(args.source, args.checkpoint, config=args.config, overrides=args.overrides,
                  detections=args.detections, detector=args.detector,
                  detector_weights=args.detector_weights, det_thr=args.det_thr,
                  det_upscale=args.det_upscale, out_dir=Path(args.out),
                  max_frames=args.max_frames or None, flip=args.flip,
                  batch_size=args.batch_size, progress=not args.no_progress)
    print(f"{stats['frames']} frames, {stats['people']} poses, {stats['fps']:.2f} frames/s "
          f"-> {stats['json']}, {stats['mp4']}")
    return 0
