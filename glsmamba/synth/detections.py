"""Simulated person detector output from the GT boxes: jittered boxes, misses and false
positives, in the PoseTrack detections format ``[{image_id, bbox, score, category_id}]``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DetectorOptions:
    jitter: float = 0.05        # std of box centre / size noise, relative to the box size
    miss_rate: float = 0.1      # probability a GT person is not detected
    false_positive_rate: float = 0.1   # expected false boxes per frame


def simulate_detections(rng: np.random.Generator, image_id: int, gt_boxes: list[np.ndarray],
                        width: int, height: int, options: DetectorOptions) -> list[dict]:
    """Detections of one frame (true positives first, then false positives)."""
    detections = []
    for box in gt_boxes:
        if rng.random() < options.miss_rate:
            continue
        detections.append(_record(image_id, _jitter(rng, box, options.jitter, width, height),
                                  float(np.clip(rng.normal(0.9, 0.06), 0.3, 1.0))))
    for _ in range(int(rng.poisson(options.false_positive_rate))):
        detections.append(_record(image_id, _random_box(rng, width, height),
                                  float(rng.uniform(0.05, 0.6))))
    return detections


def _jitter(rng, box, jitter, width, height) -> np.ndarray:
    x, y, w, h = box
    cx, cy = x + w / 2 + rng.normal(0, jitter) * w, y + h / 2 + rng.normal(0, jitter) * h
    w, h = w * np.exp(rng.normal(0, jitter)), h * np.exp(rng.normal(0, jitter))
    return _clip(np.array([cx - w / 2, cy - h / 2, w, h]), width, height)


def _random_box(rng, width, height) -> np.ndarray:
    h = rng.uniform(0.2, 0.7) * height
    w = h * rng.uniform(0.3, 0.7)
    return _clip(np.array([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]), width, height)


def _clip(box: np.ndarray, width: int, height: int) -> np.ndarray:
    x0, y0 = np.clip(box[0], 0, width - 2), np.clip(box[1], 0, height - 2)
    x1, y1 = np.clip(box[0] + box[2], x0 + 1, width - 1), np.clip(box[1] + box[3], y0 + 1, height - 1)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def _record(image_id: int, box: np.ndarray, score: float) -> dict:
    return {"image_id": image_id, "bbox": [round(float(v), 2) for v in box],
            "score": round(score, 4), "category_id": 1}
