"""Reading ViTPose weight files: the raw checkpoint object, its state dict, the ViT sizes.

Shared by the encoder loader (:mod:`glsmamba.models.vitpose`) and the HuggingFace key
converter (:mod:`glsmamba.models.vitpose_hf`); it imports neither.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Mapping

import torch

from glsmamba.errors import CheckpointError

# embed_dim, depth, num_heads as in the official ViTPose-S/B/L/H configs; tiny is ours.
VIT_ARCHS: dict[str, dict[str, int]] = {
    "vit-tiny": dict(embed_dim=128, depth=4, num_heads=4, deconv_channels=64),
    "vit-s": dict(embed_dim=384, depth=12, num_heads=12, deconv_channels=256),
    "vit-b": dict(embed_dim=768, depth=12, num_heads=12, deconv_channels=256),
    "vit-l": dict(embed_dim=1024, depth=24, num_heads=16, deconv_channels=256),
    "vit-h": dict(embed_dim=1280, depth=32, num_heads=16, deconv_channels=256),
}


def read_checkpoint_file(path: Path, trust_pickle: bool = False) -> Mapping[str, object]:
    """The raw object of a ``.safetensors`` or ``.pth`` file (``weights_only`` unless
    ``trust_pickle``); CheckpointError naming the file when it cannot be read."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        if trust_pickle:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        return torch_load_weights(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: holds objects that a weights-only load refuses ({exc}); if you trust the "
            "file, load it with trust_pickle=True") from exc
    except Exception as exc:  # corrupt file, not a checkpoint ...
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc


def numpy_safe_globals() -> list:
    """numpy scalars / arrays / dtypes that mmcv puts in checkpoint ``meta``."""
    import numpy as np
    multiarray = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(name)) for name in
              ("float16", "float32", "float64", "int32", "int64", "bool", "uint8")]
    return [multiarray.multiarray.scalar, multiarray.multiarray._reconstruct, np.ndarray,
            np.dtype, *dtypes]


def torch_load_weights(path: Path) -> Mapping[str, object]:
    """``torch.load(weights_only=True)`` that also accepts numpy metadata."""
    with torch.serialization.safe_globals(numpy_safe_globals()):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def state_dict_of(checkpoint: Mapping[str, object], path: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``state_dict`` / ``model`` / ``module``, strip ``module.`` prefixes."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict of tensors, got {type(checkpoint).__name__}")
    state = checkpoint
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]  # type: ignore[assignment]
            break
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key[len("module."):] if key.startswith("module.") else key] = value
    if tensors and not any(k.startswith(("backbone.", "keypoint_head.")) for k in tensors) \
            and "patch_embed.proj.weight" in tensors:
        tensors = {"backbone." + k: v for k, v in tensors.items()}  # a bare ViT checkpoint
    return tensors


def checkpoint_grid(num_patches: int, target: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) factorisation of ``num_patches`` closest in aspect to ``target``."""
    aspect = target[0] / target[1]
    pairs = [(h, num_patches // h) for h in range(1, num_patches + 1) if num_patches % h == 0]
    return min(pairs, key=lambda hw: abs(math.log(hw[0] / hw[1] / aspect)))
