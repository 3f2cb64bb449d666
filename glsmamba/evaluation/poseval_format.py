"""The poseval file format's fixed facts: joint orders, the score of a joint given without
one, the head-size factor, the track id limit. Imported by the reader
(:mod:`~glsmamba.evaluation.poseval_io`), the metric and the writer alike."""
from __future__ import annotations

# poseval's joint order (eval_helpers.Joint); "neck" is PoseTrack18's "head_bottom"
POSEVAL_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist", "neck", "nose", "head_top",
)
NUM_JOINTS = len(POSEVAL_JOINTS)
JOINT_INDEX = {name: i for i, name in enumerate(POSEVAL_JOINTS)}
JOINT_INDEX["head_bottom"] = JOINT_INDEX["neck"]

# PoseTrack18's 17 keypoints (COCO order); ears are never annotated and are dropped
POSETRACK18_KEYPOINTS = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

HEAD_SIZE_FACTOR = 0.6   # head size = 0.6 x head-box diagonal
MIN_SCORE = -9999.0      # poseval's score for a joint given without a score
MAX_TRACK_ID = 10000     # poseval asserts track ids below this
