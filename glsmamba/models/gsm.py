"""Global Spatiotemporal Mamba (GSM) block.

::

    x (B, T, H, W, D)
    x = x + DropPath(mixer(channel_attention(norm1(x))))
    x = x + DropPath(ffn(norm2(x)))

``channel_attention`` is the sequential channel attention (each frame pooled, the frames
concatenated, MLP, sigmoid: per-frame channel weights). The mixer's main stream reads
the volume along the STS6D paths (unified / spatial / temporal, forward and reversed),
merges the two directions of each type (y_u, y_s, y_t) and fuses the types with STMM
(or sums them when ``use_stmm=False``); its gate stream is depthwise conv -> LayerNorm
-> SiLU. See docs/MODEL.md for what is stated in the paper and what is our reading.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from glsmamba.models.mixer import SelectiveScanMixer
from glsmamba.models.scan_paths import SCAN_TYPES, sts6d_paths
from glsmamba.models.layers import DropPath, FeedForward, ResidualBlock
from glsmamba.ops.deform_conv import DeformConvPack

# STMM temporal modulation: "clip" = [g_t, g_t - mean_tau g_tau]; "neighbours" = from t-1, t+1
STMM_TEMPORAL = ("clip", "neighbours")


class SequentialChannelAttention(nn.Module):
    """Per-frame channel weights from the pooled frames of the whole clip.

    (B, T, H, W, D): pool each frame -> (B, T*D) -> Linear -> ReLU -> Linear -> sigmoid
    -> (B, T, 1, 1, D) weights that rescale each frame's channels. The MLP sees every
    frame, so the block is built for a fixed ``num_frames``.
    """

    def __init__(self, dim: int, num_frames: int, reduction: float = 16):
        super().__init__()
        if reduction <= 0:
            raise ValueError(f"channel attention reduction must be positive, got {reduction}")
        self.num_frames = num_frames
        width = dim * num_frames
        hidden = max(int(width / reduction), 8)  # reduction 1: hidden = T*D
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _, _, D = x.shape
        if T != self.num_frames:
            raise ValueError(
                f"channel attention was built for {self.num_frames} frames, clip has {T}")
        pooled = x.mean(dim=(2, 3)).reshape(B, T * D)  # (B, T*D)
        weights = torch.sigmoid(self.fc2(torch.relu(self.fc1(pooled))))
        return x * weights.view(B, T, 1, 1, D)


class STMM(nn.Module):
    """Spatial- and temporal-modulated merging of the scan types (our design).

    Input: the direction-merged outputs of the n scan types, (B, n, E, L) with
    L = T*H*W. Per frame, a guide is projected from the concatenated types (1x1 conv,
    nE -> G) and completed with its deviation from the clip mean over time (temporal
    modulation, a motion cue): guide_t = [g_t, g_t - mean_tau g_tau] (2G channels). From
    the guide a zero-initialised 3x3 conv predicts, for every type separately, the
    DCNv2 offsets (spatial modulation: where to sample) and masks (adaptive per-type,
    per-position weights). A depthwise modulated deformable 3x3 conv then compensates
    each type, and the types are summed with the compensation as a residual:

        out = sum_k y_k + sum_k DCN_k(y_k; offsets_k(guide), masks_k(guide))

    ``temporal`` chooses the temporal modulation: ``"clip"`` (default) the guide above;
    ``"neighbours"`` predicts frame t's offsets and masks from its neighbouring frames,
    guide_t = [g_t, g_{t-1} - g_t, g_{t+1} - g_t] (3G channels; the clip's edge frames
    repeat, as in clip sampling), the DCPose / FAMI-Pose way of deriving the
    compensation from adjacent frames.
    """

    def __init__(self, channels: int, num_types: int = 3, guide_channels: int | None = None,
                 temporal: str = "clip"):
        super().__init__()
        if temporal not in STMM_TEMPORAL:
            raise ValueError(f"stmm temporal modulation {temporal!r}: choose one of {STMM_TEMPORAL}")
        self.channels, self.num_types, self.temporal = channels, num_types, temporal
        self.guide_channels = guide_channels or max(channels // 8, 8)
        width = channels * num_types
        self.guide = nn.Conv2d(width, self.guide_channels, 1)
        self.dcn = DeformConvPack(
            width, width, 3, padding=1, groups=width, offset_groups=num_types, bias=False,
            offset_in_channels=self.guide_width)

    @property
    def guide_width(self) -> int:
        """Channels of the offset / mask predictor's input."""
        return (2 if self.temporal == "clip" else 3) * self.guide_channels

    def temporal_guide(self, guide: torch.Tensor) -> torch.Tensor:
        """guide (B, T, G, H, W) -> (B, T, guide_width, H, W)."""
        if self.temporal == "clip":
            return torch.cat([guide, guide - guide.mean(1, keepdim=True)], dim=2)
        T = guide.shape[1]
        index = torch.arange(T, device=guide.device)
        before = guide[:, (index - 1).clamp(min=0)]
        after = guide[:, (index + 1).clamp(max=T - 1)]
        return torch.cat([guide, before - guide, after - guide], dim=2)

    def forward(self, ys: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
        """ys (B, n, E, L) -> (B, E, L)."""
        B, n, E, L = ys.shape
        T, H, W = thw
        frames = ys.view(B, n * E, T, H, W).transpose(1, 2).reshape(B * T, n * E, H, W)
        guide = self.guide(frames).view(B, T, self.guide_channels, H, W)
        guide = self.temporal_guide(guide)
        compensation = self.dcn(frames, guide.view(B * T, self.guide_width, H, W))
        out = (frames + compensation).view(B, T, n, E, H, W).sum(2)  # (B, T, E, H, W)
        return out.transpose(1, 2).reshape(B, E, L)


class TypeMerge(nn.Module):
    """Merge the two directions of each scan type, then fuse the types (STMM or sum)."""

    def __init__(self, channels: int, num_types: int, use_stmm: bool = True,
                 guide_channels: int | None = None, stmm_temporal: str = "clip"):
        super().__init__()
        self.num_types = num_types
        self.stmm = (STMM(channels, num_types, guide_channels, stmm_temporal)
                     if use_stmm and num_types > 1 else None)

    def forward(self, ys: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
        """ys (B, 2n, E, L): n forward paths then the n reversed -> (B, E, L)."""
        n = self.num_types
        per_type = ys[:, :n] + ys[:, n:]  # (B, n, E, L): y_u, y_s, y_t
        if self.stmm is None:
            return per_type.sum(1)
        return self.stmm(per_type, thw)


def _sts6d(types: tuple[str, ...], T: int, H: int, W: int, device: str):
    return sts6d_paths(T, H, W, types, device)


class GSMBlock(ResidualBlock):
    """Global Spatiotemporal Mamba block on (B, T, H, W, D) tokens."""

    def __init__(self, dim: int, num_frames: int, scan_types: tuple[str, ...] = SCAN_TYPES,
                 use_stmm: bool = True, use_channel_attention: bool = True,
                 d_state: int = 16, expand: float = 2.0, mlp_ratio: float = 4.0,
                 ca_reduction: float = 16, drop_path: float = 0.0, scan_backend: str = "auto",
                 stmm_guide: int | None = None, share_s6: bool = False,
                 stmm_temporal: str = "clip"):
        super().__init__()
        scan_types = tuple(scan_types)
        unknown = set(scan_types) - set(SCAN_TYPES)
        if unknown or not scan_types:
            raise ValueError(f"scan types {scan_types}: choose a non-empty subset of {SCAN_TYPES}")
        self.scan_types = scan_types
        self.norm1 = nn.LayerNorm(dim)
        self.channel_attention = (
            SequentialChannelAttention(dim, num_frames, ca_reduction)
            if use_channel_attention else nn.Identity())
        d_inner = int(expand * dim)
        self.mixer = SelectiveScanMixer(
            dim, functools.partial(_sts6d, scan_types), 2 * len(scan_types),
            TypeMerge(d_inner, len(scan_types), use_stmm, stmm_guide, stmm_temporal), d_state,
            expand, scan_backend=scan_backend, share_s6=share_s6)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, mlp_ratio)

    def _mixer_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.mixer(self.channel_attention(self.norm1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, D) -> same shape."""
        return self.residual(x)
