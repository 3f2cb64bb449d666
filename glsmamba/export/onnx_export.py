"""``export_onnx``: a pose model (a run, a checkpoint or a preset) as a standard ONNX graph.

The whole model (clip (B, T, 3, H, W) normalised RGB -> heatmaps (B, K, H/4, W/4)), or
with ``features_only`` the part after the frozen encoder (features (B, T, C, h, w) ->
heatmaps, what a feature cache feeds), is traced under :func:`export_mode` (scan and
deformable conv in standard operators). Before anything is written the graph must pass
``onnx.checker``, use only the default ONNX domain, and reproduce PyTorch's heatmaps in
ONNX Runtime's CPU provider on the given clip (or a random one) within ``tolerance``.
Then ``FILE`` and its sidecar ``FILE.json`` (what was exported: preset, input shape,
normalisation, δ, window, joints, flip pairs, the checkpoint's SHA-256, opset; the same
JSON is also stored in the graph's ``metadata_props["glsmamba"]``) are written together
atomically. An existing ``FILE`` is only replaced with ``overwrite``; the checkpoint's own
files never.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glsmamba.errors import ConfigError, GlsmambaError
from glsmamba.export.tracing import export_mode

EXPORT_FORMAT = "glsmamba-onnx-v1"
METADATA_KEY = "glsmamba"
DEFAULT_OPSET = 17      # LayerNormalization (17) and GridSample (16) as single nodes
MIN_OPSET = 16          # GridSample
TOLERANCE = 1e-4        # max abs heatmap difference ORT vs PyTorch (float32)
EXTERNAL_DATA_BYTES = 1_800_000_000   # above this the weights go to FILE.data (protobuf: 2 GB)
STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class ExportSource:
    """A model ready to export and what the sidecar says about it."""

    model: nn.Module
    config: dict
    preset: str
    checkpoint: Path | None = None
    checkpoint_sha256: str | None = None
    protected: set[Path] = field(default_factory=set)   # files never written over


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_source(source: str | os.PathLike, config: str | None = None,
                overrides: list[str] | None = None) -> ExportSource:
    """A run dir or checkpoint -> its model (weights loaded, eval mode) and config."""
    from glsmamba.engine.builder import build_model, checkpoint_config, load_for_eval
    from glsmamba.checkpoint import resolve_checkpoint
    weights = resolve_checkpoint(source)
    run_config = checkpoint_config(source, config, overrides)
    model = build_model(run_config, log=lambda *_: None, for_training=False)
    load_for_eval(model, source)
    protected = {weights, weights.with_suffix(".json"), weights.with_name(f"{weights.stem}_state.pt")}
    return ExportSource(model.eval(), run_config, run_config["model"]["name"], weights,
                        sha256_file(weights), protected)


def preset_source(name: str, overrides: list[str] | None = None, seed: int = 0) -> ExportSource:
    """A preset with random weights (``model.*`` / ``data.*`` ``key=value`` overrides):
    for benchmarks and tests; the sidecar's checkpoint hash is null."""
    from glsmamba.engine.builder import build_model
    from glsmamba.config import apply_override, expand_config, merge_config
    run_config = merge_config({"model": {"name": name}})
    for item in overrides or []:
        apply_override(run_config, item)
    run_config = expand_config(run_config)
    torch.manual_seed(seed)
    model = build_model(run_config, log=lambda *_: None, for_training=False)
    return ExportSource(model.eval(), run_config, name)


