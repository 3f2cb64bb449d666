"""Clip windows: which frames a clip of T = 2δ+1 frames holds around the estimated frame t.

- ``"centered"``: frames t-δ .. t+δ, frame t in the middle (index T // 2); a live video
  waits δ frames for the future ones;
- ``"causal"``: frames t-2δ .. t, frame t last (index T - 1): no future frame, no delay.

This module is the one owner of the window names (:data:`WINDOWS`); the config, the
datasets, the models and the streaming inference take them from here.
"""
from __future__ import annotations

from glsmamba.errors import ConfigError

WINDOWS = ("centered", "causal")


def check_window(window: str) -> str:
    """``window`` itself, or a ConfigError naming the allowed windows."""
    if window not in WINDOWS:
        raise ConfigError(f"clip window must be one of {', '.join(WINDOWS)}, got {window!r}")
    return window


def window_offsets(delta: int, window: str = "centered") -> range:
    """Frame offsets from t of a clip: -δ..δ (centered) or -2δ..0 (causal)."""
    if delta < 0:
        raise ConfigError(f"delta must be >= 0, got {delta}")
    if check_window(window) == "causal":
        return range(-2 * delta, 1)
    return range(-delta, delta + 1)


def target_index(num_frames: int, window: str = "centered") -> int:
    """Index in a clip of ``num_frames`` of the estimated frame t: T // 2 or T - 1."""
    return num_frames - 1 if check_window(window) == "causal" else num_frames // 2


def delay_frames(delta: int, window: str = "centered") -> int:
    """Frames after t a stream must read before frame t can be estimated: δ or 0."""
    return max(window_offsets(delta, window))


def clamped_indices(t: int, delta: int, last: int, window: str = "centered") -> list[int]:
    """Frame indices of the clip of frame t, clamped to [0, last] (edge frames repeat)."""
    return [min(max(t + offset, 0), last) for offset in window_offsets(delta, window)]
