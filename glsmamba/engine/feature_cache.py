"""On-disk cache of frozen-encoder features, so epochs only run GSM + LRM + head.

Only exact when the crops do not change between epochs: the cache is built from the
un-augmented (test-time) crops with their targets. The cache key hashes the encoder's
weights, the pipeline, the samples and the storage dtype, so a stale cache is never
reused. Layout: ``cache_dir/<key>/feats.npy`` ((N, T, C, h, w)) plus every
other item field as ``<field>.npy``, memory-mapped when read) and ``manifest.json``
written last (a partial cache is rebuilt). Features are stored as float16 by default
(relative rounding ~5e-4; ``dtype="float32"`` for bit-exact features).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from glsmamba.engine import distributed as du
from glsmamba.engine.checkpoint import atomic_write_bytes

FIELDS = ("heatmaps", "target_weight", "center", "scale", "rotation", "flipped", "bbox_score",
          "index")


def encoder_fingerprint(model: nn.Module) -> str:
    """Hash of the encoder's tensors (names, shapes and bytes)."""
    digest = hashlib.sha1()
    encoder = getattr(model, "encoder", model)
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: nn.Module, dataset, dtype: str) -> str:
    digest = hashlib.sha1(encoder_fingerprint(model).encode())
    digest.update(repr(getattr(dataset, "pipeline", "")).encode())
    for sample in getattr(dataset, "samples", []):
        digest.update(f"{sample.frame_paths}|{list(np.round(sample.bbox_xywh, 3))}".encode())
    digest.update(f"{len(dataset)}|{dtype}".encode())
    return digest.hexdigest()[:16]


class FeatureCacheDataset(Dataset):
    """Items like a ClipDataset's, with ``feats`` (T, C, h, w) in place of ``clip``."""

    provides_features = True

    def __init__(self, dataset, model: nn.Module, cache_dir: str | os.PathLike,
                 batch_size: int = 16, dtype: str = "float16", log=print,
                 progress: bool = True):
        self.dataset, self.dtype = dataset, dtype
        self.samples = getattr(dataset, "samples", None)
        self.key = cache_key(model, dataset, dtype)
        self.folder = Path(cache_dir) / self.key
        if (self.folder / "manifest.json").is_file():
            log(f"feature cache: using cached encoder features from {self.folder}")
        else:
            if du.current().is_main:
                log(f"feature cache: encoding {len(dataset)} clips once into {self.folder}")
                self._build(model, batch_size, progress)
            du.barrier()
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self._arrays: dict[str, np.ndarray] = {}

    def _build(self, model: nn.Module, batch_size: int, progress: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "manifest.json").unlink(missing_ok=True)
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        arrays: dict[str, np.ndarray] = {}
        count, start = len(self.dataset), 0
        with torch.no_grad():
            for batch in _maybe_progress(loader, progress):
                feats = model.encode(batch["clip"].to(device)).float().cpu()   # (B, T, C, h, w)
                values = {"feats": feats.numpy().astype(self.dtype)}
                values.update({n: np.asarray(batch[n]) for n in FIELDS if n in batch})
                for name, value in values.items():
                    if name not in arrays:
                        arrays[name] = np.lib.format.open_memmap(
                            self.folder / f"{name}.npy", mode="w+", dtype=value.dtype,
                            shape=(count, *value.shape[1:]))
                    arrays[name][start:start + len(value)] = value
                start += len(feats)
        for array in arrays.values():
            array.flush()
        model.train(was_training)
        manifest = {"count": count, "dtype": self.dtype, "fields": sorted(arrays)}
        atomic_write_bytes(self.folder / "manifest.json", json.dumps(manifest).encode())

    def __len__(self) -> int:
        return self.manifest["count"]

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:   # opened lazily: memory maps do not cross fork/pickle
            self._arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    def __getitem__(self, index: int) -> dict:
        item = {"feats": torch.from_numpy(self._array("feats")[index].astype(np.float32))}
        for name in FIELDS:
            if name in self.manifest["fields"]:
                value = np.array(self._array(name)[index])
                item[name] = int(value) if name == "index" else torch.as_tensor(value)
        return item

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}


def _maybe_progress(loader, enabled: bool):
    if not enabled:
        return loader
    from tqdm import tqdm
    return tqdm(loader, desc="encode features", leave=False, dynamic_ncols=True)
