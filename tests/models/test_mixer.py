import math

import pytest
import torch

from glsmamba.models.mixer import S6Paths, SelectiveScanMixer, sum_directions
from glsmamba.models.scan_paths import sts6d_paths, wsts_paths
from glsmamba.ops.selective_scan import selective_scan


def test_s6_initialisation():
    s6 = S6Paths(d_inner=64, num_paths=3, d_state=16, dt_rank=4)
    dt = torch.nn.functional.softplus(s6.dt_proj_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6 and dt.min() < 2e-3 and dt.max() > 5e-2
    A = -torch.exp(s6.A_log)
    assert torch.allclose(A, -torch.arange(1, 17.0).expand(192, 16))
    assert torch.equal(s6.D, torch.ones(192))
    assert s6.x_proj_weight.shape == (3, 4 + 32, 64) and s6.dt_proj_weight.shape == (3, 64, 4)


def test_s6_paths_use_their_own_parameters():
    """The one batched scan over K paths equals K separate single-path scans."""
    s6 = S6Paths(d_inner=8, num_paths=3, d_state=4, dt_rank=2, scan_backend="reference")
    xs = torch.randn(2, 3, 8, 11)
    ys = s6(xs)
    N, R = 4, 2
    for k in range(3):
        x = xs[:, k]  # (B, E, L)
        dbl = torch.einsum("bel,ce->bcl", x, s6.x_proj_weight[k])
        dt = torch.einsum("brl,er->bel", dbl[:, :R], s6.dt_proj_weight[k])
        sl = slice(k * 8, (k + 1) * 8)
        y = selective_scan(x, dt, -torch.exp(s6.A_log[sl]), dbl[:, None, R:R + N],
                           dbl[:, None, R + N:], s6.D[sl], s6.dt_proj_bias[k], True, "reference")
        torch.testing.assert_close(ys[:, k], y, rtol=1e-5, atol=1e-6)


def _mixer(backend: str, paths_fn=None, K=6):
    paths_fn = paths_fn or (lambda T, H, W, dev: sts6d_paths(T, H, W, device=dev))
    return SelectiveScanMixer(16, paths_fn, K, sum_directions, d_state=4, scan_backend=backend)


def test_mixer_shapes_and_gradients():
    mixer = _mixer("auto")
    assert mixer.s6.dt_rank == math.ceil(16 / 16) and mixer.d_inner == 32
    x = torch.randn(2, 3, 4, 5, 16, requires_grad=True)
    out = mixer(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0
    for name, param in mixer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("windowed", [False, True])
def test_mixer_fast_backend_matches_reference(windowed):
    """Default (chunked) scan path vs the sequential reference: forward and backward."""
    paths_fn = (lambda T, H, W, dev: wsts_paths(T, H, W, (2, 3), device=dev)) if windowed else None
    K = 2 if windowed else 6
    fast, ref = _mixer("auto", paths_fn, K), _mixer("reference", paths_fn, K)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 5, 4, 16)
    outs, grads = [], []
    for mixer in (fast, ref):
        xi = x.clone().requires_grad_(True)
        out = mixer(xi)
        out.square().sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in mixer.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for g_fast, g_ref in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-4)


def test_mixer_rejects_wrong_path_count():
    mixer = _mixer("auto", K=4)
    with pytest.raises(ValueError, match="paths"):
        mixer(torch.randn(1, 1, 2, 2, 16))
