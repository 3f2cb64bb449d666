"""The MP4 writer: H.264 through PyAV when installed (what browsers play), else mp4v;
even sizes, atomic replacement, and errors that name the file."""
from __future__ import annotations

import importlib.util
import sys

import cv2
import numpy as np
import pytest

from glsmamba.errors import DataError
from glsmamba.inference.drawing import VideoWriter, open_video_writer

needs_av = pytest.mark.skipif(importlib.util.find_spec("av") is None,
                              reason="PyAV is not installed (pip install av)")


def _frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """Frames whose mean brightness encodes their index (survives lossy coding)."""
    return [np.full((height, width, 3), 20 + 20 * i, np.uint8) for i in range(count)]


def _read(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


@needs_av
def test_h264_through_pyav_plays_in_browsers(tmp_path):
    import av
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 10, (161, 121)) as writer:      # odd sizes: padded to even
        for frame in _frames(8, 161, 121):
            writer.write(frame)
    assert writer.codec == "H.264 (PyAV)" and writer.frames == 8
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"    # what browsers decode
        assert (stream.width, stream.height) == (162, 122)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")          # index first: streams at once
    decoded = _read(path)
    assert len(decoded) == 8
    means = [frame[:121, :161].mean() for frame in decoded]
    # in order, none dropped (YUV 4:2:0 conversion moves grey levels by a few units)
    np.testing.assert_allclose(means, [20 + 20 * i for i in range(8)], atol=6)


def test_without_pyav_or_imageio_the_writer_falls_back_to_mp4v(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    path = tmp_path / "out.mp4"
    writer = open_video_writer(path, 10, (64, 48))
    for frame in _frames(5, 64, 48):
        writer.write(frame)
    writer.release()
    assert writer.codec.startswith("MPEG-4 Part 2 (mp4v")
    assert len(_read(path)) == 5
    with pytest.raises(DataError, match="H.264 needs PyAV"):
        VideoWriter(tmp_path / "h264.mp4", 10, (64, 48), codec="h264")


def test_forced_mp4v_and_bad_inputs(tmp_path):
    writer = VideoWriter(tmp_path / "a.mp4", 10, (64, 48), codec="mp4v")
    assert writer.codec.startswith("MPEG-4 Part 2")
    with pytest.raises(DataError, match=r"frame of 32x48 for a 64x48 video"):
        writer.write(np.zeros((48, 32, 3), np.uint8))
    writer.release()
    with pytest.raises(DataError, match="codec must be one of auto, h264, mp4v"):
        VideoWriter(tmp_path / "b.mp4", 10, (64, 48), codec="vp9")


def test_atomic_writer_keeps_the_previous_file_when_aborted(tmp_path):
    path = tmp_path / "report.mp4"
    path.write_bytes(b"the previous video")
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 10, (64, 48), atomic=True) as writer:
            writer.write(_frames(1, 64, 48)[0])
            raise RuntimeError("drawing failed")
    assert path.read_bytes() == b"the previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.mp4"]   # no partial left
    with VideoWriter(path, 10, (64, 48), atomic=True) as writer:
        for frame in _frames(3, 64, 48):
            writer.write(frame)
    assert len(_read(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.mp4"]