def example_input(model: nn.Module, batch: int, clip: torch.Tensor | None = None,
                  seed: int = 0) -> torch.Tensor:
    """The clip the export is checked on: ``clip`` (T, 3, H, W) or (B, T, 3, H, W) repeated
    or cut to ``batch``, else a seeded standard-normal clip (B, T, 3, H, W)."""
    width, height = model.input_size
    shape = (model.num_frames, 3, height, width)
    if clip is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch, *shape, generator=generator)
    clip = torch.as_tensor(clip, dtype=torch.float32)
    if clip.dim() == 4:
        clip = clip.unsqueeze(0)
    if tuple(clip.shape[1:]) != shape:
        raise ConfigError(f"check clip has shape {tuple(clip.shape)}; this model takes "
                          f"(B, {', '.join(map(str, shape))})")
    repeats = -(-batch // clip.shape[0])
    return clip.repeat(repeats, 1, 1, 1, 1)[:batch]


class FeaturesToHeatmaps(nn.Module):
    """The part after the encoder: features (B, T, C, h, w) -> heatmaps (B, K, H/4, W/4)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(feats)


def parse_batch(value: str | int | None) -> int | None:
    """``"dynamic"`` (or None) -> None, a positive whole number -> itself; else a ConfigError."""
    if value is None or value == "dynamic":
        return None
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--batch must be 'dynamic' or a positive whole number, got {value!r}")
    return int(text)


def check_outputs(out: Path, overwrite: bool, protected: set[Path]) -> list[Path]:
    """The files an export writes (FILE, FILE.json, FILE.data); a GlsmambaError when one is
    an input of the export, a folder, or exists without ``overwrite``."""
    targets = [out, sidecar_path(out), data_path(out)]
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: the folder {out.parent} does not exist")
    resolved = {Path(os.path.realpath(p)) for p in protected}
    for path in targets:
        if Path(os.path.realpath(path)) in resolved or any(
                path.exists() and p.exists() and os.path.samefile(path, p) for p in protected):
            raise GlsmambaError(f"{path}: this is a file of the checkpoint being exported; "
                                "choose another --out")
        if path.is_dir():
            raise GlsmambaError(f"{path}: is a folder; --out must name a file")
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise GlsmambaError(f"{existing[0]}: exists; pass --overwrite to replace it")
    return targets


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def data_path(out: Path) -> Path:
    return out.with_name(out.name + ".data")


@contextlib.contextmanager
def _quiet_tracing():
    """The exporter's deprecation notice and tracer warnings (sizes turned into constants,
    which is what a static-shape export wants) are not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def trace_to_onnx(module: nn.Module, example: torch.Tensor, opset: int, dynamic: bool,
                  input_name: str, path: str | io.BytesIO) -> None:
    """torch.onnx (TorchScript tracer) under export_mode; writes ``path``."""
    axes = {input_name: {0: "batch"}, "heatmaps": {0: "batch"}} if dynamic else None
    with torch.no_grad(), export_mode(module), _quiet_tracing():
        torch.onnx.export(module, (example,), path, dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=["heatmaps"],
                          dynamic_axes=axes, do_constant_folding=True)


def export_metadata(src: ExportSource, example: torch.Tensor, batch: int | None,
                    features_only: bool, opset: int) -> dict:
    """What the sidecar says: enough to run the file without this package's config."""
    from glsmamba.data.transforms import MEAN_RGB, STD_RGB
    from glsmamba.engine.builder import dataset_metainfo
    model, config = src.model, src.config
    info = dataset_metainfo(config)
    window = getattr(model, "clip_window", None) or config["data"].get("window", "centered")
    shape = ["batch" if batch is None else batch, *example.shape[1:]]
    width, height = model.input_size
    out_shape = ["batch" if batch is None else batch, model.num_joints,
                 model.heatmap_size[1], model.heatmap_size[0]]
    return {
        "format": EXPORT_FORMAT,
        "preset": src.preset,
        "model_overrides": dict(config["model"].get("overrides", {})),
        "features_only": bool(features_only),
        "input": {"name": "features" if features_only else "clip", "shape": shape,
                  "layout": "B, T, C, h, w encoder features" if features_only else
                  "B, T, 3, H, W RGB, (pixel - mean) / std"},
        "output": {"name": "heatmaps", "shape": out_shape},
        "normalisation": {"channels": "rgb", "mean": list(MEAN_RGB), "std": list(STD_RGB)},
        "input_size": [width, height], "heatmap_size": list(model.heatmap_size),
        "num_frames": int(model.num_frames), "delta": int(config["data"]["delta"]),
        "window": window,
        "dataset": config["data"]["type"], "joint_names": list(info.joint_names),
        "flip_pairs": [list(p) for p in info.flip_pairs],
        "skeleton": [list(p) for p in info.skeleton],
        "codec": {"sigma": float(config["data"]["sigma"]), "udp": bool(config["data"].get("udp", False))},
        "decode": config["eval"]["decode"],
        "checkpoint": {"file": src.checkpoint.name if src.checkpoint else None,
                       "sha256": src.checkpoint_sha256},
        "opset": int(opset), "batch": "dynamic" if batch is None else batch,
        "versions": _versions(),
    }


