"""glsmamba infer under bad input and interruptions: clear errors or reported handling,
previous outputs kept on failure, valid partial outputs on Ctrl-C; camera / stream / --show."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from glsmamba.cli import main
from glsmamba.errors import ConfigError, DataError
from glsmamba.inference import infer as infer_module
from glsmamba.inference import sources
from glsmamba.inference.infer import infer

pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(**kwargs):
    return dict(progress=False, log=lambda *_: None, **kwargs)


def detections_file(path, boxes, extra=()):
    records = [{"frame_index": t, "bbox": b, "score": 0.9} for t, b in enumerate(boxes)]
    path.write_text(json.dumps(records + list(extra)))
    return str(path)


def mp4_frames(path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def write_folder(folder, frames):
    folder.mkdir()
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:06d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


# ---------------------------------------------------------------- data loss
def test_failed_run_keeps_previous_outputs(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    det = detections_file(tmp_path / "det.json", boxes)
    first = infer(frames, tiny_checkpoint, detections=det, out_dir=tmp_path / "out", **quiet())
    before = {p: p.read_bytes() for p in (first["json"], first["mp4"])}

    def broken():
        for t, frame in enumerate(frames):
            if t == 4:
                raise RuntimeError("decoder died")
            yield frame

    with pytest.raises(RuntimeError, match="decoder died"):
        infer(broken(), tiny_checkpoint, detections=det, out_dir=tmp_path / "out", **quiet())
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frames.json", "frames.mp4"]


def test_ctrl_c_leaves_valid_json_and_playable_mp4(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    det = detections_file(tmp_path / "det.json", boxes)

    def interrupted():
        for t, frame in enumerate(frames):
            if t == 6:
                raise KeyboardInterrupt
            yield frame

    stats = infer(interrupted(), tiny_checkpoint, detections=det, out_dir=tmp_path / "out",
                  **quiet())
    assert stats["interrupted"] and stats["written"]
    done = stats["frames"]
    assert 1 <= done <= 6
    result = json.loads(stats["json"].read_text())
    assert [i["id"] for i in result["images"]] == list(range(done))
    assert all(i["nframes"] == done for i in result["images"])
    assert len(result["annotations"]) == done
    assert mp4_frames(stats["mp4"]) == done
    assert not list((tmp_path / "out").glob(".*partial*"))


# ---------------------------------------------------------------- boxes
def test_nan_and_bad_records_in_detections_are_errors(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    for record, message in [
            ({"frame_index": 2, "bbox": [float("nan"), 1, 5, 5]}, "four finite numbers"),
            ({"frame_index": 2, "bbox": [1, 1, 1e40, 5]}, "four finite numbers"),
            ({"frame_index": 2, "bbox": [1, 1, 5, 5], "score": float("inf")}, "score"),
            ({"frame_index": -1, "bbox": [1, 1, 5, 5]}, "frame index >= 0"),
            ({"frame_index": 1.5, "bbox": [1, 1, 5, 5]}, "frame index >= 0")]:
        det = detections_file(tmp_path / "det.json", boxes, [record])
        with pytest.raises(DataError, match=message) as err:
            infer(frames, tiny_checkpoint, detections=det, out_dir=tmp_path / "out", **quiet())
        assert "det.json" in str(err.value) and f"detection {len(boxes)}" in str(err.value)


def test_boxes_outside_image_clipped_or_dropped_with_warning(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    extra = [{"frame_index": 1, "bbox": [-30, -10, 60, 50]},          # partly outside: clipped
             {"frame_index": 2, "bbox": [0, 0, 1e30, 1e30]},         # huge: clipped to image
             {"frame_index": 3, "bbox": [1e30, 5, 10, 10]},          # outside: dropped
             {"frame_index": 4, "bbox": [500, 500, 10, 10]}]         # outside: dropped
    det = detections_file(tmp_path / "det.json", boxes, extra)
    warnings = []
    stats = infer(frames, tiny_checkpoint, detections=det, out_dir=tmp_path / "out",
                  warn=warnings.append, **quiet())
    result = json.loads(stats["json"].read_text())
    assert len(result["annotations"]) == len(boxes) + 2
    for ann in result["annotations"]:
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 128 + 1e-3 and y + h <= 96 + 1e-3
        assert np.isfinite(ann["keypoints"]).all()
    text = " ".join(warnings)
    assert "2 box(es) reaching outside the image were clipped" in text
    assert "2 box(es) entirely outside the image were dropped (first in frame 3)" in text


def test_detections_past_the_end_of_the_video_warned(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    det = detections_file(tmp_path / "det.json", boxes,
                          [{"frame_index": 20, "bbox": [1, 1, 5, 5]},
                           {"frame_index": 31, "bbox": [1, 1, 5, 5]}])
    warnings = []
    infer(frames, tiny_checkpoint, detections=det, out_dir=tmp_path / "out",
          warn=warnings.append, **quiet())
    assert any("2 detection(s) for frame indices 20..31 past the end of the video (8 frames"
               in w and "ignored" in w for w in warnings), warnings
    warnings.clear()      # cut short on purpose with --max-frames: no warning
    infer(frames, tiny_checkpoint, detections=det, out_dir=tmp_path / "out", max_frames=4,
          warn=warnings.append, **quiet())
    assert not warnings


# ---------------------------------------------------------------- frames
def test_mixed_frame_sizes_in_a_folder_is_an_error(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    folder = write_folder(tmp_path / "frames", frames)
    cv2.imwrite(str(folder / "000005.jpg"), np.zeros((48, 64, 3), np.uint8))
    det = detections_file(tmp_path / "det.json", boxes)
    with pytest.raises(DataError, match="frame size 64x48 differs from the first frame's 128x96") as err:
        infer(folder, tiny_checkpoint, detections=det, out_dir=tmp_path / "out", **quiet())
    assert str(folder / "000005.jpg") in str(err.value)
    assert not (tmp_path / "out" / "frames.mp4").exists()


def test_truncated_jpeg_is_an_error_naming_the_file(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    folder = write_folder(tmp_path / "frames", frames)
    data = (folder / "000003.jpg").read_bytes()
    (folder / "000003.jpg").write_bytes(data[: len(data) * 2 // 3])
    det = detections_file(tmp_path / "det.json", boxes)
    with pytest.raises(DataError, match="truncated JPEG") as err:
        infer(folder, tiny_checkpoint, detections=det, out_dir=tmp_path / "out", **quiet())
    assert str(folder / "000003.jpg") in str(err.value)
    assert cv2.imread(str(folder / "000003.jpg")) is not None   # OpenCV alone accepts it


def test_truncated_video_warns_with_counts(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    path = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for frame in frames:
        writer.write(frame)
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    warnings = []
    stats = infer(path, tiny_checkpoint, detections=detections_file(tmp_path / "d.json", boxes),
                  out_dir=tmp_path / "out", warn=warnings.append, **quiet())
    assert 0 < stats["frames"] < len(frames)
    assert any(f"ended after {stats['frames']} of the 8 frames" in w for w in warnings), warnings


def test_negative_max_frames_cli(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["infer", str(tmp_path), "--checkpoint", str(tiny_checkpoint), "--max-frames", "-3"])
    assert exit_.value.code == 2
    assert "--max-frames: must be >= 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_frames must be a positive integer"):
        infer(tmp_path, tiny_checkpoint, max_frames=-3, **quiet())


# ---------------------------------------------------------------- camera / stream / show
class FakeCapture:
    """cv2.VideoCapture stand-in: a camera / stream yielding ``frames`` BGR frames."""
    opened: list = []

    def __init__(self, target, frames=6, ok=True):
        FakeCapture.opened.append(target)
        self.left, self.ok = frames, ok
        self.t = 0

    def isOpened(self):
        return self.ok

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        frame = np.full((96, 128, 3), 90, np.uint8)
        x = 10 + 6 * self.t
        frame[20:80, x:x + 20] = 200
        self.t += 1
        return True, frame

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


@pytest.mark.parametrize("source,name", [("0", "camera0"), (0, "camera0"),
                                         ("rtsp://cam.local:554/live/main", "cam.local_554_live_main")])
def test_camera_and_stream_sources(tiny_checkpoint, tmp_path, monkeypatch, source, name):
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    FakeCapture.opened = []
    stats = infer(source, tiny_checkpoint, detector="motion", out_dir=tmp_path / "out", **quiet())
    assert FakeCapture.opened[0] == (0 if name == "camera0" else source)
    assert stats["json"].name == f"{name}.json" and stats["frames"] == 6
    assert mp4_frames(stats["mp4"]) == 6


def test_camera_that_does_not_open(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda target: FakeCapture(target, ok=False))
    with pytest.raises(DataError, match="camera 2: cannot open camera"):
        infer("2", tiny_checkpoint, out_dir=tmp_path / "out", **quiet())


def test_show_without_display_says_so(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ConfigError, match="--show: (no display|this OpenCV build has no GUI)"):
        infer_module.check_display()


def test_show_window_q_stops_and_keeps_outputs(tiny_checkpoint, walking, tmp_path, monkeypatch):
    frames, boxes = walking
    shown = []
    monkeypatch.setattr(infer_module, "check_display", lambda: None)
    monkeypatch.setattr(infer_module, "_show", lambda canvas, title: shown.append(canvas) or len(shown) == 3)
    monkeypatch.setattr(infer_module.cv2, "destroyAllWindows", lambda: None)
    stats = infer(frames, tiny_checkpoint, detections=detections_file(tmp_path / "d.json", boxes),
                  out_dir=tmp_path / "out", show=True, **quiet())
    assert stats["interrupted"] and stats["frames"] == 3 and len(shown) == 3
    assert shown[0].shape == (96, 128, 3) and mp4_frames(stats["mp4"]) == 3


def test_output_folder_that_is_a_file_and_bad_detector_options(tiny_checkpoint, walking, tmp_path):
    frames, boxes = walking
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(DataError, match="cannot write the output folder") as err:
        infer(frames, tiny_checkpoint, detections=detections_file(tmp_path / "d.json", boxes),
              out_dir=tmp_path / "taken", **quiet())
    assert str(tmp_path / "taken") in str(err.value)
    for options, message in [({"det_upscale": 0.0}, "upscale"), ({"det_thr": float("nan")}, "threshold"),
                             ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ConfigError, match=message):
            infer(frames, tiny_checkpoint, out_dir=tmp_path / "out", **quiet(), **options)


def test_cli_infer_with_log_progress(tiny_checkpoint, walking, tmp_path, capsys):
    frames, boxes = walking
    folder = write_folder(tmp_path / "clip", frames)
    det = detections_file(tmp_path / "d.json", boxes)
    rc = main(["infer", str(folder), "--checkpoint", str(tiny_checkpoint), "--detections", det,
               "--out", str(tmp_path / "out"), "--progress", "log"])
    captured = capsys.readouterr()
    assert rc == 0 and "8 frames, 8 poses" in captured.out
    assert "\r" not in captured.err and "infer: 8/8 frame" in captured.err
    assert mp4_frames(tmp_path / "out" / "clip.mp4") == 8



def test_sigint_to_a_running_infer_keeps_valid_outputs(tiny_checkpoint, tmp_path):
    """A real Ctrl-C (SIGINT) to ``glsmamba infer`` running in another process."""
    import os
    import signal
    import subprocess
    import sys
    import time
    frames = [np.full((96, 128, 3), 60 + t % 100, np.uint8) for t in range(400)]
    folder = write_folder(tmp_path / "long", frames)
    det = detections_file(tmp_path / "d.json", [[20.0, 10.0, 40.0, 70.0]] * len(frames))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLSMAMBA_PROGRESS="none")
    proc = subprocess.Popen([sys.executable, "-m", "glsmamba", "infer", str(folder),
                             "--checkpoint", str(tiny_checkpoint), "--detections", det,
                             "--out", str(out), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    partial = out / ".long.partial.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_file() and partial.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    assert b"stopped after" in stdout
    result = json.loads((out / "long.json").read_text())
    done = len(result["images"])
    assert 5 <= done < len(frames)
    assert mp4_frames(out / "long.mp4") == done
    assert not partial.exists()
