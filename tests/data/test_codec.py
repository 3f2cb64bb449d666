"""Heatmap codec: encoding, quarter / DARK decoding accuracy, flip merging, numpy vs torch."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from glsmamba.data.codec import (HeatmapCodec, flip_back, gaussian_blur, gaussian_blur_reference,
                                 merge_flip)
from glsmamba.data.metainfo import load_metainfo


def _codec(**kw) -> HeatmapCodec:
    return HeatmapCodec((192, 256), (48, 64), 2.0, **kw)


def test_encode_peak_weights_and_shapes():
    codec = _codec()
    keypoints = np.array([[100.0, 120.0], [-30.0, 10.0], [50.0, 60.0], [191.0, 255.0]])
    heatmaps, weights = codec.encode(keypoints, np.array([1, 1, 0, 1]))
    assert heatmaps.shape == (4, 64, 48) and heatmaps.dtype == np.float32
    np.testing.assert_array_equal(weights, [1, 0, 0, 1])      # outside the map, unannotated
    assert heatmaps[1].max() == 0 and heatmaps[2].max() == 0
    y, x = np.unravel_index(heatmaps[0].argmax(), heatmaps[0].shape)
    assert (x, y) == (25, 30) and heatmaps[0].max() == pytest.approx(1.0)


def test_biased_encoding_rounds_and_truncates():
    codec = _codec(unbiased=False)
    heatmaps, _ = codec.encode(np.array([[101.0, 121.0]]), np.array([1]))   # heatmap (25.25, 30.25)
    assert heatmaps[0, 30, 25] == pytest.approx(1.0)
    assert heatmaps[0, 30, 25 + 7] == 0 and heatmaps[0, 30, 25 + 6] > 0          # 3 sigma window


def test_quarter_decode_on_half_pixel_positions():
    """Joints at integer + 0.5 heatmap pixels: the quarter offset is off by at most 0.25 px."""
    codec = _codec()
    rng = np.random.default_rng(0)
    grid = rng.integers(3, 40, size=(17, 2)).astype(np.float64) + 0.5
    heatmaps, _ = codec.encode(grid * 4, np.ones(17))
    keypoints, scores = codec.decode(heatmaps[None])
    error = np.abs(keypoints[0] / 4 - grid)
    assert error.max() <= 0.25 + 1e-6
    assert (scores > 0.85).all()


def test_quarter_decode_error_bound_random_positions():
    codec = _codec()
    rng = np.random.default_rng(1)
    truth = rng.uniform(4, 40, size=(8, 17, 2))
    heatmaps = np.stack([codec.encode(t * 4, np.ones(17))[0] for t in truth])
    keypoints, _ = codec.decode(heatmaps)
    assert np.abs(keypoints / 4 - truth).max() <= 0.25 + 1e-6
    # plain argmax would be off by up to 0.5: the offset must help on average
    plain = np.abs(np.round(truth) - truth).mean()
    assert np.abs(keypoints / 4 - truth).mean() < plain


def test_dark_decode_sub_pixel_accuracy():
    codec = _codec()
    rng = np.random.default_rng(2)
    truth = rng.uniform(5, 40, size=(8, 17, 2)) * [1, 1.4]          # stays inside 48 x 64
    heatmaps = np.stack([codec.encode(t * 4, np.ones(17))[0] for t in truth])
    keypoints, scores = codec.decode(heatmaps, method="dark")
    error = np.abs(keypoints / 4 - truth)
    assert error.max() < 0.1, error.max()
    quarter, _ = codec.decode(heatmaps, method="quarter")
    assert error.mean() < np.abs(quarter / 4 - truth).mean()
    assert scores.min() > 0.7


def test_dark_near_border_falls_back_to_quarter():
    codec = _codec()
    heatmaps, _ = codec.encode(np.array([[0.5 * 4, 30.2 * 4]]), np.ones(1))
    dark, _ = codec.decode(heatmaps, method="dark")
    quarter, _ = codec.decode(heatmaps, method="quarter")
    np.testing.assert_allclose(dark, quarter)


def test_decode_torch_matches_numpy_and_keeps_type():
    codec = _codec()
    heatmaps = np.random.default_rng(3).random((2, 17, 64, 48)).astype(np.float32)
    for method in ("quarter", "dark"):
        k_np, s_np = codec.decode(heatmaps, method)
        k_t, s_t = codec.decode(torch.from_numpy(heatmaps), method)
        assert isinstance(k_np, np.ndarray) and isinstance(k_t, torch.Tensor)
        np.testing.assert_allclose(k_t.numpy(), k_np, atol=1e-5)
        np.testing.assert_allclose(s_t.numpy(), s_np)
    single, _ = codec.decode(heatmaps[0])
    assert single.shape == (17, 2)
    with pytest.raises(ValueError, match="method"):
        codec.decode(heatmaps, "soft")


def test_udp_mapping_round_trip():
    codec = _codec(udp=True)
    points = np.array([[0.0, 0.0], [191.0, 255.0], [95.5, 127.5]])
    np.testing.assert_allclose(codec.to_heatmap(points)[1], [47, 63])
    np.testing.assert_allclose(codec.to_crop(codec.to_heatmap(points)), points)
    rng = np.random.default_rng(4)
    truth = rng.uniform(20, 170, size=(17, 2))
    heatmaps, _ = codec.encode(truth, np.ones(17))
    keypoints, _ = codec.decode(heatmaps, method="dark")
    assert np.abs(keypoints - truth).max() < 0.4          # < 0.1 heatmap px


def test_gaussian_blur_keeps_peak():
    heatmaps = torch.rand(2, 3, 16, 12)
    blurred = gaussian_blur(heatmaps, 11, 2.0)
    torch.testing.assert_close(blurred.amax(dim=(-2, -1)), heatmaps.amax(dim=(-2, -1)))


def test_flip_back_twice_is_identity_and_swaps_joints():
    flip_indices = load_metainfo("posetrack").flip_indices
    heatmaps = torch.rand(2, 17, 8, 6)
    torch.testing.assert_close(flip_back(flip_back(heatmaps, flip_indices), flip_indices), heatmaps)
    back = flip_back(heatmaps, flip_indices)
    torch.testing.assert_close(back[:, 5], heatmaps[:, 6].flip(-1))   # left <- right shoulder
    torch.testing.assert_close(back[:, 0], heatmaps[:, 0].flip(-1))   # nose stays
    np.testing.assert_allclose(flip_back(heatmaps.numpy(), flip_indices), back.numpy())


def test_merge_flip_symmetry():
    flip_indices = load_metainfo("posetrack").flip_indices
    rng = np.random.default_rng(5)
    heatmaps = torch.from_numpy(rng.random((2, 17, 8, 6)).astype(np.float32))
    mirrored = flip_back(heatmaps, flip_indices)      # what a mirror-equivariant model predicts
    torch.testing.assert_close(merge_flip(heatmaps, mirrored, flip_indices, shift=False), heatmaps)
    other = torch.from_numpy(rng.random((2, 17, 8, 6)).astype(np.float32))
    merged = merge_flip(heatmaps, other, flip_indices, shift=False)
    torch.testing.assert_close(flip_back(merge_flip(other, heatmaps, flip_indices, shift=False), flip_indices),
                               merged)
    shifted = merge_flip(heatmaps, mirrored, flip_indices, shift=True)
    torch.testing.assert_close(shifted[..., 1:], (heatmaps[..., 1:] + heatmaps[..., :-1]) / 2)
    np.testing.assert_allclose(merge_flip(heatmaps.numpy(), other.numpy(), flip_indices), 
                               merge_flip(heatmaps, other, flip_indices).numpy(), rtol=1e-6)
    assert _codec(udp=True).merge_flip(heatmaps, mirrored, flip_indices).equal(heatmaps)


def _dark_reference(heatmaps: np.ndarray, kernel: int = 11, sigma: float = 2.0) -> np.ndarray:
    """Plain per-joint DARK (full-map blur with zero border, rescale to peak, log, Taylor)."""
    n, k, h, w = heatmaps.shape
    out = np.zeros((n, k, 2))
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j].astype(np.float64)
            y, x = np.unravel_index(hm.argmax(), hm.shape)
            blurred = cv2.GaussianBlur(hm, (kernel, kernel), sigma, borderType=cv2.BORDER_CONSTANT)
            blurred *= hm.max() / blurred.max()
            log = np.log(np.maximum(blurred, 1e-10))
            dx = 0.5 * (log[y, x + 1] - log[y, x - 1])
            dy = 0.5 * (log[y + 1, x] - log[y - 1, x])
            dxx = 0.25 * (log[y, x + 2] - 2 * log[y, x] + log[y, x - 2])
            dyy = 0.25 * (log[y + 2, x] - 2 * log[y, x] + log[y - 2, x])
            dxy = 0.25 * (log[y + 1, x + 1] - log[y - 1, x + 1] - log[y + 1, x - 1] + log[y - 1, x - 1])
            hessian = np.array([[dxx, dxy], [dxy, dyy]])
            out[i, j] = np.array([x, y]) - np.linalg.solve(hessian, [dx, dy])
    return out


def test_dark_fast_path_matches_plain_reference():
    codec = _codec()
    rng = np.random.default_rng(6)
    truth = rng.uniform(6, 40, size=(3, 17, 2)) * [1, 1.4]
    heatmaps = np.stack([codec.encode(t * 4, np.ones(17))[0] for t in truth])
    heatmaps = heatmaps * rng.uniform(0.3, 1.0, (3, 17, 1, 1)) + rng.uniform(0, 0.05, heatmaps.shape)
    heatmaps = heatmaps.astype(np.float32)
    keypoints, _ = codec.decode(heatmaps, method="dark")
    np.testing.assert_allclose(keypoints / 4, _dark_reference(heatmaps), atol=2e-3)


def test_full_map_blur_matches_convolution():
    heatmaps = torch.rand(2, 3, 16, 12)
    torch.testing.assert_close(gaussian_blur(heatmaps), gaussian_blur_reference(heatmaps), atol=1e-5, rtol=1e-5)
