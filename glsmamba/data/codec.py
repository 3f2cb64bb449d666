"""Heatmap codec: Gaussian targets, arg-max decoding (quarter offset or DARK) and flip merging.

Coordinates handed to and returned by the codec are *crop pixels* (the model's input
resolution, e.g. 192 x 256). Two conventions map them to heatmap pixels:

* standard (HRNet / mmpose MSRA): ``heatmap = crop / stride`` with ``stride = input / heatmap``;
* UDP (``udp=True``, used by ViTPose): ``heatmap = crop * (heatmap - 1) / (input - 1)``.

``encode`` works on one person with numpy; ``decode``, ``flip_back`` and ``merge_flip``
accept numpy arrays or torch tensors and return the same kind (torch results stay on the
input's device).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor


class HeatmapCodec:
    """Gaussian heatmap targets and their decoding.

    Args:
        input_size: (W, H) of the crop.
        heatmap_size: (w, h) of the heatmaps.
        sigma: Gaussian standard deviation in heatmap pixels.
        unbiased: centre the Gaussian on the sub-pixel joint (DARK's unbiased encoding);
            False rounds the centre to the nearest heatmap pixel and truncates the Gaussian
            to a (6 sigma + 1) window, as HRNet and the DCPose line do.
        udp: UDP coordinate mapping (see module docstring).
        blur_kernel: Gaussian kernel size used by DARK's modulation (11 for sigma 2).
    """

    def __init__(self, input_size: Sequence[int] = (192, 256), heatmap_size: Sequence[int] = (48, 64),
                 sigma: float = 2.0, unbiased: bool = True, udp: bool = False, blur_kernel: int = 11):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.unbiased = unbiased
        self.udp = udp
        self.blur_kernel = int(blur_kernel) | 1   # odd

    # ---------------------------------------------------------------- coordinates
    @property
    def _ratio(self) -> np.ndarray:
        """Heatmap pixels per crop pixel, (2,)."""
        (in_w, in_h), (hm_w, hm_h) = self.input_size, self.heatmap_size
        if self.udp:
            return np.array([(hm_w - 1) / (in_w - 1), (hm_h - 1) / (in_h - 1)], dtype=np.float64)
        return np.array([hm_w / in_w, hm_h / in_h], dtype=np.float64)

    def to_heatmap(self, keypoints: np.ndarray) -> np.ndarray:
        """Crop pixels -> heatmap pixels, any (..., 2)."""
        return np.asarray(keypoints, dtype=np.float64) * self._ratio

    def to_crop(self, keypoints: ArrayLike) -> ArrayLike:
        """Heatmap pixels -> crop pixels, any (..., 2)."""
        if isinstance(keypoints, torch.Tensor):
            return keypoints / torch.as_tensor(self._ratio, dtype=keypoints.dtype, device=keypoints.device)
        return np.asarray(keypoints) / self._ratio

    # ---------------------------------------------------------------- encoding
    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian targets for one person.

        Args:
            keypoints: (K, 2) crop pixels.
            visible: (K,) > 0 where the joint is annotated.
        Returns:
            heatmaps (K, h, w) float32 and weights (K,) float32: 0 for unannotated joints and
            joints outside the crop (``x`` not in ``[0, W)`` or ``y`` not in ``[0, H)``); their
            heatmaps are all zeros.
        """
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        visible = np.asarray(visible, dtype=np.float64).reshape(-1)
        if len(visible) != len(keypoints):
            raise ValueError(f"keypoints {keypoints.shape} and visible {visible.shape} disagree")
        hm_w, hm_h = self.heatmap_size
        centres = self.to_heatmap(keypoints)                                  # (K, 2)
        if not self.unbiased:
            centres = np.floor(centres + 0.5)
        in_w, in_h = self.input_size
        inside = ((keypoints[:, 0] >= 0) & (keypoints[:, 0] < in_w)
                  & (keypoints[:, 1] >= 0) & (keypoints[:, 1] < in_h))
        weights = ((visible > 0) & inside & np.isfinite(centres).all(axis=1)).astype(np.float32)
        xs = np.arange(hm_w, dtype=np.float64)
        ys = np.arange(hm_h, dtype=np.float64)
        dx = xs[None, :] - centres[:, 0:1]                                     # (K, w)
        dy = ys[None, :] - centres[:, 1:2]                                     # (K, h)
        gx = np.exp(-dx ** 2 / (2 * self.sigma ** 2))
        gy = np.exp(-dy ** 2 / (2 * self.sigma ** 2))
        if not self.unbiased:
            radius = int(self.sigma * 3)
            gx *= np.abs(dx) <= radius
            gy *= np.abs(dy) <= radius
        heatmaps = gy[:, :, None] * gx[:, None, :]                             # (K, h, w)
        heatmaps *= weights[:, None, None]
        return heatmaps.astype(np.float32), weights

    # ---------------------------------------------------------------- decoding
    def decode(self, heatmaps: ArrayLike, method: str = "quarter") -> tuple[ArrayLike, ArrayLike]:
        """Heatmaps (N, K, h, w) or (K, h, w) -> keypoints (N, K, 2) in crop pixels, scores (N, K).

        ``method="quarter"``: arg-max moved a quarter pixel toward the higher neighbour.
        ``method="dark"``: DARK (Zhang et al., CVPR 2020): blur the heatmap with a Gaussian
        (rescaled to its original peak), take the log, and refine the arg-max with a
        second-order Taylor expansion; joints too close to the border, or whose Hessian is
        not negative definite, fall back to the quarter offset. Scores are the raw peaks.
        """
        if method not in ("quarter", "dark"):
            raise ValueError(f"unknown decoding method {method!r} (quarter | dark)")
        is_numpy = not isinstance(heatmaps, torch.Tensor)
        hm = torch.as_tensor(np.asarray(heatmaps) if is_numpy else heatmaps).float()
        single = hm.dim() == 3
        if single:
            hm = hm.unsqueeze(0)
        if hm.dim() != 4:
            raise ValueError(f"expected heatmaps (N, K, h, w) or (K, h, w), got {tuple(hm.shape)}")
        coords, scores = _argmax(hm)                                           # (N, K, 2), (N, K)
        if method == "quarter":
            coords = coords + _quarter_offset(hm, coords)
        else:
            coords = coords + _dark_offset(hm, coords, self.blur_kernel, self.sigma)
        keypoints = self.to_crop(coords)
        if single:
            keypoints, scores = keypoints[0], scores[0]
        if is_numpy:
            return keypoints.cpu().numpy().astype(np.float32), scores.cpu().numpy().astype(np.float32)
        return keypoints, scores

    # ---------------------------------------------------------------- flip test
    @property
    def flip_shift(self) -> int:
        """Heatmap pixels to move flipped-back maps right before averaging.

        Mirroring the crop maps crop pixel ``x`` to ``W - 1 - x``. Under UDP, heatmap pixel
        ``i`` sits at crop pixel ``i (W - 1) / (w - 1)``, so the mirror is exactly the array
        flip ``i -> w - 1 - i``: no shift. Under the standard mapping (``i = x w / W``) the
        mirror of ``i`` is ``w - w / W - i``, i.e. the array flip lands ``1 - w / W`` (0.75 at
        stride 4) pixels too far left; HRNet / mmpose compensate with a one-pixel shift.
        """
        return 0 if self.udp else 1

    def merge_flip(self, heatmaps: ArrayLike, flipped_heatmaps: ArrayLike,
                   flip_indices: Sequence[int], shift: bool | None = None) -> ArrayLike:
        """``merge_flip`` with the codec's :attr:`flip_shift` (``shift`` overrides it)."""
        return merge_flip(heatmaps, flipped_heatmaps, flip_indices,
                          shift=bool(self.flip_shift) if shift is None else shift)


def _argmax(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, k, h, w = hm.shape
    scores, index = hm.reshape(n, k, h * w).max(dim=-1)
    coords = torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], dim=-1)
    return coords.to(hm.dtype), scores


