"""Box IoU and the greedy IoU tracker that links person boxes over time into track ids."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xywh boxes a (N, 4) and b (M, 4)."""
    a_x2, a_y2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    b_x2, b_y2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(a_x2[:, None], b_x2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a_y2[:, None], b_y2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


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
