"""The record every dataset parser yields: one person box in one centre frame, with its clip."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PoseSample:
    """One top-down sample.

    Coordinates are 0-based pixels of the original image. ``keypoints`` is (K, 2) and
    ``visible`` (K,) in {0, 1}; both are zeros when unknown (test-time detected boxes).
    """

    image_path: str                     # centre frame, absolute or relative to the data root
    frame_paths: list[str]              # t-δ .. t+δ, clamped to the video; len == 2δ+1
    bbox_xywh: np.ndarray               # (4,) float32, person box
    keypoints: np.ndarray               # (K, 2) float32
    visible: np.ndarray                 # (K,) float32, 1 = annotated
    bbox_score: float = 1.0             # 1 for GT boxes, detector score otherwise
    image_id: int | str = 0             # id of the centre frame in the annotation file
    video_id: str = ""                  # video name, used to write predictions back per video
    frame_index: int = 0                # index of the centre frame inside its video
    track_id: int = -1                  # GT track id (or -1)
    ann_id: int | str = -1              # GT annotation id (or -1 for detections)
    extra: dict = field(default_factory=dict)  # dataset-specific (e.g. degradations of the frame)
