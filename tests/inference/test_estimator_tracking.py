"""Tracking inside ``PoseEstimator.predict_video`` and ``glsmamba infer``'s JSON as tracking input."""
from __future__ import annotations

import json

import numpy as np
import pytest


def _two_walkers(count: int = 10, size=(160, 96)):
    """RGB frames of two textured rectangles crossing, with their boxes per frame."""
    rng = np.random.default_rng(1)
    frames, boxes = [], {}
    for t in range(count):
        frame = np.full((size[1], size[0], 3), 90, np.uint8)
        xs = (10 + 6 * t, 130 - 6 * t)
        for x in xs:
            frame[20:80, x:x + 20] = rng.integers(150, 255, (60, 20, 3), dtype=np.uint8)
        frames.append(frame)
        boxes[t] = (np.array([[xs[0], 20, 20, 60], [xs[1], 20, 20, 60]], np.float32),
                    np.array([0.9, 0.9], np.float32))
    return frames, boxes


@pytest.mark.parametrize("method", ["pose", "iou"])
def test_predict_video_assigns_track_ids_with_either_tracker(tiny_checkpoint, method):
    from glsmamba.inference import PoseEstimator
    estimator = PoseEstimator.from_checkpoint(tiny_checkpoint, device="cpu", detector=None,
                                              warn=lambda m: None, tracker=method)
    frames, boxes = _two_walkers(6)
    results = list(estimator.predict_video(frames, detections=boxes))
    ids = [[p.track_id for p in r.people] for r in results]
    assert all(len(set(frame)) == 2 and min(frame) >= 0 for frame in ids)
    assert all(frame == [0, 1] for frame in ids)       # apart, slow: either tracker keeps them
    assert estimator.last_stats["track_seconds"] >= 0.0


def test_infer_json_scores_with_eval_predictions_tracking(tiny_config, tmp_path, capsys):
    """``glsmamba infer``'s JSON is valid PoseTrack tracking input: scored against itself
    (as GT, given head boxes) every joint's MOTA is 100."""
    import cv2
    from glsmamba.cli import main
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    tiny_config["track"]["method"] = "pose"
    model = build_model(tiny_config, log=lambda *_: None)
    save_checkpoint(tmp_path / "ckpt", "last", model, {"config": tiny_config})
    frames, boxes = _two_walkers(5)
    (tmp_path / "frames").mkdir()
    for t, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / "frames" / f"{t:06d}.png"), frame[..., ::-1])
    detections = [{"frame_index": t, "bbox": b.tolist(), "score": 0.9}
                  for t, (bs, _) in boxes.items() for b in bs]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    assert main(["infer", str(tmp_path / "frames"), "--checkpoint", str(tmp_path / "ckpt"),
                 "--detections", str(tmp_path / "dets.json"), "--out", str(tmp_path / "out"),
                 "--no-progress", "--tracker", "pose"]) == 0
    pred_file = next((tmp_path / "out").glob("*.json"))
    data = json.loads(pred_file.read_text())
    for ann in data["annotations"]:                    # the same file as GT: add head boxes
        x, y, w, h = ann["bbox"]
        ann["bbox_head"] = [x, y, w, h / 4]
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / pred_file.name).write_text(json.dumps(data))
    out = tmp_path / "mot.json"
    assert main(["eval-predictions", "--gt", str(tmp_path / "gt"), "--pred", str(pred_file),
                 "--tracking", "--json", str(out)]) == 0
    mota = json.loads(out.read_text())["mota"]
    assert len(mota) == 16 and mota[15] == pytest.approx(100.0)
