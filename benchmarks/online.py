"""Online (causal) vs centred clips in ``PoseEstimator.predict_video``: delay and cost.

    python benchmarks/online.py [--video FILE] [--frames N] [--fps F] [--threads T]

Both models are the demo's stage-2 architecture (GLSMamba-tiny, dim 32, 1 GSM + 1 LRM,
96x128 crops, δ = 2, T = 5) with the same random weights, once with ``data.window =
"centered"`` (clips t-2..t+2) and once ``"causal"`` (t-4..t); speed does not depend on
the weights. The video's first N frames are read into memory and its people detected
once (OpenCV's HOG), so that the timed runs see the same frames and boxes.

Printed per window:

- ``delay_frames``: frames read after t before frame t was yielded (FrameResult), as a
  histogram; the centred window needs δ, the causal one 0;
- ``cost ms/frame``: predict_video's time per frame with the frames in memory (tracking,
  cropping, the model, decoding), wall clock and this process's CPU time (the CPU time is
  what to compare on a shared machine); median of ``--repeats`` runs;
- ``latency ms``: a live source that releases frame i at i / fps seconds: from the
  release of frame t to its result (median and 95th percentile); for the centred window
  it includes waiting for frames t+1..t+δ. ``--fps`` 0 (default) picks half the slower
  window's measured frame rate, so that the estimator keeps up and no queue builds.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def demo_checkpoints(folder: Path) -> dict[str, Path]:
    """The demo's stage-2 model, random weights, saved once per window (same weights)."""
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    from glsmamba.config import DEFAULTS
    from glsmamba.recipes.demo import FULL, glsmamba_config
    base = copy.deepcopy(DEFAULTS)
    base["data"]["type"] = "posetrack18"
    config = glsmamba_config(base, FULL, encoder_from="")
    config["model"]["overrides"]["freeze_encoder"] = True
    torch.manual_seed(0)
    model = build_model(config, log=lambda *_: None, for_training=False)
    paths = {}
    for window in ("centered", "causal"):
        run = copy.deepcopy(config)
        run["data"]["window"] = window
        paths[window] = folder / window
        save_checkpoint(paths[window], "last", model, {"config": run})
    return paths


def read_frames(video: str, count: int) -> list[np.ndarray]:
    """The first ``count`` frames, RGB."""
    capture = cv2.VideoCapture(video)
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise SystemExit(f"no frame could be read from {video}")
    return frames


def detect_once(frames: list[np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    from glsmamba.inference.detectors import build_detector
    detector = build_detector("hog", None, 0.3, 1.0, log=lambda *_: None)
    return {t: detector(cv2.cvtColor(f, cv2.COLOR_RGB2BGR)) for t, f in enumerate(frames)}


def timed_run(estimator, frames, table) -> tuple[float, float, Counter]:
    """(wall s / frame, CPU s / frame, delay_frames histogram) of one pass."""
    started, cpu = time.perf_counter(), time.process_time()
    delays = Counter(r.delay_frames for r in estimator.predict_video(frames, table))
    count = len(frames)
    return (time.perf_counter() - started) / count, (time.process_time() - cpu) / count, delays


def live_latency(estimator, frames, table, fps: float) -> list[float]:
    """Seconds from the release of frame t (at t / fps) to the result of frame t."""
    release: list[float] = []

    def camera():
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            wait = start + i / fps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            release.append(start + i / fps)
            yield frame

    return [time.perf_counter() - release[r.index]
            for r in estimator.predict_video(camera(), table)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "vtest.avi"))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--fps", type=float, default=0.0,
                        help="live source rate (0: half the measured frame rate)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from glsmamba.inference import PoseEstimator
    frames = read_frames(args.video, args.frames)
    table = detect_once(frames)
    people = sum(len(boxes) for boxes, _ in table.values())
    print(f"{len(frames)} frames, {people} detected people, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        estimators = {window: PoseEstimator.from_checkpoint(path, device="cpu", detector=None)
                      for window, path in demo_checkpoints(Path(tmp)).items()}
    walls: dict[str, list[float]] = {w: [] for w in estimators}
    cpus: dict[str, list[float]] = {w: [] for w in estimators}
    delays: dict[str, Counter] = {}
    for _ in range(args.repeats):          # alternate, so that load changes hit both
        for window, estimator in estimators.items():
            wall, cpu, delays[window] = timed_run(estimator, frames, table)
            walls[window].append(wall)
            cpus[window].append(cpu)
    fps = args.fps or 0.5 / max(statistics.median(w) for w in walls.values())
    for window, estimator in estimators.items():
        latency = sorted(live_latency(estimator, frames, table, fps))
        p95 = latency[min(len(latency) - 1, int(0.95 * len(latency)))]
        print(f"{window:9s} delta {estimator.delta}: delay_frames "
              f"{dict(sorted(delays[window].items()))}; cost "
              f"{1e3 * statistics.median(walls[window]):.1f} ms/frame wall, "
              f"{1e3 * statistics.median(cpus[window]):.1f} ms/frame CPU (runs, CPU: "
              f"{', '.join(f'{1e3 * c:.1f}' for c in cpus[window])}); latency at {fps:.2f} fps: "
              f"median {1e3 * statistics.median(latency):.0f} ms, p95 {1e3 * p95:.0f} ms "
              f"({1e3 / fps:.0f} ms between frames)")


if __name__ == "__main__":
    main()
