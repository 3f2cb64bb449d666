"""Pinhole camera in the y-up world: look-at pose, projection and per-pixel rays."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

WORLD_UP = np.array([0.0, 1.0, 0.0])


@dataclass
class Camera:
    eye: np.ndarray           # (3,) world position
    target: np.ndarray        # (3,) world point at the image centre
    focal: float              # pixels
    width: int
    height: int

    @cached_property
    def rotation(self) -> np.ndarray:
        """(3, 3) world -> camera; camera axes: x right, y down, z forward."""
        forward = self.target - self.eye
        forward = forward / np.linalg.norm(forward)
        right = np.cross(forward, WORLD_UP)
        right = right / max(np.linalg.norm(right), 1e-9)
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    @property
    def centre(self) -> tuple[float, float]:
        return (self.width - 1) / 2.0, (self.height - 1) / 2.0

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world -> (N, 3) camera coordinates."""
        return (np.asarray(points, dtype=np.float64) - self.eye) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world -> (N, 2) pixel coordinates and (N,) depth along the view axis."""
        camera_points = self.to_camera(points)
        depth = camera_points[:, 2]
        safe = np.maximum(depth, 1e-6)
        cx, cy = self.centre
        pixels = np.stack([self.focal * camera_points[:, 0] / safe + cx,
                           self.focal * camera_points[:, 1] / safe + cy], axis=1)
        return pixels, depth

    def rays(self) -> np.ndarray:
        """(H, W, 3) world direction of every pixel's ray (not normalised)."""
        cx, cy = self.centre
        xs = (np.arange(self.width, dtype=np.float32) - cx) / self.focal
        ys = (np.arange(self.height, dtype=np.float32) - cy) / self.focal
        grid = np.empty((self.height, self.width, 3), np.float32)
        grid[..., 0] = xs[None, :]
        grid[..., 1] = ys[:, None]
        grid[..., 2] = 1.0
        return grid @ self.rotation.astype(np.float32)
