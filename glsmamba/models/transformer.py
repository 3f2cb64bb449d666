"""Attention baseline (TransLR / TransNR / TransHR).

Same encoder, embedding and head as GLSMamba; the Mamba blocks are replaced by
pre-norm transformer blocks with global multi-head self-attention over all T*H*W tokens
(``F.scaled_dot_product_attention``) and an FFN. ``feature_stride`` 16 / 8 / 4 gives the
1/16 (LR), 1/8 (NR) and 1/4 (HR) variants.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from glsmamba.errors import ConfigError
from glsmamba.models.glsmamba import VideoPoseModel
from glsmamba.models.layers import init_linear
from glsmamba.models.layers import DropPath, FeedForward, ResidualBlock


class GlobalAttention(nn.Module):
    """Multi-head self-attention over every token of the clip."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, D) -> (B, L, D)."""
        B, L, D = tokens.shape
        qkv = self.qkv(tokens).view(B, L, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, D/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class TransformerBlock(ResidualBlock):
    """Pre-norm block on (B, T, H, W, D): global attention + FFN."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GlobalAttention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, mlp_ratio)

    def _mixer_branch(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.attn(self.norm1(tokens)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(shape[0], -1, shape[-1])  # (B, T*H*W, D)
        return self.residual(tokens).view(shape)


class TransformerPose(VideoPoseModel):
    """Encoder -> embedding -> ``depth`` global-attention blocks -> head."""

    def __init__(self, num_joints: int = 17, num_frames: int = 5, input_size=(192, 256),
                 encoder_arch: str = "vit-b", feature_stride: int = 16, dim: int = 768,
                 depth: int = 6, num_heads: int = 12, mlp_ratio: float = 4.0,
                 max_frames: int = 9, freeze_encoder: bool = True, drop_path_rate: float = 0.0,
                 clip_window: str = "centered"):
        super().__init__(num_joints, num_frames, input_size, encoder_arch, feature_stride, dim,
                         max_frames, freeze_encoder, clip_window=clip_window)
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio, rate) for rate in rates)
        self.embed.apply(init_linear)
        self.blocks.apply(init_linear)
