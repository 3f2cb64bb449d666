"""HuggingFace ``VitPoseForPoseEstimation`` checkpoints <-> official ViTPose key names.

transformers' VitPose (``save_pretrained`` folders, ``.safetensors`` files) names the same
tensors differently from the official ViTPose code that :mod:`glsmamba.models.vitpose`
follows, and splits the fused qkv projection::

    HF (VitPoseForPoseEstimation)                          official ViTPose
    backbone.embeddings.patch_embeddings.projection.*      backbone.patch_embed.proj.*
    backbone.embeddings.position_embeddings                backbone.pos_embed
    backbone.encoder.layer.N.layernorm_before.*            backbone.blocks.N.norm1.*
    backbone.encoder.layer.N.attention.attention.query.*   backbone.blocks.N.attn.qkv.* (rows 0:C)
    backbone.encoder.layer.N.attention.attention.key.*     backbone.blocks.N.attn.qkv.* (rows C:2C)
    backbone.encoder.layer.N.attention.attention.value.*   backbone.blocks.N.attn.qkv.* (rows 2C:3C)
    backbone.encoder.layer.N.attention.output.dense.*      backbone.blocks.N.attn.proj.*
    backbone.encoder.layer.N.layernorm_after.*             backbone.blocks.N.norm2.*
    backbone.encoder.layer.N.mlp.fc1 / fc2.*               backbone.blocks.N.mlp.fc1 / fc2.*
    backbone.layernorm.*                                   backbone.last_norm.*
    head.deconv1 / head.batchnorm1.*                       keypoint_head.deconv_layers.0 / .1.*
    head.deconv2 / head.batchnorm2.*                       keypoint_head.deconv_layers.3 / .4.*
    head.conv.*                                            keypoint_head.final_layer.*

Only the classic decoder (two deconvs) carries the 1/4-resolution features the GLSMamba
encoder needs; the HF "simple" decoder checkpoints (``vitpose-*-simple``: ReLU, 4x
bilinear upsampling, a 3x3 conv) have no deconvs, so a strict load refuses them with a
message that says so (``strict=False`` loads their backbone alone). ViTPose+ (mixture of
experts) checkpoints are refused too.

>>> state = {"backbone.layernorm.weight": torch.ones(4)}
>>> sorted(hf_to_official(state))
['backbone.last_norm.weight']
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import torch

from glsmamba.errors import CheckpointError
from glsmamba.models.weights_io import (VIT_ARCHS, checkpoint_grid, read_checkpoint_file,
                                         state_dict_of)

# simple renames, HF suffix -> official suffix, inside one encoder layer
_LAYER_RENAMES = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_TOP_RENAMES = {
    "backbone.embeddings.patch_embeddings.projection": "backbone.patch_embed.proj",
    "backbone.layernorm": "backbone.last_norm",
    "head.deconv1": "keypoint_head.deconv_layers.0",
    "head.batchnorm1": "keypoint_head.deconv_layers.1",
    "head.deconv2": "keypoint_head.deconv_layers.3",
    "head.batchnorm2": "keypoint_head.deconv_layers.4",
    "head.conv": "keypoint_head.final_layer",
}
_LAYER = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_QKV = ("query", "key", "value")


def is_hf_state(state: Mapping[str, object]) -> bool:
    """True for transformers' VitPose key names (with or without the ``backbone.`` prefix)."""
    return any(k.startswith(("backbone.embeddings.", "embeddings.patch_embeddings.",
                             "backbone.encoder.layer.", "encoder.layer."))
               for k in state)


def _with_backbone_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bare ``VitPoseBackbone`` state (``embeddings.*``) -> ``backbone.embeddings.*``."""
    if any(k.startswith("backbone.") for k in state):
        return dict(state)
    return {(k if k.startswith("head.") else "backbone." + k): v for k, v in state.items()}


def is_simple_decoder(state: Mapping[str, torch.Tensor]) -> bool:
    """HF's simple decoder: a 3x3 ``head.conv`` and no deconvs."""
    conv = state.get("head.conv.weight")
    return (conv is not None and conv.dim() == 4 and conv.shape[-1] == 3
            and "head.deconv1.weight" not in state)


