"""Local Refinement Mamba (LRM) block.

The GSM block without channel attention, with the windowed space-time scan (WSTS)
instead of STS6D + STMM: tube windows of ``window`` (h x w) x T, frame after frame inside
a window, forward and reversed, the two directions summed. ``window_reset=True``
(default) restarts the state at every window (windows batched: parallel, cheaper);
``False`` carries it across windows as one sequence per direction.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from glsmamba.models.layers import DropPath, FeedForward, ResidualBlock
from glsmamba.models.mixer import SelectiveScanMixer, sum_directions
from glsmamba.models.scan_paths import wsts_paths


def _wsts(window: tuple[int, int], reset: bool, T: int, H: int, W: int, device: str):
    return wsts_paths(T, H, W, window, reset, device)


class LRMBlock(ResidualBlock):
    """Local Refinement Mamba block on (B, T, H, W, D) tokens."""

    def __init__(self, dim: int, window: tuple[int, int] = (8, 6), window_reset: bool = True,
                 d_state: int = 16, expand: float = 2.0, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, scan_backend: str = "auto"):
        super().__init__()
        self.window, self.window_reset = tuple(window), window_reset
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = SelectiveScanMixer(
            dim, functools.partial(_wsts, self.window, window_reset), 2, sum_directions,
            d_state, expand, scan_backend=scan_backend)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, mlp_ratio)

    def _mixer_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.mixer(self.norm1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, D) -> same shape."""
        return self.residual(x)
