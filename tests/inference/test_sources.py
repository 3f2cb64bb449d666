"""Frame sources: unreadable videos and corrupt frames are errors naming the file."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from glsmamba.errors import DataError
from glsmamba.inference.sources import FrameSource


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
    with pytest.raises(DataError, match="not a JPEG file") as err:
        list(source)
    assert "000001.jpg" in str(err.value)


def test_truncated_png_and_frame_lists(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((16, 16, 3), 7, np.uint8))
    data = (folder / "a.png").read_bytes()
    (folder / "b.png").write_bytes(data[:-20])
    with pytest.raises(DataError, match="truncated PNG") as err:
        list(FrameSource.open(folder))
    assert "b.png" in str(err.value)
    with pytest.raises(DataError, match="a single image was given"):
        FrameSource.open(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="frame 1: expected an H x W x 3 uint8"):
        list(FrameSource.open([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)]))
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255                                     # red in RGB
    source = FrameSource.open(np.stack([rgb, rgb]))       # a T x H x W x 3 array
    assert source.count == 2 and source.size == (6, 4)
    assert [int(f[0, 0, 2]) for f in source] == [255, 255]      # red is channel 2 in BGR
