"""GLSMamba: frozen ViTPose encoder -> embedding -> GSM x4 -> LRM x2 -> head.

Shapes (B clips of T frames, crop H x W, feature stride s, D model width)::

    clip (B, T, 3, H, W) -> encode -> feats (B, T, C, H/s, W/s)
    feats -> embedding -> tokens (B, T, h, w, D) -> GSM blocks -> LRM blocks
    tokens[:, target_index] -> head -> heatmaps (B, K, H/4, W/4)

``clip_window`` says which frame of the clip is estimated (``target_index``): the centre
one, T // 2 (``"centered"``: frames t-δ..t+δ), or the last one, T - 1 (``"causal"``:
frames t-2δ..t, the online mode that needs no future frame).

``feature_stride`` 4 uses the full encoder (ViT + both deconv blocks, the paper's
1/4-resolution model); 8 stops after the first deconv block; 16 uses the ViT tokens
(the BLR variant), and the head up-samples its heatmaps bilinearly to 1/4.

Also here: :class:`ViTPoseBaseline`, the single-frame "backbone only" model.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from glsmamba.data.windows import check_window, target_index
from glsmamba.errors import ConfigError
from glsmamba.models.gsm import GSMBlock
from glsmamba.models.layers import collect_no_weight_decay, init_linear, maybe_checkpoint
from glsmamba.models.lrm import LRMBlock
from glsmamba.models.scan_paths import SCAN_TYPES
from glsmamba.models.vitpose import ViTPoseEncoder

FEATURE_STRIDES = (4, 8, 16)


def sincos_2d(height: int, width: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 2D sine-cosine embedding (MAE style): (height, width, dim), dim % 4 == 0.

    The first half of the channels encodes the row, the second half the column; each
    half is [sin(pos * omega), cos(pos * omega)] with omega = 10000^(-i / (dim/4)).
    """
    if dim % 4:
        raise ConfigError(f"model width {dim} must be a multiple of 4 (sin-cos embedding)")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter)
    rows = torch.arange(height, device=device, dtype=torch.float64)[:, None] * omega  # (h, q)
    cols = torch.arange(width, device=device, dtype=torch.float64)[:, None] * omega  # (w, q)
    row_emb = torch.cat([rows.sin(), rows.cos()], -1)[:, None].expand(height, width, 2 * quarter)
    col_emb = torch.cat([cols.sin(), cols.cos()], -1)[None].expand(height, width, 2 * quarter)
    return torch.cat([row_emb, col_emb], -1).to(dtype)


