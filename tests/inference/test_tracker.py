"""IoU tracking: ids kept across frames, new ids for new boxes."""
from __future__ import annotations

import numpy as np

from glsmamba.inference.tracker import IouTracker, box_iou


def test_iou_tracker_keeps_ids():
    tracker = IouTracker(iou_thr=0.3)
    a = np.array([[0, 0, 10, 20], [50, 50, 10, 20]], np.float32)
    assert tracker.update(a) == [0, 1]
    assert tracker.update(a[::-1] + 1) == [1, 0]
    assert tracker.update(np.array([[200, 200, 5, 5]], np.float32)) == [2]
    assert box_iou(a, a).diagonal().tolist() == [1.0, 1.0]
