"""Data pipeline: dataset parsers, metainfo, clip transforms, heatmap codec, torch Dataset."""
from glsmamba.data.sample import PoseSample

__all__ = ["PoseSample"]
