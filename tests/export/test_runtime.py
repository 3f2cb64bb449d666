"""runtime="onnxruntime": an exported model through the same detection, tracking and
decoding as the PyTorch runtime; the same keypoints within 0.01 px."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glsmamba.errors import GlsmambaError
from glsmamba.export.onnx_export import export_onnx, load_source, sidecar_path
from glsmamba.inference.estimator import PoseEstimator

from .conftest import save_tiny, walking_frames

SHARED_VIDEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "vtest.avi"
PIXELS = 0.01


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("runtime") / "ckpt")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint):
    out = tiny_checkpoint.parent / "tiny.onnx"
    export_onnx(load_source(tiny_checkpoint), out)
    return out


def _pair(checkpoint, onnx_file, **options):
    quiet = dict(detector=None, warn=lambda message: None, **options)
    torch_runtime = PoseEstimator.from_checkpoint(checkpoint, device="cpu", **quiet)
    ort_runtime = PoseEstimator.from_checkpoint(onnx_file, runtime="onnxruntime", **quiet)
    return torch_runtime, ort_runtime


def _video_keypoints(estimator, frames, detections):
    return [(r.index, [(p.track_id, p.keypoints) for p in r.people])
            for r in estimator.predict_video(frames, detections=detections)]


def _assert_same(a, b):
    assert [i for i, _ in a] == [i for i, _ in b]
    for (_, people_a), (_, people_b) in zip(a, b):
        assert [t for t, _ in people_a] == [t for t, _ in people_b]
        for (_, kp_a), (_, kp_b) in zip(people_a, people_b):
            assert np.abs(kp_a[:, :2] - kp_b[:, :2]).max() <= PIXELS
            assert np.abs(kp_a[:, 2] - kp_b[:, 2]).max() <= 1e-4


@pytest.mark.parametrize("flip", [False, True])
def test_same_keypoints_on_a_video(tiny_checkpoint, exported, flip):
    torch_runtime, ort_runtime = _pair(tiny_checkpoint, exported, flip=flip)
    assert ort_runtime.runtime == "onnxruntime" and ort_runtime.delta == torch_runtime.delta
    assert ort_runtime.codec.input_size == torch_runtime.codec.input_size
    assert ort_runtime.flip_indices == torch_runtime.flip_indices
    frames, boxes = walking_frames()
    detections = {t: ([box, [60.0, 10.0, 30.0, 70.0]], [0.9, 0.8]) for t, box in enumerate(boxes)}
    expected = _video_keypoints(torch_runtime, frames, detections)
    got = _video_keypoints(ort_runtime, frames, detections)
    assert sum(len(people) for _, people in got) == 2 * len(frames)
    _assert_same(expected, got)


def test_fixed_batch_export_runs_any_number_of_people(tiny_checkpoint, tmp_path):
    out = tmp_path / "fixed.onnx"
    export_onnx(load_source(tiny_checkpoint), out, batch=2)
    torch_runtime, ort_runtime = _pair(tiny_checkpoint, out, batch_size=16)
    frames, boxes = walking_frames(3)
    people = [boxes[1], [5.0, 5.0, 40, 80], [70.0, 10.0, 30.0, 60.0]]   # 3 people, batch 2
    expected = torch_runtime.predict_clip(frames, people)
    got = ort_runtime.predict_clip(frames, people)
    assert got.shape == (3, 17, 3) and np.abs(got[..., :2] - expected[..., :2]).max() <= PIXELS


def test_the_file_alone_is_enough(tiny_checkpoint, exported, tmp_path):
    """Without the sidecar the graph's own metadata describes it."""
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes(exported.read_bytes())
    estimator = PoseEstimator.from_onnx(alone, detector=None)
    assert estimator.delta == 1 and estimator.model.num_joints == 17
    sidecar_path(alone).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(GlsmambaError, match="not a glsmamba export"):
        PoseEstimator.from_onnx(alone, detector=None)


def test_runtime_errors(tiny_checkpoint, exported, tmp_path):
    from glsmamba.errors import ConfigError
    with pytest.raises(ConfigError, match="runtime must be one of"):
        PoseEstimator.from_checkpoint(tiny_checkpoint, runtime="tensorrt", detector=None)
    with pytest.raises(GlsmambaError, match="not found"):
        PoseEstimator.from_onnx(tmp_path / "missing.onnx", detector=None)
    features = tmp_path / "features.onnx"
    export_onnx(load_source(tiny_checkpoint), features, features_only=True)
    with pytest.raises(GlsmambaError, match="features-only"):
        PoseEstimator.from_onnx(features, detector=None)
    with pytest.raises(ConfigError, match="CPU"):
        PoseEstimator.from_onnx(exported, device="cuda", detector=None)


def test_infer_command_with_onnxruntime(tiny_checkpoint, exported, tmp_path):
    import cv2

    from glsmamba.inference.infer import infer
    frames, boxes = walking_frames(5)
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    detections = tmp_path / "det.json"
    detections.write_text(json.dumps([{"frame_index": t, "bbox": b, "score": 1.0}
                                      for t, b in enumerate(boxes)]))
    results = {}
    for runtime, model in (("torch", tiny_checkpoint), ("onnxruntime", exported)):
        stats = infer(video, model, runtime=runtime, detections=str(detections),
                      out_dir=tmp_path / runtime, progress=False, log=lambda *_: None,
                      warn=lambda *_: None)
        results[runtime] = json.loads(Path(stats["json"]).read_text())["annotations"]
    assert len(results["torch"]) == len(results["onnxruntime"]) == 5
    for a, b in zip(results["torch"], results["onnxruntime"]):
        assert np.abs(np.subtract(a["keypoints"], b["keypoints"])).max() <= PIXELS + 0.005  # JSON rounds to 0.01


@pytest.mark.skipif(not SHARED_VIDEO.is_file(), reason="../shared/data/vtest.avi not present")
def test_same_keypoints_on_the_shared_video(tiny_checkpoint, exported):
    torch_runtime, ort_runtime = _pair(tiny_checkpoint, exported)
    detections = {t: ([[300.0, 150.0, 60.0, 150.0], [500.0, 200.0, 50.0, 140.0]], [1.0, 1.0])
                  for t in range(4)}
    frames = list(torch_runtime.open(str(SHARED_VIDEO), max_frames=4))
    expected = _video_keypoints(torch_runtime, frames, detections)
    got = _video_keypoints(ort_runtime, frames, detections)
    assert len(got) == 4
    _assert_same(expected, got)
