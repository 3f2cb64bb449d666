"""PoseTrack18-style records of a rendered frame: keypoints with visibility, boxes, and the
frame's degradations.

Keypoint flags follow COCO: 2 = visible, 1 = annotated but hidden (an occluder or
another person covers the joint's pixel), 0 = not annotated (ears, joints outside the
image or behind the camera). Readers treat v > 0 as annotated. Each annotation also
carries ``occluded`` (17 ints, 1 where v == 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glsmamba.synth.body import HEAD_RADIUS, KEYPOINT_NAMES, UNANNOTATED, body_parts, keypoints_3d
from glsmamba.synth.render import OCCLUDER_LABEL, project_parts
from glsmamba.synth.scene import Scene

NUM_KEYPOINTS = len(KEYPOINT_NAMES)
_UNANNOTATED_INDEX = [KEYPOINT_NAMES.index(name) for name in UNANNOTATED]


@dataclass
class PersonLabel:
    track_id: int
    keypoints: np.ndarray          # (17, 3) x, y, v
    occluded_by: np.ndarray        # (17,) 0 none, 1 occluder, 2 another person
    bbox: np.ndarray               # (4,) xywh, clipped to the image
    bbox_head: np.ndarray          # (4,) xywh

    @property
    def num_keypoints(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())


def label_people(scene: Scene, frame: int, labels: np.ndarray) -> list[PersonLabel]:
    """Annotations of everyone in ``frame`` with at least one annotated joint."""
    camera = scene.cameras[frame]
    height, width = labels.shape
    people = []
    for index, (track, points) in enumerate(zip(scene.people, scene.points)):
        pixels, depth = camera.project(keypoints_3d(points[frame]))       # (17, 2), (17,)
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] <= width - 1) & \
                 (pixels[:, 1] >= 0) & (pixels[:, 1] <= height - 1) & (depth > 0.2)
        inside[_UNANNOTATED_INDEX] = False
        occluded_by = np.zeros(NUM_KEYPOINTS, np.int64)
        for joint in np.flatnonzero(inside):
            owner = labels[int(round(pixels[joint, 1])), int(round(pixels[joint, 0]))]
            if owner == OCCLUDER_LABEL:
                occluded_by[joint] = 1
            elif owner not in (0, index + 1):
                occluded_by[joint] = 2
        flags = np.where(inside, np.where(occluded_by > 0, 1, 2), 0)
        keypoints = np.concatenate([np.where(inside[:, None], pixels, 0.0), flags[:, None]], axis=1)
        box = person_box(scene, index, frame)
        if not inside.any() or box is None:
            continue
        people.append(PersonLabel(track.track_id, keypoints, occluded_by * inside, box,
                                  head_box(scene, index, frame)))
    return people


def person_box(scene: Scene, index: int, frame: int) -> np.ndarray | None:
    """Tight xywh box of the drawn body (parts' extents), clipped to the image."""
    camera = scene.cameras[frame]
    track = scene.people[index]
    lows, highs = [], []
    parts = body_parts(scene.points[index][frame], track.style, track.scale)
    for part, pixels, depth, radius in project_parts(parts, camera):
        if depth <= 0.2:
            continue
        lows.append(pixels.min(axis=0) - radius)
        highs.append(pixels.max(axis=0) + radius)
    if not lows:
        return None
    low = np.clip(np.min(lows, axis=0), 0, [camera.width - 1, camera.height - 1])
    high = np.clip(np.max(highs, axis=0), 0, [camera.width - 1, camera.height - 1])
    size = high - low
    if size.min() < 2:
        return None
    return np.concatenate([low, size])


def head_box(scene: Scene, index: int, frame: int) -> np.ndarray:
    """xywh square around the projected head sphere (not clipped: it sets PCKh's scale)."""
    camera = scene.cameras[frame]
    centre = scene.points[index][frame]["head_centre"]
    pixels, depth = camera.project(centre[None])
    radius = camera.focal * HEAD_RADIUS * scene.people[index].scale / max(float(depth[0]), 1e-3)
    return np.array([pixels[0, 0] - radius, pixels[0, 1] - radius, 2 * radius, 2 * radius])


def frame_degradations(scene: Scene, frame: int, people: list[PersonLabel]) -> list[str]:
    """Names of what makes the frame hard, in a fixed order (empty when clean)."""
    found = []
    if any((person.occluded_by == 1).any() for person in people):
        found.append("occluded")
    effect = scene.effects.get(frame)
    if effect is not None:
        found.append(effect.kind)
    if any((person.occluded_by == 2).any() for person in people):
        found.append("crossing")
    return found
