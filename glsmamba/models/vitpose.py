"""ViTPose encoder: plain ViT backbone + the classic decoder's two deconv blocks.

Module and parameter names follow the official ViTPose code (ViTAE-Transformer/ViTPose,
``mmpose/models/backbones/vit.py`` and ``TopdownHeatmapSimpleHead``), so an official
checkpoint loads unchanged::

    backbone.patch_embed.proj.{weight,bias}        Conv2d(3, C, 16, stride 16, padding 2)
    backbone.pos_embed                             (1, Hp*Wp + 1, C); entry 0 = class token
    backbone.blocks.{i}.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2
    backbone.last_norm
    keypoint_head.deconv_layers.{0,3}.weight       ConvTranspose2d(k4, s2, p1, no bias)
    keypoint_head.deconv_layers.{1,4}.*            BatchNorm2d

The final 1x1 conv of the official head (``keypoint_head.final_layer``) is not part of
the encoder. Input sides must be multiples of 16: the token grid is (H/16, W/16) and the
features (H/4, W/4). (With padding 2 the official patch embedding gives
``(H - 12) // 16 + 1`` tokens for other sizes, i.e. not H/16, so they are refused.)
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from glsmamba.errors import CheckpointError, ConfigError
from glsmamba.models.layers import DropPath
from glsmamba.models.vitpose_hf import read_vitpose_state
from glsmamba.models.weights_io import VIT_ARCHS, checkpoint_grid

__all__ = [
    "VIT_ARCHS", "ViTPoseEncoder", "VisionTransformer", "DeconvHead", "LoadReport",
    "load_vitpose", "encoder_flops", "IGNORED_KEYS", "interpolate_pos_embed",
]

PATCH_SIZE = 16
PATCH_PADDING = 2


# Checkpoint keys that are not part of the encoder (fnmatch patterns).
IGNORED_KEYS: tuple[str, ...] = (
    "keypoint_head.final_layer.*",   # the 1x1 heatmap conv
    "associate_heads.*",             # ViTPose+ extra dataset heads
    "backbone.cls_token",            # pre-training leftover, unused in the forward pass
)


def _arch(arch: str) -> dict[str, int]:
    if arch not in VIT_ARCHS:
        raise ConfigError(f"unknown ViT arch {arch!r}; choose from {sorted(VIT_ARCHS)}")
    return VIT_ARCHS[arch]


def _check_size(size: tuple[int, int], what: str) -> tuple[int, int]:
    height, width = int(size[0]), int(size[1])
    if height % PATCH_SIZE or width % PATCH_SIZE or height <= 0 or width <= 0:
        raise ConfigError(
            f"{what} {height}x{width} (HxW): both sides must be positive multiples of "
            f"{PATCH_SIZE}")
    return height, width


# --------------------------------------------------------------------------- backbone
class PatchEmbed(nn.Module):
    """Conv2d(3, C, 16, stride 16, padding 2): (N, 3, H, W) -> (N, H/16 * W/16, C)."""

    def __init__(self, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, PATCH_SIZE, stride=PATCH_SIZE, padding=PATCH_PADDING)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        tokens = self.proj(images)  # (N, C, Hp, Wp)
        grid = (tokens.shape[2], tokens.shape[3])
        return tokens.flatten(2).transpose(1, 2), grid  # (N, Hp*Wp, C)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, heads, L, d)
        mixed = F.scaled_dot_product_attention(query, key, value)  # (N, heads, L, d)
        return self.proj(mixed.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(tokens)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens)))
        return tokens + self.drop_path(self.mlp(self.norm2(tokens)))


def interpolate_pos_embed(pos_embed: torch.Tensor, src_grid: tuple[int, int],
                          dst_grid: tuple[int, int]) -> torch.Tensor:
    """Resize (1, 1 + h*w, C) position embeddings to another grid, bicubic (as ViTPose).

    The first (class token) entry is kept as is.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    extra, patches = pos_embed[:, :1], pos_embed[:, 1:]
    channels = patches.shape[-1]
    patches = patches.reshape(1, *src_grid, channels).permute(0, 3, 1, 2)  # (1, C, h, w)
    patches = F.interpolate(
        patches.float(), size=tuple(dst_grid), mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    patches = patches.permute(0, 2, 3, 1).reshape(1, -1, channels)  # (1, H*W, C)
    return torch.cat((extra, patches), dim=1)


class VisionTransformer(nn.Module):
    """The ViTPose backbone: (N, 3, H, W) -> (N, C, H/16, W/16); no class token."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int,
                 img_size: tuple[int, int] = (256, 192), mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        height, width = _check_size(img_size, "img_size")
        self.embed_dim = embed_dim
        self.grid = (height // PATCH_SIZE, width // PATCH_SIZE)
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear decay
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, drop_path=rate) for rate in rates)
        self.last_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}                  # timm's ViT: the position embedding does not decay

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        tokens, grid = self.patch_embed(images)  # (N, Hp*Wp, C)
        pos_embed = interpolate_pos_embed(self.pos_embed, self.grid, grid)
        # as the official code: the class-token entry is added to every patch token
        tokens = tokens + pos_embed[:, 1:] + pos_embed[:, :1]
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.last_norm(tokens)
        return tokens.transpose(1, 2).reshape(batch, self.embed_dim, *grid)  # (N, C, Hp, Wp)


# --------------------------------------------------------------------------- decoder
class DeconvHead(nn.Module):
    """The classic decoder without its final 1x1 conv: 2 x (deconv 4/2/1 + BN + ReLU)."""

    def __init__(self, in_channels: int, channels: int = 256, num_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [
                nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1,
                                   output_padding=0, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = channels
        self.deconv_layers = nn.Sequential(*layers)
        for module in self.deconv_layers:
            if isinstance(module, nn.ConvTranspose2d):
                nn.init.normal_(module.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.deconv_layers(features)


# --------------------------------------------------------------------------- encoder
class ViTPoseEncoder(nn.Module):
    """ViTPose backbone + deconv blocks: (N, 3, H, W) -> (N, out_channels, H/4, W/4).

    ``img_size`` (H, W) fixes the shape of ``pos_embed``; other inputs (multiples of 16)
    use a bicubically resized copy of it.
    """

    stride = 4

    def __init__(self, arch: str = "vit-b", img_size: tuple[int, int] = (256, 192),
                 deconv_channels: int | None = None, drop_path_rate: float = 0.0):
        super().__init__()
        spec = _arch(arch)
        self.arch = arch
        self.img_size = _check_size(img_size, "img_size")
        self.out_channels = deconv_channels or spec["deconv_channels"]
        self.backbone = VisionTransformer(
            spec["embed_dim"], spec["depth"], spec["num_heads"], self.img_size,
            drop_path_rate=drop_path_rate)
        self.keypoint_head = DeconvHead(spec["embed_dim"], self.out_channels)
        self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> "ViTPoseEncoder":
        """No gradients, and eval mode (BN statistics, drop path) even under ``.train()``."""
        for param in self.parameters():
            param.requires_grad_(False)
        self._frozen = True
        return self.train(False)

    def unfreeze(self) -> "ViTPoseEncoder":
        for param in self.parameters():
            param.requires_grad_(True)
        self._frozen = False
        return self

    def train(self, mode: bool = True) -> "ViTPoseEncoder":
        return super().train(mode and not self._frozen)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2] % PATCH_SIZE or images.shape[-1] % PATCH_SIZE:
            raise ValueError(
                f"input {images.shape[-2]}x{images.shape[-1]} (HxW): both sides must be "
                f"multiples of {PATCH_SIZE}")
        return self.keypoint_head(self.backbone(images))  # (N, C_out, H/4, W/4)


# --------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    """What ``load_vitpose`` did: key lists (in encoder naming)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)


