"""On-disk cache of frozen-encoder features, so epochs only run GSM + LRM + head.

Only exact when the crops do not change between epochs: the cache is built from the
un-augmented (test-time) crops with their targets. The cache key hashes the encoder's
weights, the pipeline, the samples (paths, boxes, joints) and the storage dtype; the
manifest also stamps the size and modification time of every image read, so an image
edited in place invalidates the cache (the log names a changed file) and it is rebuilt. Layout: ``cache_dir/<key>/feats.npy`` ((N, T, C, h, w)) plus every
other item field as ``<field>.npy``, memory-mapped when read) and ``manifest.json``
written last (a partial cache is rebuilt). Features are stored as float16 by default
(relative rounding ~5e-4; ``dtype="float32"`` for bit-exact features).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from glsmamba.engine import distributed as du
from glsmamba.fileio import atomic_write_bytes, commit_file, create_temp_sibling
from glsmamba.errors import DataError

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
    """Names the cache folder: encoder weights and which of its maps ``encode`` returns
    (feature stride, input size), pipeline, samples (paths, boxes, joints)."""
    digest = hashlib.sha1(encoder_fingerprint(model).encode())
    digest.update(repr((getattr(model, "feature_stride", None),
                        getattr(model, "input_size", None))).encode())
    digest.update(repr(getattr(dataset, "pipeline", "")).encode())
    digest.update(repr(getattr(dataset, "data_root", None)).encode())
    for sample in getattr(dataset, "samples", []):
        digest.update(f"{sample.frame_paths}|{list(np.round(sample.bbox_xywh, 3))}".encode())
        # the cache stores the targets too: a corrected label must not reuse them
        digest.update(np.ascontiguousarray(sample.keypoints, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(sample.visible, dtype=np.float32).tobytes())
        digest.update(f"|{float(sample.bbox_score):.6g}".encode())
    digest.update(f"{len(dataset)}|{dtype}".encode())
    return digest.hexdigest()[:16]


def source_files(dataset) -> dict[str, list[int]]:
    """Every image the cached clips read -> [size, mtime_ns] ([-1, -1] when missing)."""
    root = getattr(dataset, "data_root", None)
    stats: dict[str, list[int]] = {}
    for sample in getattr(dataset, "samples", []):
        for path in sample.frame_paths:
            full = os.path.join(root, path) if root and not os.path.isabs(path) else str(path)
            if full not in stats:
                try:
                    info = os.stat(full)
                    stats[full] = [info.st_size, info.st_mtime_ns]
                except OSError:
                    stats[full] = [-1, -1]
    return stats


def content_stamp(files: dict[str, list[int]]) -> str:
    digest = hashlib.sha1()
    for path in sorted(files):
        digest.update(f"{path}|{files[path][0]}|{files[path][1]}\n".encode())
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
        self.files = source_files(dataset)
        self.stamp = content_stamp(self.files)
        stale = du.broadcast_object(self._stale())    # rank 0 decides for all (no deadlock)
        if stale is None:
            log(f"feature cache: using cached encoder features from {self.folder}")
        else:
            if du.current().is_main:
                if stale:
                    log(f"feature cache: {stale}; the cache in {self.folder} is invalidated "
                        "and rebuilt")
                log(f"feature cache: encoding {len(dataset)} clips once into {self.folder}")
                self._build(model, batch_size, progress)
            du.barrier()
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        self._arrays: dict[str, np.ndarray] = {}

    def _stale(self) -> str | None:
        """None when a complete cache matches the images on disk; "" when there is no cache;
        else why the cache is stale (which images changed)."""
        try:
            manifest = json.loads((self.folder / "manifest.json").read_text())
        except FileNotFoundError:
            return ""
        except (OSError, ValueError):
            return "its manifest is unreadable"
        if manifest.get("content") == self.stamp:
            return None
        if "content" not in manifest:
            return "it was built without image size/mtime stamps (older glsmamba)"
        try:
            old = json.loads((self.folder / "sources.json").read_text())
        except (OSError, ValueError):
            old = {}
        changed = [path for path, stat in self.files.items() if old.get(path) != stat]
        if not changed:
            return "the set of images changed"
        return (f"{len(changed)} image(s) changed on disk since it was built "
                f"(size or modification time), e.g. {changed[0]}")

    def _build(self, model: nn.Module, batch_size: int, progress: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "manifest.json").unlink(missing_ok=True)
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        arrays: dict[str, np.ndarray] = {}
        temps: dict[str, Path] = {}          # name -> exclusive temporary file, renamed at the end
        count, start = len(self.dataset), 0
        try:
            with torch.no_grad():
                for batch in _maybe_progress(loader, progress):
                    feats = model.encode(batch["clip"].to(device)).float().cpu()  # (B, T, C, h, w)
                    values = {"feats": feats.numpy().astype(self.dtype)}
                    values.update({n: np.asarray(batch[n]) for n in FIELDS if n in batch})
                    for name, value in values.items():
                        if name not in arrays:
                            temps[name] = create_temp_sibling(self.folder / f"{name}.npy")
                            arrays[name] = np.lib.format.open_memmap(
                                temps[name], mode="w+", dtype=value.dtype,
                                shape=(count, *value.shape[1:]))
                            _reserve(temps[name], self.folder / f"{name}.npy")
                        arrays[name][start:start + len(value)] = value
                    start += len(feats)
            for name, array in arrays.items():
                array.flush()
                commit_file(temps[name], self.folder / f"{name}.npy")
        except BaseException:
            for temp in temps.values():
                temp.unlink(missing_ok=True)
            raise
        model.train(was_training)
        manifest = {"count": count, "dtype": self.dtype, "fields": sorted(arrays),
                    "content": self.stamp}
        atomic_write_bytes(self.folder / "sources.json", json.dumps(self.files).encode())
        atomic_write_bytes(self.folder / "manifest.json", json.dumps(manifest).encode())

    def __len__(self) -> int:
        return self.manifest["count"]

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:   # opened lazily: memory maps do not cross fork/pickle
            path = self.folder / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise DataError(f"feature cache file is unreadable ({err}); delete the folder "
                                f"{self.folder} to rebuild it", str(path)) from None
            if len(array) != self.manifest["count"]:
                raise DataError(f"feature cache file holds {len(array)} items, its manifest "
                                f"{self.manifest['count']}; delete the folder {self.folder} to "
                                "rebuild it", str(path))
            self._arrays[name] = array
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


def _reserve(path: Path, shown: Path | None = None) -> None:
    """Allocate the whole memory-mapped file now: a full disk is then a clear error here,
    not a SIGBUS while the features are written."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
    except AttributeError:                 # no posix_fallocate on this platform
        return
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return                         # the filesystem cannot reserve space: go on
        raise DataError(f"cannot reserve {size / 2 ** 30:.2f} GiB for the feature cache: "
                        f"{err.strerror or err}; free space or set train.cache_features = "
                        "false", str(shown or path)) from None


def _maybe_progress(loader, enabled: bool):
    if not enabled:
        return loader
    from glsmamba.progress import progress
    return progress(loader, desc="encode features", unit="batch", leave=False)
