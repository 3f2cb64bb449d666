"""modulated_deform_conv2d against a per-pixel loop formula, F.conv2d and torchvision."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glsmamba.ops.deform_conv import (
    DeformConvPack, ModulatedDeformConv2d, modulated_deform_conv2d)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------- plain reference
def _bilinear_zero_corners(image: torch.Tensor, y: float, x: float) -> float:
    """torchvision's rule: bilinear, every corner outside the image counts 0."""
    height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    value = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * float(image[yy, xx])
    return value


def reference_deform_conv(x, offset, mask, weight, bias=None, stride=(1, 1), padding=(0, 0),
                          dilation=(1, 1)) -> torch.Tensor:
    """Explicit loops over output pixels, channels and kernel locations (tiny sizes only)."""
    x, offset, weight = (t.detach().double() for t in (x, offset, weight))
    mask = None if mask is None else mask.detach().double()
    bias = None if bias is None else bias.detach().double()
    batch, in_channels, _, _ = x.shape
    out_channels, in_per_group, kh, kw = weight.shape
    groups = in_channels // in_per_group
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[-2:]
    out = torch.zeros(batch, out_channels, out_h, out_w, dtype=torch.float64)
    for b in range(batch):
        for oc in range(out_channels):
            group = oc // (out_channels // groups)
            for oy in range(out_h):
                for ox in range(out_w):
                    total = 0.0 if bias is None else float(bias[oc])
                    for ic in range(in_per_group):
                        channel = group * in_per_group + ic
                        og = channel // (in_channels // offset_groups)
                        for i in range(kh):
                            for j in range(kw):
                                k = i * kw + j
                                dy = float(offset[b, og * 2 * taps + 2 * k, oy, ox])
                                dx = float(offset[b, og * 2 * taps + 2 * k + 1, oy, ox])
                                m = 1.0 if mask is None else float(mask[b, og * taps + k, oy, ox])
                                y = oy * stride[0] - padding[0] + i * dilation[0] + dy
                                xx = ox * stride[1] - padding[1] + j * dilation[1] + dx
                                sample = _bilinear_zero_corners(x[b, channel], y, xx)
                                total += float(weight[oc, ic, i, j]) * m * sample
                    out[b, oc, oy, ox] = total
    return out


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _random_case(batch=1, in_channels=4, out_channels=4, size=(5, 6), kernel=(3, 3),
                 stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, offset_groups=1,
                 offset_scale=1.5, dtype=torch.float64):
    x = torch.randn(batch, in_channels, *size, dtype=dtype)
    weight = torch.randn(out_channels, in_channels // groups, *kernel, dtype=dtype)
    bias = torch.randn(out_channels, dtype=dtype)
    out_hw = tuple(_out_size(size[a], kernel[a], stride[a], padding[a], dilation[a])
                   for a in range(2))
    taps = kernel[0] * kernel[1]
    offset = torch.randn(batch, 2 * offset_groups * taps, *out_hw, dtype=dtype) * offset_scale
    mask = torch.rand(batch, offset_groups * taps, *out_hw, dtype=dtype)
    return x, offset, mask, weight, bias


# ----------------------------------------------------------------- forward
@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(stride=(2, 2)),
        dict(stride=(1, 2), padding=(0, 2), dilation=(2, 1)),
        dict(groups=2),
        dict(offset_groups=2),
        dict(groups=2, offset_groups=4, out_channels=6),
        dict(kernel=(1, 3), padding=(0, 1)),
        dict(offset_scale=4.0),  # many samples outside the image
    ],
)
def test_matches_loop_reference(config):
    x, offset, mask, weight, bias = _random_case(**config)
    stride, padding, dilation = (config.get(k, d) for k, d in
                                 (("stride", (1, 1)), ("padding", (1, 1)), ("dilation", (1, 1))))
    expected = reference_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation)
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # float32 agrees to fp32 rounding
    out32 = modulated_deform_conv2d(x.float(), offset.float(), mask.float(), weight.float(),
                                    bias.float(), stride, padding, dilation)
    torch.testing.assert_close(out32.double(), expected, rtol=1e-5, atol=1e-5)


