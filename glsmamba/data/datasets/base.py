"""Shared pieces of the dataset parsers: JSON loading with clear errors, video records,
clip index clamping and the :class:`PoseDataset` container."""
from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glsmamba.data.metainfo import DatasetInfo, load_metainfo
from glsmamba.data.sample import PoseSample
from glsmamba.data.windows import clamped_indices
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


def clip_indices(center: int, num_frames: int, delta: int, window: str = "centered") -> list[int]:
    """Frame indices ``center - delta .. center + delta`` (``window="causal"``:
    ``center - 2 delta .. center``) clamped to ``[0, num_frames - 1]``."""
    return clamped_indices(center, delta, num_frames - 1, window)


def _no_text(raw: Any, field: str, path: str, record: str) -> None:
    """DataError when numbers arrive as text ("12" or ["1", "2"]): numpy would convert them
    silently, hiding an export error."""
    if isinstance(raw, (str, bytes)) or (isinstance(raw, (list, tuple)) and any(
            isinstance(v, (str, bytes)) for v in raw)):
        raise DataError(f"'{field}' must be numbers, not text: {raw!r:.80}", path, record)


def parse_keypoints(raw: Any, num_joints: int, path: str, record: str) -> np.ndarray:
    """Flat ``[x, y, v] * K`` list -> (K, 3) float32, with a DataError on a wrong length."""
    _no_text(raw, "keypoints", path, record)
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

# data.allow_outside_root of the run being parsed (builder.parse_split sets it)
_ALLOW_OUTSIDE_ROOT = contextvars.ContextVar("glsmamba_allow_outside_root", default=False)


@contextlib.contextmanager
def outside_root_allowed(allowed: bool):
    """Within this block, datasets may read files outside their data root."""
    token = _ALLOW_OUTSIDE_ROOT.set(bool(allowed))
    try:
        yield
    finally:
        _ALLOW_OUTSIDE_ROOT.reset(token)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_numbers(raw: Any, field: str, path: str, record: str) -> None:
    """DataError unless ``raw`` is a flat list of numbers (a string "12" is not one)."""
    if not isinstance(raw, (list, tuple)) or not all(_is_number(v) for v in raw):
        raise DataError(f"'{field}' must be a list of numbers, got {raw!r:.80}", path, record)


def check_image_record(image: Any, path: str, record: str) -> None:
    """DataError naming the field of an image record that has the wrong type: ``id`` (a
    number or a string), ``file_name`` (a relative path string), ``width`` / ``height``
    (positive finite numbers), ``nframes`` / ``frame_id`` (whole numbers),
    ``degradations`` (a list of strings), ``is_labeled`` (a boolean or 0/1)."""
    if not isinstance(image, dict):
        raise DataError(f"an image record must be a JSON object, got {image!r:.60}", path, record)
    for key in ("id", "file_name"):
        if key not in image:
            raise DataError(f"image record needs 'file_name' and 'id' (no {key!r})", path, record)
    ident = image["id"]
    if not (isinstance(ident, str) or (isinstance(ident, int) and not isinstance(ident, bool))):
        raise DataError(f"image 'id' must be an integer or a string, got {ident!r:.60}", path, record)
    record = f"image id={ident}"
    name = image["file_name"]
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"'file_name' must be a non-empty path string, got {name!r:.60}", path, record)
    for key in ("width", "height"):
        value = image.get(key)
        if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
            raise DataError(f"'{key}' must be a positive number of pixels, got {value!r:.60}",
                            path, record)
    for key in ("nframes", "frame_id", "frame_index"):
        value = image.get(key)
        if isinstance(value, str) and value.isdigit():
            continue
        if value is not None and not (_is_number(value) and math.isfinite(value)
                                      and float(value) == int(value) and value >= 0):
            raise DataError(f"'{key}' must be an integer >= 0, got {value!r:.60}", path, record)
    degradations = image.get("degradations")
    if degradations is not None and not (isinstance(degradations, list)
                                         and all(isinstance(d, str) for d in degradations)):
        raise DataError(f"'degradations' must be a list of strings, got {degradations!r:.60}",
                        path, record)
    labelled = image.get("is_labeled")
    if labelled is not None and not (isinstance(labelled, bool) or labelled in (0, 1)):
        raise DataError(f"'is_labeled' must be true or false, got {labelled!r:.60}", path, record)


