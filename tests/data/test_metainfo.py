"""Metainfo files: joint order, flip pairs, weights, skeleton, loading errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsmamba.data.datasets import get_dataset
from glsmamba.data.metainfo import available_metainfo, load_metainfo
from glsmamba.errors import ConfigError, DataError

POSETRACK_ORDER = ["nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder",
                   "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                   "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]


def test_bundled_files_and_dataset_metainfo():
    assert {"posetrack", "jhmdb"} <= set(available_metainfo())
    assert load_metainfo("PoseTrack").joint_names == tuple(POSETRACK_ORDER)
    # each dataset type names its metainfo itself (no alias table elsewhere)
    for name in ("posetrack18", "posetrack21", "posetrack17"):
        info = load_metainfo(get_dataset(name).default_metainfo)
        assert info.joint_names == tuple(POSETRACK_ORDER)
    for name in ("jhmdb", "jhmdb_mat"):
        assert load_metainfo(get_dataset(name).default_metainfo).num_joints == 15
    with pytest.raises(ConfigError, match="unknown dataset metainfo"):
        load_metainfo("posetrack18")


def test_posetrack_layout():
    info = load_metainfo("posetrack")
    assert info.num_joints == 17
    assert info.flip_indices == [0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    weights = dict(zip(info.joint_names, info.joint_weights))
    assert weights["left_elbow"] == pytest.approx(1.2) and weights["right_knee"] == pytest.approx(1.2)
    assert weights["left_wrist"] == pytest.approx(1.5) and weights["right_ankle"] == pytest.approx(1.5)
    assert weights["nose"] == 1.0 and weights["left_hip"] == 1.0
    assert set(info.upper_body) | set(info.lower_body) == set(range(17))
    assert len(info.skeleton) == 19 and len(info.link_colors) == 19 and len(info.joint_colors) == 17
    assert info.sigmas.shape == (17,)


def test_jhmdb_layout():
    info = load_metainfo("jhmdb")
    assert info.joint_names[:3] == ("neck", "belly", "head")
    flip = info.flip_indices
    assert flip[info.index("right_shoulder")] == info.index("left_shoulder")
    assert flip[info.index("neck")] == info.index("neck")
    assert all(flip[flip[k]] == k for k in range(info.num_joints))
    assert info.joint_weights[info.index("left_ankle")] == pytest.approx(1.5)


def test_custom_file_and_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"joint_names": ["a", "left_b", "right_b"],
                                "flip_pairs": [["left_b", "right_b"]], "skeleton": [[0, 1], ["a", "right_b"]]}))
    info = load_metainfo(path)
    assert info.flip_indices == [0, 2, 1] and info.skeleton == ((0, 1), (0, 2))
    np.testing.assert_array_equal(info.joint_weights, [1, 1, 1])
    path.write_text(json.dumps({"joint_names": ["a"], "flip_pairs": [["a", "zzz"]]}))
    with pytest.raises(DataError, match=r"mine\.json \[flip_pairs\].*'zzz'"):
        load_metainfo(path)
    path.write_text('{"joint_names": [')
    with pytest.raises(DataError, match="line 1"):
        load_metainfo(path)
    with pytest.raises(ConfigError, match="unknown dataset metainfo"):
        load_metainfo("coco_wholebody_xyz")