def _gather(hm: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """hm (N, K, h, w) at integer (N, K) positions (clamped into the map)."""
    n, k, h, w = hm.shape
    xs = xs.long().clamp(0, w - 1)
    ys = ys.long().clamp(0, h - 1)
    flat = hm.reshape(n, k, h * w)
    return flat.gather(-1, (ys * w + xs).unsqueeze(-1)).squeeze(-1)


def _quarter_offset(hm: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    h, w = hm.shape[-2:]
    x, y = coords[..., 0], coords[..., 1]
    dx = _gather(hm, x + 1, y) - _gather(hm, x - 1, y)
    dy = _gather(hm, x, y + 1) - _gather(hm, x, y - 1)
    dx = torch.where((x > 0) & (x < w - 1), dx, torch.zeros_like(dx))
    dy = torch.where((y > 0) & (y < h - 1), dy, torch.zeros_like(dy))
    return 0.25 * torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1)


def _blur_matrix(size: int, kernel_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(size, size) matrix of a 1-D Gaussian blur with zero padding (row i = output i)."""
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    index = torch.arange(size, device=like.device)
    offset = index[None, :] - index[:, None]                               # column - row
    inside = offset.abs() <= radius
    return torch.where(inside, kernel[(offset + radius).clamp(0, kernel_size - 1)], torch.zeros((), dtype=like.dtype))


def gaussian_blur(hm: torch.Tensor, kernel_size: int = 11, sigma: float = 2.0) -> torch.Tensor:
    """Separable Gaussian blur of (N, K, h, w) with zero padding (as two small matrix
    products, much faster on CPU than single-channel convolutions), rescaled so that each
    map keeps its original peak value."""
    h, w = hm.shape[-2:]
    blur_rows = _blur_matrix(h, kernel_size, sigma, hm)                    # (h, h)
    blur_cols = _blur_matrix(w, kernel_size, sigma, hm)                    # (w, w)
    blurred = blur_rows @ hm @ blur_cols.T
    peak = hm.amax(dim=(-2, -1), keepdim=True)
    blurred_peak = blurred.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return blurred * peak / blurred_peak


def gaussian_blur_reference(hm: torch.Tensor, kernel_size: int = 11, sigma: float = 2.0) -> torch.Tensor:
    """Plain 2-D convolution version of :func:`gaussian_blur` (for tests)."""
    n, k, h, w = hm.shape
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, dtype=hm.dtype, device=hm.device)
    kernel_1d = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel_2d = torch.outer(kernel_1d, kernel_1d)
    kernel_2d = kernel_2d / kernel_2d.sum()
    blurred = F.conv2d(hm.reshape(n * k, 1, h, w), kernel_2d[None, None], padding=radius).reshape(n, k, h, w)
    peak = hm.amax(dim=(-2, -1), keepdim=True)
    return blurred * peak / blurred.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def _local_patches(hm: torch.Tensor, coords: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, K, P, P) windows of hm around integer ``coords`` (N, K, 2), P = 2 radius + 1,
    zero outside the map (gathered directly: the map is never padded or copied)."""
    n, k, h, w = hm.shape
    taps = torch.arange(-radius, radius + 1, device=hm.device)
    xs = coords[..., 0].long()[..., None, None] + taps[None, :]               # (N, K, 1, P)
    ys = coords[..., 1].long()[..., None, None] + taps[:, None]               # (N, K, P, 1)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)                       # (N, K, P, P)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).reshape(n, k, -1)
    size = 2 * radius + 1
    values = hm.reshape(n, k, h * w).gather(-1, index).reshape(n, k, size, size)
    return values * inside


def _valid_blur_matrix(out_size: int, kernel_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(out, out + kernel - 1) matrix of a 'valid' 1-D Gaussian blur."""
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    matrix = torch.zeros(out_size, out_size + kernel_size - 1, dtype=like.dtype, device=like.device)
    for row in range(out_size):
        matrix[row, row: row + kernel_size] = kernel
    return matrix


def _dark_offset(hm: torch.Tensor, coords: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """DARK sub-pixel offsets at the arg-max ``coords``.

    Only the 5 x 5 window of the blurred log-heatmap around each maximum enters the Taylor
    expansion, so only that window is blurred (from a (5 + kernel - 1)^2 patch). DARK's
    rescaling of the blurred map to the original peak multiplies it by a constant, which
    adds a constant to the log and cancels in every derivative: it is skipped.
    """
    h, w = hm.shape[-2:]
    radius = kernel_size // 2
    patch = _local_patches(hm, coords, radius + 2)                              # (N, K, P, P)
    blur = _valid_blur_matrix(5, kernel_size, sigma, hm)                        # (5, P)
    log_hm = torch.log((blur @ patch @ blur.T).clamp_min(1e-10))               # (N, K, 5, 5)

    def at(ox: int, oy: int) -> torch.Tensor:
        return log_hm[..., 2 + oy, 2 + ox]

    centre = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy ** 2
    safe_det = torch.where(det.abs() > 1e-12, det, torch.ones_like(det))
    # offset = -H^-1 g for the 2x2 Hessian H = [[dxx, dxy], [dxy, dyy]]
    off_x = -(dyy * dx - dxy * dy) / safe_det
    off_y = -(-dxy * dx + dxx * dy) / safe_det
    offset = torch.stack([off_x, off_y], dim=-1)
    x, y = coords[..., 0], coords[..., 1]
    usable = ((x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
              & (dxx < 0) & (det > 1e-12) & (offset.abs() <= 1.0).all(dim=-1))
    return torch.where(usable.unsqueeze(-1), offset, _quarter_offset(hm, coords))


def flip_back(heatmaps: ArrayLike, flip_indices: Sequence[int]) -> ArrayLike:
    """Heatmaps (..., K, h, w) predicted on a mirrored input -> heatmaps of the original input."""
    index = list(flip_indices)
    if isinstance(heatmaps, torch.Tensor):
        return heatmaps[..., index, :, :].flip(-1)
    return np.ascontiguousarray(np.asarray(heatmaps)[..., index, :, ::-1])


def merge_flip(heatmaps: ArrayLike, flipped_heatmaps: ArrayLike, flip_indices: Sequence[int],
               shift: bool = True) -> ArrayLike:
    """Average the heatmaps of a clip and of its mirror (flip test).

    ``shift`` moves the flipped-back maps one pixel right, compensating the half-pixel
    misalignment of the standard (non-UDP) mapping, as HRNet/mmpose do.
    """
    back = flip_back(flipped_heatmaps, flip_indices)
    if shift:
        if isinstance(back, torch.Tensor):
            back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
        else:
            back = np.concatenate([back[..., :1], back[..., :-1]], axis=-1)
    return (heatmaps + back) * 0.5
