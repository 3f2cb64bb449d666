"""Inference on any video: ``glsmamba infer`` and the Python API.

- :mod:`~glsmamba.inference.estimator`: :class:`PoseEstimator` (``predict_video``,
  ``predict_clip``), :class:`FrameResult`, :class:`Person`;
- :mod:`~glsmamba.inference.sources`: :class:`FrameSource` (video files, frame folders,
  cameras, stream URLs, iterables of frames);
- :mod:`~glsmamba.inference.detectors`: HOG / motion detectors, detections files, box
  clipping; :mod:`~glsmamba.inference.onnx_detector`,
  :mod:`~glsmamba.inference.torchvision_detector`: optional detectors;
- :mod:`~glsmamba.trackers`: IoU tracking; :mod:`~glsmamba.inference.clips`:
  ring-buffered clip streaming and cropping; :mod:`~glsmamba.inference.drawing`;
- :mod:`~glsmamba.inference.infer`: the command (JSON + MP4, written incrementally).
"""
from glsmamba.inference.estimator import FrameResult, Person, PoseEstimator
from glsmamba.inference.sources import FrameSource

__all__ = ["PoseEstimator", "FrameResult", "Person", "FrameSource"]
