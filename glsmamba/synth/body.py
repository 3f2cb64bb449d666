"""From the humanoid's link frames to the 17 PoseTrack keypoints and to drawable body parts.

Points are defined in link frames of the (scaled) DeepMimic humanoid: +x forward, +y up,
+z to the body's right. The head is the URDF neck link's sphere (centre 0.175 m above the
neck joint, radius 0.1025 m); head_bottom is the bottom of that sphere (chin level),
head_top its top and the nose the front of the face.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glsmamba.synth.mocap import URDF_SCALE

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
# 1-based limb pairs exactly as in the PoseTrack18 annotation files
SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
UNANNOTATED = ("left_ear", "right_ear")   # never annotated in PoseTrack

HEAD_CENTRE_Y = 0.7 * URDF_SCALE          # 0.175 m above the neck joint
HEAD_RADIUS = 0.41 * URDF_SCALE           # 0.1025 m

# body point name -> (link, offset in the link frame, metres)
BODY_POINTS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "pelvis": ("root", (0.0, 0.0, 0.0)),
    "belly": ("root", (0.0, 0.09, 0.0)),
    "chest": ("chest", (0.0, 0.12, 0.0)),
    "neck": ("neck", (0.0, 0.0, 0.0)),
    "head_centre": ("neck", (0.0, HEAD_CENTRE_Y, 0.0)),
    "head_bottom": ("neck", (0.0, HEAD_CENTRE_Y - HEAD_RADIUS, 0.0)),
    "head_top": ("neck", (0.0, HEAD_CENTRE_Y + 0.9 * HEAD_RADIUS, 0.0)),
    "nose": ("neck", (0.95 * HEAD_RADIUS, HEAD_CENTRE_Y - 0.1 * HEAD_RADIUS, 0.0)),
    "head_forward": ("neck", (1.0, HEAD_CENTRE_Y, 0.0)),   # direction helper (unit x)
    "head_up": ("neck", (0.0, HEAD_CENTRE_Y + 1.0, 0.0)),  # direction helper (unit y)
    "left_ear": ("neck", (0.0, HEAD_CENTRE_Y, -HEAD_RADIUS)),
    "right_ear": ("neck", (0.0, HEAD_CENTRE_Y, HEAD_RADIUS)),
}
for _side in ("left", "right"):
    BODY_POINTS.update({
        f"{_side}_shoulder": (f"{_side}_shoulder", (0.0, 0.0, 0.0)),
        f"{_side}_elbow": (f"{_side}_elbow", (0.0, 0.0, 0.0)),
        f"{_side}_wrist": (f"{_side}_wrist", (0.0, 0.0, 0.0)),
        f"{_side}_hand": (f"{_side}_wrist", (0.0, -0.05, 0.0)),
        f"{_side}_hip": (f"{_side}_hip", (0.0, 0.0, 0.0)),
        f"{_side}_knee": (f"{_side}_knee", (0.0, 0.0, 0.0)),
        f"{_side}_ankle": (f"{_side}_ankle", (0.0, 0.0, 0.0)),
        f"{_side}_heel": (f"{_side}_ankle", (-0.035, -0.04, 0.0)),
        f"{_side}_toe": (f"{_side}_ankle", (0.13, -0.045, 0.0)),
    })


def body_points(link_frames: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """World positions (3,) of every named body point, from FK link frames."""
    points = {}
    for name, (link, offset) in BODY_POINTS.items():
        rotation, origin = link_frames[link]
        points[name] = origin + rotation @ np.asarray(offset)
    return points


def keypoints_3d(points: dict[str, np.ndarray]) -> np.ndarray:
    """(17, 3) world keypoints in PoseTrack order."""
    return np.stack([points[name] for name in KEYPOINT_NAMES])


@dataclass
class PersonStyle:
    """Look of one person; colours are BGR floats."""

    shirt: np.ndarray
    pants: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    shoes: np.ndarray
    girth: float = 1.0        # multiplies limb radii


def side_shade(colour: np.ndarray, side: str) -> np.ndarray:
    """Left limbs lighter and warmer, right limbs darker: the left/right cue."""
    if side == "left":
        return np.clip(colour * 1.1 + np.array([0.0, 25.0, 55.0]), 0, 255)
    return np.clip(colour * 0.6, 0, 255)


@dataclass
class Part:
    """A drawable body part: a capsule between two points (a sphere when they coincide),
    or a filled polygon. ``points`` are world coordinates; ``radius`` metres."""

    name: str
    points: np.ndarray        # (P, 3)
    radius: float
    colour: np.ndarray        # (3,) BGR
    kind: str = "capsule"     # "capsule" | "polygon" | "head"


def body_parts(points: dict[str, np.ndarray], style: PersonStyle, scale: float) -> list[Part]:
    """The parts of one person, in world coordinates (``scale`` multiplies radii)."""
    g = style.girth * scale
    parts = [
        Part("torso", np.stack([points["left_shoulder"], points["right_shoulder"],
                                points["right_hip"], points["left_hip"]]), 0.05 * g, style.shirt, "polygon"),
        Part("spine", np.stack([points["belly"], points["chest"]]), 0.11 * g, style.shirt),
        Part("pelvis", np.stack([points["left_hip"], points["right_hip"]]), 0.075 * g, style.pants),
        Part("neck", np.stack([points["neck"], points["head_bottom"]]), 0.04 * g, style.skin),
        Part("head", np.stack([points["head_centre"], points["head_forward"], points["head_up"]]),
             HEAD_RADIUS * scale, style.skin, "head"),
    ]
    for side in ("left", "right"):
        shirt, pants = side_shade(style.shirt, side), side_shade(style.pants, side)
        skin, shoes = side_shade(style.skin, side), side_shade(style.shoes, side)
        parts += [
            Part(f"{side}_upper_arm", np.stack([points[f"{side}_shoulder"], points[f"{side}_elbow"]]), 0.047 * g, shirt),
            Part(f"{side}_forearm", np.stack([points[f"{side}_elbow"], points[f"{side}_wrist"]]), 0.038 * g, skin),
            Part(f"{side}_hand", np.stack([points[f"{side}_wrist"], points[f"{side}_hand"]]), 0.035 * g, skin),
            Part(f"{side}_thigh", np.stack([points[f"{side}_hip"], points[f"{side}_knee"]]), 0.065 * g, pants),
            Part(f"{side}_shin", np.stack([points[f"{side}_knee"], points[f"{side}_ankle"]]), 0.05 * g, pants),
            Part(f"{side}_foot", np.stack([points[f"{side}_heel"], points[f"{side}_toe"]]), 0.035 * g, shoes),
        ]
    return parts
