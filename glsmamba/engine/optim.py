"""Optimiser parameter groups: weight decay on weights only, as timm and Mamba train.

The model says what skips weight decay (timm's convention): a trainable parameter gets
**no weight decay** when

1. the model lists it in ``model.no_weight_decay()`` (full names; GLSMamba's lists what
   its submodules list in theirs: the ViT ``pos_embed``, the temporal embedding, the S6
   ``dt_proj_bias`` / ``A_log`` / ``D``); a model without the method: what its submodules
   list (:func:`~glsmamba.models.layers.collect_no_weight_decay`);
2. it carries ``_no_weight_decay = True`` (Mamba's flag, set on ``A_log`` and ``D``);
3. it has one dimension or none (biases, norm scales and shifts, ``D``, LayerScale);
4. it belongs to a normalisation layer or an ``nn.Embedding``.

Everything else (Linear / Conv / deformable-conv kernels, the S6 ``x_proj`` and
``dt_proj`` weights) decays with ``train.weight_decay``. No rule reads parameter names.
"""
from __future__ import annotations

from torch import nn

from glsmamba.models.layers import collect_no_weight_decay

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)


def no_weight_decay_reason(name: str, param: nn.Parameter, owner: nn.Module,
                           listed: set[str] = frozenset()) -> str | None:
    """Why ``param`` (called ``name`` in the model, held by ``owner``) is exempt from
    weight decay, or None when it decays. ``listed``: the model's ``no_weight_decay()``."""
    if getattr(param, "_no_weight_decay", False):
        return "_no_weight_decay flag"
    if name in listed:
        return "listed by model.no_weight_decay()"
    if param.ndim <= 1:
        return "1-D (bias / norm / D)"
    if isinstance(owner, _NORMS):
        return "normalisation layer"
    if isinstance(owner, nn.Embedding):
        return "embedding"
    return None


def listed_no_weight_decay(model: nn.Module) -> set[str]:
    """``model.no_weight_decay()`` (full names), else what its submodules list."""
    listed = getattr(model, "no_weight_decay", None)
    return set(listed()) if callable(listed) else collect_no_weight_decay(model)


def split_decay(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]],
                                           list[tuple[str, nn.Parameter, str]]]:
    """(decayed (name, parameter), exempt (name, parameter, reason)) over the trainable
    parameters, each parameter once (under its first name)."""
    listed = listed_no_weight_decay(model)
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
