"""Person detector from an end-to-end ONNX export (detections after NMS), via onnxruntime.

Used by ``glsmamba infer --detector onnx --detector-weights FILE.onnx`` and
``PoseEstimator(detector="onnx", detector_weights=...)``. Two output layouts:

- ``dets_labels`` (mmdeploy's end2end exports of RTMDet, YOLOX, ...): ``dets``
  (1, N, 5) = x1, y1, x2, y2, score and ``labels`` (1, N) integer class ids;
- ``n6`` (one output, e.g. Ultralytics' ``nms=True`` exports): (1, N, 6) or (N, 6) =
  x1, y1, x2, y2, score, class id.

``layout="auto"`` picks by the number of outputs. Boxes are in the pixels of the network
input. The frame is resized to ``input_size`` (W, H) keeping its aspect ratio and padded
with ``pad_value`` (``pad="corner"``: bottom/right as mmdet's ``Resize(keep_ratio)`` +
``Pad``; ``"center"``: letterboxed as Ultralytics); ``keep_ratio=False`` stretches. Then
``(pixel - mean) / std`` per channel in ``channels`` order. Defaults follow mmdet's RTMDet
(BGR, mean 103.53 116.28 123.675, std 57.375 57.12 58.395, 640 x 640, pad 114); for YOLOX
exports use ``mean=(0, 0, 0), std=(1, 1, 1)``; for Ultralytics ``channels="rgb",
mean=(0, 0, 0), std=(255, 255, 255), pad="center"``. ``input_size`` defaults to the
model's static input shape when it has one. ``person_class``: the class id kept (0 in
COCO-trained mmdet and YOLO models).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from glsmamba.errors import ConfigError, DataError

RTMDET_MEAN = (103.53, 116.28, 123.675)
RTMDET_STD = (57.375, 57.12, 58.395)
LAYOUTS = ("auto", "dets_labels", "n6")


class OnnxDetector:
    """``(frame_bgr) -> (boxes xywh (N, 4) in frame pixels, scores (N,))``; see the module."""

    def __init__(self, weights: str | Path | None, score_thr: float = 0.3,
                 input_size: Sequence[int] | None = None, mean: Sequence[float] = RTMDET_MEAN,
                 std: Sequence[float] = RTMDET_STD, channels: str = "bgr",
                 keep_ratio: bool = True, pad: str = "corner", pad_value: float = 114.0,
                 layout: str = "auto", person_class: int = 0, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("--detector onnx needs onnxruntime: pip install onnxruntime") from None
        if not weights:
            raise ConfigError("--detector onnx needs --detector-weights (an .onnx file)")
        path = Path(weights)
        if not path.is_file():
            raise DataError("ONNX detector file not found", str(path))
        if layout not in LAYOUTS:
            raise ConfigError(f"ONNX layout must be one of {LAYOUTS}, got {layout!r}")
        if channels not in ("bgr", "rgb") or pad not in ("corner", "center"):
            raise ConfigError("ONNX detector: channels must be bgr|rgb and pad corner|center")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(int(threads), 1)
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:   # onnxruntime raises its own exception types
            raise DataError(f"cannot load the ONNX model ({type(exc).__name__}: {exc})",
                            str(path)) from None
        self.path = path
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise DataError("expected one image input (1, 3, H, W)", str(path))
        self.input_name = inputs[0].name
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs]
        if layout == "auto":
            layout = "dets_labels" if len(outputs) >= 2 else "n6"
        self.layout = layout
        if input_size is None:
            height, width = inputs[0].shape[2:]
            if not (isinstance(height, int) and isinstance(width, int)):
                height, width = 640, 640       # dynamic axes: mmdet's test size
            input_size = (width, height)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)
        self.channels, self.keep_ratio, self.pad, self.pad_value = channels, keep_ratio, pad, pad_value
        self.score_thr, self.person_class = float(score_thr), int(person_class)

    def preprocess(self, frame_bgr: np.ndarray):
        """-> input tensor (1, 3, H, W) float32, (scale_x, scale_y), (offset_x, offset_y)."""
        height, width = frame_bgr.shape[:2]
        target_w, target_h = self.input_size
        if self.keep_ratio:
            ratio = min(target_w / width, target_h / height)
            scale = (ratio, ratio)
        else:
            scale = (target_w / width, target_h / height)
        new_w, new_h = max(int(round(width * scale[0])), 1), max(int(round(height * scale[1])), 1)
        resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((target_h, target_w, 3), self.pad_value, np.float32)
        off = (0, 0) if self.pad == "corner" else ((target_w - new_w) // 2, (target_h - new_h) // 2)
        canvas[off[1]:off[1] + new_h, off[0]:off[0] + new_w] = resized
        if self.channels == "rgb":
            canvas = canvas[:, :, ::-1]
        tensor = (canvas.transpose(2, 0, 1) - self.mean) / self.std
        return tensor[None].astype(np.float32), scale, off

    def __call__(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor, scale, off = self.preprocess(frame_bgr)
        outputs = self.session.run(None, {self.input_name: tensor})
        if self.layout == "dets_labels":
            dets = np.asarray(outputs[0], np.float32).reshape(-1, 5)
            labels = np.asarray(outputs[1]).reshape(-1)
            if len(labels) != len(dets):
                raise DataError(f"dets has {len(dets)} rows but labels {len(labels)}", str(self.path))
            xyxy, scores = dets[:, :4], dets[:, 4]
        else:
            rows = np.asarray(outputs[0], np.float32)
            if rows.shape[-1] != 6:
                raise DataError(f"layout n6 expects (..., 6) output, got {rows.shape}", str(self.path))
            rows = rows.reshape(-1, 6)
            xyxy, scores, labels = rows[:, :4], rows[:, 4], rows[:, 5]
        keep = (np.round(labels).astype(np.int64) == self.person_class) & (scores >= self.score_thr)
        xyxy, scores = xyxy[keep], scores[keep]
        x1 = (xyxy[:, 0] - off[0]) / scale[0]
        y1 = (xyxy[:, 1] - off[1]) / scale[1]
        x2 = (xyxy[:, 2] - off[0]) / scale[0]
        y2 = (xyxy[:, 3] - off[1]) / scale[1]
        boxes = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).astype(np.float32)
        return boxes, scores.astype(np.float32)
