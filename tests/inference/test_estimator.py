"""PoseEstimator: the Python API over videos, frame lists, clips; glsmamba.* exports."""
from __future__ import annotations

import pydoc

import cv2
import numpy as np
import pytest

import glsmamba
from glsmamba.errors import ConfigError, DataError
from glsmamba.inference import FrameResult, PoseEstimator

pytestmark = pytest.mark.usefixtures("one_thread")


def as_table(boxes):
    return {t: (np.asarray([b], np.float32), np.asarray([0.9], np.float32))
            for t, b in enumerate(boxes)}


def test_top_level_exports_and_documented_api():
    assert glsmamba.PoseEstimator is PoseEstimator
    assert callable(glsmamba.create_model) and callable(glsmamba.load_vitpose)
    assert ("glsmamba-tiny" in [name for name, _ in glsmamba.list_models()])
    text = pydoc.render_doc(glsmamba.PoseEstimator, renderer=pydoc.plaintext)
    for needle in ("from_checkpoint", "predict_video", "predict_clip", "Example",
                   "camera index", "RGB"):
        assert needle in text, needle


def test_predict_video_on_frame_list(estimator, walking):
    frames, boxes = walking
    results = list(estimator.predict_video(frames, detections=as_table(boxes)))
    assert [r.index for r in results] == list(range(len(frames)))
    assert all(isinstance(r, FrameResult) and len(r.people) == 1 for r in results)
    person = results[3].people[0]
    assert person.track_id == 0 and person.keypoints.shape == (17, 3)
    assert np.allclose(person.box, boxes[3])
    xs = person.keypoints[:, 0]
    assert np.all((xs > boxes[3][0] - 40) & (xs < boxes[3][0] + 60))
    assert np.array_equal(results[3].image, cv2.cvtColor(frames[3], cv2.COLOR_RGB2BGR))
    record = results[3].to_posetrack()
    assert record["image"]["id"] == 3 and len(record["annotations"][0]["keypoints"]) == 51
    assert estimator.last_stats["frames"] == len(frames) and estimator.last_stats["fps"] > 0


def test_channel_order_is_honoured(estimator, walking):
    frames, boxes = walking
    rgb = [r.people[0].keypoints for r in estimator.predict_video(frames, as_table(boxes))]
    bgr_frames = [f[:, :, ::-1].copy() for f in frames]
    bgr = [r.people[0].keypoints for r in
           estimator.predict_video(bgr_frames, as_table(boxes), channels="bgr")]
    wrong = [r.people[0].keypoints for r in estimator.predict_video(bgr_frames, as_table(boxes))]
    assert np.allclose(np.stack(rgb), np.stack(bgr))
    assert not np.allclose(np.stack(rgb), np.stack(wrong))     # the order does matter


def test_streams_lazily_from_a_generator(estimator, walking):
    frames, boxes = walking
    pulled = []

    def generate():
        for frame in frames:
            pulled.append(1)
            yield frame

    iterator = estimator.predict_video(generate(), as_table(boxes))
    first = next(iterator)
    assert first.index == 0 and len(pulled) == estimator.delta + 1   # not the whole video
    assert len(list(iterator)) == len(frames) - 1


def test_predict_clip_matches_predict_video(estimator, walking):
    frames, boxes = walking
    results = list(estimator.predict_video(frames, as_table(boxes)))
    t = 4
    clip = frames[t - estimator.delta: t + estimator.delta + 1]
    keypoints = estimator.predict_clip(clip, [boxes[t]])
    assert keypoints.shape == (1, 17, 3)
    assert np.allclose(keypoints[0], results[t].people[0].keypoints, atol=1e-4)
    with pytest.raises(ConfigError, match="needs 3 frames"):
        estimator.predict_clip(frames[:2], [boxes[0]])
    with pytest.raises(DataError, match="outside the image"):
        estimator.predict_clip(clip, [[500, 500, 10, 10]])
    assert estimator.predict_clip(clip, np.zeros((0, 4))).shape == (0, 17, 3)


def test_video_file_and_max_frames(estimator, walking, tmp_path):
    frames, boxes = walking
    writer = cv2.VideoWriter(str(tmp_path / "walk.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0,
                             (128, 96))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    results = list(estimator.predict_video(tmp_path / "walk.avi", as_table(boxes), max_frames=5))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert results[0].video == "walk" and results[0].name == "000000.jpg"
    for bad in (-3, 1.5, "7"):
        with pytest.raises(ConfigError, match="max_frames"):
            list(estimator.predict_video(frames, as_table(boxes), max_frames=bad))


def test_vtest_with_default_detector(tiny_checkpoint, shared_dir):
    estimator = PoseEstimator.from_checkpoint(tiny_checkpoint, device="cpu",
                                              warn=lambda message: None)
    results = list(estimator.predict_video(shared_dir / "data" / "vtest.avi", max_frames=3))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].image.shape == (576, 768, 3)
    people = [p for r in results for p in r.people]
    assert people, "HOG finds people in vtest.avi"
    for person in people:
        x, y, w, h = person.box
        assert 0 <= x and 0 <= y and x + w <= 768 + 1e-3 and y + h <= 576 + 1e-3
        assert np.isfinite(person.keypoints).all()


def test_from_checkpoint_reads_the_checkpoint_once(tiny_checkpoint, monkeypatch):
    """Config and weights come from one read of the checkpoint files."""
    from glsmamba import checkpoint
    reads = []
    real = checkpoint.load_checkpoint

    def counted(path):
        reads.append(path)
        return real(path)

    monkeypatch.setattr(checkpoint, "load_checkpoint", counted)
    monkeypatch.setattr("glsmamba.engine.builder.load_checkpoint", counted)
    estimator = PoseEstimator.from_checkpoint(tiny_checkpoint, device="cpu", detector=None)
    assert len(reads) == 1 and estimator.model is not None
