"""Streaming clips through the ring buffer: clamping at both ends, few frames held."""
from __future__ import annotations

from glsmamba.inference.clips import clamped_window, stream_clips


def test_stream_clips_clamps_and_holds_few_frames():
    frames = iter(range(7))
    got = [(t, list(window)) for t, window in stream_clips(frames, delta=2)]
    assert [t for t, _ in got] == list(range(7))
    assert got[0][1] == [0, 0, 0, 1, 2] and got[3][1] == [1, 2, 3, 4, 5]
    assert got[6][1] == [4, 5, 6, 6, 6] and got[5][1] == clamped_window(5, 2, 6)
    short = [w for _, w in stream_clips(iter(range(2)), delta=2)]
    assert short == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