def _versions() -> dict:
    import onnx
    import onnxruntime

    import glsmamba
    return {"glsmamba": glsmamba.__version__, "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def check_graph(proto, where: Path, stored: Path | None = None) -> None:
    """onnx.checker (on the ``stored`` copy when the weights live in a data file), and no
    operator outside the default ONNX domain."""
    import onnx
    try:
        onnx.checker.check_model(str(stored) if stored else proto)
    except onnx.checker.ValidationError as err:
        raise GlsmambaError(f"{where}: the exported graph fails the ONNX checker: "
                            f"{str(err).splitlines()[0]}") from None
    custom = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node
                     if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise GlsmambaError(f"{where}: the graph uses custom operators {', '.join(custom)}")


def ort_session(model: str | os.PathLike | bytes, threads: int = 0):
    """An onnxruntime CPU session (``threads`` 0 = its default)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def compare_with_torch(module: nn.Module, session, example: torch.Tensor, input_name: str) -> float:
    """Max abs difference of the heatmaps, ORT vs PyTorch's own (fast) path."""
    with torch.no_grad():
        expected = module(example).float().numpy()
    got = session.run(None, {input_name: example.numpy()})[0]
    if got.shape != expected.shape:
        raise GlsmambaError(f"ONNX Runtime returned shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got - expected).max())


def _externalise(proto, location: str) -> bytes:
    """Move every initializer's bytes into one blob (the file ``location`` beside the
    graph), in place; return the blob."""
    from onnx.external_data_helper import set_external_data
    blob = bytearray()
    for tensor in proto.graph.initializer:
        if tensor.HasField("raw_data") and len(tensor.raw_data) > 1024:
            set_external_data(tensor, location=location, offset=len(blob), length=len(tensor.raw_data))
            blob += tensor.raw_data
            tensor.ClearField("raw_data")
            tensor.data_location = 1   # EXTERNAL
    return bytes(blob)


def _parameter_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _traced_proto(module: nn.Module, example: torch.Tensor, opset: int, dynamic: bool,
                  input_name: str, scratch: Path, external_threshold: int):
    """The traced ModelProto (in memory; through a scratch file above 2 GB of weights)."""
    import onnx
    if _parameter_bytes(module) < external_threshold:
        buffer = io.BytesIO()
        trace_to_onnx(module, example, opset, dynamic, input_name, buffer)
        return onnx.load_from_string(buffer.getvalue())
    path = scratch / "traced.onnx"
    trace_to_onnx(module, example, opset, dynamic, input_name, str(path))
    return onnx.load(str(path))


def _serialised(proto, out: Path, metadata: dict, scratch: Path,
                external_threshold: int) -> tuple[dict[Path, bytes], str | bytes]:
    """(files to write, what ORT loads: the bytes, or a scratch copy's path when the
    weights go to ``FILE.data``)."""
    from glsmamba.fileio import atomic_write_files
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    if _proto_bytes(proto) < external_threshold:
        check_graph(proto, out)
        data = proto.SerializeToString()
        return {out: data}, data
    blob = _externalise(proto, data_path(out).name)
    files = {out: proto.SerializeToString(), data_path(out): blob}
    atomic_write_files({scratch / out.name: files[out], scratch / data_path(out).name: blob})
    check_graph(proto, out, scratch / out.name)
    return files, str(scratch / out.name)


def _proto_bytes(proto) -> int:
    return sum(len(t.raw_data) for t in proto.graph.initializer)


def export_onnx(src: ExportSource, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                batch: str | int | None = "dynamic", features_only: bool = False,
                clip: torch.Tensor | np.ndarray | None = None, overwrite: bool = False,
                tolerance: float = TOLERANCE, log: Callable[[str], None] | None = None,
                external_threshold: int = EXTERNAL_DATA_BYTES) -> dict:
    """Export ``src.model`` to ``out`` (+ ``out.json``); return the sidecar's content.

    ``batch``: ``"dynamic"`` or a fixed batch size; ``clip``: the check's input
    ((T, 3, H, W) or (B, T, 3, H, W), normalised; default random); the check must agree
    with PyTorch within ``tolerance`` (max abs heatmap difference) or nothing is written.
    """
    from glsmamba.fileio import atomic_write_files
    log = log or (lambda message: None)
    out = Path(out)
    if int(opset) < MIN_OPSET:
        raise ConfigError(f"--opset {opset}: GridSample needs opset {MIN_OPSET} or newer")
    batch_size = parse_batch(batch)
    check_outputs(out, overwrite, src.protected)
    model = src.model.eval()
    module = FeaturesToHeatmaps(model) if features_only else model
    example = example_input(model, batch_size or 1, clip)   # batch 1 traces a dynamic axis too
    if features_only:
        with torch.no_grad():
            example = model.encode(example)
    input_name = "features" if features_only else "clip"
    metadata = export_metadata(src, example, batch_size, features_only, int(opset))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glsmamba-export-") as scratch:
        proto = _traced_proto(module, example, int(opset), batch_size is None, input_name,
                              Path(scratch), external_threshold)
        traced = time.perf_counter() - started
        log(f"traced {src.preset} ({input_name} {tuple(example.shape)}) in {traced:.1f} s")
        files, loadable = _serialised(proto, out, metadata, Path(scratch), external_threshold)
        del proto
        diff = compare_with_torch(module, ort_session(loadable), example, input_name)
    if not np.isfinite(diff) or diff > tolerance:
        raise GlsmambaError(f"{out}: ONNX Runtime and PyTorch disagree: max abs heatmap "
                            f"difference {diff:.3g} > tolerance {tolerance:g}; nothing written")
    metadata["check"] = {"max_abs_diff": diff, "tolerance": tolerance,
                         "input": "given clip" if clip is not None else "random normal clip (seed 0)",
                         "provider": "CPUExecutionProvider"}
    metadata["export_seconds"] = round(time.perf_counter() - started, 2)
    files[sidecar_path(out)] = (json.dumps(metadata, indent=2) + "\n").encode()
    atomic_write_files(files)
    log(f"checked in ONNX Runtime: max abs heatmap difference {diff:.2e} (tolerance "
        f"{tolerance:g}); wrote {', '.join(str(p) for p in files)}")
    metadata["files"] = [str(p) for p in files]
    return metadata


def load_check_clip(path: str | os.PathLike, model: nn.Module) -> torch.Tensor:
    """The check's clip from a ``.npy`` file ((T, 3, H, W) or (B, T, 3, H, W), normalised)
    or a video (its first T frames resized to the model's input, normalised RGB)."""
    from glsmamba.data.transforms import MEAN_RGB, STD_RGB
    from glsmamba.errors import DataError
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read the check clip: {err}", str(path)) from None
    import cv2
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < model.num_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, tuple(model.input_size))[:, :, ::-1])
    capture.release()
    if len(frames) < model.num_frames:
        raise DataError(f"need {model.num_frames} frames for the check clip, read {len(frames)}",
                        str(path))
    clip = (np.stack(frames).astype(np.float32) - np.array(MEAN_RGB, np.float32)) / np.array(STD_RGB, np.float32)
    return torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()   # (T, 3, H, W)


__all__ = ["EXPORT_FORMAT", "ExportSource", "export_onnx", "load_check_clip", "load_source",
           "ort_session", "preset_source", "sidecar_path"]
