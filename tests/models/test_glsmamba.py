import pytest
import torch

from glsmamba.errors import ConfigError
from glsmamba.models import create_model
from glsmamba.models.glsmamba import GLSMamba, SpatioTemporalEmbedding, ViTPoseBaseline, sincos_2d

SMALL = dict(encoder_arch="vit-tiny", input_size=(48, 64), dim=16, gsm_depth=1, lrm_depth=1,
             d_state=2, mlp_ratio=2.0)


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_forward_any_odd_clip_length(frames):
    model = GLSMamba(num_joints=5, num_frames=frames, **SMALL)
    assert model.input_size == (48, 64) and model.heatmap_size == (12, 16)
    clip = torch.randn(2, frames, 3, 64, 48)
    heatmaps = model(clip)
    assert heatmaps.shape == (2, 5, 16, 12)
    heatmaps.square().mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())  # frozen
    assert model.head.final_layer.weight.grad.abs().sum() > 0


def test_encode_then_forward_features_equals_forward():
    model = GLSMamba(num_frames=3, **SMALL).eval()
    clip = torch.randn(1, 3, 3, 64, 48)
    feats = model.encode(clip)
    assert feats.shape == (1, 3, model.encoder.out_channels, 16, 12)
    assert not feats.requires_grad  # frozen encoder: no graph
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(feats), model(clip))


def test_frozen_encoder_stays_in_eval_mode():
    model = GLSMamba(num_frames=1, **SMALL)
    model.train()
    assert model.training and not model.encoder.training and model.blocks.training
    unfrozen = GLSMamba(num_frames=1, freeze_encoder=False, **SMALL).train()
    assert unfrozen.encoder.training
    assert unfrozen.encode(torch.randn(1, 1, 3, 64, 48)).requires_grad


def test_wrong_clip_length_and_even_frames():
    model = GLSMamba(num_frames=3, **SMALL)
    with pytest.raises(ValueError, match="T=3"):
        model.forward_features(torch.randn(1, 5, model.encoder.out_channels, 16, 12))
    with pytest.raises(ValueError, match="odd"):
        GLSMamba(num_frames=4, **SMALL)
    with pytest.raises(ConfigError):
        GLSMamba(num_frames=3, feature_stride=2, **SMALL)


def test_temporal_embedding_centred_for_odd_lengths():
    embed = SpatioTemporalEmbedding(8, 12, max_frames=7)
    centre = embed.temporal[3]
    for frames in (1, 3, 5, 7):
        table = embed.temporal_embedding(frames)
        assert table.shape == (frames, 12)
        torch.testing.assert_close(table[frames // 2], centre)
    torch.testing.assert_close(embed.temporal_embedding(3), embed.temporal[2:5])
    with pytest.raises(ValueError):
        embed.temporal_embedding(9)
    with pytest.raises(ValueError):
        embed.temporal_embedding(2)
    out = embed(torch.zeros(2, 3, 8, 4, 5))
    expected = embed.proj.bias + sincos_2d(4, 5, 12)[None] + embed.temporal[2:5, None, None]
    torch.testing.assert_close(out, expected.expand(2, 3, 4, 5, 12))


def test_sincos_embedding_values():
    table = sincos_2d(3, 4, 8)  # quarter = 2, omega = [1, 1e-2]
    assert table.shape == (3, 4, 8)
    row = torch.tensor([2.0, 0.02])  # h = 2
    col = torch.tensor([1.0, 0.01])  # w = 1
    expected = torch.cat([row.sin(), row.cos(), col.sin(), col.cos()])
    torch.testing.assert_close(table[2, 1], expected)
    with pytest.raises(ConfigError):
        sincos_2d(2, 2, 6)


def test_low_resolution_variant_upsamples_to_quarter():
    model = GLSMamba(num_frames=3, feature_stride=16, **SMALL)
    feats = model.encode(torch.randn(1, 3, 3, 64, 48))
    assert feats.shape == (1, 3, model.encoder.backbone.embed_dim, 4, 3)
    assert model.forward_features(feats).shape == (1, 17, 16, 12)
    mid = GLSMamba(num_frames=1, feature_stride=8, **SMALL)
    assert mid.encode(torch.randn(1, 1, 3, 64, 48)).shape[-2:] == (8, 6)


def test_single_frame_baseline():
    model = ViTPoseBaseline(num_joints=4, num_frames=5, encoder_arch="vit-tiny", input_size=(48, 64))
    assert "keypoint_head.final_layer.weight" in model.state_dict()
    clip = torch.randn(2, 5, 3, 64, 48)
    feats = model.encode(clip)
    assert feats.shape[:2] == (2, 1)
    # only the centre frame matters
    other = clip.clone()
    other[:, 0] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(clip), model(other))
        assert model(clip).shape == (2, 4, 16, 12)
    torch.testing.assert_close(model.forward_features(feats), model(clip))


def test_tiny_preset_runs_a_clip():
    model = create_model("glsmamba-tiny", num_joints=3)
    W, H = model.input_size
    out = model(torch.randn(1, 5, 3, H, W))
    assert out.shape == (1, 3, H // 4, W // 4) and torch.isfinite(out).all()


def test_width_options_reach_the_blocks():
    model = GLSMamba(num_frames=3, ca_reduction=1.0, stmm_guide=4, expand=1.0, **SMALL)
    gsm = model.gsm_blocks[0]
    assert gsm.channel_attention.fc1.out_features == 3 * 16  # hidden = T*D
    assert gsm.mixer.merge.stmm.guide.out_channels == 4
    assert gsm.mixer.d_inner == model.lrm_blocks[0].mixer.d_inner == 16  # expand 1
