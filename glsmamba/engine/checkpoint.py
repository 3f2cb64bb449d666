"""Checkpoints: model weights as safetensors + a small JSON, training state as a torch file.

A checkpoint ``TAG`` in a work dir is three files written together:

- ``TAG.safetensors``: model weights (all of them, or only the trainable part plus
  buffers when the frozen encoder comes from a pretrained file named in the config);
- ``TAG.json``: config, epoch, step, metrics, which keys were left out;
- ``TAG_state.pt``: optimiser, scheduler, grad scaler, RNG states, data position
  (what ``--resume`` needs), absent for weights-only checkpoints.

Every file is first written to a temporary file in the same folder, flushed and fsynced,
and only renamed over the old one once all of them are written, so a crash or a full disk
leaves the previous checkpoint whole.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from glsmamba.errors import CheckpointError

CHUNK = 1 << 20


def _write_chunk(handle, data: memoryview) -> None:
    """One write call (a seam for tests that simulate a full disk)."""
    handle.write(data)


def _write_tmp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling of ``path``, fsynced; return the tmp path."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):
                _write_chunk(handle, view[start:start + CHUNK])
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Write several files so that either all are replaced or none is."""
    tmps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            tmps.append((_write_tmp(Path(path), data), Path(path)))
    except BaseException:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in tmps:
        os.replace(tmp, path)
    for folder in {path.parent for _, path in tmps}:
        _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write_files({Path(path): data})


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def frozen_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys of frozen parameters and of buffers inside fully frozen modules."""
    keys = {name for name, p in model.named_parameters() if not p.requires_grad}
    for module_name, module in model.named_modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            prefix = f"{module_name}." if module_name else ""
            keys.update(prefix + name for name, _ in module.named_buffers())
    return keys


def model_tensors(model: torch.nn.Module, save_frozen: bool = True) -> tuple[dict, list[str]]:
    """(tensors to save, keys left out)."""
    state = model.state_dict()
    omitted = sorted(frozen_keys(model) & set(state)) if not save_frozen else []
    skip = set(omitted)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()
               if k not in skip and isinstance(v, torch.Tensor)}
    return tensors, omitted


def save_checkpoint(work_dir: str | os.PathLike, tag: str, model: torch.nn.Module,
                    meta: dict, train_state: dict | None = None,
                    save_frozen: bool = True) -> Path:
    """Write ``TAG.safetensors``, ``TAG.json`` and optionally ``TAG_state.pt`` atomically."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tensors, omitted = model_tensors(model, save_frozen)
    meta = dict(meta, omitted_keys=omitted, format="glsmamba-checkpoint-v1")
    files = {
        work_dir / f"{tag}.safetensors": save_safetensors_bytes(tensors),
        work_dir / f"{tag}.json": json.dumps(meta, indent=1, default=_json_default).encode(),
    }
    if train_state is not None:
        files[work_dir / f"{tag}_state.pt"] = torch_bytes(train_state)
    atomic_write_files(files)
    return work_dir / f"{tag}.safetensors"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A ``.safetensors`` file, its ``.json``, or a work dir (``best`` then ``last``)."""
    path = Path(path)
    if path.is_dir():
        for tag in ("best", "last"):
            if (path / f"{tag}.safetensors").is_file():
                return path / f"{tag}.safetensors"
        raise CheckpointError(f"{path}: no best.safetensors or last.safetensors in this folder")
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """(tensors, meta, resolved path). Meta is {} when no JSON sits next to the weights."""
    path = resolve_checkpoint(path)
    try:
        tensors = load_safetensors_bytes(path.read_bytes())
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read safetensors file: {err}") from None
    meta_path = path.with_suffix(".json")
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{meta_path}: malformed JSON: {err}") from None
    return tensors, meta, path


def load_model_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                       path: str | os.PathLike = "checkpoint",
                       allowed_missing: set[str] | None = None) -> None:
    """Load ``tensors`` into ``model``; missing/unexpected/mis-shaped keys -> CheckpointError.

    ``allowed_missing`` lists keys the checkpoint may omit (e.g. a frozen encoder loaded
    from its own pretrained file).
    """
    state = model.state_dict()
    allowed = allowed_missing or set()
    missing = sorted(k for k in state if k not in tensors and k not in allowed)
    unexpected = sorted(k for k in tensors if k not in state)
    mismatched = sorted(f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(state[k].shape)}"
                        for k in tensors if k in state and tensors[k].shape != state[k].shape)
    problems = []
    for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatches", mismatched)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {title}: {shown}")
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the model: " + "; ".join(problems))
    model.load_state_dict(tensors, strict=False)


def load_train_state(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found (cannot resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(f"{path}: cannot read training state: {err}") from None


def remove_stale_tmp(work_dir: str | os.PathLike,
                     predicate: Callable[[Path], bool] | None = None) -> None:
    """Delete temporary files a killed run may have left behind."""
    for tmp in Path(work_dir).glob(".*.tmp*"):
        if predicate is None or predicate(tmp):
            tmp.unlink(missing_ok=True)
