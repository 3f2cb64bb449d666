"""Inference test fixtures: a tiny glsmamba config and a saved checkpoint of it."""
from __future__ import annotations

import copy

import cv2
import numpy as np

import pytest

TINY_OVERRIDES = {"input_size": [48, 64], "dim": 16, "d_state": 1, "gsm_depth": 1,
                  "lrm_depth": 1, "mlp_ratio": 1.0}


@pytest.fixture()
def tiny_config():
    """A glsmamba-tiny config (inference reads no dataset, so the data root is unused)."""
    from glsmamba.config import DEFAULTS
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(name="glsmamba-tiny", overrides=dict(TINY_OVERRIDES),
                           random_encoder_ok=True)
    config["data"].update(type="posetrack18", root="unused", val_detections="", delta=1,
                          workers=0, augment=False)
    config["train"].update(amp="off")
    config["eval"].update(flip_test=False)
    return config


@pytest.fixture()
def tiny_checkpoint(tiny_config, tmp_path):
    """A randomly initialised tiny checkpoint folder (``last`` set with the config)."""
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    model = build_model(tiny_config, log=lambda *_: None)
    save_checkpoint(tmp_path / "ckpt", "last", model, {"config": tiny_config})
    return tmp_path / "ckpt"


def make_frames(count: int = 8, size=(128, 96)):
    """RGB frames of a textured 'person' rectangle walking right, and its boxes (xywh)."""
    import numpy as np
    rng = np.random.default_rng(0)
    frames, boxes = [], []
    for t in range(count):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        x = 10 + 6 * t
        frame[20:80, x:x + 20] = rng.integers(150, 255, (60, 20, 3), dtype=np.uint8)
        frame[20:30, x:x + 20, 0] = 255                  # a red "head": RGB order matters
        frames.append(frame)
        boxes.append([float(x), 20.0, 20.0, 60.0])
    return frames, boxes


@pytest.fixture()
def walking():
    return make_frames()


@pytest.fixture()
def estimator(tiny_checkpoint):
    from glsmamba.inference import PoseEstimator
    return PoseEstimator.from_checkpoint(tiny_checkpoint, device="cpu", detector=None,
                                         warn=lambda message: None)


def _write_video(path, frames: int = 10, size=(128, 96)):
    """A grey background with a textured 'person' rectangle walking right."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    rng = np.random.default_rng(0)
    boxes = []
    for t in range(frames):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        x = 10 + 6 * t
        frame[20:80, x:x + 20] = rng.integers(150, 255, (60, 20, 3), dtype=np.uint8)
        writer.write(frame)
        boxes.append([x, 20, 20, 60])
    writer.release()
    return boxes


@pytest.fixture()
def write_video():
    """``write_video(path, frames=10, size=(128, 96)) -> boxes``: an mp4v test video."""
    return _write_video
