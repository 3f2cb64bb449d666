"""Dataset parsers: each yields ``samples`` (list of PoseSample), ``videos`` and ``metainfo``,
and registers itself as a ``data.type`` (:mod:`glsmamba.data.datasets.registry`)."""
from glsmamba.data.datasets.base import PoseDataset, VideoInfo, clip_indices, load_json
from glsmamba.data.datasets.jhmdb import JhmdbDataset, JhmdbMatDataset, find_split_file
from glsmamba.data.datasets.posetrack17 import PoseTrack17Dataset
from glsmamba.data.datasets.posetrack18 import PoseTrack18Dataset
from glsmamba.data.datasets.posetrack21 import PoseTrack21Dataset
from glsmamba.data.datasets.registry import DATASETS, get_dataset, list_datasets, register_dataset


def import_parsers() -> None:
    """Import every parser module of this folder, so a new ``<name>.py`` registers itself
    without an edit here."""
    import importlib
    import pkgutil
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in ("base", "registry"):
            importlib.import_module(f"{__name__}.{module.name}")


import_parsers()

__all__ = ["DATASETS", "JhmdbDataset", "JhmdbMatDataset", "PoseDataset", "PoseTrack17Dataset",
           "PoseTrack18Dataset", "PoseTrack21Dataset", "VideoInfo", "clip_indices",
           "find_split_file", "get_dataset", "import_parsers", "list_datasets", "load_json",
           "register_dataset"]
