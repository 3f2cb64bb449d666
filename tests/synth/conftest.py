"""Fixtures shared by the synthetic benchmark tests: one tiny generated benchmark."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pybullet_data", reason="the synthetic benchmark needs pybullet's data")

TINY = dict(videos=3, frames=8, seed=5, size=(160, 120), people=(2, 3), hard_rate=0.5,
            val_fraction=0.34)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    """3 videos x 8 frames at 160x120 (2 train, 1 val), generated once per session."""
    from glsmamba.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth") / "bench", **TINY)