class SpatioTemporalEmbedding(nn.Module):
    """Linear projection to D + fixed sin-cos spatial + learnable temporal embeddings.

    The temporal table holds ``max_frames`` (odd) entries centred on the middle frame:
    a clip of T frames (T odd, T <= max_frames) uses entries centre - T//2 .. centre + T//2,
    so the current frame always gets the same embedding.
    """

    def __init__(self, in_channels: int, dim: int, max_frames: int = 9):
        super().__init__()
        if max_frames < 1 or max_frames % 2 == 0:
            raise ConfigError(f"max_frames must be a positive odd number, got {max_frames}")
        self.dim, self.max_frames = dim, max_frames
        self.proj = nn.Linear(in_channels, dim)
        self.temporal = nn.Parameter(torch.zeros(max_frames, dim))
        if not self.temporal.is_meta:
            nn.init.trunc_normal_(self.temporal, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"temporal"}                   # an embedding table: no weight decay

    def temporal_embedding(self, num_frames: int) -> torch.Tensor:
        """(num_frames, D) entries centred on the middle frame."""
        check_frames(num_frames, self.max_frames)
        centre = self.max_frames // 2
        return self.temporal[centre - num_frames // 2: centre + num_frames // 2 + 1]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, T, C, h, w) -> tokens (B, T, h, w, D)."""
        B, T, C, h, w = feats.shape
        tokens = self.proj(feats.permute(0, 1, 3, 4, 2))  # (B, T, h, w, D)
        spatial = sincos_2d(h, w, self.dim, tokens.device, tokens.dtype)  # (h, w, D)
        temporal = self.temporal_embedding(T).to(tokens.dtype)  # (T, D)
        return tokens + spatial + temporal.view(T, 1, 1, self.dim)


class HeatmapHead(nn.Module):
    """LayerNorm + 1x1 conv D -> K on the centre frame; bilinear up-sampling to 1/4."""

    def __init__(self, dim: int, num_joints: int, upsample: int = 1):
        super().__init__()
        self.upsample = upsample
        self.norm = nn.LayerNorm(dim)
        self.final_layer = nn.Conv2d(dim, num_joints, 1)
        if not self.final_layer.weight.is_meta:
            nn.init.normal_(self.final_layer.weight, std=0.001)
            nn.init.zeros_(self.final_layer.bias)

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) -> (B, K, h * upsample, w * upsample)."""
        heatmaps = self.final_layer(self.norm(frame_tokens).permute(0, 3, 1, 2))
        if self.upsample > 1:  # linear ops commute: same as up-sampling the features first
            heatmaps = F.interpolate(
                heatmaps, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return heatmaps


def check_frames(num_frames: int, max_frames: int | None = None) -> None:
    if num_frames < 1 or num_frames % 2 == 0:
        raise ValueError(f"clips must have an odd number of frames, got T={num_frames}")
    if max_frames is not None and num_frames > max_frames:
        raise ValueError(f"clip has T={num_frames} frames, the model allows at most {max_frames}")


def _size_wh(input_size) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ConfigError(f"input_size must be (W, H), got {input_size!r}") from None
    if width % 16 or height % 16 or width <= 0 or height <= 0:
        raise ConfigError(f"input_size {width}x{height} (WxH): sides must be multiples of 16")
    return width, height


class _EncoderPoseModel(nn.Module):
    """What every pose model here shares: ``forward = forward_features(encode(clip))`` and
    a frozen encoder that stays in eval mode under ``model.train()``."""

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """clip (B, T, 3, H, W) normalised RGB -> heatmaps (B, K, H/4, W/4)."""
        return self.forward_features(self.encode(clip))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder.frozen:
            self.encoder.train(False)
        return self

    grad_checkpointing = False
    checkpoint_skip_last = 0  # trailing blocks set_grad_checkpointing leaves out by default

    def no_weight_decay(self) -> set[str]:
        """Parameter names trained without weight decay beyond the 1-D and normalisation
        parameters (timm's convention): what each submodule lists (embeddings, S6 A_log,
        D and dt bias)."""
        return collect_no_weight_decay(self)

    def set_grad_checkpointing(self, enable: bool = True, skip_last: int | None = None) -> None:
        """Activation checkpointing (timm's convention) of the trainable blocks: each
        block keeps only its branch inputs and recomputes the rest in backward. Values
        and gradients are unchanged; the frozen encoder runs without grad anyway.

        The last ``skip_last`` blocks (default ``checkpoint_skip_last``: GLSMamba's LRM
        blocks) are not checkpointed: they run first in backward, so their activations
        are freed before the step's peak (in the GSM blocks' backward) and recomputing
        them would cost time for no memory (glsmamba-b, bf16: the same peak, measured
        in benchmarks/README.md).
        """
        self.grad_checkpointing = bool(enable)
        blocks = list(getattr(self, "blocks", ()))
        skip = self.checkpoint_skip_last if skip_last is None else int(skip_last)
        self._checkpointed = [self.grad_checkpointing and i < len(blocks) - skip
                              for i in range(len(blocks))]
        for block, on in zip(blocks, self._checkpointed):
            if hasattr(block, "set_grad_checkpointing"):
                block.set_grad_checkpointing(on)


class VideoPoseModel(_EncoderPoseModel):
    """Shared encoder / API of the video models: subclasses build ``self.blocks``."""

    def __init__(self, num_joints: int = 17, num_frames: int = 5, input_size=(192, 256),
                 encoder_arch: str = "vit-b", feature_stride: int = 4, dim: int = 256,
                 max_frames: int = 9, freeze_encoder: bool = True, clip_window: str = "centered"):
        super().__init__()
        check_frames(num_frames, max_frames)
        self.clip_window = check_window(clip_window)
        if feature_stride not in FEATURE_STRIDES:
            raise ConfigError(f"feature_stride must be one of {FEATURE_STRIDES}, got {feature_stride}")
        self.num_joints, self.num_frames, self.dim = num_joints, num_frames, dim
        self.input_size = _size_wh(input_size)  # (W, H)
        self.heatmap_size = (self.input_size[0] // 4, self.input_size[1] // 4)
        self.feature_stride = feature_stride
        self.encoder = ViTPoseEncoder(encoder_arch, (self.input_size[1], self.input_size[0]))
        if freeze_encoder:
            self.encoder.freeze()
        self.embed = SpatioTemporalEmbedding(self.feature_channels, dim, max_frames)
        self.head = HeatmapHead(dim, num_joints, upsample=feature_stride // 4)

    @property
    def target_index(self) -> int:
        """Index in the clip of the estimated frame: T // 2 (centered) or T - 1 (causal)."""
        return target_index(self.num_frames, self.clip_window)

    @property
    def feature_channels(self) -> int:
        if self.feature_stride == 16:
            return self.encoder.backbone.embed_dim
        return self.encoder.out_channels

    @property
    def feature_size(self) -> tuple[int, int]:
        """(w, h) of the encoder features."""
        return (self.input_size[0] // self.feature_stride, self.input_size[1] // self.feature_stride)

    def _encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C, H/s, W/s)."""
        tokens = self.encoder.backbone(images)
        if self.feature_stride == 16:
            return tokens
        layers = self.encoder.keypoint_head.deconv_layers
        return layers(tokens) if self.feature_stride == 4 else layers[:3](tokens)

    def encode(self, clip: torch.Tensor) -> torch.Tensor:
        """clip (B, T, 3, H, W) -> feats (B, T, C, H/s, W/s); no grad when the encoder is frozen."""
        if clip.dim() != 5 or clip.shape[2] != 3:
            raise ValueError(f"clip must be (B, T, 3, H, W), got {tuple(clip.shape)}")
        B, T = clip.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder.frozen):
            feats = self._encode_frames(clip.flatten(0, 1))  # (B*T, C, h, w)
        return feats.view(B, T, *feats.shape[1:])

    def forward_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        flags = getattr(self, "_checkpointed", None) or [False] * len(self.blocks)
        for block, on in zip(self.blocks, flags):
            # blocks with their own switch checkpoint their branches; others as a whole
            whole = on and not hasattr(block, "set_grad_checkpointing")
            tokens = maybe_checkpoint(block, tokens, whole)
        return tokens

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, T, C, h, w) -> heatmaps (B, K, H/4, W/4) of frame ``target_index``."""
        if feats.dim() != 5:
            raise ValueError(f"features must be (B, T, C, h, w), got {tuple(feats.shape)}")
        T = feats.shape[1]
        if T != self.num_frames:
            raise ValueError(f"model built for T={self.num_frames} frames, got T={T}")
        tokens = self.forward_blocks(self.embed(feats))  # (B, T, h, w, D)
        return self.head(tokens[:, self.target_index])



