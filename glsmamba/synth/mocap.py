"""DeepMimic motion capture clips and forward kinematics of pybullet's humanoid, in numpy.

The clips (``pybullet_data/data/motions/humanoid3d_*.txt``) are JSON with ``Loop`` and
``Frames``; a frame is 44 numbers::

    duration, root position (3), root rotation (w, x, y, z),
    chest (4), neck (4), right hip (4), right knee (1), right ankle (4),
    right shoulder (4), right elbow (1), left hip (4), left knee (1), left ankle (4),
    left shoulder (4), left elbow (1)

Spherical joints are quaternions (w, x, y, z); knees and elbows are angles in radians
about the joint's URDF axis. The humanoid (``pybullet_data/humanoid/humanoid.urdf``) is
y-up, faces +x, has its right side at +z, and is modelled 4x too large: pybullet loads it
with ``globalScaling=0.25``, which we apply to every URDF offset.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from glsmamba.errors import DataError

URDF_SCALE = 0.25

# (name, number of values) in the order they follow the root in a motion frame
MOTION_CHANNELS: tuple[tuple[str, int], ...] = (
    ("chest", 4), ("neck", 4),
    ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4),
    ("right_shoulder", 4), ("right_elbow", 1),
    ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4),
    ("left_shoulder", 4), ("left_elbow", 1),
)
FRAME_LENGTH = 1 + 3 + 4 + sum(n for _, n in MOTION_CHANNELS)  # 44

# motion clip name -> sampling weight (locomotion and dances are the common cases)
DEFAULT_MOTIONS: dict[str, float] = {
    "walk": 4.0, "run": 2.0, "dance_a": 2.0, "dance_b": 2.0, "jump": 1.0, "kick": 1.0,
    "punch": 1.0, "spin": 1.0, "spinkick": 1.0, "cartwheel": 1.0, "backflip": 0.5,
    "getup_faceup": 0.5, "getup_facedown": 0.5, "crawl": 0.5, "roll": 0.5,
}


def pybullet_data_dir() -> Path:
    """Folder of the ``pybullet_data`` package (shipped with ``pip install pybullet``)."""
    try:
        import pybullet_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DataError(
            "the synthetic benchmark needs the motion capture data shipped with pybullet: "
            "pip install 'glsmamba[synth]' (or pybullet)"
        ) from err
    return Path(pybullet_data.getDataPath())


# ---------------------------------------------------------------------------------------
# quaternions (w, x, y, z)


def quat_normalize(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical interpolation along the shorter arc."""
    q0 = quat_normalize(q0)
    q1 = quat_normalize(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        return quat_normalize(q0 + fraction * (q1 - q0))
    angle = np.arccos(dot)
    sin_angle = np.sin(angle)
    return (np.sin((1 - fraction) * angle) * q0 + np.sin(fraction * angle) * q1) / sin_angle


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) -> (3, 3) rotation matrix."""
    w, x, y, z = quat_normalize(np.asarray(q, dtype=np.float64))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def axis_angle_to_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    half = 0.5 * angle
    return quat_to_matrix(np.concatenate([[np.cos(half)], np.sin(half) * axis]))


def yaw_matrix(angle: float) -> np.ndarray:
    """Rotation about the world up axis (+y)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


# ---------------------------------------------------------------------------------------
# URDF


@dataclass(frozen=True)
class UrdfJoint:
    name: str
    kind: str            # "fixed" | "spherical" | "revolute"
    parent: str          # parent link
    child: str           # child link
    origin: np.ndarray   # (3,) offset in the parent link frame, already scaled
    axis: np.ndarray     # (3,) rotation axis for revolute joints


@dataclass(frozen=True)
class Humanoid:
    """Kinematic tree of the URDF: joints in parent-before-child order."""

    joints: tuple[UrdfJoint, ...]
    root_link: str

    def joint(self, name: str) -> UrdfJoint:
        for joint in self.joints:
            if joint.name == name:
                return joint
        raise KeyError(name)


def _floats(text: str | None, path: Path, record: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in (text or "").split()], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"expected numbers, got {text!r}", str(path), record) from err


def load_humanoid(path: str | Path | None = None, scale: float = URDF_SCALE) -> Humanoid:
    """Parse the humanoid URDF with xml.etree (offsets multiplied by ``scale``)."""
    path = Path(path) if path is not None else pybullet_data_dir() / "humanoid" / "humanoid.urdf"
    try:  # pybullet's file ends with a NUL byte, which expat rejects
        root = ET.fromstring(path.read_bytes().rstrip(b"\x00 \r\n\t"))
    except (OSError, ET.ParseError) as err:
        raise DataError(f"cannot read URDF: {err}", str(path)) from err
    joints = []
    for element in root.findall("joint"):
        name = element.get("name", "")
        origin = element.find("origin")
        axis = element.find("axis")
        parent, child = element.find("parent"), element.find("child")
        if parent is None or child is None:
            raise DataError("joint without parent or child link", str(path), name)
        xyz = _floats(origin.get("xyz") if origin is not None else "0 0 0", path, name)
        joints.append(UrdfJoint(
            name=name,
            kind=element.get("type", "fixed"),
            parent=parent.get("link", ""),
            child=child.get("link", ""),
            origin=xyz * scale,
            axis=_floats(axis.get("xyz"), path, name) if axis is not None else np.array([0.0, 0.0, 1.0]),
        ))
    children = {j.child for j in joints}
    roots = [j.parent for j in joints if j.parent not in children]
    if not roots:
        raise DataError("URDF has no root link", str(path))
    return Humanoid(joints=tuple(_topological(joints, roots[0])), root_link=roots[0])


