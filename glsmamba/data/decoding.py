"""Model outputs -> image-space keypoints: flip test, decoding, inverse affine, person scores.

Used by evaluation (:mod:`glsmamba.engine.evaluator`) and inference alike."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from glsmamba.data.codec import HeatmapCodec
from glsmamba.data.transforms import crop_to_image

JOINT_SCORE_THR = 0.2   # joints above this peak count toward the person score


@torch.no_grad()
def predict_heatmaps(model: nn.Module, clip: torch.Tensor,
                     flip_indices: Sequence[int] | None = None,
                     from_features: bool = False, codec: HeatmapCodec | None = None) -> torch.Tensor:
    """Heatmaps (B, K, h, w) of ``clip`` (B, T, 3, H, W); averaged with the mirror if flipping.

    The flip test's alignment shift is the codec's (:attr:`HeatmapCodec.flip_shift`: none
    under UDP, one pixel otherwise); without a codec the standard (non-UDP) mapping is
    assumed. ``from_features``: ``clip`` holds encoder features (B, T, C, h, w), which are
    mirrored along their width like the pixels.
    """
    run = model.forward_features if from_features else model
    heatmaps = run(clip).float()
    if flip_indices is not None:
        flipped = run(clip.flip(-1)).float()
        codec = codec if codec is not None else HeatmapCodec(udp=False)
        heatmaps = codec.merge_flip(heatmaps, flipped, flip_indices)
    return heatmaps


def person_scores(bbox_scores: np.ndarray, joint_scores: np.ndarray,
                  thr: float = JOINT_SCORE_THR) -> np.ndarray:
    """Box score x mean of the confident joint scores (all joints if none is confident)."""
    confident = joint_scores > thr                                   # (N, K)
    counts = confident.sum(axis=1)
    mean_conf = np.where(counts > 0, (joint_scores * confident).sum(axis=1) / np.maximum(counts, 1),
                         joint_scores.mean(axis=1))
    return np.asarray(bbox_scores, dtype=np.float64) * mean_conf


def decode_to_image(heatmaps: torch.Tensor, codec: HeatmapCodec, center: np.ndarray,
                    scale: np.ndarray, rotation: np.ndarray, method: str = "quarter",
                    flip_width: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, K, h, w) -> keypoints (N, K, 2) image pixels, joint scores (N, K)."""
    crop_points, scores = codec.decode(heatmaps.cpu(), method=method)
    points = crop_to_image(crop_points.numpy(), np.asarray(center), np.asarray(scale),
                           np.asarray(rotation), codec.input_size, udp=codec.udp,
                           flip_width=flip_width)
    return points.astype(np.float32), scores.numpy().astype(np.float32)