class GLSMamba(VideoPoseModel):
    """GLSMamba: encoder -> embedding -> ``gsm_depth`` GSM -> ``lrm_depth`` LRM -> head."""

    def __init__(self, num_joints: int = 17, num_frames: int = 5, input_size=(192, 256),
                 encoder_arch: str = "vit-b", feature_stride: int = 4, dim: int = 256,
                 gsm_depth: int = 4, lrm_depth: int = 2, d_state: int = 16, expand: float = 2.0,
                 mlp_ratio: float = 4.0, scan_types=SCAN_TYPES, use_stmm: bool = True,
                 use_channel_attention: bool = True, window=(8, 6), window_reset: bool = True,
                 max_frames: int = 9, freeze_encoder: bool = True, drop_path_rate: float = 0.0,
                 scan_backend: str = "auto", ca_reduction: float = 16.0,
                 stmm_guide: int | None = None, share_s6: bool = False,
                 stmm_temporal: str = "clip", clip_window: str = "centered"):
        super().__init__(num_joints, num_frames, input_size, encoder_arch, feature_stride, dim,
                         max_frames, freeze_encoder, clip_window=clip_window)
        if gsm_depth < 0 or lrm_depth < 0 or gsm_depth + lrm_depth == 0:
            raise ConfigError(f"need at least one block, got gsm_depth={gsm_depth}, lrm_depth={lrm_depth}")
        total = gsm_depth + lrm_depth
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        common = dict(d_state=d_state, expand=expand, mlp_ratio=mlp_ratio, scan_backend=scan_backend)
        gsm = [GSMBlock(dim, num_frames, tuple(scan_types), use_stmm, use_channel_attention,
                        ca_reduction=ca_reduction, drop_path=rates[i], stmm_guide=stmm_guide,
                        share_s6=share_s6, stmm_temporal=stmm_temporal,
                        **common) for i in range(gsm_depth)]
        lrm = [LRMBlock(dim, tuple(window), window_reset, drop_path=rates[gsm_depth + i], **common)
               for i in range(lrm_depth)]
        self.blocks = nn.ModuleList(gsm + lrm)
        # the LRM blocks run first in backward, before the GSM blocks' peak: not checkpointed
        self.checkpoint_skip_last = lrm_depth if gsm_depth else 0
        self.embed.apply(init_linear)
        self.blocks.apply(init_linear)

    @property
    def gsm_blocks(self) -> list[GSMBlock]:
        return [b for b in self.blocks if isinstance(b, GSMBlock)]

    @property
    def lrm_blocks(self) -> list[LRMBlock]:
        return [b for b in self.blocks if isinstance(b, LRMBlock)]


