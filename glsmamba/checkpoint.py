"""Checkpoints: model weights as safetensors + a small JSON, training state as a torch file.

A checkpoint ``TAG`` in a work dir is three files written together:

- ``TAG.safetensors``: model weights (all of them, or only the trainable part plus
  buffers when the frozen encoder comes from a pretrained file named in the config);
- ``TAG.json``: config, epoch, step, metrics, which keys were left out;
- ``TAG_state.pt``: optimiser, scheduler, grad scaler, RNG states, data position
  (what ``--resume`` needs), absent for weights-only checkpoints. It holds only tensors
  and plain Python values (RNG states as tensors / lists) and is read with
  ``torch.load(weights_only=True)``: loading it cannot run code.

Every file is first written to a temporary file in the same folder, flushed and fsynced.
Then a small journal ``.TAG.commit`` (the commit point) lists the renames, the files are
renamed over the old ones and the journal is removed. A crash or a full disk before the
commit point leaves the previous checkpoint whole; a crash during the renames is rolled
forward from the journal on the next load. The three files carry one set id (the JSON's
``set_id``, the safetensors metadata, the state's ``set_id``), checked on load, so weights
of one write are never resumed with the optimiser state of another.
"""
from __future__ import annotations

import collections
import io
import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from glsmamba.errors import CheckpointError
from glsmamba.fileio import atomic_write_files, fsync_dir

