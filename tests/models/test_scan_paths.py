import pytest
import torch

from glsmamba.models.scan_paths import (
    gather_paths, scatter_paths, sts6d_paths, type_order, wsts_paths)


def _coords(index: torch.Tensor, H: int, W: int):
    return index // (H * W), (index // W) % H, index % W  # t, h, w


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 4, 5), (5, 6, 4)])
def test_sts6d_bijection_and_round_trip(shape):
    T, H, W = shape
    paths = sts6d_paths(T, H, W)
    L = T * H * W
    assert paths.order.shape == (6, 1, L)
    for k in range(6):
        assert torch.equal(paths.order[k, 0].sort().values, torch.arange(L))
        assert torch.equal(paths.order[k, 0][paths.inverse[k]], torch.arange(L))
    x = torch.randn(2, 3, L)
    ys = gather_paths(x, paths)  # (2, 6, 3, L)
    assert ys.shape == (2, 6, 3, L)
    assert torch.equal(ys[:, 1], x)  # spatial path is the t-major order itself
    assert torch.equal(scatter_paths(ys, paths), x[:, None].expand(2, 6, 3, L))


def test_sts6d_type_orders():
    T, H, W = 3, 2, 4
    t, h, w = _coords(type_order("temporal", T, H, W), H, W)
    # one pixel's T frames are visited consecutively
    assert torch.equal(t[:T], torch.arange(T)) and (h[:T] == 0).all() and (w[:T] == 0).all()
    assert (w[T:2 * T] == 1).all()
    t, h, w = _coords(type_order("unified", T, H, W), H, W)
    # unified: row 0 of frame 0, then row 0 of frame 1, ... (frames tiled along the width)
    assert torch.equal(t[: W * T], torch.arange(T).repeat_interleave(W))
    assert (h[: W * T] == 0).all() and torch.equal(w[:W], torch.arange(W))
    assert (h[W * T:] == 1).all()
    paths = sts6d_paths(T, H, W)
    for k in range(3):
        assert torch.equal(paths.order[k + 3, 0], paths.order[k, 0].flip(0))
    assert paths.names == ("unified", "spatial", "temporal", "unified-rev", "spatial-rev", "temporal-rev")


def test_sts6d_subset_and_errors():
    assert sts6d_paths(2, 2, 2, ("unified",)).num_paths == 2
    with pytest.raises(ValueError):
        sts6d_paths(2, 2, 2, ("diagonal",))


@pytest.mark.parametrize("shape,window", [((3, 8, 6), (8, 6)), ((2, 10, 7), (4, 3)), ((1, 3, 2), (8, 6))])
@pytest.mark.parametrize("reset", [True, False])
def test_wsts_covers_each_real_position_once(shape, window, reset):
    T, H, W = shape
    paths = wsts_paths(T, H, W, window, reset)
    L = T * H * W
    for k in range(2):
        real = paths.order[k][paths.order[k] != L]
        assert torch.equal(real.sort().values, torch.arange(L))
    x = torch.randn(2, 4, L)
    ys = gather_paths(x, paths)
    assert ys.shape == (2 * paths.num_sequences, 2, 4, paths.seq_len)
    back = scatter_paths(ys, paths)
    assert torch.equal(back, x[:, None].expand(2, 2, 4, L))


@pytest.mark.parametrize("reset", [True, False])
def test_gather_scatter_gradients(reset):
    """The hand-written backward of gather / scatter against numerical gradients."""
    paths = wsts_paths(2, 3, 4, (2, 3), reset)  # padded windows when reset
    x = torch.randn(1, 2, 24, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(paths.num_sequences, 2, 2, paths.seq_len, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: scatter_paths(gather_paths(v, paths) ** 2 * weights, paths), (x,))
    sts = sts6d_paths(2, 2, 3)
    assert torch.autograd.gradcheck(
        lambda v: scatter_paths(gather_paths(v[..., :12], sts).cos(), sts), (x,))


def test_wsts_window_order_and_padding():
    T, H, W = 2, 5, 4
    paths = wsts_paths(T, H, W, (4, 3), reset=True)
    L = T * H * W
    assert paths.order.shape == (2, 4, T * 4 * 3)  # 2 x 2 windows
    t, h, w = _coords(paths.order[0, 0], H, W)
    # first window: frame 0's 4x3 patch in raster order, then frame 1's
    assert torch.equal(t, torch.arange(T).repeat_interleave(12))
    assert torch.equal(h[:12], torch.arange(4).repeat_interleave(3))
    # bottom-right window is cut: 1 row x 1 column per frame, padding at the end
    last = paths.order[0, 3]
    assert (last[:2] != L).all() and (last[2:] == L).all()
    assert torch.equal(paths.order[1, 3, :2], last[:2].flip(0))
    # padding never reaches real outputs: forward outputs depend only on earlier real tokens
    x = torch.zeros(1, 1, L)
    ys = gather_paths(x, paths)
    assert (ys[3, 0, 0, 2:] == 0).all()


def test_wsts_carry_is_one_sequence():
    paths = wsts_paths(2, 5, 4, (4, 3), reset=False)
    assert paths.order.shape == (2, 1, 40) and not paths.has_padding
    assert torch.equal(paths.order[1, 0], paths.order[0, 0].flip(0))


def test_paths_follow_device_and_cache():
    assert sts6d_paths(2, 3, 4) is sts6d_paths(2, 3, 4)
    paths = wsts_paths(2, 3, 4, device="meta")
    assert paths.order.device.type == "meta"
