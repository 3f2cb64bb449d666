"""Modulated deformable convolution (DCNv2) in pure PyTorch.

Conventions follow ``torchvision.ops.deform_conv2d``:

* ``offset`` (B, 2 * offset_groups * kh * kw, Hout, Wout) holds (dy, dx) pairs, one pair
  per kernel location, kernel locations in row-major order, offset groups outermost;
* ``mask`` (B, offset_groups * kh * kw, Hout, Wout) is already in [0, 1] (the caller
  applies the sigmoid);
* kernel location (i, j) of output pixel (oy, ox) samples the input at
  ``y = oy * stride_h - pad_h + i * dilation_h + dy`` and
  ``x = ox * stride_w - pad_w + j * dilation_w + dx`` with bilinear interpolation in
  which every corner outside the image counts as zero.

The samples are gathered with one ``grid_sample`` call (``align_corners=False``, pixel
``x`` maps to ``(2x + 1) / W - 1``, ``padding_mode="zeros"``, which is exactly the
zero-corner rule above), scaled by the mask and contracted with the weight (a kernel-1
``conv1d`` when groups=1, a broadcast ``matmul`` per group otherwise). Autograd gives
the backward for every input.

The depthwise case (groups = in = out channels, the STMM's) runs through a custom
autograd Function instead (``_DepthwiseDeformConv``): all taps of a slice of the channels
per ``grid_sample`` call, only the inputs kept for backward, which samples again and
calls ``grid_sampler_2d_backward`` slice by slice; it never holds the (B, C*taps, L)
columns of all channels (the generic path keeps two such tensors for backward).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

__all__ = ["modulated_deform_conv2d", "ModulatedDeformConv2d", "DeformConvPack"]

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_shapes(x, offset, mask, weight, bias, out_hw) -> tuple[int, int]:
    """Validate shapes; return (groups, offset_groups)."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, Cin, H, W), got shape {tuple(x.shape)}")
    batch, in_channels = x.shape[:2]
    out_channels, in_per_group, kh, kw = weight.shape
    if in_channels % in_per_group != 0:
        raise ValueError(
            f"weight expects {in_per_group} input channels per group, x has {in_channels}"
        )
    groups = in_channels // in_per_group
    if out_channels % groups != 0:
        raise ValueError(f"out channels {out_channels} not divisible by groups {groups}")
    taps = kh * kw
    if offset.dim() != 4 or offset.shape[1] % (2 * taps) != 0:
        raise ValueError(
            f"offset must be (B, 2*offset_groups*{kh}*{kw}, Hout, Wout), got {tuple(offset.shape)}"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    if in_channels % offset_groups != 0:
        raise ValueError(
            f"input channels {in_channels} not divisible by offset_groups {offset_groups}"
        )
    expected_offset = (batch, 2 * offset_groups * taps, *out_hw)
    if tuple(offset.shape) != expected_offset:
        raise ValueError(f"offset shape {tuple(offset.shape)}, expected {expected_offset}")
    expected_mask = (batch, offset_groups * taps, *out_hw)
    if mask is not None and tuple(mask.shape) != expected_mask:
        raise ValueError(f"mask shape {tuple(mask.shape)}, expected {expected_mask}")
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias shape {tuple(bias.shape)}, expected ({out_channels},)")
    return groups, offset_groups


def _sampling_grid(
    offset: torch.Tensor,
    kernel: tuple[int, int],
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Normalised grid_sample coordinates (B*G, taps*Hout, Wout, 2) as (x, y)."""
    batch = offset.shape[0]
    kh, kw = kernel
    height, width = in_hw
    out_h, out_w = out_hw
    offset = offset.reshape(batch, -1, kh * kw, 2, out_h, out_w)  # (B, G, taps, 2, Ho, Wo)
    groups = offset.shape[1]
    opts = dict(dtype=offset.dtype, device=offset.device)
    tap_y = torch.arange(kh, **opts).repeat_interleave(kw) * dilation[0]  # (taps,)
    tap_x = torch.arange(kw, **opts).repeat(kh) * dilation[1]
    base_y = torch.arange(out_h, **opts) * stride[0] - padding[0]  # (Ho,)
    base_x = torch.arange(out_w, **opts) * stride[1] - padding[1]  # (Wo,)
    # pixel -> normalised coordinate for align_corners=False: (2p + 1) / size - 1
    pos_y = tap_y.view(-1, 1, 1) + base_y.view(1, -1, 1) + offset[:, :, :, 0]
    pos_x = tap_x.view(-1, 1, 1) + base_x.view(1, 1, -1) + offset[:, :, :, 1]
    grid_y = (2.0 * pos_y + 1.0) / height - 1.0  # (B, G, taps, Ho, Wo)
    grid_x = (2.0 * pos_x + 1.0) / width - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1)  # (B, G, taps, Ho, Wo, 2)
    return grid.view(batch * groups, kh * kw * out_h, out_w, 2)


def _sample_and_contract(
    x: torch.Tensor,
    grid: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    offset_groups: int,
    groups: int,
) -> torch.Tensor:
    """Bilinear samples (B, Cin, taps, L), times the mask, contracted with the weight.

    Returns (B, Cout, L). The (B, Cin*taps, L) intermediate is the big tensor of DCN.
    """
    batch, in_channels, height, width = x.shape
    taps = weight.shape[-2] * weight.shape[-1]
    length = grid.shape[1] * grid.shape[2] // taps
    images = x.reshape(batch * offset_groups, in_channels // offset_groups, height, width)
    samples = F.grid_sample(
        images.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
        align_corners=False,
    )  # (B*G, Cin/G, taps*Ho, Wo)
    samples = samples.view(batch, offset_groups, in_channels // offset_groups, taps, length)
    if mask is not None:
        mask = mask.to(grid.dtype).reshape(batch, offset_groups, 1, taps, length)
        needs_graph = torch.is_grad_enabled() and (samples.requires_grad or mask.requires_grad)
        # in place when no graph is recorded: one big tensor alive instead of two
        samples = samples * mask if needs_graph else samples.mul_(mask)
    # channel order (G, Cin/G) == Cin, so the columns are already (Cin, taps) per position.
    # Contraction: a kernel-1 conv1d for groups=1 (on CPU ~2x faster than matmul/einsum,
    # which copy or broadcast operands); a broadcast matmul per group otherwise (grouped
    # conv1d falls back to one call per group, ~5x slower when depthwise)
    columns = samples.to(weight.dtype)
    out_channels = weight.shape[0]
    if groups == 1:
        columns = columns.view(batch, in_channels * taps, length)
        return F.conv1d(columns, weight.reshape(out_channels, -1, 1), bias)  # (B, Cout, L)
    columns = columns.view(batch, groups, -1, length)  # (B, groups, Cin/groups*taps, L)
    kernel = weight.reshape(groups, out_channels // groups, -1)  # (groups, Cout/g, Cin/g*taps)
    out = torch.matmul(kernel, columns).view(batch, out_channels, length)  # (B, Cout, L)
    return out if bias is None else out + bias.view(1, -1, 1)


def _autocast_off(device: torch.device):
    """The Function computes in float32 itself: no autocast inside (cpu / cuda only)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


# The depthwise path samples all kernel taps of a slice of the channels per grid_sample
# call; the slice is sized so that its (B, G, slice, taps, L) columns hold at most
# COLUMN_BUDGET x the elements of x (at least one channel per group).
COLUMN_BUDGET = 2.0


def _channel_chunks(per_group: int, taps: int) -> list[tuple[int, int]]:
    size = max(1, min(per_group, int(COLUMN_BUDGET * per_group / taps)))
    return [(c0, min(per_group, c0 + size)) for c0 in range(0, per_group, size)]


class _DepthwiseDeformConv(torch.autograd.Function):
    """Depthwise modulated deformable conv (groups = Cin = Cout), a slice of channels at a time.

    ``out[b, c, l] = sum_tap w[c, tap] * mask[b, g(c), tap, l] * sample[b, c, tap, l]``.
    The forward never materialises the (B, C, taps, L) columns of all channels: it
    samples every tap of a slice of channels per ``grid_sample`` call (see
    ``COLUMN_BUDGET``), scales and accumulates them. Only the inputs (x in its own dtype,
    the sampling grid, the mask, the weight) are kept; the backward samples each slice
    again and chains through ``grid_sampler_2d_backward`` slice by slice (the image
    gradient of a slice is final at once; the grid and mask gradients are summed over
    slices). Computes in float32 (float64 kept); returns the weight's dtype.
    """

    @staticmethod
    def _setup(x, grid, mask, weight, offset_groups):
        batch, channels, height, width = x.shape
        taps = weight.shape[-2] * weight.shape[-1]
        dtype = grid.dtype
        per_group = channels // offset_groups
        out_hw = (grid.shape[1] // taps, grid.shape[2])
        length = out_hw[0] * out_hw[1]
        masks = None if mask is None else mask.to(dtype).reshape(batch, offset_groups, taps, length)
        w = weight.to(dtype).reshape(offset_groups, per_group, taps)
        return masks, w, (batch, offset_groups, per_group, taps, length, out_hw)

    @staticmethod
    def _images(x, c0, c1, dims, dtype):
        """Channels c0..c1 of every group as a float (B*G, c1 - c0, H, W) batch."""
        batch, groups, per_group = dims[:3]
        return x.view(batch, groups, per_group, *x.shape[-2:])[:, :, c0:c1].to(dtype).reshape(
            batch * groups, c1 - c0, *x.shape[-2:])

    @staticmethod
    def forward(ctx, x, grid, mask, weight, offset_groups: int):
        masks, w, dims = _DepthwiseDeformConv._setup(x, grid, mask, weight, offset_groups)
        batch, groups, per_group, taps, length, out_hw = dims
        dtype = grid.dtype
        out = torch.empty(batch, groups, per_group, length, dtype=dtype, device=x.device)
        for c0, c1 in _channel_chunks(per_group, taps):
            images = _DepthwiseDeformConv._images(x, c0, c1, dims, dtype)
            samples = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False).view(batch, groups, c1 - c0, taps, length)
            del images
            if masks is not None:
                samples.mul_(masks[:, :, None])
            # sum over taps weighted by w: (B, G, c, taps, L) x (G, c, taps) -> (B, G, c, L)
            torch.mul(samples[:, :, :, 0], w[None, :, c0:c1, 0, None], out=out[:, :, c0:c1])
            for tap in range(1, taps):
                out[:, :, c0:c1].addcmul_(samples[:, :, :, tap], w[None, :, c0:c1, tap, None])
        ctx.offset_groups = offset_groups
        ctx.save_for_backward(x, grid, mask, weight)
        return out.view(batch, groups * per_group, *out_hw).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, grid, mask, weight = ctx.saved_tensors
        masks, w, dims = _DepthwiseDeformConv._setup(x, grid, mask, weight, ctx.offset_groups)
        batch, groups, per_group, taps, length, (out_h, out_w) = dims
        dtype, device = grid.dtype, x.device
        need_x, need_grid, need_mask, need_w = ctx.needs_input_grad[:4]
        gout = grad_out.to(dtype).reshape(batch, groups, per_group, 1, length)
        # in x's dtype at once (autograd would cast a float32 gradient to it anyway)
        grad_x = torch.empty(batch, groups, per_group, *x.shape[-2:], dtype=x.dtype, device=device) \
            if need_x else None
        grad_grid = torch.zeros_like(grid) if need_grid else None
        grad_mask = (torch.zeros(batch, groups, taps, length, dtype=dtype, device=device)
                     if need_mask and mask is not None else None)
        grad_w = torch.empty(groups, per_group, taps, dtype=dtype, device=device) if need_w else None
        blocks = None
        if grad_w is not None and masks is not None:  # block-diagonal mask for one GEMM per (b, g)
            blocks = torch.zeros(batch, groups, taps, length, taps, dtype=dtype, device=device)
            for tap in range(taps):
                blocks[:, :, tap, :, tap] = masks[:, :, tap]
            blocks = blocks.view(batch, groups, taps * length, taps)
        for c0, c1 in _channel_chunks(per_group, taps):
            images = _DepthwiseDeformConv._images(x, c0, c1, dims, dtype)
            samples = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False).view(batch, groups, c1 - c0, taps, length)
            g = gout[:, :, c0:c1]
            prod = samples.mul_(g)  # gout * sample, in place
            flat = prod.view(batch, groups, c1 - c0, taps * length)
            if grad_mask is not None:  # sum_c w gout sample: one GEMM per (b, g), diagonal blocks
                full = torch.matmul(w[None, :, c0:c1].transpose(-1, -2), flat)  # (B, G, taps, taps*L)
                full = full.view(batch, groups, taps, taps, length)
                grad_mask += torch.diagonal(full, dim1=2, dim2=3).movedim(-1, 2)
            if grad_w is not None:  # sum_{b, l} mask gout sample
                if blocks is None:
                    grad_w[:, c0:c1] = prod.sum((0, 4))
                else:
                    grad_w[:, c0:c1] = torch.matmul(flat, blocks).sum(0)
            if need_x or need_grid:  # dL/dsample = gout * w * mask, into the same buffer
                grad_samples = torch.mul(g, w[None, :, c0:c1, :, None], out=prod)
                if masks is not None:
                    grad_samples.mul_(masks[:, :, None])
                grad_img, grad_g = torch.ops.aten.grid_sampler_2d_backward(
                    grad_samples.view(batch * groups, c1 - c0, taps * out_h, out_w), images, grid,
                    0, 0, False, [bool(need_x), bool(need_grid)])
                if need_x:
                    grad_x[:, :, c0:c1] = grad_img.view(batch, groups, c1 - c0, *x.shape[-2:])
                if need_grid:
                    grad_grid += grad_g
        return (grad_x.view(x.shape) if need_x else None, grad_grid,
                grad_mask.view_as(mask) if grad_mask is not None else None,
                grad_w.view_as(weight) if need_w else None, None)


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    checkpoint: bool = False,
) -> torch.Tensor:
    """DCNv2: (B, Cin, H, W) -> (B, Cout, Hout, Wout).

    ``weight`` is (Cout, Cin / groups, kh, kw); ``groups`` and ``offset_groups`` are
    read from the shapes of ``weight`` and ``offset``. ``mask=None`` means all ones
    (DCNv1). Sampling runs in at least float32; the output has the weight's dtype.

    ``checkpoint=True`` keeps no (B, Cin*kh*kw, L) tensor for the backward pass (it is
    recomputed there: about one more forward of time) -- for training with many
    channels, where autograd would otherwise hold two such tensors per layer. The
    depthwise path never keeps them, so the flag changes nothing there.
    """
    stride, padding, dilation = (
        _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"))
    kh, kw = weight.shape[-2:]
    height, width = x.shape[-2:]
    out_hw = (
        _output_size(height, kh, stride[0], padding[0], dilation[0]),
        _output_size(width, kw, stride[1], padding[1], dilation[1]),
    )
    groups, offset_groups = _check_shapes(x, offset, mask, weight, bias, out_hw)
    # coordinates and sampling in at least float32: a half-precision grid would be off by
    # up to 1/32 pixel at coordinate 64
    sample_dtype = torch.promote_types(x.dtype, torch.float32)
    grid = _sampling_grid(
        offset.to(sample_dtype), (kh, kw), (height, width), out_hw, stride, padding, dilation)
    if groups == x.shape[1] == weight.shape[0]:  # depthwise (STMM): tap by tap, lean
        with _autocast_off(x.device):
            out = _DepthwiseDeformConv.apply(x, grid, mask, weight, offset_groups)
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1)
        return out
    args = (x, grid, mask, weight, bias, offset_groups, groups)
    if checkpoint and torch.is_grad_enabled():
        out = torch.utils.checkpoint.checkpoint(_sample_and_contract, *args, use_reentrant=False)
    else:
        out = _sample_and_contract(*args)
    return out.view(x.shape[0], -1, *out_hw)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer; offsets and mask come from the caller: ``forward(x, offset, mask)``.

    ``checkpoint=True`` trades one recomputation for not storing the
    (B, Cin*kh*kw, Hout*Wout) sampled columns for backward (see
    ``modulated_deform_conv2d``); the attribute can be switched at any time.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        checkpoint: bool = False,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must be "
                f"divisible by groups {groups}")
        if in_channels % offset_groups:
            raise ValueError(
                f"in_channels {in_channels} not divisible by offset_groups {offset_groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.offset_groups = offset_groups
        self.checkpoint = checkpoint  # recompute the sampled columns in backward
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initialisation as nn.Conv2d."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation,
            checkpoint=self.checkpoint)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, offset_groups={self.offset_groups}, "
            f"bias={self.bias is not None}, checkpoint={self.checkpoint}")


