import pytest
import torch

from glsmamba.errors import ConfigError
from glsmamba.models.transformer import GlobalAttention, TransformerBlock, TransformerPose

SMALL = dict(encoder_arch="vit-tiny", input_size=(48, 64), dim=16, depth=2, num_heads=2,
             num_frames=3)


@pytest.mark.parametrize("stride", [16, 8, 4])
def test_transformer_baseline_shapes(stride):
    model = TransformerPose(feature_stride=stride, num_joints=7, **SMALL)
    clip = torch.randn(2, 3, 3, 64, 48)
    feats = model.encode(clip)
    assert feats.shape[-2:] == (64 // stride, 48 // stride)
    heatmaps = model.forward_features(feats)
    assert heatmaps.shape == (2, 7, 16, 12)
    heatmaps.square().mean().backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_attention_is_global_softmax_attention():
    attn = GlobalAttention(8, 2)
    tokens = torch.randn(1, 10, 8)
    q, k, v = attn.qkv(tokens).view(1, 10, 3, 2, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(4) = 2
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(1, 10, 8))
    torch.testing.assert_close(attn(tokens), expected, rtol=1e-5, atol=1e-6)


def test_block_mixes_all_frames():
    block = TransformerBlock(8, 2).eval()
    x = torch.randn(1, 3, 2, 2, 8)
    y = x.clone()
    y[:, 2, 1, 1] += torch.randn(8)  # not a constant shift: LayerNorm would remove it
    assert (block(x)[:, 0] - block(y)[:, 0]).abs().max() > 1e-5  # frame 0 sees frame 2


def test_heads_must_divide_dim():
    with pytest.raises(ConfigError):
        GlobalAttention(10, 3)