def test_zero_offset_unit_mask_is_conv2d():
    x = torch.randn(2, 6, 11, 9)
    weight = torch.randn(8, 3, 3, 3)
    bias = torch.randn(8)
    for stride, padding, dilation in [(1, 1, 1), (2, 1, 1), ((1, 2), (2, 1), (2, 1))]:
        expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups=2)
        out_hw = expected.shape[-2:]
        offset = torch.zeros(2, 2 * 9, *out_hw)
        mask = torch.ones(2, 9, *out_hw)
        out = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        # mask=None means DCNv1 (all ones)
        out_v1 = modulated_deform_conv2d(x, offset, None, weight, bias, stride, padding, dilation)
        torch.testing.assert_close(out_v1, expected, rtol=1e-5, atol=1e-5)


def test_offset_layout_is_dy_dx():
    """A 1x1 kernel with offset (dy, dx) = (1, 0) reads the row below; (0, 1) the next column."""
    x = torch.arange(20.0).view(1, 1, 4, 5)
    weight = torch.ones(1, 1, 1, 1)
    mask = torch.ones(1, 1, 4, 5)
    down = torch.zeros(1, 2, 4, 5)
    down[:, 0] = 1.0
    out = modulated_deform_conv2d(x, down, mask, weight)
    torch.testing.assert_close(out[0, 0, :3], x[0, 0, 1:])
    assert torch.all(out[0, 0, 3] == 0)  # row 4 is outside: zero
    right = torch.zeros(1, 2, 4, 5)
    right[:, 1] = 0.5
    out = modulated_deform_conv2d(x, right, mask, weight)
    torch.testing.assert_close(out[0, 0, :, :4], x[0, 0, :, :4] + 0.5)
    torch.testing.assert_close(out[0, 0, :, 4], 0.5 * x[0, 0, :, 4])  # half the corner is out


def test_samples_outside_image_are_zero():
    x, offset, mask, weight, bias = _random_case(dtype=torch.float32)
    far = torch.full_like(offset, 50.0)
    out = modulated_deform_conv2d(x, far, mask, weight, bias, 1, 1, 1)
    torch.testing.assert_close(out, bias.view(1, -1, 1, 1).expand_as(out))
    # positions exactly -1 and exactly H read zero (torchvision's boundary)
    x = torch.ones(1, 1, 3, 3)
    unit = torch.ones(1, 1, 1, 1)
    for shift, zero_row, inside_row in ((-1.0, 0, 1), (3.0, 0, None)):
        offset = torch.zeros(1, 2, 3, 3)
        offset[:, 0] = shift
        out = modulated_deform_conv2d(x, offset, None, unit)
        assert float(out[0, 0, zero_row].abs().max()) == 0.0
        if inside_row is not None:
            torch.testing.assert_close(out[0, 0, inside_row], torch.ones(3))


def test_mask_scales_contributions():
    x, offset, mask, weight, _ = _random_case(dtype=torch.float64)
    half = modulated_deform_conv2d(x, offset, mask * 0.5, weight, padding=1)
    full = modulated_deform_conv2d(x, offset, mask, weight, padding=1)
    torch.testing.assert_close(half, 0.5 * full)


# ----------------------------------------------------------------- backward
@pytest.mark.parametrize("config, fast_mode", [
    (dict(), True),  # full Jacobian here takes ~15 s: random-projection check instead
    (dict(groups=2, offset_groups=2, stride=(2, 1)), False),
])
def test_gradcheck(config, fast_mode):
    """float64 gradcheck w.r.t. x, offset, mask, weight and bias."""
    x, offset, mask, weight, bias = _random_case(
        in_channels=2 * config.get("groups", 1), out_channels=2, size=(4, 4), **config)
    stride = config.get("stride", (1, 1))
    inputs = tuple(t.clone().requires_grad_(True) for t in (x, offset, mask, weight, bias))

    def func(x, offset, mask, weight, bias):
        return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, 1, 1)

    assert torch.autograd.gradcheck(func, inputs, eps=1e-6, atol=1e-5, rtol=1e-4,
                                    fast_mode=fast_mode)


