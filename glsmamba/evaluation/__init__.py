"""Evaluation: metrics as objects (chosen by each dataset), poseval-exact PoseTrack mAP,
the poseval file reader and writer, Sub-JHMDB PCK, evaluation protocols."""
from glsmamba.evaluation.metrics import Metric, get_metric, list_metrics, register_metric
from glsmamba.evaluation.pck import (JHMDB_GROUPS, JHMDB_JOINTS, PckResult, format_pck_table,
                                     mean_over_splits, pck_accuracy)
from glsmamba.evaluation.posetrack_map import (POSEVAL_JOINTS, MapResult, evaluate_posetrack,
                                               format_table, image_ids_with, load_json_dir,
                                               split_merged)
from glsmamba.evaluation.tracking import (TrackingResult, evaluate_tracking,
                                          format_tracking_table)
from glsmamba.evaluation.writer import write_posetrack_predictions

__all__ = [
    "JHMDB_GROUPS", "JHMDB_JOINTS", "POSEVAL_JOINTS", "MapResult", "Metric", "PckResult",
    "get_metric", "list_metrics", "register_metric",
    "TrackingResult", "evaluate_posetrack", "evaluate_tracking", "format_tracking_table",
    "format_pck_table", "format_table", "image_ids_with",
    "load_json_dir", "mean_over_splits", "pck_accuracy", "split_merged",
    "write_posetrack_predictions",
]
