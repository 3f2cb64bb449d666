"""Fused CPU selective scan (C kernel built on first use): numerics against the float64
sequential reference, forward and every gradient, plus build, cache and fallback.

Tolerance: max |err| / max |ref| <= 1e-4 for y and each gradient (measured: about 1e-7
to 1e-6; the kernel's exp polynomial is accurate to 2e-8 before float32 rounding).
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch

from glsmamba.ops import scan_fused
from glsmamba.ops.scan_chunked import selective_scan_chunked
from glsmamba.ops.scan_reference import selective_scan_reference
from glsmamba.ops.selective_scan import selective_scan


def _load_shared_helpers():
    """make_inputs / assert_matches_reference from test_selective_scan.py (no test packages)."""
    path = Path(__file__).with_name("test_selective_scan.py")
    spec = importlib.util.spec_from_file_location("_scan_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


helpers = _load_shared_helpers()
make_inputs, relative_error, run_with_grads = helpers.make_inputs, helpers.relative_error, helpers.run_with_grads
RTOL, INPUT_NAMES = helpers.RTOL, helpers.INPUT_NAMES

needs_kernel = pytest.mark.skipif(not scan_fused.is_available(), reason="no working C compiler here")


@pytest.fixture
def fresh_loader(tmp_path, monkeypatch):
    """An empty kernel cache and a forgotten library; the real one is restored afterwards."""
    monkeypatch.setenv(scan_fused.ENV_CACHE, str(tmp_path))
    scan_fused.reset()
    yield tmp_path
    scan_fused.reset()


@pytest.fixture
def threads():
    """Set torch's thread count for a test (the kernel uses the same count)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def assert_fused_matches_reference(inputs, softplus) -> dict[str, float]:
    """Compare forward and gradients with float64 reference; return the measured errors."""
    y, grads, grad_out = run_with_grads(scan_fused.selective_scan_fused, inputs, softplus)
    inputs64 = [x.double() if x is not None else None for x in inputs]
    y_ref, grads_ref, _ = run_with_grads(selective_scan_reference, inputs64, softplus, grad_out.double())
    assert y.dtype == torch.float32 and y.shape == inputs[0].shape
    errors = {"y": relative_error(y, y_ref)}
    for name, grad, grad_ref in zip(INPUT_NAMES, grads, grads_ref):
        if grad_ref is not None:
            assert grad is not None and grad.shape == grad_ref.shape, name
            errors[name] = relative_error(grad, grad_ref)
    assert max(errors.values()) <= RTOL, errors
    return errors


CASES = [
    # batch, paths K, channels per path, N, L, D, delta_bias, softplus
    (2, 1, 4, 1, 37, True, True, True),
    (1, 2, 3, 16, 300, False, True, True),  # L = 2 * 128 + 44: a partial last backward segment
    (3, 6, 5, 16, 61, True, False, False),
    (2, 6, 2, 1, 129, False, False, True),
    (64, 2, 3, 4, 5, True, True, True),  # many very short sequences (per-pixel temporal scans)
    (5, 6, 3, 16, 5, True, True, False),
    (3, 2, 2, 16, 1, True, True, True),  # L = 1
    (2, 1, 3, 1, 1, False, True, False),
    (1, 2, 4, 8, 257, True, True, True),  # N = 8: one vector; L = 2 * 128 + 1
    (1, 1, 3, 12, 40, True, False, True),  # N = 12: not a multiple of the vector width
]


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}-K{}-D{}-N{}-L{}-D{:d}-bias{:d}-sp{:d}".format(*c))
def test_fused_matches_float64_reference(case):
    *shape, with_D, with_bias, softplus = case
    inputs = make_inputs(*shape, with_D=with_D, with_bias=with_bias, softplus=softplus)
    assert_fused_matches_reference(inputs, softplus)


@needs_kernel
@pytest.mark.parametrize("n_threads", [1, 3])
def test_fused_shared_gradient_groups_across_threads(n_threads, threads):
    """One (b, k) block on 3 threads: its channels are split into groups with separate
    dB/dC partials, summed at the end; dA and dD come from per-thread accumulators."""
    threads(n_threads)
    inputs = make_inputs(2, 1, 9, 16, 70)
    assert_fused_matches_reference(inputs, True)
    inputs = make_inputs(1, 1, 7, 1, 33)
    assert_fused_matches_reference(inputs, True)


@needs_kernel
def test_fused_non_contiguous_low_precision_and_partial_grads():
    u, delta, A, B, C, D, bias = make_inputs(2, 2, 4, 16, 30)
    u_t = u.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    B_t = B.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not u_t.is_contiguous() and not B_t.is_contiguous()
    y = scan_fused.selective_scan_fused(u_t, delta, A, B_t, C, D, bias, True)
    y_ref = selective_scan_reference(*(x.double() for x in (u, delta, A, B, C, D, bias)), True)
    assert relative_error(y, y_ref) <= RTOL
    low = [x.to(torch.bfloat16) for x in (u, delta, A, B, C, D, bias)]
    y_low = scan_fused.selective_scan_fused(*low, delta_softplus=True)
    assert y_low.dtype == torch.bfloat16  # computed in float32, returned in u's dtype
    y_32 = scan_fused.selective_scan_fused(*(x.float() for x in low), delta_softplus=True)
    assert torch.equal(y_low, y_32.to(torch.bfloat16))
    assert relative_error(y_32, selective_scan_reference(*(x.double() for x in low), True)) <= RTOL
    u_leaf = u.clone().requires_grad_()  # only u needs a gradient
    scan_fused.selective_scan_fused(u_leaf, delta, A, B, C, D, bias, True).square().sum().backward()
    u_ref = u.double().requires_grad_()
    selective_scan_reference(u_ref, *(x.double() for x in (delta, A, B, C, D, bias)), True).square().sum().backward()
    assert relative_error(u_leaf.grad, u_ref.grad) <= RTOL