def test_float32_gradients_match_float64():
    """fp32 gradients agree with fp64 ones (1e-4)."""
    x, offset, mask, weight, bias = _random_case(in_channels=4, size=(6, 5))
    grads = {}
    for dtype in (torch.float64, torch.float32):
        tensors = [t.detach().to(dtype).clone().requires_grad_(True)
                   for t in (x, offset, mask, weight, bias)]
        out = modulated_deform_conv2d(*tensors, 1, 1, 1)
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        grads[dtype] = [t.grad.double() for t in tensors]
    for g64, g32 in zip(grads[torch.float64], grads[torch.float32]):
        torch.testing.assert_close(g32, g64, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------- modules and errors
def test_module_and_pack():
    torch.manual_seed(1)
    layer = ModulatedDeformConv2d(4, 6, kernel_size=3, stride=1, padding=1, groups=2,
                                  offset_groups=2)
    x = torch.randn(2, 4, 7, 5)
    offset = torch.randn(2, 2 * 2 * 9, 7, 5)
    mask = torch.rand(2, 2 * 9, 7, 5)
    expected = reference_deform_conv(x.double(), offset.double(), mask.double(),
                                     layer.weight.double(), layer.bias.double(),
                                     (1, 1), (1, 1), (1, 1))
    torch.testing.assert_close(layer(x, offset, mask).double(), expected, rtol=1e-5, atol=1e-5)

    pack = DeformConvPack(4, 6, offset_groups=2, offset_in_channels=3)
    guide = torch.randn(2, 3, 7, 5)
    # zero-initialised offsets, mask sigmoid(0) = 0.5: a plain conv with half weights
    expected = F.conv2d(x, 0.5 * pack.weight, pack.bias, padding=1)
    torch.testing.assert_close(pack(x, guide), expected, rtol=1e-5, atol=1e-5)
    # after training the offset conv moves: gradients reach it
    out = pack(x, guide)
    out.square().sum().backward()
    assert pack.conv_offset.bias.grad is not None
    assert float(pack.conv_offset.bias.grad.abs().sum()) > 0
    # the offsets/mask it predicts are used the documented way
    with torch.no_grad():
        pack.conv_offset.weight.normal_(std=0.3)
        offset, mask = pack.offsets_and_mask(guide)
        torch.testing.assert_close(
            pack(x, guide), modulated_deform_conv2d(x, offset, mask, pack.weight, pack.bias, 1, 1))
        assert offset.shape == (2, 36, 7, 5) and mask.shape == (2, 18, 7, 5)
        assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    default_guide = DeformConvPack(4, 4)
    assert default_guide(x).shape == (2, 4, 7, 5)


def test_shape_errors_are_clear():
    x = torch.randn(1, 4, 5, 5)
    weight = torch.randn(4, 4, 3, 3)
    with pytest.raises(ValueError, match="offset shape"):
        modulated_deform_conv2d(x, torch.zeros(1, 18, 4, 4), None, weight, padding=1)
    with pytest.raises(ValueError, match="mask shape"):
        modulated_deform_conv2d(x, torch.zeros(1, 18, 5, 5), torch.ones(1, 3, 5, 5), weight,
                                padding=1)
    with pytest.raises(ValueError, match="offset must be"):
        modulated_deform_conv2d(x, torch.zeros(1, 17, 5, 5), None, weight, padding=1)
    with pytest.raises(ValueError, match="divisible"):
        ModulatedDeformConv2d(4, 6, groups=4)
    with pytest.raises(ValueError, match="guide"):
        DeformConvPack(4, 4, offset_in_channels=2)(x, x)


# ----------------------------------------------------------------- torchvision
@pytest.mark.parametrize("config", [dict(), dict(groups=2, offset_groups=2, stride=(2, 1)),
                                    dict(offset_scale=4.0, dilation=(2, 2), padding=(2, 2))])
def test_matches_torchvision(config):
    ops = pytest.importorskip("torchvision.ops")
    x, offset, mask, weight, bias = _random_case(
        batch=2, in_channels=4, size=(7, 6), dtype=torch.float64, **config)
    stride, padding, dilation = (config.get(k, d) for k, d in
                                 (("stride", (1, 1)), ("padding", (1, 1)), ("dilation", (1, 1))))
    tensors = [t.clone().requires_grad_(True) for t in (x, offset, mask, weight, bias)]
    ours = modulated_deform_conv2d(*tensors, stride, padding, dilation)
    ours.sum().backward()
    theirs_inputs = [t.clone().detach().requires_grad_(True)
                     for t in (x, offset, mask, weight, bias)]
    xi, oi, mi, wi, bi = theirs_inputs
    theirs = ops.deform_conv2d(xi, oi, wi, bi, stride, padding, dilation, mask=mi)
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-8)
    for mine, other in zip(tensors, theirs_inputs):
        torch.testing.assert_close(mine.grad, other.grad, rtol=1e-6, atol=1e-6)


