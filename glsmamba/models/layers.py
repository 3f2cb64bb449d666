"""Blocks shared by the pose models: stochastic depth, feed-forward, the checkpointable
pre-norm residual block, and the linear initialiser of the trainable parts."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.utils.checkpoint


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def maybe_checkpoint(fn, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """``fn(x)``; under ``enabled`` (and grad mode) as a non-reentrant activation checkpoint:
    only ``x`` is kept, ``fn`` runs again in backward (same RNG state, so drop path agrees)."""
    if enabled and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)
    return fn(x)


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear on the channel (last) axis."""

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResidualBlock(nn.Module):
    """Pre-norm residual block, ``x + mixer branch``, then ``+ FFN branch``; each branch
    can be recomputed in backward instead of stored (:meth:`set_grad_checkpointing`).

    Subclasses set ``norm2``, ``ffn``, ``drop_path`` and define ``_mixer_branch``.
    """

    grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual branch (mixer, FFN) in backward instead of storing it."""
        self.grad_checkpointing = bool(enable)

    def _mixer_branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _ffn_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.ffn(self.norm2(x)))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., D) -> same shape: both branches added in turn."""
        x = x + maybe_checkpoint(self._mixer_branch, x, self.grad_checkpointing)
        return x + maybe_checkpoint(self._ffn_branch, x, self.grad_checkpointing)


def init_linear(module: nn.Module) -> None:
    """trunc-normal(0.02) linear weights, zero biases (ViT / VMamba); encoder untouched."""
    if isinstance(module, nn.Linear) and not module.weight.is_meta:
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def collect_no_weight_decay(model: nn.Module) -> set[str]:
    """Full names of the parameters that the submodules of ``model`` list in their own
    ``no_weight_decay()`` (timm's convention: names relative to the submodule)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if module is model or not callable(listed):
            continue
        names |= {f"{prefix}.{name}" if prefix else name for name in listed()}
    return names
