"""The ONNX person detector on tiny end-to-end models built here with onnx.helper."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from glsmamba.errors import ConfigError, DataError  # noqa: E402
from glsmamba.inference.onnx_detector import OnnxDetector  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dets_labels_model(path, dets, labels, size=(64, 64)):
    """mmdeploy layout: dets (1, N, 5), labels (1, N); the score of row 0 is the mean of
    the (normalised) input, so the preprocessing shows in the output."""
    const_dets = numpy_helper.from_array(np.asarray(dets, np.float32)[None], "const_dets")
    const_labels = numpy_helper.from_array(np.asarray(labels, np.int64)[None], "const_labels")
    mask = np.zeros((1, len(dets), 5), np.float32)
    mask[0, 0, 4] = 1.0
    keep = numpy_helper.from_array(1.0 - mask, "keep")
    mask_t = numpy_helper.from_array(mask, "mask")
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["const_dets", "keep"], ["kept"]),
        helper.make_node("Mul", ["mask", "mean"], ["score"]),
        helper.make_node("Add", ["kept", "score"], ["dets"]),
        helper.make_node("Identity", ["const_labels"], ["labels"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_det",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size[1], size[0]])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, len(dets), 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, len(dets)])],
        initializer=[const_dets, const_labels, keep, mask_t])
    return save(graph, path)


def n6_model(path, rows):
    const = numpy_helper.from_array(np.asarray(rows, np.float32)[None], "rows")
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "zero")
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["rows", "nothing"], ["output0"])]
    graph = helper.make_graph(
        nodes, "tiny_n6",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, len(rows), 6])],
        initializer=[const, zero])
    return save(graph, path)


def test_dets_labels_layout_scales_back_and_filters(tmp_path):
    # boxes in the 64 x 64 network input; the 128 x 64 frame is resized by 0.5
    dets = [[0, 0, 10, 20, 0.0], [10, 8, 30, 28, 0.8], [5, 5, 9, 9, 0.9], [1, 1, 2, 2, 0.1]]
    labels = [0, 0, 2, 0]                          # row 2 is not a person, row 3 scores low
    path = dets_labels_model(tmp_path / "det.onnx", dets, labels)
    frame = np.full((64, 128, 3), 200, np.uint8)
    detector = OnnxDetector(path, score_thr=0.3, mean=(0, 0, 0), std=(255, 255, 255))
    assert detector.input_size == (64, 64) and detector.layout == "dets_labels"
    boxes, scores = detector(frame)
    # row 0's score = mean input: top half 200/255, bottom half pad 114/255
    expected_mean = (200 + 114) / 2 / 255
    assert len(boxes) == 2
    assert np.allclose(scores, [expected_mean, 0.8], atol=1e-4)
    assert np.allclose(boxes[0], [0, 0, 20, 40]) and np.allclose(boxes[1], [20, 16, 40, 40])


def test_n6_layout_letterbox_and_rgb(tmp_path):
    rows = [[16, 16, 48, 48, 0.7, 0], [0, 0, 4, 4, 0.9, 1]]
    path = n6_model(tmp_path / "yolo.onnx", rows)
    detector = OnnxDetector(path, score_thr=0.5, input_size=(64, 64), mean=(0, 0, 0),
                            std=(255, 255, 255), channels="rgb", pad="center")
    assert detector.layout == "n6"
    boxes, scores = detector(np.zeros((32, 64, 3), np.uint8))   # scale 1, offset y = 16
    assert np.allclose(boxes, [[16, 0, 32, 32]]) and np.allclose(scores, [0.7])


def test_onnx_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="--detector-weights"):
        OnnxDetector(None)
    with pytest.raises(DataError, match="not found"):
        OnnxDetector(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match="cannot load the ONNX model") as err:
        OnnxDetector(tmp_path / "bad.onnx")
    assert "bad.onnx" in str(err.value)


def test_onnx_detector_in_infer(tiny_checkpoint, walking, tmp_path):
    from glsmamba.inference.infer import infer
    frames, boxes = walking
    # the person box of frame 0 in the 128 x 96 frame -> 64 x 48 (scale 0.5) in the input
    x, y, w, h = boxes[0]
    dets = [[x / 2, y / 2, (x + w) / 2, (y + h) / 2, 0.0]]
    path = dets_labels_model(tmp_path / "det.onnx", dets, [0], size=(64, 64))
    stats = infer(frames, tiny_checkpoint, detector="onnx", detector_weights=str(path),
                  det_thr=0.0, out_dir=tmp_path / "out", progress=False,
                  detector_options={"mean": (0, 0, 0), "std": (1, 1, 1)})
    assert stats["frames"] == len(frames) and stats["people"] == len(frames)
    first = json.loads(stats["json"].read_text())["annotations"][0]
    assert np.allclose(first["bbox"], boxes[0], atol=1e-3)