def _list_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def load_vitpose(encoder: ViTPoseEncoder, path: str | os.PathLike, strict: bool = True,
                 ignore: Iterable[str] = (), src_grid: tuple[int, int] | None = None,
                 trust_pickle: bool = False) -> LoadReport:
    """Load a ViTPose checkpoint into ``encoder``: an official one (.pth / .safetensors),
    or a HuggingFace ``VitPoseForPoseEstimation`` ``save_pretrained`` folder or
    ``.safetensors`` file (renamed by :mod:`glsmamba.models.vitpose_hf`).

    Keys matching ``IGNORED_KEYS`` or ``ignore`` (fnmatch patterns) are skipped.
    ``backbone.pos_embed`` is resized bicubically when its grid differs (the checkpoint
    grid is ``src_grid`` or the factorisation closest to the encoder's aspect ratio).
    ``strict=False`` tolerates missing and unexpected keys (listed in the report);
    shape mismatches always raise ``CheckpointError``. ``.pth`` files are read with
    ``weights_only=True`` (numpy metadata allowed); ``trust_pickle=True`` lifts that.
    """
    path = Path(path)
    state = read_vitpose_state(path, trust_pickle, strict)
    patterns = tuple(IGNORED_KEYS) + tuple(ignore)
    report = LoadReport(path=str(path))
    target = encoder.state_dict()
    updates: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            report.ignored.append(key)
        elif key not in target:
            report.unexpected.append(key)
        else:
            if key == "backbone.pos_embed" and value.shape != target[key].shape:
                value = _resize_checkpoint_pos_embed(value, encoder, src_grid, path)
                report.interpolated.append(key)
            if value.shape != target[key].shape:
                mismatched.append(
                    f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
            else:
                updates[key] = value
    # BN's num_batches_tracked is absent from old checkpoints and harmless to skip
    report.missing = [k for k in target if k not in state and k not in updates
                      and not k.endswith("num_batches_tracked")]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_list_keys(mismatched)}")
    if strict and report.missing:
        problems.append(f"{len(report.missing)} missing key(s): {_list_keys(report.missing)}")
    if strict and report.unexpected:
        problems.append(
            f"{len(report.unexpected)} unexpected key(s): {_list_keys(report.unexpected)}")
    if problems:
        raise CheckpointError(f"{path}: does not match ViTPose encoder '{encoder.arch}': "
                              + "; ".join(problems))
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)
    report.loaded = sorted(updates)
    return report


