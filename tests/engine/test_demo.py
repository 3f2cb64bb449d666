"""The demo end to end in --quick mode (slow: a few minutes on a busy 2-core CPU)."""
from __future__ import annotations

import cv2
import pytest

from glsmamba.cli import main


@pytest.mark.slow
def test_demo_quick_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| GLSMamba-tiny |" in printed and "mAP degraded" in printed
    report = out / "report"
    summary = (report / "summary.md").read_text()
    assert "## Protocol" in summary and "single-frame baseline" in summary
    for name in ("loss_curves.png", "per_joint_ap.png"):
        assert cv2.imread(str(report / name)) is not None
    capture = cv2.VideoCapture(str(report / "side_by_side.mp4"))
    ok, frame = capture.read()
    assert ok and frame.shape[1] == 3 * 160             # GT | baseline | GLSMamba
    for run in ("stage1_baseline", "stage2_glsmamba", "baseline_extra"):
        assert (out / "runs" / run / "last.safetensors").is_file()
