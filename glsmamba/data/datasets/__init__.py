"""Dataset parsers: each yields ``samples`` (list of PoseSample), ``videos`` and ``metainfo``."""
from glsmamba.data.datasets.base import PoseDataset, VideoInfo, clip_indices, load_json
from glsmamba.data.datasets.jhmdb import JhmdbDataset, JhmdbMatDataset, find_split_file
from glsmamba.data.datasets.posetrack17 import PoseTrack17Dataset
from glsmamba.data.datasets.posetrack18 import PoseTrack18Dataset
from glsmamba.data.datasets.posetrack21 import PoseTrack21Dataset

DATASETS = {
    "posetrack18": PoseTrack18Dataset,
    "posetrack17": PoseTrack17Dataset,
    "posetrack21": PoseTrack21Dataset,
    "jhmdb": JhmdbDataset,
    "jhmdb_mat": JhmdbMatDataset,
}

__all__ = ["DATASETS", "JhmdbDataset", "JhmdbMatDataset", "PoseDataset", "PoseTrack17Dataset",
           "PoseTrack18Dataset", "PoseTrack21Dataset", "VideoInfo", "clip_indices",
           "find_split_file", "load_json"]
