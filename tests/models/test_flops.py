import torch.nn as nn

from glsmamba.models.flops import (
    CostReport, deform_sampling_flops, format_report, measure, measure_preset, scan_flops)
from glsmamba.models.glsmamba import GLSMamba
from glsmamba.models.vitpose import encoder_flops


def test_scan_formula_hand_count():
    # 1 clip, 2 paths, 3 channels, 4 steps, N = 5. Per state: exp, delta*A, (delta*u)*B,
    # state multiply-add, read-out multiply-add = 5; per channel-step: bias add, softplus
    # (exp + log1p), delta*u, skip multiply-add = 5. 2*3*4 = 24 channel-steps.
    assert scan_flops(1, 2, 3, 4, 5) == 24 * (5 * 5 + 5) == 720
    assert scan_flops(2, 2, 3, 4, 5) == 2 * 720


def test_deform_sampling_formula():
    # 4 bilinear multiply-adds + 1 mask multiply per (channel, tap, output position)
    assert deform_sampling_flops(1, 2, 9, 6) == 2 * 9 * 6 * 5


SMALL = dict(encoder_arch="vit-tiny", input_size=(48, 64), dim=16, d_state=2, mlp_ratio=2.0,
             num_frames=3)


def test_measure_breakdown_matches_formulas():
    model = GLSMamba(gsm_depth=1, lrm_depth=1, **SMALL).eval()
    report = measure(model)
    assert set(report.flops) == {"encoder", "embedding", "gsm", "lrm", "head"}
    assert report.flops["encoder"] == 3 * encoder_flops("vit-tiny", (64, 48))
    h, w, D, L = 16, 12, 16, 3 * 16 * 12
    # embedding: one linear C -> D per token; head: 1x1 conv D -> 17 on the centre frame
    assert report.flops["embedding"] == L * model.encoder.out_channels * D
    assert report.flops["head"] == h * w * D * 17
    E = 32
    gsm_scan = scan_flops(1, 6, E, L, 2)
    # sampling + mask, and the depthwise contraction (1 multiply-add per tap, by formula)
    stmm_sampling = deform_sampling_flops(3, 3 * E, 9, h * w) + 3 * 3 * E * 9 * h * w
    assert report.extra_flops["gsm"] == gsm_scan + stmm_sampling
    lrm_windows = 2 * 2  # 16x12 cut into 8x6 windows -> 2 x 2, each 8*6*3 steps
    assert report.extra_flops["lrm"] == scan_flops(lrm_windows, 2, E, 8 * 6 * 3, 2)
    assert report.trainable["gsm"] == sum(p.numel() for p in model.blocks[0].parameters())
    assert report.frozen["encoder"] == sum(p.numel() for p in model.encoder.parameters())
    assert "gsm" in format_report("small", report)


def test_linear_counted_as_one_multiply_add():
    class Tiny(nn.Module):
        input_size = (16, 16)
        num_frames = 1

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 5)

        def encode(self, clip):
            return self.fc(clip[:, 0].flatten(2).transpose(1, 2))  # (1, 256, 5)

        def forward_features(self, feats):
            return feats

    report = measure(Tiny(), frames=1)
    assert report.flops["encoder"] == 16 * 16 * 3 * 5


def test_glsmamba_b_costs_on_meta():
    """GLSMamba-B: the paper's 9.8 M trainable parameters and 138.9 GFLOPs a clip."""
    report = measure_preset("glsmamba-b")
    assert abs(report.total_trainable - 9.8e6) / 9.8e6 < 0.05
    assert abs(report.total_flops - 138.9e9) / 138.9e9 < 0.08
    assert report.flops["encoder"] == 5 * encoder_flops("vit-b", (256, 192))
    assert isinstance(report, CostReport) and report.total_flops > report.flops["encoder"]
    # each GSM block scans 6 paths of 192 channels with N = 16 (the scan benchmark's case)
    L = 5 * 64 * 48
    stmm_sampling = deform_sampling_flops(5, 3 * 192, 9, 64 * 48) + 5 * 3 * 192 * 9 * 64 * 48
    assert report.extra_flops["gsm"] == 4 * (scan_flops(1, 6, 192, L, 16) + stmm_sampling)


def test_glsmamba_b_lr_costs_on_meta():
    report = measure_preset("glsmamba-b-lr")
    assert abs(report.total_trainable - 9.8e6) / 9.8e6 < 0.05
    assert abs(report.total_flops - 85.1e9) / 85.1e9 < 0.08


def test_ablations_move_in_the_papers_direction():
    """Fewer scan types or no STMM: fewer parameters and FLOPs than the full model."""
    costs = {name: measure_preset(name) for name in (
        "glsmamba-b", "glsmamba-b-unified", "glsmamba-b-unified-spatial", "glsmamba-b-no-stmm")}
    full = costs["glsmamba-b"]
    for name in ("glsmamba-b-unified", "glsmamba-b-unified-spatial", "glsmamba-b-no-stmm"):
        assert costs[name].total_trainable < full.total_trainable
        assert costs[name].total_flops < full.total_flops
    unified, both = costs["glsmamba-b-unified"], costs["glsmamba-b-unified-spatial"]
    assert unified.total_trainable < both.total_trainable
    assert unified.total_flops < both.total_flops
