"""Inference inputs of issue 18: wrong box / detections shapes are one-line errors, and a
video losing a frame in the middle keeps its timeline (classes 5 and 6)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from glsmamba.errors import DataError
from glsmamba.inference.sources import FrameSource

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("boxes, message", [
    ([[10, 20, 20]], r"boxes must be \(N, 4\)"),
    ([[10, 20, 20, 60, 1]], r"boxes must be \(N, 4\)"),
    ([10, 20, 20, 60, 5, 5, 5, 5], r"boxes must be \(N, 4\)"),     # not silently 2 boxes
    ([["a", "b", "c", "d"]], "boxes and scores must be numbers"),
])
def test_predict_clip_box_of_the_wrong_length(estimator, walking, boxes, message):
    frames, good = walking
    clip = frames[:estimator.clip_length]
    with pytest.raises(DataError, match=message):
        estimator.predict_clip(clip, boxes)
    assert estimator.predict_clip(clip, good[1]).shape == (1, estimator.num_joints, 3)


@pytest.mark.parametrize("detections, message", [
    ({0: ([[1, 2, 3]], [0.9])}, r"detections\[0\]: boxes must be \(N, 4\)"),
    ({0: ([[1, 2, 30, 40]], [0.9, 0.8])}, r"detections\[0\]: 1 boxes but 2 scores"),
    ({0: [[1, 2, 30, 40]]}, r"detections\[0\]: each value must be a \(boxes"),
    ({"first": ([[1, 2, 30, 40]], [0.9])}, "keys must be frame indices"),
    ({-1: ([[1, 2, 30, 40]], [0.9])}, "keys must be frame indices"),
])
def test_detections_dict_with_wrong_shapes_or_keys(estimator, walking, detections, message):
    frames, _ = walking
    with pytest.raises(DataError, match=message):
        list(estimator.predict_video(frames, detections=detections))


def _mjpeg_losing_frame(path, lost: int, count: int = 20):
    """An MJPG AVI of uniform frames (value 8 t) whose frame ``lost`` is corrupt."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for t in range(count):
        writer.write(np.full((24, 32, 3), 8 * t, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == count
    end = data.rfind(b"\xff\xd9", starts[lost], starts[lost + 1]) + 2
    data[starts[lost]:end] = bytes(end - starts[lost])      # no JPEG data left: undecodable
    path.write_bytes(bytes(data))


def test_a_video_losing_a_frame_keeps_its_timeline(tmp_path):
    path = tmp_path / "clip.avi"
    _mjpeg_losing_frame(path, lost=7)
    warnings = []
    source = FrameSource.open(str(path), warn=warnings.append)
    frames = list(source)
    values = [round(frame.mean() / 8) for frame in frames]     # frame t is 8 t
    assert len(frames) >= 19
    assert values[:7] == list(range(7)) and values[7] == 6          # frame 7: the one before
    assert values[8:19] == list(range(8, 19))                        # later frames in place
    assert any("frames 7)" in w and "timeline" in w for w in warnings), warnings
