"""``glsmamba convert-vitpose SRC DST``: ViTPose checkpoints, official <-> HuggingFace."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert-vitpose", help="convert ViTPose weights between official and HF layouts",
        description="SRC an HF VitPoseForPoseEstimation save_pretrained folder or .safetensors "
                    "-> DST official names (.pth or .safetensors); SRC an official ViTPose "
                    ".pth/.safetensors -> DST an HF folder (config.json + model.safetensors) or "
                    ".safetensors. The direction follows SRC's key names.")
    parser.add_argument("src", help="checkpoint to convert (file or HF folder)")
    parser.add_argument("dst", help="output file (.pth / .safetensors) or folder (HF)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read a .pth with full pickle (only for files you trust)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from glsmamba.models.vitpose_hf import convert_vitpose
    direction = convert_vitpose(args.src, args.dst, trust_pickle=args.trust_pickle)
    print(f"{args.src} -> {args.dst} ({direction})")
    return 0