class DeformConvPack(ModulatedDeformConv2d):
    """DCNv2 that predicts its own offsets and mask (mmcv's ``ModulatedDeformConv2dPack``).

    ``conv_offset`` maps the guide (default: the input) to
    ``3 * offset_groups * kh * kw`` channels: the (dy, dx) offsets followed by the mask
    logits. It is zero-initialised, so at the start the offsets are 0 and the mask is
    ``sigmoid(0) = 0.5`` everywhere: the layer is a plain convolution with half weights
    (as in DCNv2 / mmcv).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        offset_in_channels: int | None = None,
        checkpoint: bool = False,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            offset_groups, bias, checkpoint)
        self.offset_in_channels = offset_in_channels or in_channels
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(
            self.offset_in_channels, 3 * offset_groups * taps, self.kernel_size,
            stride=self.stride, padding=self.padding, dilation=self.dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """guide (B, Cg, H, W) -> offset (B, 2*G*taps, Ho, Wo), mask (B, G*taps, Ho, Wo)."""
        if guide.shape[1] != self.offset_in_channels:
            raise ValueError(
                f"guide has {guide.shape[1]} channels, conv_offset expects "
                f"{self.offset_in_channels}")
        prediction = self.conv_offset(guide)
        split = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        offset, mask_logits = prediction[:, :split], prediction[:, split:]
        return offset, torch.sigmoid(mask_logits)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x if guide is None else guide)
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation,
            checkpoint=self.checkpoint)