def check_annotation_record(ann: dict, path: str, record: str) -> None:
    """DataError naming the field of a person annotation with the wrong type (``bbox`` /
    ``bbox_head`` as numbers, ``track_id`` a whole number, ``id`` a number or string)."""
    for key in ("bbox", "bbox_head"):
        if ann.get(key) is not None and not (key == "bbox_head" and ann[key] == []):
            check_numbers(ann[key], key, path, record)
    track = ann.get("track_id")
    if track is not None and not (_is_number(track) and math.isfinite(track)
                                  and float(track) == int(track)):
        raise DataError(f"'track_id' must be a whole number, got {track!r:.60}", path, record)
    ident = ann.get("id")
    if ident is not None and not (isinstance(ident, str) or
                                  (isinstance(ident, int) and not isinstance(ident, bool))):
        raise DataError(f"annotation 'id' must be an integer or a string, got {ident!r:.60}",
                        path, record)


def parse_box(raw: Any, path: str, record: str) -> np.ndarray:
    """``[x, y, w, h]`` -> (4,) float32, with a DataError when it is not four numbers."""
    _no_text(raw, "bbox", path, record)
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
    :class:`VideoInfo`) and ``metainfo``. Parsing never decodes images.

    What the engine knows of a dataset type is declared here, on its class:
    ``default_metainfo`` (a bundled name or a JSON path), ``metric`` (a name in
    :mod:`glsmamba.evaluation.metrics`), ``detected_boxes`` (whether evaluation protocols
    on detected boxes apply), :meth:`annotation_path`, :meth:`detections_path` and :meth:`for_split`.
    """

    dataset_type = ""                  # the data.type naming it (set by @register_dataset)
    default_metainfo = "posetrack"
    metric = "posetrack_map"
    detected_boxes = True

    @classmethod
    def annotation_path(cls, root: Path, ann: str, split: int, mode: str) -> Path:
        """The annotations of one split: ``root / ann`` (data.train_ann / data.val_ann)."""
        return Path(root) / ann

    @classmethod
    def detections_path(cls, root: Path, detections: str) -> Path:
        """The detected-boxes file data.val_detections names: ``root / detections``."""
        return Path(root) / detections

    @classmethod
    def for_split(cls, root: Path, ann: str, *, mode: str, delta: int, window: str,
                  split: int, detections: Path | None, det_score_thr: float,
                  clip_detections: bool) -> "PoseDataset":
        """Parse one split as a run asks for it (``mode`` "train" | "test"; the rest are
        the config's data settings and the evaluation protocol's box choices)."""
        raise NotImplementedError(f"{cls.__name__} does not say how to parse a split")

    def __init__(self, metainfo: str | DatasetInfo, data_root: str | Path = "."):
        self.metainfo = metainfo if isinstance(metainfo, DatasetInfo) else load_metainfo(metainfo)
        self.data_root = str(data_root)
        self.allow_outside_root = _ALLOW_OUTSIDE_ROOT.get()
        self.samples: list[PoseSample] = []
        self.videos: dict[str, VideoInfo] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> PoseSample:
        return self.samples[index]

    def image_path(self, file_name: str) -> str:
        return os.path.join(self.data_root, file_name)

    def check_inside_root(self, path: str, source: str, record: str | None = None) -> str:
        """``path`` (a file a data file names) unless it resolves outside the data root
        (``..``, an absolute path, a link out): a DataError naming ``source`` and
        ``record``, unless ``data.allow_outside_root`` is true."""
        if self.allow_outside_root:
            return path
        cache = self.__dict__.setdefault("_real_dirs", {})
        root = cache.get(None) or cache.setdefault(None, os.path.realpath(self.data_root))
        folder = os.path.dirname(path)
        real_dir = cache.get(folder) or cache.setdefault(folder, os.path.realpath(folder))
        real = (os.path.realpath(path) if os.path.islink(path)
                else os.path.join(real_dir, os.path.basename(path)))
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise DataError(f"{path} resolves to {real}, outside the data root {self.data_root} "
                            "(set data.allow_outside_root = true to read it)", source, record)
        return path

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
