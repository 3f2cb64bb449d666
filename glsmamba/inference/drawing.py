"""Skeletons, boxes and track ids drawn on frames; the MP4 writer."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from glsmamba.errors import DataError


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
