"""Inference on videos: streaming clips, tracking, detectors, JSON + MP4 outputs, bad inputs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from glsmamba.engine.video import (FrameSource, IouTracker, MotionPersonDetector, box_iou,
                                   clamped_window, load_video_detections, stream_clips)
from glsmamba.errors import DataError


def write_video(path, frames: int = 10, size=(128, 96)):
    """A grey background with a textured 'person' rectangle walking right."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    rng = np.random.default_rng(0)
    boxes = []
    for t in range(frames):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        x = 10 + 6 * t
        frame[20:80, x:x + 20] = rng.integers(150, 255, (60, 20, 3), dtype=np.uint8)
        writer.write(frame)
        boxes.append([x, 20, 20, 60])
    writer.release()
    return boxes


def test_stream_clips_clamps_and_holds_few_frames():
    frames = iter(range(7))
    got = [(t, list(window)) for t, window in stream_clips(frames, delta=2)]
    assert [t for t, _ in got] == list(range(7))
    assert got[0][1] == [0, 0, 0, 1, 2] and got[3][1] == [1, 2, 3, 4, 5]
    assert got[6][1] == [4, 5, 6, 6, 6] and got[5][1] == clamped_window(5, 2, 6)
    short = [w for _, w in stream_clips(iter(range(2)), delta=2)]
    assert short == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]


def test_iou_tracker_keeps_ids():
    tracker = IouTracker(iou_thr=0.3)
    a = np.array([[0, 0, 10, 20], [50, 50, 10, 20]], np.float32)
    assert tracker.update(a) == [0, 1]
    assert tracker.update(a[::-1] + 1) == [1, 0]
    assert tracker.update(np.array([[200, 200, 5, 5]], np.float32)) == [2]
    assert box_iou(a, a).diagonal().tolist() == [1.0, 1.0]


def test_motion_detector_finds_moving_blob(tmp_path):
    boxes = write_video(tmp_path / "walk.mp4", frames=12)
    detector = MotionPersonDetector(score_thr=0.0, min_area_frac=0.01)
    found = [detector(frame) for frame in FrameSource.open(tmp_path / "walk.mp4")]
    last_boxes, _ = found[-1]
    assert len(last_boxes) >= 1
    assert box_iou(last_boxes, np.asarray([boxes[-1]], np.float32)).max() > 0.5


def test_unreadable_video_and_corrupt_frame(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"RIFF....AVI garbage" * 10)
    with pytest.raises(DataError, match="cannot read video") as err:
        FrameSource.open(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(DataError, match="not found"):
        FrameSource.open(tmp_path / "missing.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), np.zeros((32, 32, 3), np.uint8))
    (folder / "000001.jpg").write_bytes(b"broken")
    source = FrameSource.open(folder)
    with pytest.raises(DataError, match="cannot decode image") as err:
        list(source)
    assert "000001.jpg" in str(err.value)


def test_detections_file_errors(tmp_path):
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


def test_infer_writes_json_and_playable_mp4(tiny_config, tmp_path):
    from glsmamba.engine.api import infer
    from glsmamba.engine.builder import build_model
    from glsmamba.engine.checkpoint import save_checkpoint
    model = build_model(tiny_config, log=lambda *_: None)
    save_checkpoint(tmp_path / "ckpt", "last", model, {"config": tiny_config})
    boxes = write_video(tmp_path / "walk.mp4", frames=9)
    detections = [{"frame_index": t, "bbox": b, "score": 0.9} for t, b in enumerate(boxes)]
    (tmp_path / "det.json").write_text(json.dumps(detections))
    stats = infer(tmp_path / "walk.mp4", tmp_path / "ckpt", detections=str(tmp_path / "det.json"),
                  out_dir=tmp_path / "out", max_frames=7, progress=False, log=lambda *_: None)
    assert stats["frames"] == 7 and stats["people"] == 7 and stats["fps"] > 0
    result = json.loads(stats["json"].read_text())
    assert [image["frame_id"] for image in result["images"]] == list(range(7))
    assert {a["track_id"] for a in result["annotations"]} == {0}      # one track throughout
    first = result["annotations"][0]
    assert len(first["keypoints"]) == 51 and len(first["scores"]) == 17
    xs = np.asarray(first["keypoints"]).reshape(17, 3)[:, 0]
    assert np.all((xs > boxes[0][0] - 40) & (xs < boxes[0][0] + 60))  # inside the crop
    capture = cv2.VideoCapture(str(stats["mp4"]))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count += 1
        assert frame.shape == (96, 128, 3)
    assert count == 7


def test_infer_on_vtest_first_frames(tiny_config, tmp_path, shared_dir):
    from glsmamba.engine.api import infer
    from glsmamba.engine.builder import build_model
    from glsmamba.engine.checkpoint import save_checkpoint
    model = build_model(tiny_config, log=lambda *_: None)
    save_checkpoint(tmp_path / "ckpt", "last", model, {"config": tiny_config})
    stats = infer(shared_dir / "data" / "vtest.avi", tmp_path / "ckpt", out_dir=tmp_path / "out",
                  max_frames=6, progress=False, log=lambda *_: None)
    assert stats["frames"] == 6
    capture = cv2.VideoCapture(str(stats["mp4"]))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (768, 576)