class _FinalLayer(nn.Module):
    def __init__(self, channels: int, num_joints: int):
        super().__init__()
        self.final_layer = nn.Conv2d(channels, num_joints, 1)
        if not self.final_layer.weight.is_meta:
            nn.init.normal_(self.final_layer.weight, std=0.001)
            nn.init.zeros_(self.final_layer.bias)


class ViTPoseBaseline(_EncoderPoseModel):
    """Single-frame "backbone only" model: ViTPose encoder + ``keypoint_head.final_layer``.

    Same API as :class:`GLSMamba`; only the estimated frame of the clip is used (the centre
    one, or the last one with ``clip_window="causal"``).
    """

    def __init__(self, num_joints: int = 17, num_frames: int = 5, input_size=(192, 256),
                 encoder_arch: str = "vit-b", freeze_encoder: bool = True, max_frames: int = 9,
                 clip_window: str = "centered"):
        super().__init__()
        check_frames(num_frames, max_frames)
        self.clip_window = check_window(clip_window)
        self.num_joints, self.num_frames = num_joints, num_frames
        self.input_size = _size_wh(input_size)
        self.heatmap_size = (self.input_size[0] // 4, self.input_size[1] // 4)
        self.feature_stride = 4
        self.encoder = ViTPoseEncoder(encoder_arch, (self.input_size[1], self.input_size[0]))
        if freeze_encoder:
            self.encoder.freeze()
        self.keypoint_head = _FinalLayer(self.encoder.out_channels, num_joints)

    def encode(self, clip: torch.Tensor) -> torch.Tensor:
        """clip (B, T, 3, H, W) -> estimated-frame features (B, 1, C, H/4, W/4)."""
        if clip.dim() != 5 or clip.shape[2] != 3:
            raise ValueError(f"clip must be (B, T, 3, H, W), got {tuple(clip.shape)}")
        check_frames(clip.shape[1])
        frame = target_index(clip.shape[1], self.clip_window)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder.frozen):
            return self.encoder(clip[:, frame]).unsqueeze(1)

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, T, C, h, w) (any odd T; the estimated frame is used) -> (B, K, h, w)."""
        if feats.dim() != 5:
            raise ValueError(f"features must be (B, T, C, h, w), got {tuple(feats.shape)}")
        return self.keypoint_head.final_layer(
            feats[:, target_index(feats.shape[1], self.clip_window)])