def test_half_precision_input_samples_in_float32():
    """bfloat16 activations/offsets: the sampling coordinates (up to 47 here) are not
    rounded to bfloat16 (1/4 pixel steps there); the output dtype follows the weight."""
    x, offset, mask, weight, bias = _random_case(in_channels=4, size=(6, 48), dtype=torch.float32)
    expected = modulated_deform_conv2d(x.bfloat16().float(), offset.bfloat16().float(),
                                       mask.bfloat16().float(), weight, bias, 1, 1, 1)
    out = modulated_deform_conv2d(x.bfloat16(), offset.bfloat16(), mask.bfloat16(), weight,
                                  bias, 1, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out_bf16 = modulated_deform_conv2d(x, offset, mask, weight.bfloat16(), bias.bfloat16(),
                                       1, 1, 1)
    assert out_bf16.dtype == torch.bfloat16


def test_non_contiguous_inputs():
    x, offset, mask, weight, bias = _random_case(batch=2, dtype=torch.float32)
    expected = modulated_deform_conv2d(x, offset, mask, weight, bias, 1, 1, 1)
    x_t = x.transpose(2, 3).contiguous().transpose(2, 3)
    offset_t = offset.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    mask_t = mask.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)
    assert not offset_t.is_contiguous() and not mask_t.is_contiguous()
    out = modulated_deform_conv2d(x_t, offset_t, mask_t, weight, bias, 1, 1, 1)
    torch.testing.assert_close(out, expected)


def test_checkpoint_gives_same_values_and_gradients():
    x, offset, mask, weight, bias = _random_case(batch=2, groups=2, offset_groups=2,
                                                 dtype=torch.float32)
    results = []
    for checkpoint in (False, True):
        tensors = [t.clone().requires_grad_(True) for t in (x, offset, mask, weight, bias)]
        out = modulated_deform_conv2d(*tensors, 1, 1, 1, checkpoint=checkpoint)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out.detach()] + [t.grad for t in tensors])
    for plain, recomputed in zip(*results):
        torch.testing.assert_close(recomputed, plain, rtol=1e-6, atol=1e-6)
    layer = DeformConvPack(4, 4, checkpoint=True)
    assert layer.checkpoint and "checkpoint=True" in repr(layer)
    with torch.no_grad():  # no graph: the in-place mask path
        torch.testing.assert_close(layer(x), modulated_deform_conv2d(
            x, *layer.offsets_and_mask(x), layer.weight, layer.bias, 1, 1))
