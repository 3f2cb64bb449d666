import pytest
import torch

from glsmamba.models.gsm import STMM, GSMBlock, SequentialChannelAttention, TypeMerge
from glsmamba.models.lrm import LRMBlock

DIM, T, H, W = 16, 3, 4, 6


def _check_block(block, x):
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # every parameter gets a gradient except the STMM guide, which sits behind the
    # zero-initialised offset conv (DCNv2 convention) at the first step
    missing = [n for n, p in block.named_parameters()
               if (p.grad is None or p.grad.abs().sum() == 0) and ".stmm.guide." not in n]
    assert not missing


@pytest.mark.parametrize("scan_types,use_stmm,expect_paths", [
    (("unified",), True, 2),
    (("unified", "spatial"), True, 4),
    (("unified", "spatial", "temporal"), True, 6),
    (("unified", "spatial", "temporal"), False, 6),
])
def test_gsm_ablation_switches(scan_types, use_stmm, expect_paths):
    block = GSMBlock(DIM, T, scan_types, use_stmm, d_state=4)
    assert block.mixer.num_paths == expect_paths
    has_stmm = block.mixer.merge.stmm is not None
    assert has_stmm == (use_stmm and len(scan_types) > 1)
    _check_block(block, torch.randn(2, T, H, W, DIM, requires_grad=True))


def test_gsm_without_channel_attention_and_errors():
    block = GSMBlock(DIM, T, use_channel_attention=False, d_state=4)
    assert isinstance(block.channel_attention, torch.nn.Identity)
    _check_block(block, torch.randn(1, T, H, W, DIM, requires_grad=True))
    with pytest.raises(ValueError, match="scan types"):
        GSMBlock(DIM, T, ("diagonal",))


def test_channel_attention_rescales_each_frame():
    attn = SequentialChannelAttention(DIM, T, reduction=4)
    x = torch.randn(2, T, H, W, DIM)
    out = attn(x)
    ratio = out / x  # one weight per (clip, frame, channel), in (0, 1)
    weights = ratio[:, :, :1, :1]
    torch.testing.assert_close(ratio, weights.expand_as(ratio))
    assert (weights > 0).all() and (weights < 1).all()
    # the weights of frame 0 depend on the other frames (frames are concatenated)
    y = x.clone()
    y[:, 2] += 1.0
    assert not torch.allclose(attn(y)[:, 0], out[:, 0])
    with pytest.raises(ValueError, match="3 frames"):
        attn(torch.randn(1, 5, H, W, DIM))


def test_channel_attention_width_options():
    full = SequentialChannelAttention(DIM, T, reduction=1)  # hidden = T*D
    assert full.fc1.in_features == full.fc1.out_features == T * DIM
    assert SequentialChannelAttention(DIM, T).fc1.out_features == 8  # T*D/16 = 3 -> floor 8
    assert SequentialChannelAttention(DIM, T, reduction=0.5).fc1.out_features == 2 * T * DIM
    with pytest.raises(ValueError, match="reduction"):
        SequentialChannelAttention(DIM, T, reduction=0)
    block = GSMBlock(DIM, T, ca_reduction=1.0, stmm_guide=12, d_state=4)
    assert block.channel_attention.fc1.out_features == T * DIM
    assert block.mixer.merge.stmm.guide.out_channels == 12
    _check_block(block, torch.randn(1, T, H, W, DIM, requires_grad=True))


def test_type_merge_sums_directions_without_stmm():
    merge = TypeMerge(8, 3, use_stmm=False)
    ys = torch.randn(2, 6, 8, T * H * W)
    torch.testing.assert_close(merge(ys, (T, H, W)), ys.sum(1))


def test_stmm_with_zero_compensation_is_the_plain_sum():
    stmm = STMM(8, 3)
    torch.nn.init.zeros_(stmm.dcn.weight)
    ys = torch.randn(2, 3, 8, T * H * W)
    torch.testing.assert_close(stmm(ys, (T, H, W)), ys.sum(1))


def test_stmm_is_per_frame_and_uses_temporal_context():
    torch.manual_seed(1)
    stmm = STMM(8, 3)
    torch.nn.init.normal_(stmm.dcn.conv_offset.weight, std=0.5)  # non-trivial offsets
    ys = torch.randn(1, 3, 8, T * H * W)
    out = stmm(ys, (T, H, W)).view(1, 8, T, H, W)
    # changing frame 2 changes frame 0's output only through the temporal guide
    changed = ys.view(1, 3, 8, T, H, W).clone()
    changed[..., 2, :, :] += 3.0
    out2 = stmm(changed.view(1, 3, 8, -1), (T, H, W)).view(1, 8, T, H, W)
    assert not torch.allclose(out[:, :, 0], out2[:, :, 0])
    stmm_no_temporal = STMM(8, 3)
    torch.nn.init.zeros_(stmm_no_temporal.dcn.conv_offset.weight)
    base = stmm_no_temporal(ys, (T, H, W)).view(1, 8, T, H, W)
    base2 = stmm_no_temporal(changed.view(1, 3, 8, -1), (T, H, W)).view(1, 8, T, H, W)
    torch.testing.assert_close(base[:, :, 0], base2[:, :, 0])


@pytest.mark.parametrize("reset", [True, False])
def test_lrm_block_with_padding(reset):
    block = LRMBlock(DIM, window=(3, 4), window_reset=reset, d_state=4)  # 4x6 not multiples
    assert block.mixer.num_paths == 2 and not hasattr(block, "channel_attention")
    _check_block(block, torch.randn(2, T, H, W, DIM, requires_grad=True))


def test_lrm_windows_are_local_when_state_resets():
    """With reset, tokens of one window do not see tokens of another window."""
    block = LRMBlock(DIM, window=(2, 3), window_reset=True, d_state=4)
    block.eval()
    x = torch.randn(1, T, H, W, DIM)
    # depthwise 3x3 convs mix neighbours, so compare windows far apart (rows 0-1 vs 3)
    y = x.clone()
    y[:, :, 3, 3:] += 1.0
    diff = (block(x) - block(y)).abs()
    assert diff[:, :, :2, :3].max() < 1e-6
    assert diff[:, :, 3, 3:].max() > 1e-4