def hf_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an HF VitPose state dict to official ViTPose names (qkv joined).

    Keys it does not know (e.g. ViTPose+ experts) are kept under their HF names, so a
    strict load lists them as unexpected.
    """
    state = _with_backbone_prefix(state)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "backbone.embeddings.position_embeddings":
            out["backbone.pos_embed"] = value
            continue
        match = _LAYER.match(key)
        if match:
            index, inner, kind = int(match.group(1)), match.group(2), match.group(3)
            part = inner.rsplit(".", 1)[-1]
            if inner.startswith("attention.attention.") and part in _QKV:
                qkv.setdefault((index, kind), {})[part] = value
                continue
            if inner in _LAYER_RENAMES:
                out[f"backbone.blocks.{index}.{_LAYER_RENAMES[inner]}.{kind}"] = value
                continue
        out[_renamed(key, _TOP_RENAMES)] = value
    for (index, kind), parts in sorted(qkv.items()):
        if set(parts) != set(_QKV):
            missing = sorted(set(_QKV) - set(parts))
            raise CheckpointError(f"encoder layer {index}: attention {kind} lacks {missing}")
        out[f"backbone.blocks.{index}.attn.qkv.{kind}"] = torch.cat(
            [parts[name] for name in _QKV], dim=0)             # (3C, C) or (3C,)
    return out


def _renamed(key: str, prefixes: Mapping[str, str]) -> str:
    """``key`` with the first matching ``old.`` prefix of ``prefixes`` replaced by ``new.``."""
    for old, new in prefixes.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    return key


def official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ViTPose names -> HF ``VitPoseForPoseEstimation`` names (qkv split)."""
    out: dict[str, torch.Tensor] = {}
    inverse_layer = {v: k for k, v in _LAYER_RENAMES.items()}
    inverse_top = {v: k for k, v in _TOP_RENAMES.items()}
    block = re.compile(r"^backbone\.blocks\.(\d+)\.(.+)\.(weight|bias)$")
    for key, value in state.items():
        if key == "backbone.pos_embed":
            out["backbone.embeddings.position_embeddings"] = value
            continue
        match = block.match(key)
        if match:
            index, inner, kind = match.groups()
            base = f"backbone.encoder.layer.{index}"
            if inner == "attn.qkv":
                for name, chunk in zip(_QKV, value.chunk(3, dim=0)):
                    out[f"{base}.attention.attention.{name}.{kind}"] = chunk.clone()
                continue
            if inner in inverse_layer:
                out[f"{base}.{inverse_layer[inner]}.{kind}"] = value
                continue
        out[_renamed(key, inverse_top)] = value
    return out


