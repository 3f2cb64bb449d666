"""Sub-JHMDB: the mmpose JSON fixture (1-based -> 0-based) and the original .mat layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from glsmamba.data.datasets import JhmdbDataset, JhmdbMatDataset, find_split_file
from glsmamba.errors import DataError


def test_fixture_json_is_shifted_to_zero_based(fixtures_dir: Path):
    root = fixtures_dir / "jhmdb"
    path = root / "test_jhmdb_sub1.json"
    raw = json.loads(path.read_text())
    dataset = JhmdbDataset(path, root, mode="test")
    assert len(dataset) == 3 and dataset.metainfo.num_joints == 15
    sample = next(s for s in dataset.samples if s.image_id == 2280001)
    raw_keypoints = np.array(raw["annotations"][0]["keypoints"]).reshape(15, 3)
    np.testing.assert_allclose(sample.keypoints, raw_keypoints[:, :2] - 1, atol=1e-4)
    np.testing.assert_allclose(sample.bbox_xywh, [78, 61, 54, 159])
    assert sample.visible.sum() == 15 and dataset.check_files() == []
    assert find_split_file(root, 1, "test") == path
    with pytest.raises(DataError, match="split 2 / test"):
        find_split_file(root, 2, "test")


def _write_jhmdb(root: Path, videos=(("catch", "vid_a", 4, 1), ("catch", "vid_b", 3, 2), ("run", "vid_c", 2, 1))):
    rng = np.random.default_rng(0)
    positions = {}
    lines: dict[str, list[str]] = {}
    for action, video, frames, flag in videos:
        pos = rng.uniform(20, 200, size=(2, 15, frames))          # 1-based MATLAB pixels
        folder = root / "joint_positions" / action / video
        folder.mkdir(parents=True)
        savemat(folder / "joint_positions.mat", {"pos_img": pos, "scale": np.ones(frames)})
        positions[video] = pos
        (root / "Rename_Images" / action / video).mkdir(parents=True)
        lines.setdefault(action, []).append(f"{video}.avi {flag}")
    splits = root / "sub_splits"
    splits.mkdir()
    for action, entries in lines.items():
        (splits / f"{action}_test_split_1.txt").write_text("\n".join(entries) + "\n")
    return positions


def test_mat_layout_train_and_test(tmp_path):
    positions = _write_jhmdb(tmp_path)
    train = JhmdbMatDataset(tmp_path, split=1, mode="train", delta=1)
    assert sorted(train.videos) == ["vid_a", "vid_c"] and len(train) == 6
    sample = next(s for s in train.samples if s.video_id == "vid_a" and s.frame_index == 0)
    np.testing.assert_allclose(sample.keypoints, positions["vid_a"][:, :, 0].T - 1, rtol=1e-6)
    low = sample.keypoints.min(0)
    np.testing.assert_allclose(sample.bbox_xywh[:2], low, rtol=1e-6)
    assert [Path(p).name for p in sample.frame_paths] == ["00001.png", "00001.png", "00002.png"]
    test = JhmdbMatDataset(tmp_path, split=1, mode="test")
    assert list(test.videos) == ["vid_b"] and len(test) == 3


def test_mat_layout_errors(tmp_path):
    _write_jhmdb(tmp_path)
    with pytest.raises(DataError, match="no \\*_test_split2"):
        JhmdbMatDataset(tmp_path, split=2)
    (tmp_path / "sub_splits" / "run_test_split_1.txt").write_text("vid_c.avi 7\n")
    with pytest.raises(DataError, match=r"run_test_split_1\.txt \[line 1\]"):
        JhmdbMatDataset(tmp_path, split=1)
    (tmp_path / "sub_splits" / "run_test_split_1.txt").write_text("vid_z.avi 1\n")
    with pytest.raises(DataError, match="joint_positions.mat not found"):
        JhmdbMatDataset(tmp_path, split=1)
    (tmp_path / "sub_splits" / "run_test_split_1.txt").write_text("vid_c.avi 1\n")
    savemat(tmp_path / "joint_positions" / "run" / "vid_c" / "joint_positions.mat", {"pos_img": np.ones((2, 14, 3))})
    with pytest.raises(DataError, match=r"\[pos_img\].*expected \(2, 15, T\)"):
        JhmdbMatDataset(tmp_path, split=1)
    (tmp_path / "joint_positions" / "run" / "vid_c" / "joint_positions.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read MATLAB file"):
        JhmdbMatDataset(tmp_path, split=1)


def test_mat_layout_is_a_config_choice(tmp_path):
    """jhmdb_mat registers itself, so a config selects it and the engine parses it (PCK,
    GT boxes only)."""
    import copy

    from glsmamba.engine.builder import parse_split, resolve_protocol
    from glsmamba.config import DEFAULTS, validate_config
    _write_jhmdb(tmp_path)
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(type="jhmdb_mat", root=str(tmp_path), split=1, delta=1)
    validate_config(config)
    train = parse_split(config, "train")
    assert isinstance(train, JhmdbMatDataset) and sorted(train.videos) == ["vid_a", "vid_c"]
    assert sorted(parse_split(config, "val").videos) == ["vid_b"]
    config["eval"]["protocol"] = "mmpose"                      # detected boxes do not apply
    assert resolve_protocol(config).name == "gt"
