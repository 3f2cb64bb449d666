"""Optimiser parameter groups: weight decay on weights only, as timm and Mamba train.

A trainable parameter gets **no weight decay** when any of these holds:

1. it has one dimension or none (biases, norm scales and shifts, ``D``, LayerScale);
2. its name ends in ``bias`` (``.bias``, and the per-path ``dt_proj_bias``: Mamba's
   ``dt_proj.bias``, a 1-D bias there);
3. it carries ``_no_weight_decay = True`` (Mamba's flag, set on ``A_log`` and ``D``);
4. it belongs to a normalisation layer or an ``nn.Embedding``;
5. it is an embedding held directly by a module (not a Linear / Conv weight): a name
   with ``embed`` or ``token`` in its module path or its own name (``pos_embed``,
   ``cls_token``, the temporal embedding ``embed.temporal``), or one listed by the
   model's ``no_weight_decay()`` (timm's convention).

Everything else (Linear / Conv / deformable-conv kernels, the S6 ``x_proj`` and
``dt_proj`` weights) decays with ``train.weight_decay``.
"""
from __future__ import annotations

from torch import nn

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)
_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding) + _NORMS


def no_weight_decay_reason(name: str, param: nn.Parameter, owner: nn.Module,
                           listed: set[str] = frozenset()) -> str | None:
    """Why ``param`` (called ``name`` in the model, held by ``owner``) is exempt from
    weight decay, or None when it decays."""
    leaf = name.rsplit(".", 1)[-1]
    if name in listed or leaf in listed:
        return "listed by model.no_weight_decay()"
    if getattr(param, "_no_weight_decay", False):
        return "_no_weight_decay flag"
    if param.ndim <= 1:
        return "1-D (bias / norm / D)"
    if leaf.endswith("bias"):
        return "bias"
    if isinstance(owner, _NORMS):
        return "normalisation layer"
    if isinstance(owner, nn.Embedding):
        return "embedding"
    if not isinstance(owner, _LAYERS) and any(key in name for key in ("embed", "token")):
        return "embedding"
    return None


def split_decay(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]],
                                           list[tuple[str, nn.Parameter, str]]]:
    """(decayed (name, parameter), exempt (name, parameter, reason)) over the trainable
    parameters, each parameter once (under its first name)."""
    listed = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay: list[tuple[str, nn.Parameter]] = []
    exempt: list[tuple[str, nn.Parameter, str]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{leaf}" if module_name else leaf
            reason = no_weight_decay_reason(name, param, module, listed)
            if reason is None:
                decay.append((name, param))
            else:
                exempt.append((name, param, reason))
    return decay, exempt


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: ``{"params": decayed, "weight_decay": weight_decay}`` and
    ``{"params": exempt, "weight_decay": 0.0}`` (an empty group is left out)."""
    decay, exempt = split_decay(model)
    groups = []
    if decay:
        groups.append({"params": [p for _, p in decay], "weight_decay": float(weight_decay),
                       "group": "decay"})
    if exempt:
        groups.append({"params": [p for _, p, _ in exempt], "weight_decay": 0.0,
                       "group": "no_decay"})
    return groups
