"""Shared test fixtures.

``shared_dir`` is the workplace's ``../shared`` folder (real PoseTrack18 / Sub-JHMDB
samples, vtest.avi). Override with the GLSMAMBA_SHARED environment variable; tests that
need it skip cleanly when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("GLSMAMBA_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not (path / "data").is_dir():
        pytest.skip(f"shared data folder not found at {path} (set GLSMAMBA_SHARED)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "fixtures"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of small tensors: faster, and robust when the
    cores are shared (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _reset_progress_mode():
    """The progress mode is process-wide; a test that sets it must not leak it."""
    from glsmamba import progress
    yield
    progress.set_mode(None)
