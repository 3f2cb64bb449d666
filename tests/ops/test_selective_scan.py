"""Selective scan: every backend against the sequential float64 reference, forward and backward.

Tolerance for float32 paths: max |err| / max |ref| <= 1e-4 for y and every gradient
(measured errors are about 1e-7 to 4e-7), against a float64 run of the reference loop.
"""
from __future__ import annotations

import pytest
import torch

from glsmamba.errors import ConfigError
from glsmamba.ops import scan_chunked, scan_cuda, scan_fused
from glsmamba.ops.scan_reference import selective_scan_reference
from glsmamba.ops.selective_scan import available_backends, resolve_backend, selective_scan

RTOL = 1e-4
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def make_inputs(batch, paths, per_path, n_state, length, with_D=True, with_bias=True, softplus=True,
                decay_scale=1.0, dtype=torch.float32, device="cpu"):
    """Random scan inputs at Mamba-like scales; delta stays positive without softplus."""
    channels = paths * per_path
    gen = torch.Generator().manual_seed(1234 + length + 7 * n_state + paths)
    u = torch.randn(batch, channels, length, generator=gen)
    delta = torch.randn(batch, channels, length, generator=gen) - 1.0
    if not softplus:
        delta = delta.abs() * 0.2
    A = -torch.exp(torch.rand(channels, n_state, generator=gen) * 3) * decay_scale
    B = torch.randn(batch, paths, n_state, length, generator=gen)
    C = torch.randn(batch, paths, n_state, length, generator=gen)
    D = torch.randn(channels, generator=gen) if with_D else None
    bias = torch.randn(channels, generator=gen) * 0.5 if with_bias else None
    return [x.to(dtype=dtype, device=device) if x is not None else None for x in (u, delta, A, B, C, D, bias)]


