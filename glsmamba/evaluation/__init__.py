"""Evaluation: poseval-exact PoseTrack mAP, prediction writer, Sub-JHMDB PCK."""
from glsmamba.evaluation.pck import (JHMDB_GROUPS, JHMDB_JOINTS, PckResult, format_pck_table,
                                     mean_over_splits, pck_accuracy)
from glsmamba.evaluation.posetrack_map import (POSEVAL_JOINTS, MapResult, evaluate_posetrack,
                                               format_table, image_ids_with, load_json_dir,
                                               split_merged)
from glsmamba.evaluation.writer import write_posetrack_predictions

__all__ = [
    "JHMDB_GROUPS", "JHMDB_JOINTS", "POSEVAL_JOINTS", "MapResult", "PckResult",
    "evaluate_posetrack", "format_pck_table", "format_table", "image_ids_with",
    "load_json_dir", "mean_over_splits", "pck_accuracy", "split_merged",
    "write_posetrack_predictions",
]
