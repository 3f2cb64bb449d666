"""``glsmamba infer``: JSON + playable MP4 outputs on a test video and on vtest.avi."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_infer_writes_json_and_playable_mp4(tiny_config, tmp_path, write_video):
    from glsmamba.inference.infer import infer
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
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
    from glsmamba.inference.infer import infer
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    model = build_model(tiny_config, log=lambda *_: None)
    save_checkpoint(tmp_path / "ckpt", "last", model, {"config": tiny_config})
    stats = infer(shared_dir / "data" / "vtest.avi", tmp_path / "ckpt", out_dir=tmp_path / "out",
                  max_frames=6, progress=False, log=lambda *_: None)
    assert stats["frames"] == 6
    capture = cv2.VideoCapture(str(stats["mp4"]))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (768, 576)
