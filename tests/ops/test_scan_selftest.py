"""The GPU scan self-test (glsmamba/ops/selftest.py) without a GPU.

A fake CUDA device: its identity comes from ``selftest.device_identity`` and its check
runs on the CPU (``selftest.check_device``), so the Triton kernels run under Triton's
interpreter through the same code path as on a GPU. Faults are injected into the real
kernel path (``scan_triton.scan_forward`` / ``scan_backward`` / ``_kernels``, mamba_ssm's
``scan_cuda.selective_scan_cuda``); the self-test knows nothing of them.
"""
from __future__ import annotations

import json
import os
import re
import stat
import warnings

import pytest
import torch

pytest.importorskip("triton")

import glsmamba  # noqa: E402
from glsmamba.ops import scan_cuda, scan_triton, selective_scan, selftest  # noqa: E402
from glsmamba.ops.scan_chunked import selective_scan_chunked  # noqa: E402
from glsmamba.ops.selective_scan import resolve_backend  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
GPU = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """A CUDA device named 'Fake GPU' whose self-test runs on the CPU; triton available,
    mamba_ssm's kernel not (tests turn it on with ``fake_cuda_kernel``)."""
    monkeypatch.setenv("GLSMAMBA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND", raising=False)
    monkeypatch.delenv("GLSMAMBA_SCAN_SELFTEST", raising=False)
    identity = {"name": "Fake GPU", "capability": "9.0"}
    monkeypatch.setattr(selftest, "device_identity", lambda device: dict(identity))
    monkeypatch.setattr(selftest, "check_device", lambda device: torch.device("cpu"))
    monkeypatch.setattr(scan_triton, "is_available_on_cuda", lambda: True)
    monkeypatch.setattr(scan_triton, "recorded_cuda_choice", lambda device: None)
    monkeypatch.setattr(scan_cuda, "is_available", lambda: False)
    selftest.reset()
    yield identity
    selftest.reset()


def fake_cuda_kernel(monkeypatch, fault=None):
    """mamba_ssm's backend as the chunked scan (float32 y), optionally made wrong."""
    def kernel(*args):
        y = selective_scan_chunked(*args).float()
        return fault(y) if fault else y

    monkeypatch.setattr(scan_cuda, "is_available", lambda: True)
    monkeypatch.setattr(scan_cuda, "selective_scan_cuda", kernel)


def count_checks(monkeypatch, failure=None):
    """Replace the check by a counter (for the cache logic): returns the call list."""
    calls = []

    def fake(backend, device):
        calls.append(backend)
        return failure, []

    monkeypatch.setattr(selftest, "run_checks", fake)
    return calls


def scan_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "selective-scan backend" in str(w.message)]


def verdict_files() -> list:
    folder = selftest.cache_path({"backend": "x"}).parent
    return sorted(folder.glob("scan-*.json")) if folder.is_dir() else []


