"""The paper's open choices as switches: S6 shared across the STS6D paths, STMM's
temporal modulation from the neighbouring frames (docs/MODEL.md, "Open choices")."""
from __future__ import annotations

import copy

import pytest
import torch

from glsmamba.engine.builder import build_model
from glsmamba.config import DEFAULTS
from glsmamba.errors import ConfigError
from glsmamba.models import create_model
from glsmamba.models.gsm import STMM, GSMBlock
from glsmamba.models.mixer import S6Paths

TINY = dict(dim=16, d_state=2, gsm_depth=1, lrm_depth=1, expand=1.0, mlp_ratio=2.0,
            input_size=(64, 96))


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def s6_set_size(E: int, N: int, R: int) -> int:
    """One path's S6 parameters: x_proj, dt_proj (+ bias), A_log, D."""
    return (R + 2 * N) * E + E * R + E + E * N + E


# ------------------------------------------------------------------ shared S6 parameters
def test_shared_s6_keeps_one_parameter_set():
    E, N, R, K = 12, 4, 3, 6
    per_path, shared = S6Paths(E, K, N, R), S6Paths(E, K, N, R, shared=True)
    assert shared.x_proj_weight.shape == (1, R + 2 * N, E)
    assert shared.dt_proj_weight.shape == (1, E, R)
    assert shared.A_log.shape == (E, N) and shared.D.shape == (E,)
    assert trainable(per_path) - trainable(shared) == (K - 1) * s6_set_size(E, N, R)
    x_proj, dt_proj, dt_bias, A_log, D = shared.path_parameters()
    assert x_proj.shape == per_path.x_proj_weight.shape and A_log.shape == per_path.A_log.shape
    assert dt_bias.shape == (K, E) and D.shape == (K * E,)


def test_shared_s6_equals_per_path_with_identical_copies():
    torch.manual_seed(0)
    E, N, R, K = 8, 3, 2, 6
    shared, per_path = S6Paths(E, K, N, R, shared=True), S6Paths(E, K, N, R)
    with torch.no_grad():
        for name in ("x_proj_weight", "dt_proj_weight", "dt_proj_bias"):
            getattr(per_path, name).copy_(getattr(shared, name).expand_as(getattr(per_path, name)))
        per_path.A_log.copy_(shared.A_log.repeat(K, 1))
        per_path.D.copy_(shared.D.repeat(K) + 0.0)
    xs = torch.randn(2, K, E, 20)
    torch.testing.assert_close(shared(xs), per_path(xs), rtol=1e-5, atol=1e-5)
    # the shared set's gradient is the sum of the per-path gradients
    shared(xs).square().sum().backward()
    per_path(xs).square().sum().backward()
    torch.testing.assert_close(shared.x_proj_weight.grad[0], per_path.x_proj_weight.grad.sum(0),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared.A_log.grad, per_path.A_log.grad.view(K, E, N).sum(0),
                               rtol=1e-4, atol=1e-5)


def test_shared_s6_model_counts_and_trains():
    per_path = create_model("glsmamba-tiny", **TINY)
    shared = create_model("glsmamba-tiny", **TINY, share_s6=True)
    mixer = shared.gsm_blocks[0].mixer
    assert mixer.s6.shared and mixer.num_paths == 6
    assert not shared.lrm_blocks[0].mixer.s6.shared  # the switch is about the STS6D paths
    s6 = mixer.s6
    assert trainable(per_path) - trainable(shared) == 5 * s6_set_size(s6.d_inner, s6.d_state, s6.dt_rank)
    feats = torch.randn(2, 5, shared.feature_channels, 12, 8)
    out = shared.forward_features(feats)
    assert out.shape == (2, 17, 24, 16)
    out.square().sum().backward()
    assert s6.x_proj_weight.grad is not None and s6.x_proj_weight.grad.abs().sum() > 0
    assert s6.A_log.grad is not None and torch.isfinite(s6.A_log.grad).all()


