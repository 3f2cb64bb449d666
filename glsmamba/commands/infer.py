"""``glsmamba infer SOURCE --checkpoint PATH``: poses on any video -> JSON + MP4."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def whole_number(text: str, unit: str, zero_means: str) -> int:
    """An argparse value that must be a whole number >= 0 (0 = ``zero_means``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of {unit}, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = {zero_means}), got {value}")
    return value


def _frames(text: str) -> int:
    return whole_number(text, "frames", "all frames")


MAX_DEFAULT_THREADS = 4


def threads_arg(text: str) -> int:
    """argparse type of ``--threads``: a whole number >= 0."""
    return whole_number(text, "threads", "torch's default")


def _floats(count: int):
    def parse(text: str) -> tuple[float, ...]:
        parts = [p for p in text.replace(",", " ").split() if p]
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} numbers, got {text!r}")
        return values
    return parse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "infer", help="estimate poses on a video, frame folder, camera or stream",
        description="Person boxes come from a detections JSON or a detector (OpenCV's HOG by "
                    "default), each person's clip t-δ..t+δ goes through the model while the "
                    "video streams (2δ+1 frames in memory), and people are tracked by box IoU "
                    "and pose similarity (--tracker). Writes "
                    "OUT/<name>.json (PoseTrack format) and OUT/<name>.mp4 (skeletons drawn), "
                    "incrementally: Ctrl-C keeps what was processed; a failed run leaves the "
                    "previous outputs untouched.")
    parser.add_argument("source", help="a video file, a folder of frames, a camera index (0) or "
                                       "a stream URL (rtsp://, http://, ...)")
    parser.add_argument("--checkpoint", help="a .safetensors checkpoint or work dir")
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="onnxruntime: run a `glsmamba export` ONNX file (--model)")
    parser.add_argument("--model", help="with --runtime onnxruntime: the exported .onnx file")
    parser.add_argument("--config", help="config (default: the one stored with the checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--detections", help="JSON list of {frame_index | image_name, bbox, score}")
    parser.add_argument("--detector", choices=("auto", "hog", "motion", "torchvision", "onnx"),
                        default="auto",
                        help="detector when no --detections: auto/hog = OpenCV's HOG people "
                             "detector (motion detector when OpenCV lacks it), motion = "
                             "background subtraction, torchvision = Faster R-CNN, onnx = an "
                             "end-to-end ONNX export (both need --detector-weights)")
    parser.add_argument("--detector-weights", help="weights file for --detector torchvision|onnx")
    parser.add_argument("--det-thr", type=float, default=0.3, help="minimum box score")
    parser.add_argument("--det-upscale", type=float, default=1.0,
                        help="enlarge frames before HOG detection (finds smaller people)")
    onnx = parser.add_argument_group("ONNX detector (see docs/USAGE.md)")
    onnx.add_argument("--onnx-layout", choices=("auto", "dets_labels", "n6"), default="auto")
    onnx.add_argument("--onnx-input-size", type=_floats(2), metavar="W,H",
                      help="network input size (default: the model's static shape, else 640,640)")
    onnx.add_argument("--onnx-mean", type=_floats(3), metavar="M1,M2,M3",
                      help="per-channel mean (default RTMDet's BGR 103.53,116.28,123.675)")
    onnx.add_argument("--onnx-std", type=_floats(3), metavar="S1,S2,S3",
                      help="per-channel std (default RTMDet's 57.375,57.12,58.395)")
    onnx.add_argument("--onnx-rgb", action="store_true", help="feed RGB (default BGR)")
    onnx.add_argument("--onnx-pad", choices=("corner", "center"), default="corner",
                      help="corner = mmdet's bottom/right padding, center = letterbox")
    onnx.add_argument("--onnx-person-class", type=int, default=0)
    parser.add_argument("--out", default="glsmamba_infer", help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT/<name>.json / .mp4 files glsmamba did not write "
                             "(never an input)")
    parser.add_argument("--max-frames", type=_frames, default=0, help="stop after N frames (0 = all)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--show", action="store_true",
                        help="show a live window (needs a display and OpenCV with GUI support)")
    parser.add_argument("--threads", type=threads_arg, default=None,
                        help="torch CPU threads (default: the usable cores, at most "
                             f"{MAX_DEFAULT_THREADS}; idle threads sleep (OMP_WAIT_POLICY="
                             "PASSIVE unless set), so a busy machine is not oversubscribed; "
                             "0 = torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="same as --progress none")
    from glsmamba.trackers import TRACKERS
    parser.add_argument("--tracker", choices=TRACKERS, default=None,
                        help="pose (default: box IoU + pose OKS + constant velocity, two "
                             "stages, after the pose model) or iou (greedy box IoU); same as "
                             "--set track.method=...; its parameters: --set track.KEY=VALUE "
                             "(docs/USAGE.md)")
    parser.set_defaults(func=run)
    return parser


def _model_argument(args: argparse.Namespace) -> str:
    """--checkpoint (runtime torch) or --model (runtime onnxruntime)."""
    from glsmamba.errors import ConfigError
    if args.runtime == "onnxruntime":
        if not args.model or args.checkpoint:
            raise ConfigError("--runtime onnxruntime takes --model FILE.onnx (not --checkpoint)")
        return args.model
    if not args.checkpoint or args.model:
        raise ConfigError("--checkpoint is required (--model FILE.onnx needs --runtime onnxruntime)")
    return args.checkpoint


def default_threads() -> int:
    """``infer``'s torch threads: the cores this process may use, at most
    :data:`MAX_DEFAULT_THREADS` (small per-person tensors gain little from more, and the
    cores are left to other work). With the CLI's ``OMP_WAIT_POLICY=PASSIVE`` (cli.py)
    idle threads sleep, so a busy machine is not oversubscribed by spinning threads."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):        # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


def run(args: argparse.Namespace) -> int:
    import torch
    from glsmamba.inference.infer import infer
    threads = default_threads() if args.threads is None else args.threads
    if threads:
        torch.set_num_threads(threads)
    options = {"layout": args.onnx_layout, "pad": args.onnx_pad,
               "channels": "rgb" if args.onnx_rgb else "bgr",
               "person_class": args.onnx_person_class}
    if args.onnx_input_size:
        options["input_size"] = tuple(int(v) for v in args.onnx_input_size)
    if args.onnx_mean:
        options["mean"] = args.onnx_mean
    if args.onnx_std:
        options["std"] = args.onnx_std
    weights = _model_argument(args)
    overrides = list(args.overrides)
    if getattr(args, "tracker", None):
        overrides.append(f"track.method={args.tracker}")
    stats = infer(args.source, weights, runtime=args.runtime, config=args.config,
                  overrides=overrides,
                  detections=args.detections, detector=args.detector,
                  detector_weights=args.detector_weights, det_thr=args.det_thr,
                  det_upscale=args.det_upscale, out_dir=Path(args.out),
                  max_frames=args.max_frames or None, flip=args.flip,
                  batch_size=args.batch_size, progress=not args.no_progress, show=args.show,
                  detector_options=options if args.detector == "onnx" else None,
                  overwrite=args.overwrite)
    if not stats["written"]:
        print("stopped before any frame was processed; nothing written (previous outputs kept)")
        return 130 if stats["interrupted"] else 1
    print(f"{stats['frames']} frames, {stats['people']} poses, {stats['fps']:.2f} frames/s "
          f"-> {stats['json']}, {stats['mp4']}")
    if stats["interrupted"]:
        print(f"stopped after {stats['frames']} frames: the outputs hold the frames processed")
        return 130
    return 0