def _topological(joints: list[UrdfJoint], root_link: str) -> list[UrdfJoint]:
    ordered, frontier = [], [root_link]
    while frontier:
        link = frontier.pop(0)
        for joint in joints:
            if joint.parent == link:
                ordered.append(joint)
                frontier.append(joint.child)
    return ordered


# ---------------------------------------------------------------------------------------
# motion clips


@dataclass(frozen=True)
class MotionClip:
    name: str
    frames: np.ndarray       # (N, 44)
    loop: bool               # "wrap": repeat with the root displaced by cycle_offset

    @property
    def frame_duration(self) -> float:
        return float(self.frames[0, 0])

    @property
    def duration(self) -> float:
        return float(self.frames[:-1, 0].sum())

    @property
    def cycle_offset(self) -> np.ndarray:
        """Horizontal root displacement over one cycle (x, 0, z)."""
        offset = self.frames[-1, 1:4] - self.frames[0, 1:4]
        return np.array([offset[0], 0.0, offset[2]])

    def pose(self, time: float) -> "Pose":
        """Interpolated pose at ``time`` seconds; loops (wrap) or holds the ends."""
        duration = self.duration
        cycles = 0
        if self.loop and duration > 0:
            cycles = int(np.floor(time / duration))
            time -= cycles * duration
        time = float(np.clip(time, 0.0, duration))
        starts = np.concatenate([[0.0], np.cumsum(self.frames[:-1, 0])])
        index = int(np.clip(np.searchsorted(starts, time, side="right") - 1, 0, len(self.frames) - 2))
        span = max(self.frames[index, 0], 1e-9)
        fraction = float(np.clip((time - starts[index]) / span, 0.0, 1.0))
        return _interpolate(self.frames[index], self.frames[index + 1], fraction,
                            cycles * self.cycle_offset)


@dataclass
class Pose:
    root_position: np.ndarray        # (3,)
    root_rotation: np.ndarray        # (3, 3)
    local_rotations: dict[str, np.ndarray]  # joint name -> (3, 3)


def _interpolate(frame0: np.ndarray, frame1: np.ndarray, fraction: float,
                 offset: np.ndarray) -> Pose:
    position = frame0[1:4] + fraction * (frame1[1:4] - frame0[1:4]) + offset
    rotation = quat_to_matrix(quat_slerp(frame0[4:8], frame1[4:8], fraction))
    local: dict[str, np.ndarray] = {}
    cursor = 8
    for name, size in MOTION_CHANNELS:
        a, b = frame0[cursor:cursor + size], frame1[cursor:cursor + size]
        if size == 4:
            local[name] = quat_to_matrix(quat_slerp(a, b, fraction))
        else:
            local[name] = np.array([a[0] + fraction * (b[0] - a[0])])  # angle, axis applied in FK
        cursor += size
    return Pose(position, rotation, local)


def load_motion(path: str | Path) -> MotionClip:
    """Read one DeepMimic motion file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read motion file: {err}", str(path)) from err
    frames = data.get("Frames") if isinstance(data, dict) else None
    if not frames or len(frames) < 2:
        raise DataError("expected at least two 'Frames'", str(path), "Frames")
    for index, frame in enumerate(frames):
        if len(frame) != FRAME_LENGTH:
            raise DataError(f"frame has {len(frame)} values, expected {FRAME_LENGTH}",
                            str(path), f"Frames[{index}]")
    name = path.stem.removeprefix("humanoid3d_")
    return MotionClip(name=name, frames=np.asarray(frames, dtype=np.float64),
                      loop=data.get("Loop", "wrap") == "wrap")


@lru_cache(maxsize=None)
def load_named_motion(name: str) -> MotionClip:
    """A bundled clip by short name (``walk``, ``run``, ``backflip`` ...)."""
    path = pybullet_data_dir() / "data" / "motions" / f"humanoid3d_{name}.txt"
    if not path.is_file():
        raise DataError(f"unknown motion {name!r}; known: {', '.join(available_motions())}",
                        str(path))
    return load_motion(path)


def available_motions() -> list[str]:
    folder = pybullet_data_dir() / "data" / "motions"
    return sorted(p.stem.removeprefix("humanoid3d_") for p in folder.glob("humanoid3d_*.txt"))


# ---------------------------------------------------------------------------------------
# forward kinematics


def forward_kinematics(humanoid: Humanoid, pose: Pose) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """World frame of every link: link name -> (rotation (3, 3), origin (3,))."""
    frames = {humanoid.root_link: (pose.root_rotation, pose.root_position)}
    for joint in humanoid.joints:
        parent_rotation, parent_origin = frames[joint.parent]
        origin = parent_origin + parent_rotation @ joint.origin
        if joint.kind == "spherical":
            local = pose.local_rotations.get(joint.name, np.eye(3))
        elif joint.kind == "revolute":
            angle = pose.local_rotations.get(joint.name, np.zeros(1))[0]
            local = axis_angle_to_matrix(joint.axis, float(angle))
        else:
            local = np.eye(3)
        frames[joint.child] = (parent_rotation @ local, origin)
    return frames