# --------------------------------------------------------------- the real check
def test_passes_under_the_interpreter_and_is_cached(fake_gpu, monkeypatch):
    """The Triton kernels pass on the fake GPU (interpreter): auto picks triton with no
    warning; the verdict lands in a private folder with the key; a new process reuses it."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert resolve_backend("auto", GPU) == "triton"
    assert scan_warnings(record) == []
    [path] = verdict_files()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700  # private, as the kernel cache
    stored = json.loads(path.read_text())
    assert stored["status"] == "pass" and stored["failure"] is None
    assert stored["key"]["device"] == "Fake GPU" and stored["key"]["capability"] == "9.0"
    assert stored["key"]["torch"] == torch.__version__ and stored["key"]["glsmamba"] == glsmamba.__version__
    assert stored["key"]["triton"] == scan_triton.triton.__version__
    labels = [case["case"] for case in stored["cases"]]
    assert len(labels) == 2 * len(selftest.INTERPRETER_CASES)
    assert {label.split()[0] for label in labels} == {"float32", "bfloat16"}
    for case in stored["cases"]:  # y and all seven gradients compared, each within tolerance
        assert len(case["errors"]) == 8 and max(case["errors"].values()) < 1e-2
    selftest.reset()  # a new process: the cached verdict, no second run
    calls = count_checks(monkeypatch, failure="must not run")
    assert resolve_backend("auto", GPU) == "triton" and calls == []
    assert "passed its self-test" in selective_scan.scan_backend_report(GPU)


def test_wrong_values_warn_once_and_fall_back(fake_gpu, monkeypatch):
    forward = scan_triton.scan_forward

    def wrong_forward(*args, **kwargs):
        y, states = forward(*args, **kwargs)
        return y * 1.01, states

    monkeypatch.setattr(scan_triton, "scan_forward", wrong_forward)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert resolve_backend("auto", GPU) == "chunked"
        assert resolve_backend("auto", GPU, torch.bfloat16) == "chunked"  # no second run, no second warning
    [message] = scan_warnings(record)
    [path] = verdict_files()
    assert "'triton' selective-scan backend failed" in message and "Fake GPU" in message
    assert "y: max|err|/max|ref|" in message and str(path) in message
    assert json.loads(path.read_text())["status"] == "fail"
    with pytest.raises(selftest.ScanSelfTestError, match="'triton' failed its self-test.*" + path.name):
        resolve_backend("triton", GPU)  # asked for by name: raises instead
    monkeypatch.setenv("GLSMAMBA_SCAN_BACKEND", "triton")
    with pytest.raises(selftest.ScanSelfTestError):
        resolve_backend("auto", GPU)
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND")
    # a new process with mamba_ssm's kernel: the cached failure (one warning), then cuda
    selftest.reset()
    fake_cuda_kernel(monkeypatch)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert resolve_backend("auto", GPU) == "cuda"
    [message] = scan_warnings(record)
    assert "cached verdict" in message
    report = selective_scan.scan_backend_report(GPU)
    assert report.startswith("selective scan on cuda (Fake GPU, sm_90): cuda;")
    assert "triton FAILED" in report and "cuda passed" in report


def test_compile_error_falls_back_to_cuda_then_chunked(fake_gpu, monkeypatch):
    def no_kernels(interpret):
        raise RuntimeError("CompilationError: injected at compile time")

    monkeypatch.setattr(scan_triton, "_kernels", no_kernels)
    fake_cuda_kernel(monkeypatch, fault=lambda y: y * 0)  # and a wrong mamba_ssm kernel
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert resolve_backend("auto", GPU) == "chunked"
    messages = scan_warnings(record)
    assert len(messages) == 2
    assert "'triton'" in messages[0] and "raised RuntimeError: CompilationError: injected" in messages[0]
    assert "'cuda'" in messages[1] and "y: max|err|/max|ref|" in messages[1]
    assert len(verdict_files()) == 2
    with pytest.raises(selftest.ScanSelfTestError, match="'cuda' failed"):
        resolve_backend("cuda", GPU)


def test_disabled_by_environment(fake_gpu, monkeypatch):
    monkeypatch.setenv("GLSMAMBA_SCAN_SELFTEST", "0")
    calls = count_checks(monkeypatch, failure="would fail")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert resolve_backend("auto", GPU) == "triton"
        assert resolve_backend("triton", GPU) == "triton"
    assert calls == [] and scan_warnings(record) == [] and verdict_files() == []
    assert "self-test skipped (GLSMAMBA_SCAN_SELFTEST=0)" in selective_scan.scan_backend_report(GPU)


# ------------------------------------------------------------------- the cache
@pytest.mark.parametrize("change", ["device", "capability", "torch", "triton", "glsmamba", "kernel source"])
def test_cached_verdict_invalidated_by_any_key_field(fake_gpu, monkeypatch, change):
    calls = count_checks(monkeypatch)
    assert resolve_backend("auto", GPU) == "triton"
    selftest.reset()
    assert resolve_backend("auto", GPU) == "triton" and calls == ["triton"]  # reused
    selftest.reset()
    if change == "device":
        fake_gpu["name"] = "Other GPU"
    elif change == "capability":
        fake_gpu["capability"] = "8.0"
    elif change == "torch":
        monkeypatch.setattr(torch, "__version__", torch.__version__ + ".post1")
    elif change == "triton":
        monkeypatch.setattr(scan_triton.triton, "__version__", "0.0.1")
    elif change == "glsmamba":
        monkeypatch.setattr(glsmamba, "__version__", "99.0")
    else:
        monkeypatch.setattr(selftest, "_source_digest", lambda path: "0" * 16)
    assert resolve_backend("auto", GPU) == "triton" and calls == ["triton", "triton"]  # run again
    assert len(verdict_files()) == 2


def test_tampered_or_foreign_cache_files_are_not_trusted(fake_gpu, monkeypatch):
    calls = count_checks(monkeypatch)
    resolve_backend("auto", GPU)
    [path] = verdict_files()
    record = json.loads(path.read_text())
    record["key"]["torch"] = "another"  # a file under this name for another key
    path.write_text(json.dumps(record))
    selftest.reset()
    resolve_backend("auto", GPU)
    assert calls == ["triton", "triton"]
    planted = path.parent.parent / "planted.json"  # a link to a file elsewhere is not followed
    record["key"]["torch"] = torch.__version__
    planted.write_text(json.dumps(record))
    path.unlink()
    path.symlink_to(planted)
    selftest.reset()
    resolve_backend("auto", GPU)
    assert calls == ["triton"] * 3
    assert not path.is_symlink() and json.loads(planted.read_text()) == record  # replaced, target untouched


def test_a_process_that_died_during_the_test_fails_the_backend(fake_gpu, monkeypatch):
    """The 'running' marker written before the check: left by a dead process on this host
    it reads as a failure (a crash in the kernels); a live one's is not (another rank)."""
    import socket
    import subprocess
    import sys

    key = selftest.cache_key("triton", GPU)
    path = selftest.cache_path(key)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    calls = count_checks(monkeypatch)
    for pid, expected in ((os.getppid(), "triton"), (dead.pid, "chunked")):
        selftest.reset()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(json.dumps({"key": key, "status": "running", "pid": pid, "host": socket.gethostname(),
                                    "date": "2026-12-05 20:00 UTC"}))
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert resolve_backend("auto", GPU) == expected
    [message] = scan_warnings(record)
    assert f"the self-test of process {dead.pid}" in message and "died during it" in message
    assert calls == ["triton"]  # only for the live marker


