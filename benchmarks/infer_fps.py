"""PoseEstimator frames per second on a video (default: ../shared/data/vtest.avi).

    python benchmarks/infer_fps.py [--checkpoint CKPT] [--frames N] [--threads T]

Without --checkpoint it measures the demo's stage-2 architecture (GLSMamba-tiny, dim 32,
1 GSM + 1 LRM, 64x96 crops, δ = 2) randomly initialised: the speed does not depend on the
weights (the HOG detector and the crops do not see them). End to end: decoding, HOG
detection, tracking, cropping, the model, decoding heatmaps; no drawing or writing.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def demo_checkpoint(folder: Path) -> Path:
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    from glsmamba.config import DEFAULTS
    from glsmamba.recipes.demo import FULL, glsmamba_config
    base = copy.deepcopy(DEFAULTS)
    base["data"]["type"] = "posetrack18"
    config = glsmamba_config(base, FULL, encoder_from="")
    config["model"]["overrides"]["freeze_encoder"] = True
    model = build_model(config, log=lambda *_: None, for_training=False)
    save_checkpoint(folder, "last", model, {"config": config})
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "vtest.avi"))
    parser.add_argument("--checkpoint")
    parser.add_argument("--frames", type=int, default=0, help="0 = the whole video")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import glsmamba
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or demo_checkpoint(Path(tmp) / "ckpt")
        estimator = glsmamba.PoseEstimator.from_checkpoint(checkpoint, device="cpu")
        started = time.perf_counter()
        people = frames = 0
        for result in estimator.predict_video(args.video, max_frames=args.frames or None):
            frames += 1
            people += len(result.people)
        elapsed = time.perf_counter() - started
    print(f"{frames} frames, {people} poses in {elapsed:.1f} s: {frames / elapsed:.2f} frames/s "
          f"({args.threads} thread(s), {'given' if args.checkpoint else 'random demo-architecture'} "
          "checkpoint)")


if __name__ == "__main__":
    main()