def _resize_checkpoint_pos_embed(pos_embed: torch.Tensor, encoder: ViTPoseEncoder,
                                 src_grid: tuple[int, int] | None, path: Path) -> torch.Tensor:
    grid = encoder.backbone.grid
    channels = encoder.backbone.embed_dim
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] != channels:
        return pos_embed  # reported as a shape mismatch
    num_patches = pos_embed.shape[1] - 1
    src = tuple(src_grid) if src_grid is not None else checkpoint_grid(num_patches, grid)
    if src[0] * src[1] != num_patches:
        raise CheckpointError(
            f"{path}: backbone.pos_embed has {num_patches} patch entries, not {src[0]}x{src[1]}")
    return interpolate_pos_embed(pos_embed, src, grid)


# --------------------------------------------------------------------------- cost
def encoder_flops(arch: str, img_size: tuple[int, int] = (256, 192),
                  include_decoder: bool = True, deconv_channels: int | None = None) -> int:
    """Multiply-adds of one crop through the encoder, i.e. "FLOPs" as fvcore / mmcv's
    ``get_flops`` / the ViTPose and GLSMamba papers count them (one multiply-add = 1).

    Counted: patch-embedding conv, qkv / proj / MLP linears, the two attention matmuls,
    the deconvs. Not counted (as in those tools): norms, softmax, GELU, biases, adds.
    Multiply by 2 for the FLOPs-as-two-operations convention. ViT-B at 256x192:
    17.10 G backbone only (the 17.1 GFLOPs of the ViTPose paper), 18.51 G with the
    two deconvs.
    """
    spec = _arch(arch)
    height, width = _check_size(img_size, "img_size")
    dim, depth = spec["embed_dim"], spec["depth"]
    tokens = (height // PATCH_SIZE) * (width // PATCH_SIZE)
    patch_embed = 3 * PATCH_SIZE * PATCH_SIZE * dim * tokens
    linears = 12 * dim * dim * tokens  # qkv 3C^2 + proj C^2 + fc1/fc2 8C^2, per token
    attention = 2 * tokens * tokens * dim  # q k^T and attn @ v
    total = patch_embed + depth * (linears + attention)
    if include_decoder:
        channels, in_channels = deconv_channels or spec["deconv_channels"], dim
        in_pixels = tokens
        for _ in range(2):  # each input pixel scatters a 4x4 kernel
            total += in_channels * channels * 16 * in_pixels
            in_channels, in_pixels = channels, in_pixels * 4
    return int(total)
