"""Detectors and detections files: the motion detector, detections JSON errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsmamba.errors import DataError
from glsmamba.inference.detectors import MotionPersonDetector, load_video_detections
from glsmamba.inference.sources import FrameSource
from glsmamba.trackers import box_iou


def test_motion_detector_finds_moving_blob(tmp_path, write_video):
    boxes = write_video(tmp_path / "walk.mp4", frames=12)
    detector = MotionPersonDetector(score_thr=0.0, min_area_frac=0.01)
    found = [detector(frame) for frame in FrameSource.open(tmp_path / "walk.mp4")]
    last_boxes, _ = found[-1]
    assert len(last_boxes) >= 1
    assert box_iou(last_boxes, np.asarray([boxes[-1]], np.float32)).max() > 0.5


def test_detections_file_errors(tmp_path, write_video):
    write_video(tmp_path / "v.mp4", frames=3)
    source = FrameSource.open(tmp_path / "v.mp4")
    path = tmp_path / "det.json"
    path.write_text(json.dumps([{"frame_index": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
                                {"frame_index": 1, "bbox": [1, 2, 3, 4], "score": 0.1}]))
    table = load_video_detections(path, source, score_thr=0.5)
    assert list(table) == [1] and table[1][0].shape == (1, 4)
    path.write_text(json.dumps([{"frame_index": 0, "bbox": [1, 2, 0, 4]}]))
    with pytest.raises(DataError, match="detection 0"):
        load_video_detections(path, source)
    path.write_text("[{")
    with pytest.raises(DataError, match="malformed JSON"):
        load_video_detections(path, source)


def test_clip_boxes_clips_drops_and_counts():
    from glsmamba.inference.detectors import BoxReport, clip_boxes
    boxes = np.array([[10, 10, 20, 20],          # inside: unchanged
                      [-5, 90, 20, 20],          # corner outside: clipped to (0, 90, 15, 6)
                      [200, 10, 5, 5],           # right of the image: dropped
                      [np.nan, 1, 2, 2],         # NaN: dropped
                      [0, 0, 1e30, 1e30]],       # huge: the whole image
                     np.float64)
    report = BoxReport()
    kept, scores = clip_boxes(boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), (128, 96), 7, report)
    assert kept.tolist() == [[10, 10, 20, 20], [0, 90, 15, 6], [0, 0, 128, 96]]
    assert np.allclose(scores, [0.9, 0.8, 0.5])
    assert (report.clipped, report.dropped_outside, report.dropped_invalid) == (2, 1, 1)
    assert "first in frame 7" in report.message()
    with pytest.raises(DataError, match="2 boxes but 1 scores"):
        clip_boxes(boxes[:2], np.array([1.0]), (128, 96), 0)