CHUNK = 1 << 20
STATE_FORMAT = "glsmamba-state-v2"
SET_KEY = "glsmamba_set_id"


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written (full disk, read-only folder ...); an OSError
    with the original ``errno`` and a one-line message for the CLI."""

    def __init__(self, message: str, errno: int | None = None):
        OSError.__init__(self, message)
        self.errno = errno


def _journal_path(folder: Path, tag: str) -> Path:
    return folder / f".{tag}.commit"


def recover_interrupted(folder: str | os.PathLike) -> list[str]:
    """Finish checkpoint writes a killed process left between its commit point and the
    last rename (files named in ``.TAG.commit``); return the tags rolled forward."""
    folder = Path(folder)
    done = []
    for journal in sorted(folder.glob(".*.commit")):
        try:
            moves = json.loads(journal.read_text())["moves"]
        except (OSError, ValueError, KeyError, TypeError):
            journal.unlink(missing_ok=True)     # written atomically: unreadable = not ours
            continue
        for tmp_name, final_name in moves:
            tmp = folder / str(tmp_name)
            if "/" in str(tmp_name) + str(final_name) or tmp.is_symlink() or not tmp.is_file():
                continue
            try:
                os.replace(tmp, folder / str(final_name))
            except FileNotFoundError:            # the writer finished it meanwhile
                continue
        fsync_dir(folder)
        journal.unlink(missing_ok=True)
        done.append(journal.name[1:-len(".commit")])
    return done


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


_TYPE_TAG = "__glsmamba_type__"


def to_plain(value: Any, where: str = "state") -> Any:
    """``value`` as tensors, numbers, strings, None, lists, tuples and dicts only (what
    ``torch.load(weights_only=True)`` reads): numpy arrays and Counters become tagged dicts.
    Anything else is a TypeError naming where it sits."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {_TYPE_TAG: "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
                "data": value.ravel().tolist()}
    if isinstance(value, collections.Counter):
        return {_TYPE_TAG: "Counter", "items": [[to_plain(k, where), v] for k, v in value.items()]}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise TypeError(f"{where}: key {key!r} ({type(key).__name__}) cannot be stored")
            out[key] = to_plain(item, f"{where}.{key}")
        return out
    if isinstance(value, tuple):
        return tuple(to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored in a training state")


def from_plain(value: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(value, dict):
        kind = value.get(_TYPE_TAG)
        if kind == "ndarray":
            return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
        if kind == "Counter":
            return collections.Counter({from_plain(k): v for k, v in value["items"]})
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(from_plain(v) for v in value)
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def state_bytes(train_state: dict, set_id: str) -> bytes:
    """The training state as a weights-only torch file."""
    plain = to_plain(train_state)
    return torch_bytes({"format": STATE_FORMAT, "set_id": set_id, "state": plain})


def _safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's header ({} when absent or unreadable)."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
        meta = header.get("__metadata__") or {}
        return meta if isinstance(meta, dict) else {}
    except (struct.error, ValueError, AttributeError):
        return {}


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
    """Write ``TAG.safetensors``, ``TAG.json`` and optionally ``TAG_state.pt`` atomically.

    A write that fails (full disk, read-only folder) raises :class:`CheckpointWriteError`
    (an OSError with the errno) and leaves the previous checkpoint as it was."""
    work_dir = Path(work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointWriteError(f"{work_dir}: cannot create the checkpoint folder: "
                                   f"{err.strerror or err}", err.errno) from None
    tensors, omitted = model_tensors(model, save_frozen)
    set_id = f"{meta.get('step', 0)}-{uuid.uuid4().hex[:12]}"
    meta = dict(meta, omitted_keys=omitted, format="glsmamba-checkpoint-v1", set_id=set_id,
                has_state=train_state is not None)
    files = {
        work_dir / f"{tag}.safetensors": save_safetensors_bytes(tensors, metadata={SET_KEY: set_id}),
    }
    if train_state is not None:
        files[work_dir / f"{tag}_state.pt"] = state_bytes(train_state, set_id)
    # the JSON goes last: it names the set the other files must belong to
    files[work_dir / f"{tag}.json"] = json.dumps(meta, indent=1, default=_json_default).encode()
    try:
        atomic_write_files(files, journal=_journal_path(work_dir, tag))
    except OSError as err:
        raise CheckpointWriteError(
            f"{work_dir}: cannot write checkpoint {tag!r}: {err.strerror or err}; the previous "
            f"{tag!r} checkpoint (if any) is unchanged", err.errno) from None
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
    """A ``.safetensors`` file, its ``.json``, or a work dir (``last`` then ``best``).

    A work dir means its last epoch, the headline number of a fixed-length recipe (the
    paper trains 20 epochs); ``best`` is selected on the val split, so scoring it on that
    split is optimistic: name ``best.safetensors`` explicitly to use it.
    """
    path = Path(path)
    if path.is_dir():
        for tag in ("last", "best"):
            if (path / f"{tag}.safetensors").is_file():
                return path / f"{tag}.safetensors"
        raise CheckpointError(f"{path}: no best.safetensors or last.safetensors in this folder")
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """(tensors, meta, resolved path). Meta is {} when no JSON sits next to the weights.

    An interrupted write is rolled forward first; weights and JSON of different writes
    (their set ids differ) are a CheckpointError."""
    for attempt in range(2):
        try:
            recover_interrupted(Path(path) if Path(path).is_dir() else Path(path).parent)
        except OSError:
            pass                                  # a read-only folder: nothing to finish
        resolved = resolve_checkpoint(path)
        try:
            data = resolved.read_bytes()
            tensors = load_safetensors_bytes(data)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{resolved}: cannot read safetensors file: {err}") from None
        meta_path = resolved.with_suffix(".json")
        meta: dict = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{meta_path}: malformed JSON: {err}") from None
            if not isinstance(meta, dict):
                raise CheckpointError(f"{meta_path}: expected a JSON object")
            check_meta_types(meta, meta_path)
        weights_set = _safetensors_metadata(data).get(SET_KEY)
        if weights_set is None or "set_id" not in meta or weights_set == meta["set_id"]:
            return tensors, meta, resolved
        if attempt == 0:
            continue                              # a writer may have been mid-rename
        raise CheckpointError(
            f"{resolved}: weights (set {weights_set}) and {meta_path.name} (set "
            f"{meta['set_id']}) come from different checkpoint writes; the set is "
            "inconsistent (files copied or replaced by hand?)")
    raise AssertionError("unreachable")


# the type each known key of a checkpoint JSON must have (None is allowed for all)
META_TYPES: dict[str, tuple[type, ...]] = {
    "config": (dict,), "epoch": (int,), "step": (int,), "step_in_epoch": (int,),
    "metrics": (dict,), "best": (int, float), "metric_key": (str,), "world_size": (int,),
    "train_samples": (int,), "omitted_keys": (list,), "format": (str,), "set_id": (str,),
    "has_state": (bool,),
}


def check_meta_types(meta: dict, path: str | os.PathLike) -> None:
    """CheckpointError naming the first key of a checkpoint JSON whose value has the wrong
    type (a number as text, a list for an integer ...)."""
    for key, types in META_TYPES.items():
        value = meta.get(key)
        if value is None:
            continue
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if not wrong and int in types and isinstance(value, int) and float not in types:
            wrong = value < 0 and key != "best"
        if wrong:
            names = " or ".join("object" if t is dict else "list" if t is list else t.__name__
                                for t in types)
            raise CheckpointError(f"{path}: {key!r} must be {names}"
                                  f"{' (>= 0)' if int in types else ''}, got {value!r:.80}")
    if "omitted_keys" in meta and not all(isinstance(k, str) for k in meta["omitted_keys"] or []):
        raise CheckpointError(f"{path}: 'omitted_keys' must list tensor names (strings)")
    metrics = meta.get("metrics") or {}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
        raise CheckpointError(f"{path}: 'metrics' must map names to numbers")


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
    retyped = sorted(f"{k}: {str(tensors[k].dtype).replace('torch.', '')} in the checkpoint, "
                     f"{str(state[k].dtype).replace('torch.', '')} in the model"
                     for k in tensors if k in state and state[k].is_floating_point()
                     and not tensors[k].is_floating_point())
    if retyped:
        raise CheckpointError(f"{path}: {len(retyped)} float tensor(s) stored as integers "
                              f"(e.g. {retyped[0]}): the weights were truncated; this is not "
                              "a usable checkpoint")
    bad = [k for k, t in tensors.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN/inf (e.g. {bad[0]}): the "
                              "weights come from a diverged run")
    model.load_state_dict(tensors, strict=False)


STATE_KEYS = ("epoch", "step", "step_in_epoch", "optimizer", "scheduler", "scaler", "rng")


def load_train_state(path: str | os.PathLike, set_id: str | None = None,
                     required: tuple[str, ...] = ()) -> dict:
    """The training state of ``TAG_state.pt``, read with ``weights_only=True``.

    ``set_id``: the checkpoint JSON's set id; a state from another write is refused.
    ``required``: keys the state must hold (CheckpointError listing the missing ones)."""
    path = Path(path)
    try:
        recover_interrupted(path.parent)
    except OSError:
        pass
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found (cannot resume)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: cannot read training state safely (only tensors and plain values are "
            f"loaded, never pickled code; a state written by an older glsmamba cannot be "
            f"resumed): {first[:300]}") from None
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT or "state" not in raw:
        raise CheckpointError(f"{path}: not a glsmamba training state (format "
                              f"{raw.get('format') if isinstance(raw, dict) else type(raw).__name__!r})")
    if set_id is not None and raw.get("set_id") != set_id:
        raise CheckpointError(
            f"{path}: training state of checkpoint write {raw.get('set_id')} but the weights "
            f"and JSON are of write {set_id}: the checkpoint set is inconsistent")
    state = from_plain(raw["state"])
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the training state is not a dict")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: training state lacks {', '.join(missing)} (cannot resume)")
    return state


def remove_stale_tmp(work_dir: str | os.PathLike,
                     predicate: Callable[[Path], bool] | None = None) -> None:
    """Finish interrupted checkpoint writes, then delete temporary files a killed run left."""
    recover_interrupted(work_dir)
    stale = [p for pattern in (".*.tmp*", ".*.partial.*") for p in Path(work_dir).glob(pattern)]
    for tmp in stale:
        if (predicate is None or predicate(tmp)) and (tmp.is_symlink() or not tmp.is_dir()):
            tmp.unlink(missing_ok=True)
