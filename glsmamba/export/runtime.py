"""Run an exported ONNX pose model in the inference pipeline (``runtime="onnxruntime"``).

:class:`OnnxPoseModel` has the interface the :class:`~glsmamba.inference.estimator.PoseEstimator`
needs from a pose model (``model(clip) -> heatmaps``, ``num_joints``, ``num_frames``,
``input_size``, ``heatmap_size``, ``clip_window``) and runs the graph in ONNX Runtime's CPU
provider; everything else (detection, tracking, cropping, decoding) is the PyTorch
runtime's own code. What the file holds is read from its sidecar ``FILE.json`` (or, when
the sidecar is missing, from the copy in the graph's ``metadata_props``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glsmamba.errors import ConfigError, GlsmambaError
from glsmamba.export.onnx_export import (
    EXPORT_FORMAT,
    METADATA_KEY,
    ort_session,
    sidecar_path,
)

RUNTIMES = ("torch", "onnxruntime")


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def read_export_metadata(path: str | os.PathLike) -> dict:
    """The export's metadata: ``FILE.json``, else the graph's ``metadata_props``."""
    path = Path(path)
    if not path.is_file():
        raise GlsmambaError(f"{path}: ONNX model file not found")
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise GlsmambaError(f"{sidecar}: malformed JSON: {err}") from None
    else:
        meta = _embedded_metadata(path)
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise GlsmambaError(f"{sidecar if sidecar.is_file() else path}: not a glsmamba export "
                            f"(expected format {EXPORT_FORMAT!r})")
    return meta


def _embedded_metadata(path: Path) -> dict:
    import onnx
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises several unrelated types
        raise GlsmambaError(f"{path}: cannot read the ONNX file: {err}") from None
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise GlsmambaError(f"{path}: no {sidecar_path(path).name} beside it and no glsmamba "
                        "metadata inside: not a glsmamba export")


class OnnxPoseModel(nn.Module):
    """An exported clip model in ONNX Runtime: clip (B, T, 3, H, W) -> heatmaps (B, K, h, w).

    A fixed-batch export runs larger batches in pieces (the last one padded).
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        super().__init__()
        self.path = Path(path)
        self.metadata = meta = read_export_metadata(path)
        if meta["features_only"]:
            raise GlsmambaError(f"{path}: a --features-only export takes encoder features; "
                                "inference needs a whole-model export")
        self.session = ort_session(self.path, threads)
        self.input_name = meta["input"]["name"]
        self.fixed_batch = meta["batch"] if isinstance(meta["batch"], int) else None
        self.num_joints = int(meta["output"]["shape"][1])
        self.num_frames = int(meta["num_frames"])
        self.input_size = tuple(meta["input_size"])
        self.heatmap_size = tuple(meta["heatmap_size"])
        self.clip_window = meta.get("window", "centered")

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """clip (B, T, 3, H, W) float -> heatmaps (B, K, h, w) float32 (CPU)."""
        array = clip.detach().to("cpu", torch.float32).numpy()
        expected = (self.num_frames, 3, self.input_size[1], self.input_size[0])
        if array.ndim != 5 or array.shape[1:] != expected:
            raise ValueError(f"{self.path.name}: clip must be (B, {', '.join(map(str, expected))}), "
                             f"got {array.shape}")
        step = self.fixed_batch or len(array)
        pieces = []
        for start in range(0, len(array), step):
            part = array[start:start + step]
            if len(part) < step:
                pad = np.repeat(part[-1:], step - len(part), axis=0)
                part = np.concatenate([part, pad])
            out = self.session.run(None, {self.input_name: np.ascontiguousarray(part)})[0]
            pieces.append(out[:len(array) - start])
        return torch.from_numpy(np.concatenate(pieces) if len(pieces) > 1 else pieces[0])


def estimator_parts(path: str | os.PathLike, threads: int = 0) -> dict:
    """What ``PoseEstimator`` needs for an exported file (its constructor's arguments:
    model, codec, delta, skeleton, link_colors, flip_indices, decode, window), all from
    the export's metadata (link colours from the package's layout of that dataset)."""
    from glsmamba.data.codec import HeatmapCodec
    model = OnnxPoseModel(path, threads)
    meta = model.metadata
    codec = HeatmapCodec(model.input_size, model.heatmap_size, meta["codec"]["sigma"],
                         udp=bool(meta["codec"]["udp"]))
    flip_indices = list(range(len(meta["joint_names"])))
    for left, right in meta["flip_pairs"]:
        flip_indices[left], flip_indices[right] = right, left
    skeleton = [tuple(link) for link in meta["skeleton"]]
    return {"model": model, "codec": codec, "delta": int(meta["delta"]), "skeleton": skeleton,
            "link_colors": _link_colors(meta, skeleton), "flip_indices": flip_indices,
            "decode": meta["decode"], "window": model.clip_window}


def _link_colors(meta: dict, skeleton: list) -> list:
    """The bundled layout's link colours when it is the export's skeleton, else grey."""
    try:
        from glsmamba.engine.builder import dataset_metainfo
        info = dataset_metainfo({"data": {"type": meta["dataset"]}})
    except GlsmambaError:
        info = None
    if info is not None and [tuple(s) for s in info.skeleton] == skeleton:
        return list(info.link_colors)
    return [(128, 128, 128)] * len(skeleton)
