"""Engine test fixtures: a tiny synthetic PoseTrack18-style dataset and tiny configs."""
from __future__ import annotations

import copy

import pytest

TINY_OVERRIDES = {"input_size": [48, 64], "dim": 16, "d_state": 1, "gsm_depth": 1,
                  "lrm_depth": 1, "mlp_ratio": 1.0}


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from glsmamba.synth.generate import generate_dataset
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, videos=2, frames=6, seed=1, size=(128, 96), people=(1, 1),
                     val_fraction=0.5)
    return root


@pytest.fixture()
def tiny_config(synth_root):
    """A glsmamba-tiny config on the synthetic data, small enough for a few seconds."""
    from glsmamba.config import DEFAULTS
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(name="glsmamba-tiny", overrides=dict(TINY_OVERRIDES),
                           random_encoder_ok=True)
    config["data"].update(type="posetrack18", root=str(synth_root), val_detections="",
                          batch_size=2, val_batch_size=4, workers=0, augment=False, delta=1)
    config["train"].update(epochs=1, lr=1e-3, log_interval=1, val_interval=0, amp="off")
    config["eval"].update(flip_test=False)
    return config
