"""Memory-lean training: activation checkpointing, lean saved tensors, bf16 autocast.

Checkpointed and plain runs must give the same values and gradients; the lean paths
(depthwise DCN, scan) must keep no per-tap / per-state tensors for backward; a bf16
autocast step must agree with fp32 within a stated tolerance.
"""
from __future__ import annotations

import pytest
import torch

from glsmamba.models import create_model
from glsmamba.models.gsm import GSMBlock
from glsmamba.models.lrm import LRMBlock
from glsmamba.models.transformer import TransformerBlock
from glsmamba.ops.deform_conv import _sample_and_contract, _sampling_grid, modulated_deform_conv2d
from glsmamba.ops.selective_scan import selective_scan

SMALL = dict(input_size=(48, 64), dim=16, d_state=2, gsm_depth=1, lrm_depth=1, mlp_ratio=1.0)


def saved_tensors(fn):
    """Run ``fn()`` and return (its result, the distinct tensors autograd saved)."""
    seen = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, list(seen.values())


def saved_bytes(tensors, exclude=()) -> int:
    skip = {p.untyped_storage().data_ptr() for p in exclude}
    return sum(t.untyped_storage().nbytes() for t in tensors
               if t.untyped_storage().data_ptr() not in skip)


def grads_of(module, x, grad):
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(1)  # drop path draws
    out = module(x)
    out.backward(grad)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()
                                  if p.grad is not None}


def assert_same_run(module, x):
    grad = torch.randn_like(module(x))
    module.set_grad_checkpointing(False)
    plain = grads_of(module, x, grad)
    module.set_grad_checkpointing(True)
    ckpt = grads_of(module, x, grad)
    torch.testing.assert_close(ckpt[0], plain[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ckpt[1], plain[1], rtol=1e-5, atol=1e-7)
    assert ckpt[2].keys() == plain[2].keys() and plain[2]
    for name in plain[2]:
        torch.testing.assert_close(ckpt[2][name], plain[2][name], rtol=1e-5, atol=1e-7,
                                   msg=name)


@pytest.mark.parametrize("block_type", ["gsm", "lrm", "transformer"])
def test_block_checkpointing_same_values_and_grads(block_type):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 6, 16)
    if block_type == "gsm":
        block = GSMBlock(16, 3, d_state=2, expand=1.0, mlp_ratio=2.0, drop_path=0.3)
        with torch.no_grad():  # non-zero DCN offsets / masks, so the STMM path is exercised
            block.mixer.merge.stmm.dcn.conv_offset.weight.normal_(0, 0.1)
    elif block_type == "lrm":
        block = LRMBlock(16, (4, 3), d_state=2, expand=1.0, mlp_ratio=2.0, drop_path=0.3)
    else:
        block = TransformerBlock(16, 2, mlp_ratio=2.0, drop_path=0.3)
    block.train()
    assert_same_run(block, x)
    # what is kept for backward: only the two branch inputs (and the block input)
    block.set_grad_checkpointing(True)
    _, kept = saved_tensors(lambda: block(x.requires_grad_()))
    assert saved_bytes(kept, block.parameters()) <= 2 * x.numel() * 4
    block.set_grad_checkpointing(False)
    _, plain = saved_tensors(lambda: block(x))
    assert saved_bytes(plain, block.parameters()) > 8 * x.numel() * 4


def test_model_checkpointing_same_loss_and_grads():
    torch.manual_seed(0)
    model = create_model("glsmamba-tiny", **SMALL, drop_path_rate=0.2)
    model.train()
    clip = torch.randn(2, model.num_frames, 3, 64, 48)
    target = torch.rand(2, model.num_joints, 16, 12)
    with torch.no_grad():
        feats = model.encode(clip)

    def run(enable):
        model.set_grad_checkpointing(enable, skip_last=0)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        out, kept = saved_tensors(lambda: model.forward_features(feats))
        loss = (out - target).square().mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads, saved_bytes(kept, model.parameters())

    loss0, grads0, bytes0 = run(False)
    loss1, grads1, bytes1 = run(True)
    assert model.grad_checkpointing and all(b.grad_checkpointing for b in model.blocks)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=0)
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-8, msg=name)
    assert bytes1 < bytes0 / 4  # measured ~1/10 here
    # default: GLSMamba leaves its LRM blocks (first in backward) out; same values
    model.set_grad_checkpointing(True)
    assert [b.grad_checkpointing for b in model.blocks] == [True, False]
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    loss2 = (model.forward_features(feats) - target).square().mean()
    loss2.backward()
    torch.testing.assert_close(loss2.detach(), loss0, rtol=1e-6, atol=0)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads0[name], rtol=1e-5, atol=1e-8, msg=name)
    model.set_grad_checkpointing(False)
    assert not any(b.grad_checkpointing for b in model.blocks)


