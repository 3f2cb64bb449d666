"""The export scans (glsmamba/ops/scan_export.py) against the sequential reference.

Forward tolerance: float32 inputs within atol 1e-5 + rtol 1e-5 of the reference computed
in float64 (measured errors are ~1e-7 relative); float64 inputs within 1e-10.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from glsmamba.ops.scan_export import (
    linear_recurrence,
    selective_scan_export,
    selective_scan_loop,
    selective_scan_parallel,
)
from glsmamba.ops.scan_reference import selective_scan_reference
from glsmamba.ops.selective_scan import selective_scan


def _inputs(batch, paths, per_path, n_state, length, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    channels = paths * per_path

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)
    return {"u": randn(batch, channels, length), "delta": randn(batch, channels, length),
            "A": -(torch.rand(channels, n_state, generator=g, dtype=dtype) * 8 + 0.05),
            "B": randn(batch, paths, n_state, length), "C": randn(batch, paths, n_state, length),
            "D": randn(channels), "delta_bias": randn(channels), "delta_softplus": True}


def _reference(args):
    return selective_scan_reference(**args, compute_dtype=torch.float64)


@pytest.mark.parametrize("shape,chunk,block", [
    ((2, 6, 4, 3, 37), 4, None),      # L not a multiple of the chunk, 3 levels
    ((1, 2, 5, 16, 100), 8, 13),      # several blocks carrying the state
    ((2, 3, 2, 1, 7), 8, None),       # d_state 1, L shorter than a chunk
    ((1, 2, 3, 4, 1), 8, None),       # a single step
    ((2, 2, 3, 4, 300), 4, 64),       # deep recursion and blocks
])
def test_export_scans_match_reference(shape, chunk, block):
    args = _inputs(*shape)
    expected = _reference(args)
    for got in (selective_scan_export(**args, chunk=chunk),
                selective_scan_parallel(**args, chunk=chunk, block=block)):
        assert got.dtype == torch.float32 and got.shape == expected.shape
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_export_scan_float64_and_no_optional_inputs():
    args = _inputs(2, 2, 3, 4, 50, dtype=torch.float64)
    plain = {k: args[k] for k in ("u", "delta", "A", "B", "C")}
    for scan in (selective_scan_export, selective_scan_parallel):
        torch.testing.assert_close(scan(**args, chunk=4), _reference(args), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(scan(**plain, chunk=4), selective_scan_reference(**plain),
                                   atol=1e-10, rtol=1e-10)


def test_strong_decay_stays_finite():
    """Decays of exp(-800) per step: an exp(-cumsum) factorisation would overflow."""
    g = torch.Generator().manual_seed(1)
    u, B, C = torch.randn(1, 4, 64, generator=g), torch.randn(1, 2, 16, 64, generator=g), \
        torch.randn(1, 2, 16, 64, generator=g)
    delta, A = torch.full((1, 4, 64), 50.0), torch.full((4, 16), -16.0)
    expected = selective_scan_reference(u, delta, A, B, C, compute_dtype=torch.float64)
    for got in (selective_scan_export(u, delta, A, B, C), selective_scan_parallel(u, delta, A, B, C, chunk=16)):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-5)


def test_linear_recurrence_is_the_recurrence():
    g = torch.Generator().manual_seed(2)
    log_decay = -torch.rand(23, 3, 2, generator=g, dtype=torch.float64)   # time-major
    drive = torch.randn(23, 3, 2, generator=g, dtype=torch.float64)
    state, expected = torch.zeros(3, 2, dtype=torch.float64), []
    for t in range(23):
        state = log_decay[t].exp() * state + drive[t]
        expected.append(state)
    torch.testing.assert_close(linear_recurrence(log_decay, drive, chunk=3),
                               torch.stack(expected), atol=1e-12, rtol=1e-12)


def test_registered_as_backend_with_gradients():
    args = _inputs(1, 2, 3, 4, 20, dtype=torch.float64)
    leaves = {k: v.clone().requires_grad_(True) if torch.is_tensor(v) else v for k, v in args.items()}
    y = selective_scan(**leaves, backend="export")
    y.square().sum().backward()
    ref_leaves = {k: v.clone().requires_grad_(True) if torch.is_tensor(v) else v for k, v in args.items()}
    selective_scan_reference(**ref_leaves).square().sum().backward()
    torch.testing.assert_close(y, selective_scan_reference(**args), atol=1e-10, rtol=1e-10)
    for name in ("u", "delta", "A", "B", "C", "D", "delta_bias"):
        torch.testing.assert_close(leaves[name].grad, ref_leaves[name].grad, atol=1e-8, rtol=1e-8)


def _onnx_run(fn, args: dict, dynamic: bool):
    import onnx
    import onnxruntime

    class Scan(torch.nn.Module):
        def forward(self, u, delta, B, C):
            return fn(u, delta, args["A"], B, C, args["D"], args["delta_bias"], True)

    names = ["u", "delta", "B", "C"]
    axes = {n: {0: "batch"} for n in names} if dynamic else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Scan(), tuple(args[n] for n in names), buffer, dynamo=False,
                          opset_version=17, input_names=names, dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    return proto, lambda inputs: session.run(None, {n: inputs[n].numpy() for n in names})[0]


@pytest.mark.parametrize("scan,loops", [(selective_scan_export, 1), (selective_scan_parallel, 0)])
def test_scans_run_in_onnxruntime(scan, loops):
    """The exported scan is one Loop over chunks; the parallel form has no loop at all;
    both with a dynamic batch axis."""
    pytest.importorskip("onnxruntime")
    args = _inputs(2, 2, 3, 4, 45)
    proto, run = _onnx_run(scan, args, dynamic=True)
    ops = [n.op_type for n in proto.graph.node]
    assert {n.domain for n in proto.graph.node} <= {""}
    assert ops.count("Loop") == loops and "Scan" not in ops
    other = _inputs(3, 2, 3, 4, 45, seed=5)      # another batch size through the dynamic axis
    other.update(A=args["A"], D=args["D"], delta_bias=args["delta_bias"])
    assert np.abs(run(other) - _reference(other).numpy()).max() < 1e-4


def test_loop_formulation_exports_as_loop():
    pytest.importorskip("onnxruntime")
    args = _inputs(1, 2, 3, 4, 12)
    proto, run = _onnx_run(selective_scan_loop, args, dynamic=False)
    assert "Loop" in {n.op_type for n in proto.graph.node}
    assert np.abs(run(args) - _reference(args).numpy()).max() < 1e-4
