"""Streaming clips t-δ..t+δ through a ring buffer, and the one-affine crop of a clip.

Memory stays bounded on long videos: frames live in a ring buffer of 2δ+1 frames and
frame t is processed as soon as frame t+δ has been read (at the end of the video the
missing future frames are clamped to the last one, as in training). A causal window
(frames t-2δ..t, :mod:`glsmamba.data.windows`) processes frame t as soon as it is read;
its first frames repeat frame 0, as the centred window repeats the edge frames.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from glsmamba.data.transforms import MEAN_RGB, STD_RGB, get_affine_matrix
from glsmamba.data.windows import clamped_indices, delay_frames


def crop_clip(frames_rgb: Sequence[np.ndarray], center: np.ndarray, scale: np.ndarray,
              input_size: tuple[int, int], udp: bool = False) -> torch.Tensor:
    """The one affine of the centre box applied to every frame -> (T, 3, H, W) normalised
    (``udp``: the UDP crop geometry, as the codec that decodes it)."""
    matrix = get_affine_matrix(center, scale, 0.0, input_size, udp=udp)
    crops = np.stack([cv2.warpAffine(f, matrix, input_size, flags=cv2.INTER_LINEAR)
                      for f in frames_rgb])                               # (T, H, W, 3)
    clip = torch.from_numpy(crops).permute(0, 3, 1, 2).float()            # (T, 3, H, W)
    mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB).view(1, 3, 1, 1)
    return (clip - mean) / std


def clamped_window(t: int, delta: int, last: int, window: str = "centered") -> list[int]:
    """Frame indices t-δ .. t+δ (causal: t-2δ .. t) clamped to [0, last]."""
    return clamped_indices(t, delta, last, window)


def stream_clips(frames: Iterator[np.ndarray], delta: int, window: str = "centered"):
    """Yield (t, frames of the clip of t, clamped) with only 2δ+1 frames held at a time;
    frame t comes once frame t + ``delay_frames(delta, window)`` has been read."""
    delay = delay_frames(delta, window)
    ring: deque[tuple[int, np.ndarray]] = deque(maxlen=2 * delta + 1)
    last = -1
    for index, frame in enumerate(frames):
        ring.append((index, frame))
        last = index
        t = index - delay
        if t >= 0:
            yield t, _window(ring, t, delta, last, window)
    for t in range(max(0, last - delay + 1), last + 1):
        yield t, _window(ring, t, delta, last, window)


def _window(ring: deque, t: int, delta: int, last: int, window: str) -> list[np.ndarray]:
    held = dict(ring)
    return [held[i] for i in clamped_window(t, delta, last, window)]
