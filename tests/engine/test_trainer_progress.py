"""Training output piped to a file: progress lines, no bar redraws."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_log_has_lines_not_bar_frames(tiny_config, tmp_path, capsys, monkeypatch):
    from glsmamba.engine import api
    monkeypatch.setenv("GLSMAMBA_PROGRESS_INTERVAL", "0")      # a line at every step
    api.train(tiny_config, tmp_path / "run", progress=True, log=print)
    err = capsys.readouterr().err                              # captured: not a terminal
    assert "\r" not in err and "\x1b[" not in err
    step_lines = [line for line in err.splitlines() if line.startswith("epoch 1/1: ")]
    assert step_lines and step_lines[-1].endswith("(done)")
    assert "loss=" in step_lines[0] and "samples_s=" in step_lines[0]
