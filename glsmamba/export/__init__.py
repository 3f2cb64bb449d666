"""Export of pose models to standard formats (``glsmamba export``) and their runtimes.

``FORMATS`` maps each ``--format`` name to its exporter; :mod:`glsmamba.export.runtime`
runs an exported file in the inference pipeline (``PoseEstimator(runtime=...)``).
"""
from __future__ import annotations

from glsmamba.export.onnx_export import export_onnx

FORMATS = {"onnx": export_onnx}

__all__ = ["FORMATS", "export_onnx"]
