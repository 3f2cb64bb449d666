"""Shared pieces of the dataset parsers: JSON loading with clear errors, video records,
clip index clamping and the :class:`PoseDataset` container."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glsmamba.data.metainfo import DatasetInfo, load_metainfo
from glsmamba.data.sample import PoseSample
from glsmamba.errors import DataError

MODES = ("train", "test")


@dataclass
class VideoInfo:
    """What a prediction writer needs to emit one file per GT video.

    ``images`` are the raw image records of the video exactly as read, in the annotation
    file's order (poseval pairs GT and prediction frames by position); ``frame_paths`` are
    the frames in video order (``frame_id``), or the fallback folder listing, used for clips.
    """

    name: str
    ann_file: str
    images: list[dict]
    frame_paths: list[str] = field(default_factory=list)
    categories: list[dict] = field(default_factory=list)
    complete: bool = True          # False when the annotation did not list every frame

    # read-only mapping access, so writers can take ``video["images"]`` / ``video.get(...)``
    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default

    def keys(self) -> list[str]:
        return list(self.__dataclass_fields__)


def load_json(path: str | Path) -> Any:
    """``json.load`` with :class:`DataError` for a missing, unreadable or malformed file."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError("annotation file not found", path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed or truncated JSON at line {err.lineno}, column {err.colno}: "
                        f"{err.msg}", path) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read file: {err}", path) from err


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def clip_indices(center: int, num_frames: int, delta: int) -> list[int]:
    """Frame indices ``center - delta .. center + delta`` clamped to ``[0, num_frames - 1]``."""
    return [min(max(center + offset, 0), num_frames - 1) for offset in range(-delta, delta + 1)]


def parse_keypoints(raw: Any, num_joints: int, path: str, record: str) -> np.ndarray:
    """Flat ``[x, y, v] * K`` list -> (K, 3) float32, with a DataError on a wrong length."""
    try:
        values = np.asarray(raw, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as err:
        raise DataError(f"keypoints are not numbers: {err}", path, record) from err
    if values.size != 3 * num_joints:
        raise DataError(f"keypoints have {values.size} values, expected {3 * num_joints} "
                        f"({num_joints} joints x (x, y, v))", path, record)
    if not np.isfinite(values).all():
        # a NaN joint would make a NaN target and pass for a diverged training
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError(f"keypoint value {first} (joint {first // 3}) is {values[first]}; "
                        "keypoints must be finite numbers", path, record)
    return values.reshape(num_joints, 3)


MAX_COORDINATE = 1e6       # pixels; a box beyond this is an export error, not a person


def parse_box(raw: Any, path: str, record: str) -> np.ndarray:
    """``[x, y, w, h]`` -> (4,) float32, with a DataError when it is not four numbers."""
    try:
        box = np.asarray(raw, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as err:
        raise DataError(f"bbox is not numbers: {err}", path, record) from err
    if box.size != 4 or not np.isfinite(box).all():
        raise DataError(f"bbox must be 4 finite numbers [x, y, w, h], got {raw!r}", path, record)
    if np.abs(box).max() > MAX_COORDINATE:
        raise DataError(f"bbox {raw!r} lies beyond {MAX_COORDINATE:.0e} pixels: no image is that "
                        "large (a unit or export error?)", path, record)
    return box


def clip_box_to_image(box: np.ndarray, width: float | None, height: float | None) -> np.ndarray:
    """Clip an xywh box to the image (when its size is known), like the peers' box cleaning."""
    if not width or not height:
        return box
    x, y, w, h = (float(v) for v in box)
    x1 = min(max(x, 0.0), width - 1.0)
    y1 = min(max(y, 0.0), height - 1.0)
    x2 = min(max(x + w, 0.0), width - 1.0)
    y2 = min(max(y + h, 0.0), height - 1.0)
    return np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32)


class PoseDataset:
    """Parsed dataset: ``samples`` (list of :class:`PoseSample`), ``videos`` (name ->
    :class:`VideoInfo`) and ``metainfo``. Parsing never decodes images."""

    def __init__(self, metainfo: str | DatasetInfo, data_root: str | Path = "."):
        self.metainfo = metainfo if isinstance(metainfo, DatasetInfo) else load_metainfo(metainfo)
        self.data_root = str(data_root)
        self.samples: list[PoseSample] = []
        self.videos: dict[str, VideoInfo] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> PoseSample:
        return self.samples[index]

    def image_path(self, file_name: str) -> str:
        return os.path.join(self.data_root, file_name)

    def check_files(self, raise_error: bool = True) -> list[str]:
        """Every frame any sample needs must exist; returns the missing paths (or raises)."""
        missing: dict[str, str] = {}
        checked: set[str] = set()
        for index, sample in enumerate(self.samples):
            for path in sample.frame_paths:
                if path in checked:
                    continue
                checked.add(path)
                if not os.path.isfile(path):
                    missing[path] = f"sample {index}, video {sample.video_id}, image {sample.image_id}"
        if missing and raise_error:
            first, record = next(iter(missing.items()))
            raise DataError(f"image file not found ({len(missing)} missing in all)", first, record)
        return list(missing)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self.samples)} samples, {len(self.videos)} videos, "
                f"metainfo={self.metainfo.name!r})")
