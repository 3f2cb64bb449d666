"""The K-path selective-scan mixer (VMamba SS2D style) shared by the GSM and LRM blocks.

::

    x (B, T, H, W, D) -> in_proj (shared) -> main (E) | gate (E)          E = expand * D
    main: depthwise 3x3 conv per frame -> SiLU -> read along K paths -> S6 per path
          -> back to token order -> merge (block specific: STMM, or sum) -> LayerNorm
    gate: depthwise 3x3 conv per frame -> LayerNorm -> SiLU
    out_proj (shared)(main * gate) -> (B, T, H, W, D)

Per path k: ``x_proj[k]`` (E -> dt_rank + 2N) gives dt, B, C; ``dt_proj[k]``
(dt_rank -> E) expands dt; ``A_log[k]`` (E, N) and ``D[k]`` (E,) (``share_s6=True``: one
set for all K paths). All K paths go
through one :func:`glsmamba.ops.selective_scan.selective_scan` call. Initialisation as
Mamba / VMamba: dt drawn log-uniformly in [dt_min, dt_max] and stored through the
inverse softplus in the dt bias, A = -[1..N] per channel, D = 1.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from glsmamba.models.scan_paths import ScanPaths, gather_paths, scatter_paths
from glsmamba.ops.selective_scan import selective_scan

# merge: (ys (B, K, E, L) in token order, (T, H, W)) -> (B, E, L)
MergeFn = Callable[[torch.Tensor, tuple[int, int, int]], torch.Tensor]
# paths: (T, H, W, device string) -> ScanPaths
PathsFn = Callable[[int, int, int, str], ScanPaths]


def sum_directions(ys: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
    """Plain merge: sum of all K path outputs, (B, K, E, L) -> (B, E, L)."""
    return ys.sum(1)


class S6Paths(nn.Module):
    """Per-path S6 parameters and the one batched scan over K paths.

    ``shared=True`` keeps one set of S6 parameters (x_proj, dt_proj, A_log, D) for all K
    paths (each path still scans its own sequence): the reading under which the paper's
    "unified only" and "full STS6D without STMM" have the same parameter count.
    """

    def __init__(self, d_inner: int, num_paths: int, d_state: int = 16,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, scan_backend: str = "auto", shared: bool = False):
        super().__init__()
        self.d_inner, self.num_paths, self.d_state = d_inner, num_paths, d_state
        self.dt_rank = math.ceil(d_inner / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = scan_backend
        self.shared = bool(shared)
        self.num_param_sets = 1 if self.shared else num_paths
        K, E, N, R = self.num_param_sets, d_inner, d_state, self.dt_rank
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, E))
        self.dt_proj_weight = nn.Parameter(torch.empty(K, E, R))
        self.dt_proj_bias = nn.Parameter(torch.empty(K, E))
        self.A_log = nn.Parameter(torch.empty(K * E, N))
        self.D = nn.Parameter(torch.empty(K * E))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D._no_weight_decay = True  # type: ignore[attr-defined]
        self.reset_parameters(dt_min, dt_max, dt_init_floor)

    def no_weight_decay(self) -> set[str]:
        return {"dt_proj_bias", "A_log", "D"}     # Mamba trains these without weight decay

    @torch.no_grad()
    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1,
                         dt_init_floor: float = 1e-4) -> None:
        if self.A_log.is_meta:
            return
        E, N, R = self.d_inner, self.d_state, self.dt_rank
        bound = E ** -0.5  # nn.Linear default for x_proj
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        std = R ** -0.5  # Mamba's dt_proj init ("constant" dt_scale = 1)
        nn.init.uniform_(self.dt_proj_weight, -std, std)
        dt = torch.exp(torch.rand(self.num_param_sets, E) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(self.num_param_sets * E, 1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)

    def path_parameters(self) -> tuple[torch.Tensor, ...]:
        """(x_proj (K, R+2N, E), dt_proj (K, E, R), dt_bias (K, E), A_log (K*E, N), D (K*E,)),
        the one shared set repeated K times when ``shared`` (gradients sum over the paths)."""
        K, E = self.num_paths, self.d_inner
        if not self.shared:
            return self.x_proj_weight, self.dt_proj_weight, self.dt_proj_bias, self.A_log, self.D
        return (self.x_proj_weight.expand(K, -1, -1), self.dt_proj_weight.expand(K, -1, -1),
                self.dt_proj_bias.expand(K, E), self.A_log.repeat(K, 1), self.D.repeat(K))

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """xs (B', K, E, L) -> ys (B', K, E, L), each path with its own (or the shared) parameters."""
        batch, K, E, L = xs.shape
        N, R = self.d_state, self.dt_rank
        x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D = self.path_parameters()
        x_dbl = torch.einsum("bkel,kce->bkcl", xs, x_proj_weight)  # (B', K, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dts = torch.einsum("bkrl,ker->bkel", dts, dt_proj_weight)  # (B', K, E, L)
        if xs.is_meta:  # shape propagation only (FLOP counting)
            return xs.new_empty(xs.shape)
        ys = selective_scan(
            xs.reshape(batch, K * E, L), dts.reshape(batch, K * E, L),
            -torch.exp(A_log.float()), Bs.contiguous(), Cs.contiguous(), D.float(),
            delta_bias=dt_proj_bias.reshape(-1).float(), delta_softplus=True,
            backend=self.scan_backend)
        return ys.view(batch, K, E, L).to(xs.dtype)


class SelectiveScanMixer(nn.Module):
    """SS-K mixer: shared in/out projections, depthwise conv, K-path S6, gate stream."""

    def __init__(self, dim: int, paths_fn: PathsFn, num_paths: int, merge: MergeFn | nn.Module = sum_directions,
                 d_state: int = 16, expand: float = 2.0, dt_rank: int | str = "auto",
                 d_conv: int = 3, scan_backend: str = "auto", share_s6: bool = False):
        super().__init__()
        d_inner = int(expand * dim)
        self.dim, self.d_inner = dim, d_inner
        self.paths_fn = paths_fn
        self.merge = merge
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv = nn.Conv2d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner)
        self.gate_conv = nn.Conv2d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner)
        self.gate_norm = nn.LayerNorm(d_inner)
        rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)  # Mamba: ceil(D/16)
        self.s6 = S6Paths(d_inner, num_paths, d_state, rank, scan_backend=scan_backend,
                          shared=share_s6)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    @property
    def num_paths(self) -> int:
        return self.s6.num_paths

    def _frame_conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """Depthwise conv per frame: (B, T, H, W, E) -> (B, T, E, H, W)."""
        B, T, H, W, E = x.shape
        frames = x.reshape(B * T, H, W, E).permute(0, 3, 1, 2)
        return conv(frames).view(B, T, E, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, D) -> (B, T, H, W, D)."""
        B, T, H, W, _ = x.shape
        main, gate = self.in_proj(x).chunk(2, dim=-1)  # (B, T, H, W, E) each
        main = F.silu(self._frame_conv(self.conv, main))  # (B, T, E, H, W)
        seq = main.permute(0, 2, 1, 3, 4).reshape(B, self.d_inner, T * H * W)  # (B, E, L)
        # Python ints: under ONNX tracing the sizes are tensors, the paths must be constants
        paths = self.paths_fn(int(T), int(H), int(W), str(x.device))
        if paths.num_paths != self.num_paths:
            raise ValueError(f"paths give {paths.num_paths} paths, mixer has {self.num_paths}")
        ys = self.s6(gather_paths(seq, paths))  # (B*S, K, E, Ls)
        merged = self.merge(scatter_paths(ys, paths), (T, H, W))  # (B, E, L)
        merged = merged.view(B, self.d_inner, T, H, W).permute(0, 2, 3, 4, 1)  # (B, T, H, W, E)
        gate = self._frame_conv(self.gate_conv, gate).permute(0, 1, 3, 4, 2)  # (B, T, H, W, E)
        gate = F.silu(self.gate_norm(gate))
        return self.out_proj(self.out_norm(merged) * gate)
