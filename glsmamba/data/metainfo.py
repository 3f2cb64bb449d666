"""Dataset meta information (joint names, flip pairs, weights, skeleton, colours) read from JSON.

The bundled files live in ``glsmamba/data/metainfo/<name>.json``; joints are referred to by
name inside the files and turned into indices here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glsmamba.errors import ConfigError, DataError

METAINFO_DIR = Path(__file__).resolve().parent / "metainfo"


@dataclass(frozen=True)
class DatasetInfo:
    """Joint layout of one dataset; every index list refers to ``joint_names``."""

    name: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    joint_weights: np.ndarray                # (K,) float32
    skeleton: tuple[tuple[int, int], ...]
    joint_colors: tuple[tuple[int, int, int], ...]   # RGB per joint
    link_colors: tuple[tuple[int, int, int], ...]    # RGB per skeleton link
    sigmas: np.ndarray                       # (K,) float32 OKS sigmas
    upper_body: tuple[int, ...]
    lower_body: tuple[int, ...]
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def flip_indices(self) -> list[int]:
        """``flip_indices[k]`` = joint that ``k`` becomes after a horizontal flip."""
        indices = list(range(self.num_joints))
        for left, right in self.flip_pairs:
            indices[left], indices[right] = right, left
        return indices

    def index(self, joint_name: str) -> int:
        return self.joint_names.index(joint_name)


def available_metainfo() -> list[str]:
    """Names of the bundled metainfo files."""
    return sorted(path.stem for path in METAINFO_DIR.glob("*.json"))


def _resolve_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise ConfigError(f"metainfo file not found: {path}")
        return path
    name = str(name_or_path).lower()
    path = METAINFO_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(
            f"unknown dataset metainfo {name_or_path!r}; bundled: {', '.join(available_metainfo())}"
        )
    return path


def _indices(names: list, joint_names: list[str], path: Path, key: str) -> list:
    """Map joint names (or already-integer indices) to indices, naming the key on error."""
    out = []
    for item in names:
        if isinstance(item, list):
            out.append(tuple(_indices(item, joint_names, path, key)))
        elif isinstance(item, int):
            if not 0 <= item < len(joint_names):
                raise DataError(f"joint index {item} out of range", str(path), key)
            out.append(item)
        elif item in joint_names:
            out.append(joint_names.index(item))
        else:
            raise DataError(f"unknown joint name {item!r}", str(path), key)
    return out


def _per_joint(raw: dict, key: str, num_joints: int, default: float, path: Path) -> np.ndarray:
    values = np.asarray(raw.get(key, [default] * num_joints), dtype=np.float32)
    if values.shape != (num_joints,):
        raise DataError(f"expected {num_joints} values, got {values.shape}", str(path), key)
    return values


def load_metainfo(name_or_path: str | Path) -> DatasetInfo:
    """Load a bundled metainfo by name (``posetrack``, ``jhmdb``) or any JSON file with the
    same keys. A dataset type names its own (``PoseDataset.default_metainfo``)."""
    path = _resolve_path(name_or_path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON (line {err.lineno}, column {err.colno}): {err.msg}",
                        str(path)) from err
    if "joint_names" not in raw:
        raise DataError("missing 'joint_names'", str(path))
    joint_names = list(raw["joint_names"])
    num_joints = len(joint_names)
    skeleton = _indices(raw.get("skeleton", []), joint_names, path, "skeleton")
    joint_colors = [tuple(c) for c in raw.get("joint_colors", [[255, 255, 255]] * num_joints)]
    link_colors = [tuple(c) for c in raw.get("link_colors", [[255, 255, 255]] * len(skeleton))]
    if len(joint_colors) != num_joints or len(link_colors) != len(skeleton):
        raise DataError("colour lists do not match joints / skeleton", str(path), "colors")
    known = {"name", "description", "joint_names", "flip_pairs", "joint_weights", "skeleton",
             "joint_colors", "link_colors", "sigmas", "upper_body", "lower_body"}
    return DatasetInfo(
        name=raw.get("name", path.stem),
        joint_names=tuple(joint_names),
        flip_pairs=tuple(_indices(raw.get("flip_pairs", []), joint_names, path, "flip_pairs")),
        joint_weights=_per_joint(raw, "joint_weights", num_joints, 1.0, path),
        skeleton=tuple(skeleton),
        joint_colors=tuple(joint_colors),
        link_colors=tuple(link_colors),
        sigmas=_per_joint(raw, "sigmas", num_joints, 0.05, path),
        upper_body=tuple(_indices(raw.get("upper_body", []), joint_names, path, "upper_body")),
        lower_body=tuple(_indices(raw.get("lower_body", []), joint_names, path, "lower_body")),
        description=raw.get("description", ""),
        extra={k: v for k, v in raw.items() if k not in known},
    )