def read_hf_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and ``config.json`` of a ``save_pretrained`` folder (sharded or not)."""
    from safetensors.torch import load_file
    config = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{folder / 'config.json'}: malformed JSON "
                                  f"(line {err.lineno})") from None
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(folder / shard), device="cpu"))
            return state, config
        if (folder / "model.safetensors").is_file():
            return load_file(str(folder / "model.safetensors"), device="cpu"), config
        if (folder / "pytorch_model.bin").is_file():
            return torch.load(str(folder / "pytorch_model.bin"), map_location="cpu",
                              weights_only=True), config
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{folder}: cannot read the HF checkpoint "
                              f"({type(exc).__name__}: {exc})") from exc
    raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or "
                          "pytorch_model.bin in this folder (not a save_pretrained folder)")


def check_hf_config(config: dict, where: str) -> None:
    """Refuse HF configs whose model the ViTPose encoder cannot represent."""
    backbone = config.get("backbone_config") or {}
    if int(backbone.get("num_experts", 1) or 1) != 1:
        raise CheckpointError(f"{where}: a ViTPose+ (mixture-of-experts) checkpoint; only "
                              "single-dataset ViTPose checkpoints are supported")
    if not backbone.get("qkv_bias", True):
        raise CheckpointError(f"{where}: qkv_bias = false; the ViTPose encoder has qkv biases")


def hf_config(arch_spec: dict, img_size: tuple[int, int], num_labels: int | None) -> dict:
    """A ``config.json`` for ``VitPoseForPoseEstimation`` with the classic decoder."""
    depth = arch_spec["depth"]
    config = {
        "model_type": "vitpose", "architectures": ["VitPoseForPoseEstimation"],
        "use_simple_decoder": False, "scale_factor": 4,
        "backbone_config": {
            "model_type": "vitpose_backbone", "image_size": list(img_size),
            "patch_size": [16, 16], "hidden_size": arch_spec["embed_dim"],
            "num_hidden_layers": depth, "num_attention_heads": arch_spec["num_heads"],
            "mlp_ratio": 4, "hidden_act": "gelu", "layer_norm_eps": 1e-6, "qkv_bias": True,
            "out_indices": [depth],
        },
    }
    if num_labels:
        config["num_labels"] = int(num_labels)
    return config


def read_vitpose_state(path: Path, trust_pickle: bool = False,
                       strict: bool = True) -> dict[str, torch.Tensor]:
    """Any supported ViTPose checkpoint -> a state dict in official names.

    ``path``: an official ``.pth`` / ``.safetensors``, an HF ``.safetensors`` file, or an
    HF ``save_pretrained`` folder. A simple-decoder HF checkpoint is refused when
    ``strict`` (its backbone alone is returned otherwise).
    """
    path = Path(path)
    if path.is_dir():
        state, config = read_hf_folder(path)
        check_hf_config(config, str(path / "config.json"))
    else:
        state = read_checkpoint_file(path, trust_pickle)
        if not (isinstance(state, Mapping) and is_hf_state(state)):
            return state_dict_of(state, path)
        state = dict(state)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, "
                                  "not a tensor")
    state = _with_backbone_prefix(state)
    if any(".mlp.experts." in k for k in state):
        raise CheckpointError(f"{path}: a ViTPose+ (mixture-of-experts) checkpoint; only "
                              "single-dataset ViTPose checkpoints are supported")
    if is_simple_decoder(state):
        if strict:
            raise CheckpointError(
                f"{path}: a HuggingFace VitPose checkpoint with the simple decoder (ReLU, 4x "
                "upsampling, 3x3 conv; no deconvs). The ViTPose encoder takes its "
                "1/4-resolution features from the classic decoder's two deconvs, which this "
                "checkpoint does not have: use a classic-decoder checkpoint (e.g. the "
                "official ViTPose .pth), or strict=False to load the backbone only")
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return hf_to_official(state)


def _official_arch(state: Mapping[str, torch.Tensor], where: str) -> tuple[dict, tuple[int, int]]:
    """(arch spec, img_size (H, W)) of an official-named state, from its tensor shapes."""
    pos = state.get("backbone.pos_embed")
    if pos is None or pos.dim() != 3:
        raise CheckpointError(f"{where}: no backbone.pos_embed (not a ViTPose checkpoint)")
    width = int(pos.shape[-1])
    spec = next((dict(s) for s in VIT_ARCHS.values() if s["embed_dim"] == width), None)
    if spec is None:
        raise CheckpointError(f"{where}: embed dim {width} matches no ViT arch "
                              f"({sorted(s['embed_dim'] for s in VIT_ARCHS.values())})")
    spec["depth"] = len({k.split(".")[2] for k in state if k.startswith("backbone.blocks.")})
    grid = checkpoint_grid(int(pos.shape[1]) - 1, (4, 3))
    return spec, (grid[0] * 16, grid[1] * 16)


def convert_vitpose(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> str:
    """Convert a ViTPose checkpoint between the official and the HuggingFace layouts.

    HF (a ``save_pretrained`` folder or ``.safetensors``) -> official: ``dst`` ``.pth``
    (``{"state_dict": ...}``) or ``.safetensors``. Official -> HF: ``dst`` a folder
    (``config.json`` + ``model.safetensors``, loadable by
    ``VitPoseForPoseEstimation.from_pretrained``) or a ``.safetensors`` file. Returns
    the direction, ``"hf->official"`` or ``"official->hf"``.
    """
    import io
    from safetensors.torch import save as safetensors_bytes
    from glsmamba.fileio import atomic_write_bytes, publish_folder
    from glsmamba.outputs import refuse_inputs
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise CheckpointError(f"{src}: checkpoint not found")
    refuse_inputs([dst], [src], option="destination")
    if dst.exists() or dst.is_symlink():
        raise CheckpointError(f"{dst}: the destination exists; refusing to replace it (remove "
                              "it first or choose another destination)")
    if src.is_dir():
        raw, config = read_hf_folder(src)
        check_hf_config(config, str(src / "config.json"))
        hf = True
    else:
        raw = read_checkpoint_file(src, trust_pickle)
        hf = isinstance(raw, Mapping) and is_hf_state(raw)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if hf:
        state = hf_to_official(_with_backbone_prefix(dict(raw)))
        state = {k: v.contiguous() for k, v in state.items()}
        if dst.suffix == ".safetensors":
            atomic_write_bytes(dst, safetensors_bytes(state))
        else:
            buffer = io.BytesIO()
            torch.save({"state_dict": state}, buffer)
            atomic_write_bytes(dst, buffer.getvalue())
        return "hf->official"
    state = state_dict_of(raw, src)
    spec, img_size = _official_arch(state, str(src))
    final = state.get("keypoint_head.final_layer.weight")
    out = {k: v.contiguous() for k, v in official_to_hf(state).items()}
    if dst.suffix == ".safetensors":
        atomic_write_bytes(dst, safetensors_bytes(out, metadata={"format": "pt"}))
    else:
        config = hf_config(spec, img_size, int(final.shape[0]) if final is not None else None)
        publish_folder({"model.safetensors": safetensors_bytes(out, metadata={"format": "pt"}),
                        "config.json": (json.dumps(config, indent=2) + "\n").encode()}, dst)
    return "official->hf"
