"""Scan paths over a (T, H, W) volume as index permutations.

A clip's tokens are stored t-major: ``index = t * H * W + h * W + w``. A *path* is an
order in which the selective scan visits them. Every path set here is a
:class:`ScanPaths`: ``order`` (K, S, Ls) says which source token each of the K paths
reads at step ``i`` of sequence ``s`` (S independent sequences per path, each starting
from a zero state), and ``inverse`` (K, L) says where the output of token ``j`` lands
in the flattened (S * Ls) path layout. Index ``L`` in ``order`` is a padding slot that
reads zeros and is never read back, so padding never reaches a real output.

* STS6D (GSM): three types, each forward then (all three) reversed, K = 6, S = 1:
  unified (h, t, w) = the frames tiled along the width and read row after row as one
  panorama; spatial (t, h, w) = each frame's raster scan, frame after frame; temporal
  (h, w, t) = each pixel's T frames one after the other.
* WSTS (LRM): tube windows of ``wh x ww x T``; inside a window, frame after frame,
  each frame's window patch in raster order; forward and reversed (K = 2).
  ``reset=True`` (default): each window is its own sequence (S = #windows, state resets
  at each window; windows are batched, cheaper); a window cut by the border is padded
  at the *end* of its sequence. ``reset=False``: the windows are concatenated into one
  sequence per direction (state carries across windows, LocalMamba's way; S = 1, no
  padding needed).

Permutations are cached per (shape, options, device).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

SCAN_TYPES = ("unified", "spatial", "temporal")

# axis order (outer -> inner) of each STS6D type, in terms of the t-major volume axes
_TYPE_AXES = {"unified": ("h", "t", "w"), "spatial": ("t", "h", "w"), "temporal": ("h", "w", "t")}


@dataclass(frozen=True)
class ScanPaths:
    """K paths of S sequences of length Ls over L = T*H*W tokens."""

    order: torch.Tensor  # (K, S, Ls) long, values in [0, L]; L = padding slot
    inverse: torch.Tensor  # (K, L) long, position of token j in the (S*Ls) layout
    names: tuple[str, ...]
    num_tokens: int

    @property
    def num_paths(self) -> int:
        return self.order.shape[0]

    @property
    def num_sequences(self) -> int:
        return self.order.shape[1]

    @property
    def seq_len(self) -> int:
        return self.order.shape[2]

    @property
    def has_padding(self) -> bool:
        return self.num_sequences * self.seq_len != self.num_tokens


def _volume_index(T: int, H: int, W: int) -> torch.Tensor:
    return torch.arange(T * H * W).view(T, H, W)  # value = t*H*W + h*W + w


def type_order(scan_type: str, T: int, H: int, W: int) -> torch.Tensor:
    """(L,) token indices in the visiting order of one STS6D scan type (forward)."""
    if scan_type not in _TYPE_AXES:
        raise ValueError(f"unknown scan type {scan_type!r}; choose from {SCAN_TYPES}")
    axes = _TYPE_AXES[scan_type]
    perm = ["thw".index(a) for a in axes]
    return _volume_index(T, H, W).permute(*perm).reshape(-1)


def _inverse_of(order: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """order (K, N) with pad value ``num_tokens`` -> inverse (K, num_tokens)."""
    inverse = torch.full((order.shape[0], num_tokens + 1), -1, dtype=torch.long)
    positions = torch.arange(order.shape[1]).expand_as(order)
    inverse.scatter_(1, order, positions)
    return inverse[:, :num_tokens].contiguous()


@functools.lru_cache(maxsize=64)
def _sts6d_cpu(T: int, H: int, W: int, types: tuple[str, ...]) -> ScanPaths:
    forward = [type_order(t, T, H, W) for t in types]
    order = torch.stack(forward + [o.flip(0) for o in forward])  # (K, L)
    names = tuple(types) + tuple(f"{t}-rev" for t in types)
    L = T * H * W
    return ScanPaths(order.unsqueeze(1), _inverse_of(order, L), names, L)


@functools.lru_cache(maxsize=64)
def _wsts_cpu(T: int, H: int, W: int, window: tuple[int, int], reset: bool) -> ScanPaths:
    wh, ww = window
    L = T * H * W
    n_h, n_w = -(-H // wh), -(-W // ww)
    # padded volume of indices, padding = L
    padded = torch.full((T, n_h * wh, n_w * ww), L, dtype=torch.long)
    padded[:, :H, :W] = _volume_index(T, H, W)
    tubes = padded.view(T, n_h, wh, n_w, ww).permute(1, 3, 0, 2, 4)  # (nh, nw, T, wh, ww)
    tubes = tubes.reshape(n_h * n_w, T * wh * ww)  # (windows, Lw): frame after frame
    real = tubes != L
    # move each window's padding slots to its end (stable), so they follow all real tokens
    key = (~real).long() * tubes.shape[1] + torch.arange(tubes.shape[1])
    forward = torch.gather(tubes, 1, key.argsort(dim=1))
    counts = real.sum(1)
    # reversed: real part reversed, padding still at the end
    positions = torch.arange(tubes.shape[1]).expand_as(forward)
    rev_pos = torch.where(positions < counts[:, None], counts[:, None] - 1 - positions, positions)
    backward = torch.gather(forward, 1, rev_pos)
    if reset:
        order = torch.stack([forward, backward])  # (2, windows, Lw)
    else:
        flat = forward[forward != L]  # all windows in a row: (L,)
        order = torch.stack([flat, flat.flip(0)]).unsqueeze(1)  # (2, 1, L)
    inverse = _inverse_of(order.reshape(2, -1), L)
    return ScanPaths(order, inverse, ("window", "window-rev"), L)


def _to_device(paths: ScanPaths, device: torch.device) -> ScanPaths:
    return ScanPaths(paths.order.to(device), paths.inverse.to(device), paths.names, paths.num_tokens)


@functools.lru_cache(maxsize=64)
def sts6d_paths(
    T: int, H: int, W: int, types: tuple[str, ...] = SCAN_TYPES, device: str = "cpu"
) -> ScanPaths:
    """STS6D: the given scan types forward, then the same types reversed (K = 2 * len(types))."""
    types = tuple(types)
    if not types or len(set(types)) != len(types):
        raise ValueError(f"scan types must be distinct and non-empty, got {types}")
    return _to_device(_sts6d_cpu(T, H, W, types), torch.device(device))


@functools.lru_cache(maxsize=64)
def wsts_paths(
    T: int, H: int, W: int, window: tuple[int, int] = (8, 6), reset: bool = True,
    device: str = "cpu",
) -> ScanPaths:
    """WSTS: tube windows (wh, ww) x T, forward and reversed (K = 2); see module doc."""
    if min(window) < 1:
        raise ValueError(f"window must be positive, got {window}")
    return _to_device(_wsts_cpu(T, H, W, tuple(window), bool(reset)), torch.device(device))


class _GatherPaths(torch.autograd.Function):
    """x (B, C, L) -> (B*S, K, C, Ls); backward gathers with the inverse."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor):
        ctx.save_for_backward(order, inverse)
        return _gather_forward(x, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        order, inverse = ctx.saved_tensors
        per_path = _scatter_forward(grad, order, inverse)  # (B, K, C, L)
        return per_path.sum(1), None, None


class _ScatterPaths(torch.autograd.Function):
    """y (B*S, K, C, Ls) -> (B, K, C, L) in token order; backward gathers with the order."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor):
        ctx.save_for_backward(order, inverse)
        return _scatter_forward(y, order, inverse)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        order, _ = ctx.saved_tensors
        K, S, Ls = order.shape
        B, _, C, L = grad.shape
        padded = torch.cat([grad, grad.new_zeros(B, K, C, 1)], -1)  # pad slot reads 0
        index = order.permute(1, 0, 2).reshape(1, S, K, 1, Ls).expand(B, S, K, C, Ls)
        out = torch.gather(padded.unsqueeze(1).expand(B, S, K, C, L + 1), -1, index)
        return out.reshape(B * S, K, C, Ls), None, None


def _gather_forward(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    B, C, L = x.shape
    K, S, Ls = order.shape
    if S * Ls != L:
        x = torch.cat([x, x.new_zeros(B, C, 1)], -1)  # padding slot L
    index = order.permute(1, 0, 2).reshape(1, S, K, 1, Ls).expand(B, S, K, C, Ls)
    out = torch.gather(x[:, None, None].expand(B, S, K, C, x.shape[-1]), -1, index)
    return out.reshape(B * S, K, C, Ls)


def _scatter_forward(y: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    K, S, Ls = order.shape
    C = y.shape[2]
    B = y.shape[0] // S
    L = inverse.shape[1]
    if S == 1:
        flat = y.view(B, K, C, Ls)
    else:
        flat = y.view(B, S, K, C, Ls).permute(0, 2, 3, 1, 4).reshape(B, K, C, S * Ls)
    index = inverse.view(1, K, 1, L).expand(B, K, C, L)
    return torch.gather(flat, -1, index)


def gather_paths(x: torch.Tensor, paths: ScanPaths) -> torch.Tensor:
    """Read the tokens along every path: x (B, C, L) t-major -> (B*S, K, C, Ls)."""
    if x.shape[-1] != paths.num_tokens:
        raise ValueError(f"x has {x.shape[-1]} tokens, paths expect {paths.num_tokens}")
    return _GatherPaths.apply(x, paths.order, paths.inverse)


def scatter_paths(y: torch.Tensor, paths: ScanPaths) -> torch.Tensor:
    """Put path outputs back in token order: (B*S, K, C, Ls) -> (B, K, C, L)."""
    return _ScatterPaths.apply(y, paths.order, paths.inverse)