@needs_kernel
def test_fused_long_sequence_strong_and_weak_decays_stable():
    """L = 15,360 with decays from exp(-300) (clamped at 2**-64) to exp(-1e-4) (long memory)."""
    length, channels, n_state = 15_360, 4, 16
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(1, channels, length, generator=gen)
    delta = torch.rand(1, channels, length, generator=gen) * 3 + 1e-3
    A = -torch.logspace(-4, 2, channels * n_state).view(channels, n_state)
    B = torch.randn(1, 2, n_state, length, generator=gen)
    C = torch.randn(1, 2, n_state, length, generator=gen)
    inputs = [u, delta, A, B, C, torch.ones(channels), torch.zeros(channels)]
    y, grads, grad_out = run_with_grads(scan_fused.selective_scan_fused, inputs, False)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    # float64 chunked (segmented, hand-written backward) is the fast float64 ground truth here;
    # the chunked tests check it against the sequential reference at this length
    y_ref, grads_ref, _ = run_with_grads(
        selective_scan_chunked, [x.double() for x in inputs], False, grad_out.double()
    )
    assert relative_error(y, y_ref) <= RTOL
    for name, grad, grad_ref in zip(INPUT_NAMES, grads, grads_ref):
        assert relative_error(grad, grad_ref) <= RTOL, name


@needs_kernel
def test_public_api_routes_to_fused_and_float64_to_chunked(monkeypatch):
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND", raising=False)
    inputs = make_inputs(1, 2, 3, 16, 25)
    y_auto = selective_scan(*inputs, delta_softplus=True)
    assert torch.equal(y_auto, scan_fused.selective_scan_fused(*inputs, delta_softplus=True))
    y64 = selective_scan(*(x.double() for x in inputs), delta_softplus=True)
    assert y64.dtype == torch.float64  # chunked keeps float64
    monkeypatch.setenv("GLSMAMBA_SCAN_BACKEND", "chunked")
    assert torch.equal(selective_scan(*inputs, delta_softplus=True),
                       selective_scan_chunked(*inputs, delta_softplus=True))


def test_missing_compiler_warns_once_and_falls_back_to_chunked(fresh_loader, monkeypatch):
    monkeypatch.setattr(scan_fused, "compiler_command", lambda: [str(fresh_loader / "no-such-cc")])
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND", raising=False)
    inputs = make_inputs(1, 2, 3, 16, 12)
    with pytest.warns(RuntimeWarning, match="could not build the fused CPU selective scan"):
        y = selective_scan(*inputs, delta_softplus=True)
    assert torch.equal(y, selective_scan_chunked(*inputs, delta_softplus=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert torch.equal(selective_scan(*inputs, delta_softplus=True, backend="fused"), y)
    with pytest.raises(RuntimeError, match="could not be built"):
        scan_fused.selective_scan_fused(*inputs)
    assert not list(fresh_loader.glob("kernels/*.so"))


def test_no_compiler_found_is_reported(fresh_loader, monkeypatch):
    monkeypatch.setattr(scan_fused, "compiler_command", lambda: [])
    path, errors = scan_fused.build_library()
    assert path is None and "no C compiler" in errors[0]


@needs_kernel
def test_portable_build_cached_and_reused(fresh_loader, monkeypatch):
    """A build without -march=native: numerics hold with 4-lane vectors (or 8 where the
    baseline has AVX); a second load finds the cached library and runs no compiler."""
    monkeypatch.setattr(scan_fused, "FLAG_VARIANTS", (["-fopenmp"], []))
    lib = scan_fused.load_library()
    assert lib is not None
    built = list(fresh_loader.glob("kernels/selective_scan_cpu-*.so"))
    assert len(built) == 1 and not list(fresh_loader.glob("kernels/*.so.tmp*"))
    assert_fused_matches_reference(make_inputs(2, 2, 3, 16, 140), True)
    assert_fused_matches_reference(make_inputs(2, 2, 3, 1, 20, with_bias=False, softplus=False), False)

    scan_fused.reset()

    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran again")

    monkeypatch.setattr(scan_fused.subprocess, "run", no_compiler)
    assert scan_fused.load_library() is not None
    assert list(fresh_loader.glob("kernels/selective_scan_cpu-*.so")) == built


def test_cache_key_depends_on_flags_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv(scan_fused.ENV_CACHE, str(tmp_path))
    a = scan_fused.library_path(["cc"], ["-O3"])
    assert a.parent == tmp_path / "kernels"
    assert a != scan_fused.library_path(["cc"], ["-O2"]) and a != scan_fused.library_path(["gcc"], ["-O3"])
    source = tmp_path / "k.c"
    source.write_text("int x;\n")
    monkeypatch.setattr(scan_fused, "SOURCE", source)
    assert scan_fused.library_path(["cc"], ["-O3"]) != a


@needs_kernel
def test_fused_softplus_tails():
    """delta + bias from -30 to 30: the kernel's vectorised softplus and sigmoid (its
    gradient) hold in both tails, where naive forms overflow or cancel."""
    u, delta, A, B, C, D, bias = make_inputs(1, 2, 4, 16, 61)
    delta = torch.linspace(-30, 30, 61).expand_as(u).contiguous()
    errors = assert_fused_matches_reference([u, delta, A, B, C, D, bias * 0.1], True)
    assert errors["delta"] <= RTOL and errors["delta_bias"] <= RTOL
