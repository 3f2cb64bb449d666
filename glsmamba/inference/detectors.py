"""Person boxes: OpenCV's HOG people detector, a motion detector, detections files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from glsmamba.errors import DataError
from glsmamba.inference.sources import FrameSource
from glsmamba.trackers import box_iou


class HogPersonDetector:
    """OpenCV's HOG + linear SVM people detector (no download needed).

    ``upscale`` enlarges the frame before detection so people smaller than the 64x128
    window are found; boxes are returned in original pixels, xywh, with SVM scores
    squashed to (0, 1).
    """

    def __init__(self, score_thr: float = 0.3, upscale: float = 1.0, nms_iou: float = 0.4,
                 win_stride: int = 8):
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_thr, self.upscale, self.nms_iou = score_thr, upscale, nms_iou
        self.win_stride = (win_stride, win_stride)

    def __call__(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = frame_bgr
        if self.upscale != 1.0:
            image = cv2.resize(frame_bgr, None, fx=self.upscale, fy=self.upscale)
        rects, weights = self.hog.detectMultiScale(image, winStride=self.win_stride,
                                                   padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes = np.asarray(rects, np.float32) / self.upscale
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float32).reshape(-1)))
        keep = nms(boxes, scores, self.nms_iou)
        boxes, scores = boxes[keep], scores[keep]
        good = scores >= self.score_thr
        return boxes[good], scores[good]


class MotionPersonDetector:
    """Moving-blob person boxes for static cameras (background subtraction, MOG2).

    The fallback when OpenCV has no HOG people detector (OpenCV 5 moved it out of the main
    package): foreground mask -> opening/closing -> connected components, kept when their
    area and aspect look like a standing person. Scores grow with how much of the box is
    foreground. Needs a few frames to learn the background.
    """

    def __init__(self, score_thr: float = 0.3, min_area_frac: float = 0.0015,
                 aspect_range: tuple[float, float] = (0.8, 5.0), history: int = 200):
        self.subtractor = cv2.createBackgroundSubtractorMOG2(history=history, detectShadows=True)
        self.score_thr, self.min_area_frac, self.aspect_range = score_thr, min_area_frac, aspect_range
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    def __call__(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = self.subtractor.apply(frame_bgr)
        mask = (mask == 255).astype(np.uint8)                    # drop shadows (127)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.kernel, iterations=2)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        min_area = self.min_area_frac * mask.shape[0] * mask.shape[1]
        boxes, scores = [], []
        for x, y, w, h, area in stats[1:count]:
            if w * h < min_area or w * h > 0.5 * mask.size:
                continue
            if not self.aspect_range[0] <= h / max(w, 1) <= self.aspect_range[1]:
                continue
            boxes.append([x, y, w, h])
            scores.append(min(1.0, 0.3 + area / float(w * h)))
        boxes_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores_arr = np.asarray(scores, np.float32)
        good = scores_arr >= self.score_thr
        return boxes_arr[good], scores_arr[good]


def default_detector(score_thr: float = 0.3, upscale: float = 1.0, log=print):
    """HOG people detector when this OpenCV has it, else the motion detector (with a note)."""
    if hasattr(cv2, "HOGDescriptor"):
        return HogPersonDetector(score_thr=score_thr, upscale=upscale)
    log("note: this OpenCV build has no HOG people detector (OpenCV >= 5); using the "
        "background-subtraction detector (static cameras) - or pass --detections")
    return MotionPersonDetector(score_thr=score_thr)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    while order:
        best = order.pop(0)
        keep.append(best)
        if order:
            ious = box_iou(boxes[best:best + 1], boxes[order])[0]
            order = [i for i, iou in zip(order, ious) if iou <= iou_thr]
    return keep


def load_video_detections(path: str | os.PathLike, source: FrameSource | None = None,
                          score_thr: float = 0.0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Detections JSON (list of {frame_index | image_name/file_name, bbox xywh, score}).

    Errors naming the file and the record: a bbox that is not four finite numbers with
    w, h > 0 (NaN, inf, or values float32 cannot hold), a score that is not a finite
    number, a negative or non-integer frame index, an image name not in the folder.
    Boxes reaching outside the image and frame indices past the video are handled (and
    reported) while the video streams: see :func:`clip_boxes`.
    """
    try:
        records = json.loads(Path(path).read_text())
    except OSError as err:
        raise DataError(f"cannot read detections: {err.strerror}", str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno})" if hasattr(err, "lineno") else ""
        raise DataError(f"malformed JSON{where}", str(path)) from None
    if not isinstance(records, list):
        raise DataError("expected a JSON list of detections", str(path))
    by_name = {name: i for i, name in enumerate(source.names if source is not None else [])}
    frames: dict[int, list] = {}
    for number, record in enumerate(records):
        index = _detection_frame(record, by_name, path, number)
        bbox = record.get("bbox")
        values = _finite_numbers(bbox, 4)
        if values is None or values[2] <= 0 or values[3] <= 0:
            raise DataError(f"bbox must be [x, y, w, h], four finite numbers with w, h > 0; "
                            f"got {bbox!r}", str(path), f"detection {number}")
        score = _finite_numbers([record.get("score", 1.0)], 1)
        if score is None:
            raise DataError(f"score must be a finite number, got {record.get('score')!r}",
                            str(path), f"detection {number}")
        if score[0] >= score_thr:
            frames.setdefault(index, []).append((values, score[0]))
    return {i: (np.asarray([b for b, _ in dets], np.float32), np.asarray([s for _, s in dets], np.float32))
            for i, dets in frames.items()}


