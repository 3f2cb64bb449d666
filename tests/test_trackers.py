"""Trackers: the greedy IoU tracker, and the pose tracker (IoU + OKS + constant velocity,
optimal assignment, two stages, track ageing); inside ``predict_video``:
tests/inference/test_estimator_tracking.py."""
from __future__ import annotations

import numpy as np
import pytest

from glsmamba.errors import ConfigError
from glsmamba.trackers import (IouTracker, PoseTracker, PoseTrackerOptions, box_iou,
                               build_tracker, pose_oks)

SIGMAS = np.full(6, 0.08)


def test_iou_tracker_keeps_ids():
    tracker = IouTracker(iou_thr=0.3)
    a = np.array([[0, 0, 10, 20], [50, 50, 10, 20]], np.float32)
    assert tracker.update(a) == [0, 1]
    assert tracker.update(a[::-1] + 1) == [1, 0]
    assert tracker.update(np.array([[200, 200, 5, 5]], np.float32)) == [2]
    assert box_iou(a, a).diagonal().tolist() == [1.0, 1.0]


def _pose(box, arms_up: bool) -> np.ndarray:
    """Six joints inside a box: head, two hands (up or down), hips, feet; score 0.9."""
    x, y, w, h = box
    hands_y = y + 0.05 * h if arms_up else y + 0.6 * h
    points = [(x + w / 2, y + 0.1 * h), (x, hands_y), (x + w, hands_y),
              (x + w / 2, y + 0.55 * h), (x + 0.2 * w, y + h), (x + 0.8 * w, y + h)]
    return np.array([[px, py, 0.9] for px, py in points])


def _crossing(frames: int = 12):
    """Two people walking through each other: A left->right with arms up, B right->left
    with arms down; per frame boxes (2, 4), poses (2, 6, 3), true identity order."""
    for t in range(frames):
        a = np.array([20.0 + 10 * t, 40.0, 30.0, 80.0])
        b = np.array([130.0 - 10 * t, 42.0, 30.0, 80.0])
        people = [(a, _pose(a, True)), (b, _pose(b, False))]
        order = [1, 0] if t % 2 else [0, 1]           # detection order changes per frame
        yield (np.stack([people[i][0] for i in order]), np.stack([people[i][1] for i in order]),
               order)


def _identity_switches(tracker_update) -> int:
    """Frames where a person's id differs from the one it had the frame before."""
    last, switches = {}, 0
    for boxes, poses, order in _crossing():
        ids = tracker_update(boxes, poses)
        for person, track in zip(order, ids):
            switches += person in last and last[person] != track
            last[person] = track
    return switches


def test_pose_tracker_keeps_identities_through_a_crossing_the_iou_tracker_swaps():
    iou = IouTracker()
    pose = PoseTracker(sigmas=SIGMAS)
    assert _identity_switches(lambda b, p: iou.update(b)) > 0
    assert _identity_switches(lambda b, p: pose.update(b, p, np.ones(len(b)))) == 0


def test_constant_velocity_prediction_bridges_missed_frames():
    options = PoseTrackerOptions(max_age=3, oks_weight=0.0, momentum=0.3)
    tracker = PoseTracker(options, sigmas=SIGMAS)
    box = np.array([0.0, 0.0, 40.0, 80.0])
    for t in range(3):
        moved = box + [15.0 * t, 0, 0, 0]
        assert tracker.update(moved[None], _pose(moved, True)[None], [1.0]) == [0]
    # then unseen for 2 frames: at 15 px a frame it reappears 75 px from its last box (no
    # overlap with it) but right in the predicted box
    far = box + [15.0 * 5, 0, 0, 0]
    assert box_iou(far[None], (box + [30.0, 0, 0, 0])[None])[0, 0] == 0
    tracker.update(np.zeros((0, 4)), np.zeros((0, 6, 3)), [])
    tracker.update(np.zeros((0, 4)), np.zeros((0, 6, 3)), [])
    assert tracker.update(far[None], _pose(far, True)[None], [1.0]) == [0]
    iou = IouTracker()
    for t in (0, 1, 2, 5):
        ids = iou.update((box + [15.0 * t, 0, 0, 0])[None])
    assert ids == [1]                                   # the IoU tracker starts a new track


def test_tracks_are_removed_after_max_age_missed_frames():
    box = np.array([[10.0, 10.0, 20.0, 40.0]])
    pose = _pose(box[0], True)[None]
    empty = (np.zeros((0, 4)), np.zeros((0, 6, 3)), [])
    tracker = PoseTracker(PoseTrackerOptions(max_age=2), sigmas=SIGMAS)
    assert tracker.update(box, pose, [1.0]) == [0]
    tracker.update(*empty)
    tracker.update(*empty)
    assert tracker.update(box, pose, [1.0]) == [0]            # 2 missed frames: kept
    for _ in range(3):
        tracker.update(*empty)
    assert tracker.update(box, pose, [1.0]) == [1]            # 3 missed frames: a new track


def test_low_score_people_continue_tracks_but_never_start_one():
    box = np.array([[10.0, 10.0, 20.0, 40.0]])
    other = np.array([[200.0, 10.0, 20.0, 40.0]])
    tracker = PoseTracker(PoseTrackerOptions(high_score=0.6, low_score=0.2), sigmas=SIGMAS)
    assert tracker.update(box, _pose(box[0], True)[None], [0.9]) == [0]
    # second stage: a 0.3 box continues track 0; an isolated 0.3 box gets an id of its own
    ids = tracker.update(np.concatenate([box, other]),
                         np.stack([_pose(box[0], True), _pose(other[0], True)]), [0.3, 0.3])
    assert ids[0] == 0 and ids[1] == 1
    assert tracker.update(other, _pose(other[0], True)[None], [0.9]) == [2]   # not track 1
    # a high-score box is matched before a low-score one competing for the same track
    both = np.concatenate([box + 2, box - 2])
    ids = tracker.update(both, np.stack([_pose(both[0], True), _pose(both[1], True)]),
                         [0.3, 0.9])
    assert ids[1] == 0 and ids[0] != 0


def test_oks_uses_joints_confident_in_both_poses():
    a = _pose([0, 0, 30, 80], True)[None]
    b = a.copy()
    b[0, :3, :2] += 100.0              # three joints far off ...
    assert pose_oks(a, b, np.array([2400.0]), SIGMAS, 0.3)[0, 0] < 0.6
    b[0, :3, 2] = 0.1                  # ... but not confident: left out
    assert pose_oks(a, b, np.array([2400.0]), SIGMAS, 0.3)[0, 0] == pytest.approx(1.0)
    b[0, :, 2] = 0.1
    assert np.isnan(pose_oks(a, b, np.array([2400.0]), SIGMAS, 0.3)[0, 0])


def test_options_are_checked_and_built_from_the_config_section():
    with pytest.raises(ConfigError, match="low_score"):
        PoseTrackerOptions(low_score=0.7, high_score=0.5)
    with pytest.raises(ConfigError, match="iou_weight"):
        PoseTrackerOptions(iou_weight=0, oks_weight=0)
    with pytest.raises(ConfigError, match="unknown tracker"):
        build_tracker("kalman")
    from glsmamba.config import DEFAULTS
    tracker = build_tracker("pose", DEFAULTS["track"])
    assert tracker.options == PoseTrackerOptions()            # documented defaults agree
    assert isinstance(build_tracker("iou"), IouTracker)
