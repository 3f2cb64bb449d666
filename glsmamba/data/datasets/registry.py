"""Dataset types by name: the ``data.type`` of a config names one registered here.

A parser registers itself where it is defined::

    @register_dataset("my_dataset")
    class MyDataset(PoseTrackBase):       # or PoseDataset with its own ``for_split``
        default_metainfo = "path/to/my_dataset.json"   # or a bundled name
        metric = "posetrack_map"                        # glsmamba.evaluation.metrics name

Everything the engine needs to know of a dataset is on its class (see
:class:`~glsmamba.data.datasets.base.PoseDataset`): its metainfo, its metric, whether
detected-box protocols apply, where a split's annotations are and how to parse one split.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from glsmamba.errors import ConfigError

DATASETS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator: register the parser as ``data.type = name`` (sets ``cls.dataset_type``)."""
    def add(cls: T) -> T:
        cls.dataset_type = name
        DATASETS[name] = cls
        return cls
    return add


def get_dataset(name: str) -> type:
    """The parser class registered as ``name``; ConfigError listing the known names."""
    names = list_datasets()
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset type {name!r} (data.type; one of: {', '.join(names)})")
    return DATASETS[name]


def list_datasets() -> list[str]:
    """Registered names (importing this module imports the package, so the bundled parsers
    are registered)."""
    return sorted(DATASETS)
