"""Sub-JHMDB: mmpose's COCO-style JSON files and the original per-video ``joint_positions.mat``.

JSON layout (mmpose, e.g. ``annotations/Sub1_train.json``, ``Sub1_test.json``): PoseTrack-like
records whose keypoints and boxes are still 1-based (MATLAB); both are shifted by -1 here, as
mmpose's JHMDB dataset does. Every frame is labelled; clips are frames of the same video.

Original layout::

    ROOT/Rename_Images/<action>/<video>/00001.png ...
    ROOT/joint_positions/<action>/<video>/joint_positions.mat   # pos_img (2, 15, T), 1-based
    ROOT/sub_splits/<action>_test_split_<k>.txt                 # "<video>.avi 1|2" (1 train, 2 test)
    ROOT/splits/<action>_test_split<k>.txt                      # full JHMDB splits, same format

The .mat files carry no box: the box is the joints' extent (``extra["bbox_source"] = "joints"``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from glsmamba.data.datasets._posetrack_base import PoseTrackBase
from glsmamba.data.datasets.base import PoseDataset, VideoInfo, check_mode, clip_indices
from glsmamba.data.datasets.registry import register_dataset
from glsmamba.data.metainfo import DatasetInfo
from glsmamba.data.sample import PoseSample
from glsmamba.data.windows import check_window
from glsmamba.errors import DataError

SPLITS = (1, 2, 3)


def find_split_file(ann_dir: str | Path, split: int, mode: str = "train") -> Path:
    """The JSON file of ``split`` and ``mode`` in ``ann_dir``: its name holds ``sub<split>`` and
    ``train``/``test`` (``Sub1_train.json``, ``test_jhmdb_sub1.json`` ...)."""
    if split not in SPLITS:
        raise ValueError(f"Sub-JHMDB split must be 1, 2 or 3, got {split}")
    check_mode(mode)
    ann_dir = Path(ann_dir)
    if not ann_dir.is_dir():
        raise DataError("annotation folder not found", str(ann_dir))
    pattern = re.compile(rf"sub_?{split}(?!\d)", re.IGNORECASE)
    matches = [p for p in sorted(ann_dir.glob("*.json"))
               if pattern.search(p.stem) and mode in p.stem.lower()]
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise DataError(f"expected one JSON file for split {split} / {mode}, found {found}", str(ann_dir))
    return matches[0]


@register_dataset("jhmdb")
class JhmdbDataset(PoseTrackBase):
    """Sub-JHMDB in mmpose's JSON layout (1-based coordinates converted to 0-based).

    ``JhmdbDataset(find_split_file("annotations", 1, "test"), data_root="Rename_Images")``;
    other arguments as :class:`PoseTrackBase`.
    """

    default_metainfo = "jhmdb"
    metric = "pck"
    detected_boxes = False             # Sub-JHMDB is evaluated on GT boxes
    coordinate_offset = 1.0

    @classmethod
    def annotation_path(cls, root, ann, split, mode):
        """The ``Sub<split>_<mode>.json`` file in the data.train_ann / val_ann folder."""
        return find_split_file(Path(root) / ann, split, mode)


def read_split_lists(splits_dir: str | Path, split: int) -> dict[str, list[tuple[str, int]]]:
    """``<action>_test_split<k>.txt`` files -> action -> [(video, 1 train | 2 test)]."""
    if split not in SPLITS:
        raise ValueError(f"Sub-JHMDB split must be 1, 2 or 3, got {split}")
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        raise DataError("split folder not found", str(splits_dir))
    pattern = re.compile(rf"^(?P<action>.+)_test_split_?{split}$")
    lists: dict[str, list[tuple[str, int]]] = {}
    for path in sorted(splits_dir.glob("*.txt")):
        match = pattern.match(path.stem)
        if not match:
            continue
        entries = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("1", "2"):
                raise DataError(f"expected '<video>.avi 1|2', got {line.strip()!r}", str(path), f"line {line_no}")
            entries.append((os.path.splitext(parts[0])[0], int(parts[1])))
        lists[match.group("action")] = entries
    if not lists:
        raise DataError(f"no *_test_split{split}.txt files", str(splits_dir))
    return lists


def load_joint_positions(path: str | Path, num_joints: int = 15) -> np.ndarray:
    """``joint_positions.mat`` -> (T, K, 2) float32, 0-based image pixels."""
    from scipy.io import loadmat

    path = str(path)
    if not os.path.isfile(path):
        raise DataError("joint_positions.mat not found", path)
    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises several types for corrupt files
        raise DataError(f"cannot read MATLAB file: {err}", path) from err
    if "pos_img" not in mat:
        raise DataError("no 'pos_img' variable", path)
    pos = np.asarray(mat["pos_img"], dtype=np.float32)
    if pos.ndim == 2:
        pos = pos[:, :, None]
    if pos.ndim != 3 or pos.shape[0] != 2 or pos.shape[1] != num_joints:
        raise DataError(f"pos_img has shape {pos.shape}, expected (2, {num_joints}, T)", path, "pos_img")
    return np.transpose(pos, (2, 1, 0)) - 1.0                                  # (T, K, 2)


@register_dataset("jhmdb_mat")
class JhmdbMatDataset(PoseDataset):
    """Sub-JHMDB from the original release (``joint_positions.mat`` + split lists).

    Args:
        root: folder holding ``Rename_Images``, ``joint_positions`` and the split folder.
        split: 1, 2 or 3.
        mode: ``"train"`` (split flag 1) or ``"test"`` (flag 2).
        delta: clip half-length.
        window: ``"centered"`` (frames t-delta..t+delta) or ``"causal"`` (t-2 delta..t).
        splits_dir: split list folder, relative to ``root`` (``sub_splits`` = Sub-JHMDB).
    """

    default_metainfo = "jhmdb"
    metric = "pck"
    detected_boxes = False

    @classmethod
    def for_split(cls, root, ann, *, mode, delta, window, split, detections, det_score_thr,
                  clip_detections):
        """The release folder ``root`` (data.train_ann / val_ann are not used)."""
        return cls(root, split=split, mode=mode, delta=delta, window=window)

    def __init__(self, root: str | Path, split: int = 1, mode: str = "train", delta: int = 2,
                 splits_dir: str = "sub_splits", image_dir: str = "Rename_Images",
                 joints_dir: str = "joint_positions", metainfo: str | DatasetInfo = "jhmdb",
                 window: str = "centered"):
        super().__init__(metainfo, root)
        self.mode = check_mode(mode)
        self.delta, self.window = delta, check_window(window)
        self.split, self.splits_dir = split, splits_dir
        flag = 1 if mode == "train" else 2
        lists = read_split_lists(Path(root) / splits_dir, split)
        for action, entries in lists.items():
            for video, video_flag in entries:
                if video_flag == flag:
                    self._add_video(action, video, image_dir, joints_dir)

    def _frame_paths(self, folder: str, num_frames: int) -> list[str]:
        """Sorted PNG files of the video folder when it holds ``num_frames`` of them, else the
        JHMDB naming ``%05d.png`` from 1."""
        if os.path.isdir(folder):
            names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".png"))
            if len(names) >= num_frames:
                return [os.path.join(folder, n) for n in names[:num_frames]]
        return [os.path.join(folder, f"{t + 1:05d}.png") for t in range(num_frames)]

    def _add_video(self, action: str, video: str, image_dir: str, joints_dir: str) -> None:
        mat_path = os.path.join(self.data_root, joints_dir, action, video, "joint_positions.mat")
        for path in (mat_path, os.path.join(self.data_root, image_dir, action, video, "x")):
            self.check_inside_root(path, os.path.join(self.data_root, self.splits_dir),
                                   f"{action} video {video!r}")
        positions = load_joint_positions(mat_path, self.metainfo.num_joints)      # (T, K, 2)
        frames = self._frame_paths(os.path.join(self.data_root, image_dir, action, video), len(positions))
        name = video
        images = [{"id": f"{name}/{t + 1:05d}", "file_name": os.path.relpath(p, self.data_root),
                   "frame_index": t, "nframes": len(frames), "is_labeled": True}
                  for t, p in enumerate(frames)]
        self.videos[name] = VideoInfo(name, mat_path, images, frames)
        for t, keypoints in enumerate(positions):
            visible = np.isfinite(keypoints).all(axis=1).astype(np.float32)
            box = self._joint_box(keypoints, visible, mat_path, f"frame {t + 1}")
            clip = [frames[i] for i in clip_indices(t, len(frames), self.delta, self.window)]
            self.samples.append(PoseSample(
                image_path=frames[t], frame_paths=clip, bbox_xywh=box,
                keypoints=np.nan_to_num(keypoints) * visible[:, None], visible=visible,
                image_id=images[t]["id"], video_id=name, frame_index=t, track_id=0,
                ann_id=images[t]["id"], extra={"bbox_source": "joints", "action": action}))

    @staticmethod
    def _joint_box(keypoints: np.ndarray, visible: np.ndarray, path: str, record: str) -> np.ndarray:
        points = keypoints[visible > 0]
        if len(points) == 0:
            raise DataError("no valid joint positions", path, record)
        low, high = points.min(axis=0), points.max(axis=0)
        if (high - low).min() <= 0:
            raise DataError(f"joints span a box of zero size {np.r_[low, high - low].tolist()}", path, record)
        return np.r_[low, high - low].astype(np.float32)