def test_shared_s6_is_the_reading_under_which_the_paper_ablation_counts_agree():
    """Paper: "unified only" and "full STS6D without STMM" have the same parameters."""
    def count(**kw):
        return trainable(GSMBlock(24, 5, expand=1.0, d_state=4, use_stmm=False, **kw))
    assert count(scan_types=("unified",), share_s6=True) == count(share_s6=True)
    assert count(scan_types=("unified",)) < count()  # per path: 4 more parameter sets


# ------------------------------------------------------------------ STMM temporal modulation
def test_stmm_neighbours_parameters_and_validation():
    clip, neigh = STMM(16, 3, 8), STMM(16, 3, 8, temporal="neighbours")
    assert clip.guide_width == 16 and neigh.guide_width == 24
    taps, groups = 9, 3
    assert trainable(neigh) - trainable(clip) == 8 * taps * (3 * groups * taps)
    with pytest.raises(ValueError, match="neighbours"):
        STMM(16, 3, 8, temporal="time")
    with pytest.raises(ConfigError, match="stmm"):
        create_model("glsmamba-tiny", stmm_temporal="sideways")


def test_stmm_neighbour_guide_uses_t_minus_1_and_t_plus_1_only():
    stmm = STMM(4, 3, 2, temporal="neighbours")
    guide = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(1, 5, 2, 3, 3).contiguous()
    out = stmm.temporal_guide(guide)
    assert out.shape == (1, 5, 6, 3, 3)
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.arange(5.0))            # g_t
    torch.testing.assert_close(out[0, :, 2, 0, 0], torch.tensor([0., -1, -1, -1, -1]))  # g_{t-1} - g_t
    torch.testing.assert_close(out[0, :, 4, 0, 0], torch.tensor([1., 1, 1, 1, 0]))      # g_{t+1} - g_t
    # frame 0's guide ignores frame 3; the clip-mean guide does not
    changed = guide.clone()
    changed[:, 3] += 10
    assert torch.equal(stmm.temporal_guide(changed)[:, 0], out[:, 0])
    clip = STMM(4, 3, 2)
    assert not torch.equal(clip.temporal_guide(changed)[:, 0], clip.temporal_guide(guide)[:, 0])


def test_stmm_neighbours_model_forward_backward():
    torch.manual_seed(0)
    model = create_model("glsmamba-tiny", **TINY, stmm_temporal="neighbours")
    base = create_model("glsmamba-tiny", **TINY)
    stmm = model.gsm_blocks[0].mixer.merge.stmm
    assert stmm.temporal == "neighbours"
    G = stmm.guide_channels
    assert trainable(model) - trainable(base) == G * 9 * 81
    with torch.no_grad():  # non-zero offsets so that the guide matters
        stmm.dcn.conv_offset.weight.normal_(std=0.1)
    feats = torch.randn(2, 5, model.feature_channels, 12, 8)
    out = model.forward_features(feats)
    assert out.shape == (2, 17, 24, 16)
    out.square().sum().backward()
    assert stmm.dcn.conv_offset.weight.grad.abs().sum() > 0
    assert stmm.guide.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ reachable from configs
def test_switches_reach_the_model_from_config_overrides():
    config = copy.deepcopy(DEFAULTS)
    config["model"]["random_encoder_ok"] = True
    config["model"]["overrides"] = {**TINY, "input_size": [64, 96], "share_s6": True,
                                    "stmm_temporal": "neighbours"}
    model = build_model(config, log=lambda *_: None)
    block = model.gsm_blocks[0]
    assert block.mixer.s6.shared and block.mixer.merge.stmm.temporal == "neighbours"


def test_switch_presets_measure():
    from glsmamba.models.flops import measure_preset
    base, shared, neigh = (measure_preset(n) for n in (
        "glsmamba-b", "glsmamba-b-shared-s6", "glsmamba-b-stmm-neighbours"))
    # 4 GSM blocks x 5 dropped path sets of 192 channels, N = 16, dt_rank 12
    assert base.total_trainable - shared.total_trainable == 4 * 5 * s6_set_size(192, 16, 12)
    # 4 GSM blocks x G = 24 more guide channels into the 3x3 offset / mask conv
    assert neigh.total_trainable - base.total_trainable == 4 * 24 * 9 * 81
    assert shared.total_flops == pytest.approx(base.total_flops, rel=1e-3)
    assert neigh.total_flops > base.total_flops