def test_interrupted_test_leaves_no_verdict(fake_gpu, monkeypatch):
    def interrupted(backend, device):
        raise KeyboardInterrupt

    monkeypatch.setattr(selftest, "run_checks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve_backend("auto", GPU)
    assert verdict_files() == []


def test_report_before_a_run_and_on_cpu(fake_gpu, monkeypatch):
    calls = count_checks(monkeypatch)
    report = selective_scan.scan_backend_report(GPU, run=False)
    assert report == ("selective scan on cuda (Fake GPU, sm_90): triton; triton: self-test not run yet "
                      "(it runs before the first scan of a process)")
    assert calls == []
    assert "passed its self-test" in selective_scan.scan_backend_report(GPU) and calls == ["triton"]
    cpu = selective_scan.scan_backend_report("cpu")
    assert cpu.startswith("selective scan on cpu: ") and "no self-test" in cpu


# ------------------------------------- faults the tests above do not inject
def _backward_fault(index, fault):
    backward = scan_triton.scan_backward

    def wrong(*args, **kwargs):
        grads = list(backward(*args, **kwargs))
        grads[index] = fault(grads[index])
        return tuple(grads)

    return wrong


def _forward_fault(fault):
    forward = scan_triton.scan_forward

    def wrong(*args, **kwargs):
        y, states = forward(*args, **kwargs)
        return fault(y), states

    return wrong


class _RaisingLaunch:
    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected at launch)")
        return launch


def _nan_at_one_place(y):
    y = y.clone()
    y.view(-1)[3] = float("nan")
    return y


def _wrong_in_bf16(y):
    return (y.float() * 1.02).to(y.dtype) if y.dtype == torch.bfloat16 else y


FAULTS = {
    "dB only": ("_scan_backward", _backward_fault(3, lambda g: g * 1.01), "float32 .*gradient of B"),
    "dA in float32 by 1e-3": ("_scan_backward", _backward_fault(2, lambda g: g * (1 + 1e-3)), "gradient of A"),
    "NaN in y": ("_scan_forward", _forward_fault(_nan_at_one_place), "y: NaN/inf values"),
    "bf16 only": ("_scan_forward", _forward_fault(_wrong_in_bf16), "bfloat16 .*y: max"),
    "raise at launch": ("_kernels", lambda interpret: (_RaisingLaunch(), _RaisingLaunch()),
                        "forward/backward raised RuntimeError: CUDA error"),
    "dC dropped": ("_scan_backward", _backward_fault(4, torch.zeros_like), "gradient of C"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_other_faults_are_caught(fault, monkeypatch):
    where, replacement, expected = FAULTS[fault]
    target = {"_scan_backward": "scan_backward", "_scan_forward": "scan_forward", "_kernels": "_kernels"}[where]
    monkeypatch.setattr(scan_triton, target, replacement)
    failure, _ = selftest.run_checks("triton", torch.device("cpu"))
    assert failure is not None and re.search(expected, failure), failure


def test_mamba_kernel_wrong_gradient_is_caught(monkeypatch):
    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * 1.1  # every input gradient 10% off

    fake_cuda_kernel(monkeypatch, fault=WrongGrad.apply)
    failure, records = selftest.run_checks("cuda", torch.device("cpu"))
    assert failure is not None and "gradient of u" in failure and "float32" in failure
    assert records[-1]["errors"]["y"] < 1e-6
