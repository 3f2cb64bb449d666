"""Dataset parsers: each yields ``samples`` (list of PoseSample), ``videos`` and ``metainfo``,
and registers itself as a ``data.type`` (:mod:`glsmamba.data.datasets.registry`)."""
from glsmamba.data.datasets.base import PoseDataset, VideoInfo, clip_indices, load_json
from glsmamba.data.datasets.jhmdb import JhmdbDataset, JhmdbMatDataset, find_split_file
from glsmamba.data.datasets.posetrack17 import PoseTrack17Dataset
from glsmamba.data.datasets.posetrack18 import PoseTrack18Dataset
from glsmamba.data.datasets.posetrack21 import PoseTrack21Dataset
from glsmamba.data.datasets.registry import DATASETS, get_dataset, list_datasets, register_dataset

__all__ = ["DATASETS", "JhmdbDataset", "JhmdbMatDataset", "PoseDataset", "PoseTrack17Dataset",
           "PoseTrack18Dataset", "PoseTrack21Dataset", "VideoInfo", "clip_indices",
           "find_split_file", "get_dataset", "list_datasets", "load_json", "register_dataset"]