def relative_error(value: torch.Tensor, ref: torch.Tensor) -> float:
    return ((value.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def run_with_grads(fn, inputs, softplus, grad_out=None, **kwargs):
    leaves = [x.detach().clone().requires_grad_() if x is not None else None for x in inputs]
    y = fn(*leaves, delta_softplus=softplus, **kwargs)
    if grad_out is None:
        grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(y)
    y.backward(grad_out.to(y.dtype))
    return y.detach(), [x.grad if x is not None else None for x in leaves], grad_out


def assert_matches_reference(fn, inputs, softplus, rtol=RTOL, **kwargs):
    y, grads, grad_out = run_with_grads(fn, inputs, softplus, **kwargs)
    inputs64 = [x.double() if x is not None else None for x in inputs]
    y_ref, grads_ref, _ = run_with_grads(selective_scan_reference, inputs64, softplus, grad_out.double())
    assert y.dtype == torch.float32 and y.shape == inputs[0].shape
    assert relative_error(y, y_ref) <= rtol, f"y: {relative_error(y, y_ref):.2e}"
    for name, grad, grad_ref in zip(INPUT_NAMES, grads, grads_ref):
        if grad_ref is None:
            continue
        assert grad is not None, f"no gradient for {name}"
        assert grad.shape == grad_ref.shape, name
        err = relative_error(grad, grad_ref)
        assert err <= rtol, f"grad {name}: {err:.2e}"


CASES = [
    # batch, paths K, channels per path, N, L, D, delta_bias, softplus
    (2, 1, 4, 1, 37, True, True, True),
    (1, 2, 3, 16, 300, False, True, True),  # L = 256 + 44: a partial last segment
    (3, 6, 5, 16, 61, True, False, False),
    (2, 6, 2, 1, 129, False, False, True),
    (64, 2, 3, 4, 5, True, True, True),  # many very short sequences (per-pixel temporal scans)
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}-K{}-D{}-N{}-L{}-D{:d}-bias{:d}-sp{:d}".format(*c))
def test_chunked_matches_float64_reference(case):
    *shape, with_D, with_bias, softplus = case
    inputs = make_inputs(*shape, with_D=with_D, with_bias=with_bias, softplus=softplus)
    assert_matches_reference(scan_chunked.selective_scan_chunked, inputs, softplus)


def test_chunked_small_segments_and_batch_blocks(monkeypatch):
    """Force segments of 7 steps and batch blocks of 2 so that every carry path runs."""
    monkeypatch.setattr(scan_chunked, "SEGMENT_ELEMS", 7 * 6 * 16)
    monkeypatch.setattr(scan_chunked, "STEP_ELEMS", 2 * 6 * 16)
    assert scan_chunked.plan_blocks(5, 6, 16, 50) == (2, 7)
    inputs = make_inputs(5, 2, 3, 16, 50)
    assert_matches_reference(scan_chunked.selective_scan_chunked, inputs, True)


def test_plan_blocks_fit_cache_budget():
    budget = scan_chunked.SEGMENT_ELEMS
    block, segment = scan_chunked.plan_blocks(1, 1152, 16, 15_360)  # GSM global scan
    assert block == 1 and 1 < segment < 15_360 and segment * 1152 * 16 <= budget
    block, segment = scan_chunked.plan_blocks(3072, 1152, 16, 5)  # per-pixel temporal scans
    assert segment == 5 and block > 1 and block * segment * 1152 * 16 <= budget
    assert scan_chunked.plan_blocks(2, 8, 1, 3) == (2, 3)


def test_chunked_gradcheck_float64(monkeypatch):
    monkeypatch.setattr(scan_chunked, "SEGMENT_ELEMS", 4 * 4 * 3)  # segments of 4 steps
    monkeypatch.setattr(scan_chunked, "STEP_ELEMS", 1)
    inputs = make_inputs(2, 2, 2, 3, 11, dtype=torch.float64)
    leaves = [x.requires_grad_() for x in inputs]
    assert torch.autograd.gradcheck(
        lambda *xs: scan_chunked.selective_scan_chunked(*xs, delta_softplus=True), leaves, atol=1e-6
    )


def test_chunked_partial_requires_grad():
    u, delta, A, B, C, D, bias = make_inputs(1, 2, 4, 16, 40)
    u.requires_grad_()
    y = scan_chunked.selective_scan_chunked(u, delta, A, B, C, D, bias, True)
    y.square().sum().backward()
    u_ref = u.detach().double().requires_grad_()
    y_ref = selective_scan_reference(u_ref, *(x.double() for x in (delta, A, B, C, D, bias)), True)
    y_ref.square().sum().backward()
    assert relative_error(u.grad, u_ref.grad) <= RTOL


@pytest.mark.parametrize("n_state", [1, 16])
def test_chunked_long_sequence_strong_and_weak_decays_stable(n_state):
    """L = 15,360 with decays from exp(-300) (underflow) to exp(-1e-4) (long memory)."""
    length, channels = 15_360, 4
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(1, channels, length, generator=gen)
    delta = torch.rand(1, channels, length, generator=gen) * 3 + 1e-3
    A = -torch.logspace(-4, 2, channels * n_state).view(channels, n_state)
    B = torch.randn(1, 2, n_state, length, generator=gen)
    C = torch.randn(1, 2, n_state, length, generator=gen)
    inputs = [u, delta, A, B, C, torch.ones(channels), None]
    if n_state == 1:  # forward only: the float64 reference backward is the slow part
        y = scan_chunked.selective_scan_chunked(*inputs)
        y_ref = selective_scan_reference(*(x.double() if x is not None else None for x in inputs))
        assert torch.isfinite(y).all() and relative_error(y, y_ref) <= RTOL
        return
    y, grads, grad_out = run_with_grads(scan_chunked.selective_scan_chunked, inputs, False)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads if g is not None)
    y_ref, grads_ref, _ = run_with_grads(
        selective_scan_reference, [x.double() if x is not None else None for x in inputs], False, grad_out.double()
    )
    assert relative_error(y, y_ref) <= RTOL
    for name, grad, grad_ref in zip(INPUT_NAMES, grads, grads_ref):
        if grad_ref is not None:
            assert relative_error(grad, grad_ref) <= RTOL, name


def test_decays_below_clamp_contribute_nothing_visible():
    """A huge decay exponent is clamped at 2**-64: y still equals the drive term exactly."""
    u = torch.ones(1, 1, 6)
    delta = torch.full((1, 1, 6), 1000.0)
    A = -torch.ones(1, 1)
    B = torch.ones(1, 1, 1, 6)
    C = torch.ones(1, 1, 1, 6)
    y = scan_chunked.selective_scan_chunked(u, delta, A, B, C)
    assert torch.allclose(y, torch.full_like(y, 1000.0), rtol=1e-6)


def test_low_precision_inputs_computed_in_float32():
    inputs = make_inputs(1, 2, 4, 16, 33)
    low = [x.to(torch.bfloat16) for x in inputs]
    y = selective_scan(*low, delta_softplus=True)
    y_ref = selective_scan_reference(*(x.double() for x in low), True)
    assert y.dtype == torch.bfloat16  # computed in float32, returned in the input's dtype
    assert relative_error(y.float(), y_ref) <= 2 ** -8  # bf16 rounding of the output only
    for backend in ("chunked", "fused"):  # the backends themselves return float32
        y32 = selective_scan(*[x.float() for x in low], delta_softplus=True, backend=backend)
        assert relative_error(y32, y_ref) <= RTOL
        assert torch.equal(selective_scan(*low, delta_softplus=True, backend=backend),
                           y32.to(torch.bfloat16))


def test_public_api_backends_agree(monkeypatch):
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND", raising=False)
    inputs = make_inputs(2, 2, 3, 16, 20)
    y_auto = selective_scan(*inputs, delta_softplus=True)
    y_ref = selective_scan(*inputs, delta_softplus=True, backend="reference")
    y_chunked = selective_scan(*inputs, delta_softplus=True, backend="chunked")
    y_fused = selective_scan(*inputs, delta_softplus=True, backend="fused")
    assert torch.equal(y_auto, y_fused if scan_fused.is_available() else y_chunked)
    for y in (y_auto, y_chunked, y_fused):
        assert relative_error(y, y_ref) <= RTOL
    assert y_auto.is_contiguous()


def test_auto_picks_fused_on_cpu_when_it_builds(monkeypatch):
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND", raising=False)
    cpu = torch.device("cpu")
    expected = "fused" if scan_fused.is_available() else "chunked"
    assert resolve_backend("auto", cpu) == expected
    assert resolve_backend("auto", cpu, torch.bfloat16) == expected
    assert resolve_backend("auto", cpu, torch.float64) == "chunked"  # fused computes in float32
    assert resolve_backend("fused", cpu) == expected
    assert resolve_backend("reference", cpu) == "reference"
    assert "chunked" in available_backends() and "reference" in available_backends()
    assert ("fused" in available_backends()) == scan_fused.is_available()
    monkeypatch.setenv("GLSMAMBA_SCAN_BACKEND", "chunked")
    assert resolve_backend("auto", cpu) == "chunked"
    monkeypatch.setenv("GLSMAMBA_SCAN_BACKEND", "reference")
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    monkeypatch.setenv("GLSMAMBA_SCAN_BACKEND", "fastest")
    with pytest.raises(ConfigError, match="GLSMAMBA_SCAN_BACKEND"):
        resolve_backend("auto", torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown selective-scan backend"):
        resolve_backend("tpu", torch.device("cpu"))


@pytest.mark.parametrize(
    "which, shape, message",
    [
        ("u", (2, 6), "u must be"),
        ("delta", (2, 6, 9), "delta shape"),
        ("A", (5, 4), "A must be"),
        ("B", (2, 2, 3, 10), "B must be"),
        ("C", (2, 3, 4, 10), "but C has 3"),
        ("D", (5,), "D must be"),
        ("delta_bias", (6, 1), "delta_bias must be"),
    ],
)
def test_shape_mismatch_errors(which, shape, message):
    inputs = dict(zip(INPUT_NAMES, make_inputs(2, 2, 3, 4, 10)))
    inputs[which] = torch.zeros(shape)
    with pytest.raises(ValueError, match=message):
        selective_scan(**inputs)


def test_paths_must_divide_channels():
    u, delta, A, _, _, _, _ = make_inputs(1, 1, 5, 4, 8)
    B = C = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="not divisible by K=2"):
        selective_scan(u, delta, A, B, C)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunked_on_cuda_matches_reference():
    inputs = make_inputs(2, 6, 8, 16, 300, device="cuda")
    assert_matches_reference(scan_chunked.selective_scan_chunked, inputs, True)
    half = [x.half() for x in inputs]
    assert selective_scan(*half, backend="chunked").dtype == torch.float16


@pytest.mark.cuda
@pytest.mark.skipif(not scan_cuda.is_available(), reason="needs CUDA and mamba_ssm's selective_scan_cuda")
def test_cuda_kernel_matches_reference():
    inputs = make_inputs(2, 6, 8, 16, 300, device="cuda")
    assert resolve_backend("cuda", inputs[0].device) == "cuda"  # auto: see test_scan_triton.py
    assert_matches_reference(scan_cuda.selective_scan_cuda, inputs, True, rtol=1e-3)


def _load_benchmark():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "scan.py"
    if not script.is_file():
        pytest.skip("benchmarks/scan.py not present")
    spec = importlib.util.spec_from_file_location("scan_benchmark", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


BENCH_ARGV = ["--lengths", "40", "--n-states", "4", "--paths", "2", "--channels", "3", "--repeats", "1"]


def test_benchmark_rows_extrapolation_and_json(tmp_path, monkeypatch):
    """benchmarks/scan.py on a tiny problem, measurements run in-process here; the
    materialising mamba_ssm-style baseline must agree with the reference loop."""
    import json

    bench = _load_benchmark()
    inputs = bench.make_inputs(2, 2, 3, 4, 17, grad=False)
    assert relative_error(bench.materialized_reference(*inputs), selective_scan_reference(*inputs, True)) <= RTOL
    monkeypatch.setattr(bench, "run_child", lambda method, mode, n, length, args: bench.probe(method, mode, n, length, args))
    out = tmp_path / "scan.json"
    argv = BENCH_ARGV + ["--methods", "chunked", "reference", "mamba-ref", "--reference-length", "20", "--json", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["method"], r["mode"]) for r in rows} == {
        (m, mode) for m in ("chunked", "reference", "mamba-ref") for mode in ("fwd", "fwd+bwd")
    }
    for row in rows:
        assert row["seconds"] > 0 and row["extra_mb"] >= 0 and row["L"] == 40
        is_ref = row["method"] != "chunked"
        assert row["measured_L"] == (20 if is_ref else 40)
        assert row["note"].startswith("extrapolated from L=20") == is_ref
        if is_ref:  # scaled linearly from the measured runs
            assert row["seconds"] == pytest.approx(2 * sorted(row["runs"])[len(row["runs"]) // 2])


@pytest.mark.slow
def test_benchmark_script_end_to_end(tmp_path):
    """The real command: one child process per measurement."""
    import json

    bench = _load_benchmark()
    out = tmp_path / "scan.json"
    assert bench.main(BENCH_ARGV + ["--methods", "chunked", "--threads", "1", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 2