def _finite_numbers(value, length: int) -> list[float] | None:
    """``value`` as ``length`` floats that stay finite in float32, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != length:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = np.asarray(value, np.float64).astype(np.float32)
    if not np.all(np.isfinite(as32)):
        return None
    return [float(v) for v in value]


def _detection_frame(record, by_name: dict, path, number: int) -> int:
    if not isinstance(record, dict):
        raise DataError("each detection must be an object", str(path), f"detection {number}")
    for key in ("frame_index", "frame_id"):
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not float(value).is_integer() or value < 0:
                raise DataError(f"{key} must be a frame index >= 0 (0-based), got {value!r}",
                                str(path), f"detection {number}")
            return int(value)
    for key in ("image_name", "file_name"):
        if key in record:
            name = os.path.basename(str(record[key]))
            if name not in by_name:
                raise DataError(f"unknown image {name!r}", str(path), f"detection {number}")
            return by_name[name]
    raise DataError("needs frame_index (0-based) or image_name", str(path), f"detection {number}")


class BoxReport:
    """Counts of boxes :func:`clip_boxes` changed, for one warning per video."""

    def __init__(self):
        self.clipped = self.dropped_outside = self.dropped_invalid = 0
        self.first: dict[str, int] = {}

    def _note(self, kind: str, count: int, frame: int) -> None:
        if count:
            setattr(self, kind, getattr(self, kind) + count)
            self.first.setdefault(kind, frame)

    def message(self) -> str | None:
        parts = []
        if self.clipped:
            parts.append(f"{self.clipped} box(es) reaching outside the image were clipped to "
                         f"it (first in frame {self.first['clipped']})")
        if self.dropped_outside:
            parts.append(f"{self.dropped_outside} box(es) entirely outside the image were "
                         f"dropped (first in frame {self.first['dropped_outside']})")
        if self.dropped_invalid:
            parts.append(f"{self.dropped_invalid} box(es) with non-finite values or no area "
                         f"were dropped (first in frame {self.first['dropped_invalid']})")
        return "; ".join(parts) or None


def as_boxes(boxes, scores, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) float64 x, y, w, h, scores (N,)) from array-likes; one box may be
    given as 4 numbers, ``scores`` None means 1 each. Anything else (a box of 3 or 5
    numbers, text, ragged lists, a score count that differs) is a DataError naming ``where``."""
    try:
        boxes = np.asarray(boxes, np.float64)
        scores = np.ones(boxes.size // 4) if scores is None else np.asarray(scores, np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"boxes and scores must be numbers ({err})", where) from None
    if boxes.ndim == 1 and boxes.size == 4:
        boxes = boxes[None]
    elif boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"boxes must be (N, 4) x, y, w, h; got shape {boxes.shape}", where)
    if scores.ndim > 1 or scores.size != len(boxes):
        raise DataError(f"{len(boxes)} boxes but {scores.size} scores (scores must be "
                        f"({len(boxes)},))", where)
    return boxes, scores.reshape(-1)


def clip_boxes(boxes: np.ndarray, scores: np.ndarray, size: tuple[int, int], frame: int,
               report: BoxReport | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) xywh clipped to the image ``size`` (W, H); boxes with non-finite values
    or scores, no area, or no overlap with the image are dropped (counted in ``report``)."""
    boxes, scores = as_boxes(boxes, scores, f"frame {frame}")
    report = report if report is not None else BoxReport()
    valid = np.all(np.isfinite(boxes), axis=1) & np.isfinite(scores) \
        & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    report._note("dropped_invalid", int((~valid).sum()), frame)
    boxes, scores = boxes[valid], scores[valid]
    width, height = size
    x1 = np.clip(boxes[:, 0], 0, width)
    y1 = np.clip(boxes[:, 1], 0, height)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    inside = (x2 - x1 >= 1) & (y2 - y1 >= 1)
    report._note("dropped_outside", int((~inside).sum()), frame)
    clipped = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)[inside]
    changed = np.any(np.abs(clipped - boxes[inside]) > 1e-3, axis=1)
    report._note("clipped", int(changed.sum()), frame)
    return clipped.astype(np.float32), scores[inside].astype(np.float32)


def build_detector(name="auto", weights: str | None = None, score_thr: float = 0.3,
                   upscale: float = 1.0, log=print, **options):
    """A person detector ``(frame_bgr) -> (boxes xywh (N, 4), scores (N,))`` by name.

    ``auto``/``hog``: OpenCV's HOG (the motion detector when OpenCV lacks it);
    ``motion``: background subtraction; ``torchvision``: Faster R-CNN from ``weights``;
    ``onnx``: an ONNX export through onnxruntime (``weights`` the .onnx file, ``options``
    those of :class:`glsmamba.inference.onnx_detector.OnnxDetector`). A callable is
    returned as is; ``None`` means no detector (boxes must be given).
    """
    if name is None or callable(name):
        return name
    from glsmamba.errors import ConfigError
    if not (isinstance(score_thr, (int, float)) and np.isfinite(score_thr)):
        raise ConfigError(f"detector score threshold must be a finite number, got {score_thr!r}")
    if not (isinstance(upscale, (int, float)) and np.isfinite(upscale) and 0 < upscale <= 8):
        raise ConfigError(f"detector upscale must be in (0, 8], got {upscale!r}")
    if name in ("auto", "hog"):
        return default_detector(score_thr, upscale, log)
    if name == "motion":
        return MotionPersonDetector(score_thr=score_thr)
    if name == "torchvision":
        from glsmamba.inference.torchvision_detector import TorchvisionDetector
        return TorchvisionDetector(weights, score_thr)
    if name == "onnx":
        from glsmamba.inference.onnx_detector import OnnxDetector
        return OnnxDetector(weights, score_thr=score_thr, **options)
    raise ConfigError(f"unknown detector {name!r}: choose auto, hog, motion, torchvision or onnx")