def test_checkpointing_off_under_no_grad_and_for_other_models():
    model = create_model("glsmamba-tiny", **SMALL)
    model.set_grad_checkpointing(True)
    feats = torch.randn(1, model.num_frames, model.feature_channels, 8, 6)
    with torch.no_grad():
        out = model.forward_features(feats)
    assert out.shape[-2:] == (16, 12)
    baseline = create_model("vitpose-tiny")
    baseline.set_grad_checkpointing(True)  # nothing to checkpoint: accepted, no effect
    assert baseline.grad_checkpointing


def test_depthwise_deform_conv_is_lean_and_matches_columns_path():
    torch.manual_seed(0)
    batch, channels, groups, height, width = 2, 24, 3, 7, 5
    x = torch.randn(batch, channels, height, width, requires_grad=True)
    offset = (torch.randn(batch, 2 * groups * 9, height, width) * 2).requires_grad_()
    mask = torch.rand(batch, groups * 9, height, width, requires_grad=True)
    weight = torch.randn(channels, 1, 3, 3, requires_grad=True)
    out, kept = saved_tensors(lambda: modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1))
    # kept: x, the sampling grid (offset-sized), the mask, the weight; never the 9-tap
    # (B, C*9, L) columns (the columns path keeps two of them)
    assert max(t.numel() for t in kept) <= max(x.numel(), offset.numel()) < 9 * x.numel()
    _, columns_kept = saved_tensors(lambda: _sample_and_contract(
        x, _sampling_grid(offset, (3, 3), (7, 5), (7, 5), (1, 1), (1, 1), (1, 1)), mask, weight,
        None, groups, channels))
    assert max(t.numel() for t in columns_kept) == 9 * x.numel()  # what the test would catch
    grid = _sampling_grid(offset, (3, 3), (height, width), (height, width), (1, 1), (1, 1), (1, 1))
    ref = _sample_and_contract(x, grid, mask, weight, None, groups, channels).view_as(out)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, offset, mask, weight), grad)
    want = torch.autograd.grad(ref, (x, offset, mask, weight), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_depthwise_deform_conv_gradcheck():
    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)
    x = torch.randn(1, 4, 5, 4, **f64, requires_grad=True)
    offset = (torch.randn(1, 2 * 2 * 9, 5, 4, **f64) * 1.3).requires_grad_()
    mask = torch.rand(1, 2 * 9, 5, 4, **f64, requires_grad=True)
    weight = torch.randn(4, 1, 3, 3, **f64, requires_grad=True)
    bias = torch.randn(4, **f64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: modulated_deform_conv2d(*a, 1, 1, 1), (x, offset, mask, weight, bias))
    assert torch.autograd.gradcheck(  # no mask (DCNv1), stride 2, 1 x 3 taps (a partial chunk)
        lambda x, o, w: modulated_deform_conv2d(x, o, None, w, None, (2, 1), (0, 1), 1),
        (x, offset[:, :12, :3].detach().clone().requires_grad_(),
         torch.randn(4, 1, 1, 3, **f64, requires_grad=True)))


@pytest.mark.parametrize("backend", ["fused", "chunked"])
def test_scan_keeps_inputs_in_their_dtype_and_returns_it(backend):
    from glsmamba.ops import scan_fused
    if backend == "fused" and not scan_fused.is_available():
        pytest.skip("no C compiler")
    torch.manual_seed(0)
    batch, paths, per_path, n_state, length = 1, 2, 8, 4, 64
    channels = paths * per_path
    u = torch.randn(batch, channels, length, dtype=torch.bfloat16, requires_grad=True)
    delta = (torch.randn(batch, channels, length) * 0.5).to(torch.bfloat16).requires_grad_()
    A = -torch.rand(channels, n_state) - 0.5
    B = torch.randn(batch, paths, n_state, length, dtype=torch.bfloat16)
    C = torch.randn(batch, paths, n_state, length, dtype=torch.bfloat16)
    D, bias = torch.ones(channels), torch.zeros(channels)
    y, kept = saved_tensors(lambda: selective_scan(u, delta, A, B, C, D, bias, True, backend=backend))
    assert y.dtype == torch.bfloat16
    big = [t for t in kept if t.numel() >= u.numel()]
    assert big and all(t.dtype == torch.bfloat16 for t in big), [(t.shape, t.dtype) for t in big]
    assert all(t.numel() < u.numel() * n_state for t in kept)  # never a (B, KD, L, N) tensor
    y.float().square().sum().backward()
    assert u.grad.dtype == torch.bfloat16 and torch.isfinite(u.grad.float()).all()


