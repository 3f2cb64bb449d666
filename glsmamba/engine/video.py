"""Pose estimation on any video: frame reading, person boxes, IoU tracking, streaming clips.

Memory stays bounded on long videos: frames live in a ring buffer of 2δ+1 frames and
frame t is processed as soon as frame t+δ has been read (at the end of the video the
missing future frames are clamped to the last one, as in training).
"""
from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from glsmamba.data.transforms import MEAN_RGB, STD_RGB, get_affine_matrix
from glsmamba.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# ---------------------------------------------------------------------------- frames
@dataclass
class FrameSource:
    """Frames of a video file or of a folder of images, read lazily (BGR uint8)."""

    path: Path
    max_frames: int | None = None
    fps: float = 25.0
    count: int = 0
    size: tuple[int, int] = (0, 0)        # (W, H)
    names: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike, max_frames: int | None = None) -> "FrameSource":
        path = Path(path)
        if not path.exists():
            raise DataError("video or frame folder not found", str(path))
        source = cls(path, max_frames)
        if path.is_dir():
            source._probe_folder()
        else:
            source._probe_video()
        if max_frames:
            source.count = min(source.count, max_frames)
        return source

    def _probe_folder(self) -> None:
        files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError("no image files (jpg/png/bmp/webp) in this folder", str(self.path))
        self.names = [p.name for p in files]
        first = self._read_image(files[0])
        self.size, self.count = (first.shape[1], first.shape[0]), len(files)

    def _probe_video(self) -> None:
        capture = cv2.VideoCapture(str(self.path))
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            capture.release()
            raise DataError("cannot read video (not a video, corrupt, or codec unsupported)",
                            str(self.path))
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        self.size = (frame.shape[1], frame.shape[0])
        self.names = []
        capture.release()

    def _read_image(self, path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError("cannot decode image (corrupt or unsupported format)", str(path))
        return image

    def frame_name(self, index: int) -> str:
        return self.names[index] if self.names else f"{index:06d}.jpg"

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.path.is_dir():
            for index, name in enumerate(self.names[: self.count or None]):
                yield self._read_image(self.path / name)
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            read = 0
            while not self.max_frames or read < self.max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                read += 1
                yield frame
        finally:
            capture.release()


# ---------------------------------------------------------------------------- boxes
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


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xywh boxes a (N, 4) and b (M, 4)."""
    a_x2, a_y2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    b_x2, b_y2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(a_x2[:, None], b_x2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a_y2[:, None], b_y2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    while order:
        best = order.pop(0)
        keep.append(best)
        if order:
            ious = box_iou(boxes[best:best + 1], boxes[order])[0]
            order = [i for i, iou in zip(order, ious) if iou <= iou_thr]
    return keep


class IouTracker:
    """Greedy IoU association of boxes between consecutive frames -> track ids."""

    def __init__(self, iou_thr: float = 0.3, max_age: int = 5):
        self.iou_thr, self.max_age = iou_thr, max_age
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}    # id -> (box, frames unseen)
        self.next_id = 0

    def update(self, boxes: np.ndarray) -> list[int]:
        ids = [-1] * len(boxes)
        track_ids = list(self.tracks)
        if track_ids and len(boxes):
            ious = box_iou(boxes, np.stack([self.tracks[t][0] for t in track_ids]))
            for flat in np.argsort(-ious, axis=None):
                row, col = divmod(int(flat), len(track_ids))
                if ious[row, col] < self.iou_thr:
                    break
                if ids[row] == -1 and track_ids[col] not in ids:
                    ids[row] = track_ids[col]
        for row, box in enumerate(boxes):
            if ids[row] == -1:
                ids[row], self.next_id = self.next_id, self.next_id + 1
            self.tracks[ids[row]] = (np.asarray(box, np.float32), 0)
        for track_id in track_ids:
            if track_id not in ids:
                box, age = self.tracks[track_id]
                if age + 1 > self.max_age:
                    del self.tracks[track_id]
                else:
                    self.tracks[track_id] = (box, age + 1)
        return ids


def load_video_detections(path: str | os.PathLike, source: FrameSource,
                          score_thr: float = 0.0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Detections JSON (list of {frame_index | image_name/file_name, bbox xywh, score})."""
    try:
        records = json.loads(Path(path).read_text())
    except OSError as err:
        raise DataError(f"cannot read detections: {err.strerror}", str(path)) from None
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON (line {err.lineno}, column {err.colno})", str(path)) from None
    if not isinstance(records, list):
        raise DataError("expected a JSON list of detections", str(path))
    by_name = {name: i for i, name in enumerate(source.names)}
    frames: dict[int, list] = {}
    for number, record in enumerate(records):
        index = _detection_frame(record, by_name, path, number)
        bbox = record.get("bbox") if isinstance(record, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
            raise DataError("bbox must be [x, y, w, h] with w, h > 0", str(path), f"detection {number}")
        score = float(record.get("score", 1.0))
        if score >= score_thr:
            frames.setdefault(index, []).append((bbox, score))
    return {i: (np.asarray([b for b, _ in dets], np.float32), np.asarray([s for _, s in dets], np.float32))
            for i, dets in frames.items()}


def _detection_frame(record, by_name: dict, path, number: int) -> int:
    if not isinstance(record, dict):
        raise DataError("each detection must be an object", str(path), f"detection {number}")
    for key in ("frame_index", "frame_id"):
        if key in record:
            return int(record[key])
    for key in ("image_name", "file_name"):
        if key in record:
            name = os.path.basename(str(record[key]))
            if name not in by_name:
                raise DataError(f"unknown image {name!r}", str(path), f"detection {number}")
            return by_name[name]
    raise DataError("needs frame_index (0-based) or image_name", str(path), f"detection {number}")


# ---------------------------------------------------------------------------- clips
def crop_clip(frames_rgb: Sequence[np.ndarray], center: np.ndarray, scale: np.ndarray,
              input_size: tuple[int, int]) -> torch.Tensor:
    """The one affine of the centre box applied to every frame -> (T, 3, H, W) normalised."""
    matrix = get_affine_matrix(center, scale, 0.0, input_size)
    crops = np.stack([cv2.warpAffine(f, matrix, input_size, flags=cv2.INTER_LINEAR)
                      for f in frames_rgb])                               # (T, H, W, 3)
    clip = torch.from_numpy(crops).permute(0, 3, 1, 2).float()            # (T, 3, H, W)
    mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB).view(1, 3, 1, 1)
    return (clip - mean) / std


def clamped_window(t: int, delta: int, last: int) -> list[int]:
    """Frame indices t-δ .. t+δ clamped to [0, last]."""
    return [min(max(i, 0), last) for i in range(t - delta, t + delta + 1)]


def stream_clips(frames: Iterator[np.ndarray], delta: int):
    """Yield (t, frames of t-δ..t+δ clamped) with only 2δ+1 frames held at a time."""
    ring: deque[tuple[int, np.ndarray]] = deque(maxlen=2 * delta + 1)
    last = -1
    for index, frame in enumerate(frames):
        ring.append((index, frame))
        last = index
        t = index - delta
        if t >= 0:
            yield t, _window(ring, t, delta, last)
    for t in range(max(0, last - delta + 1), last + 1):
        yield t, _window(ring, t, delta, last)


def _window(ring: deque, t: int, delta: int, last: int) -> list[np.ndarray]:
    held = dict(ring)
    return [held[i] for i in clamped_window(t, delta, last)]


# ---------------------------------------------------------------------------- drawing
def draw_poses(frame_bgr: np.ndarray, people: list[dict], skeleton: Sequence[tuple[int, int]],
               link_colors: Sequence[Sequence[int]], score_thr: float = 0.3,
               boxes: bool = True) -> np.ndarray:
    """Skeletons (and boxes with track ids) drawn on a copy of the frame."""
    canvas = frame_bgr.copy()
    for person in people:
        points = np.asarray(person["keypoints"], np.float32).reshape(-1, 3)
        for (a, b), color in zip(skeleton, link_colors):
            if points[a, 2] > score_thr and points[b, 2] > score_thr:
                cv2.line(canvas, _pt(points[a]), _pt(points[b]), tuple(int(c) for c in color[::-1]),
                         2, cv2.LINE_AA)
        for x, y, s in points:
            if s > score_thr:
                cv2.circle(canvas, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1, cv2.LINE_AA)
        if boxes and person.get("bbox") is not None:
            x, y, w, h = (int(round(v)) for v in person["bbox"])
            cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 255, 255), 1)
            cv2.putText(canvas, str(person.get("track_id", "")), (x, max(10, y - 3)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
    return canvas


def _pt(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
    if not writer.isOpened():
        raise DataError("cannot open the MP4 writer (mp4v codec missing?)", str(path))
    return writer