def test_bf16_autocast_step_agrees_with_fp32():
    """Tolerance: loss within 3 % relative, every parameter gradient within 10 % relative
    (L2 norm of the difference over the norm), whole-gradient cosine > 0.995."""
    torch.manual_seed(0)
    model = create_model("glsmamba-tiny", **SMALL)
    model.train()
    with torch.no_grad():
        model.head.final_layer.weight.normal_(0, 0.05)  # non-trivial heatmaps
    clip = torch.randn(2, model.num_frames, 3, 64, 48)
    target = torch.rand(2, model.num_joints, 16, 12)

    def step(bf16):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(clip)
        assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
        loss = (out.float() - target).square().mean()  # loss in fp32
        loss.backward()
        return loss.detach(), {n: p.grad.float().clone() for n, p in model.named_parameters()
                               if p.requires_grad}

    with torch.autocast("cpu", dtype=torch.bfloat16):  # frozen encoder: no grad, bf16
        feats = model.encode(clip)
    assert feats.dtype == torch.bfloat16 and not feats.requires_grad
    loss32, grads32 = step(False)
    loss16, grads16 = step(True)
    assert abs(loss16 - loss32) <= 0.03 * loss32
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[n].flatten() for n in grads32])
    assert torch.nn.functional.cosine_similarity(flat16, flat32, dim=0) > 0.995
    for name, g in grads32.items():
        if g.norm() > 1e-3 * flat32.norm():  # skip gradients that are ~0 in both
            assert (grads16[name] - g).norm() <= 0.1 * g.norm(), name


def test_fused_scan_path_by_path_matches_one_call(monkeypatch):
    from glsmamba.ops import scan_fused
    if not scan_fused.is_available():
        pytest.skip("no C compiler")
    torch.manual_seed(0)
    batch, paths, per_path, n_state, length = 2, 3, 4, 3, 40
    channels = paths * per_path
    inputs = [torch.randn(batch, channels, length), torch.randn(batch, channels, length) * 0.5,
              -torch.rand(channels, n_state) - 0.5, torch.randn(batch, paths, n_state, length),
              torch.randn(batch, paths, n_state, length), torch.randn(channels),
              torch.randn(channels) * 0.1]

    def run(dtype):
        leaves = [x.detach().to(dtype).clone().requires_grad_() for x in inputs]
        y = selective_scan(*leaves, delta_softplus=True, backend="fused")
        y.backward(torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y))
        return [y.detach().float()] + [x.grad.float() for x in leaves]

    whole = run(torch.float32)  # float32 contiguous: one kernel call for all paths
    monkeypatch.setattr(scan_fused, "PATH_CHUNK_ELEMS", 1)
    # float64 inputs are copied to float32 (same values): here one path per kernel call
    assert len(scan_fused._path_slices(channels, paths, batch, length, inputs[0].double())) == paths
    for a, b in zip(run(torch.float64), whole):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_train_memory_benchmark_measures_peaks():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "train_memory.py"
    spec = importlib.util.spec_from_file_location("train_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    mib = 2 ** 20

    def pattern():
        a = torch.empty(mib // 4 * 3)  # 3 MiB
        b = torch.empty(mib // 4 * 5)  # + 5 MiB alive together: 8 MiB
        del a, b
        torch.empty(mib // 4 * 6)  # 6 MiB alone

    peak, _ = bench.profiled(pattern, torch.device("cpu"))
    assert 8 * mib <= peak < 8.5 * mib
    torch.manual_seed(0)
    model = create_model("glsmamba-tiny", **dict(SMALL, dim=32, d_state=4, gsm_depth=2,
                                                  mlp_ratio=2.0, feature_stride=4))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    batch = bench.make_batch(model, 1, torch.device("cpu"))
    peaks = {}
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        step = lambda: bench.train_step(model, optimizer, batch, torch.device("cpu"), False)  # noqa: E731
        step()
        peaks[enable] = bench.profiled(step, torch.device("cpu"))[0]
    assert peaks[True] < 0.8 * peaks[False]  # measured 0.66 (the encoder and head stay)


@pytest.mark.parametrize("block_type", ["gsm", "lrm", "transformer"])
def test_every_block_runs_under_cpu_bf16_autocast(block_type):
    """Output within 5 % (relative L2) of fp32, input gradient within 10 %."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 6, 16)
    block = {"gsm": lambda: GSMBlock(16, 3, d_state=2, expand=1.0, mlp_ratio=2.0),
             "lrm": lambda: LRMBlock(16, (4, 3), d_state=2, expand=1.0, mlp_ratio=2.0),
             "transformer": lambda: TransformerBlock(16, 2, mlp_ratio=2.0)}[block_type]()
    if block_type == "gsm":
        with torch.no_grad():
            block.mixer.merge.stmm.dcn.conv_offset.weight.normal_(0, 0.1)
    outs = {}
    for bf16 in (False, True):
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = block(leaf)
        out.float().square().sum().backward()
        outs[bf16] = (out.detach().float() - x, leaf.grad)  # the branch outputs, the gradient
    (branch32, grad32), (branch16, grad16) = outs[False], outs[True]
    assert (branch16 - branch32).norm() <= 0.05 * branch32.norm()
    assert (grad16 - grad32).norm() <= 0.1 * grad32.norm()
