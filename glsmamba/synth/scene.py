"""Random video scenes: who moves how, where the camera goes, and which frames are degraded.

A scene is sampled once per video from a ``numpy.random.Generator``; everything after
(3D poses, cameras, images, annotations) is a deterministic function of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from glsmamba.synth import mocap
from glsmamba.synth.body import PersonStyle, body_points
from glsmamba.synth.camera import Camera
from glsmamba.synth.textures import random_texture

@dataclass
class SceneOptions:
    width: int = 320
    height: int = 240
    fps: float = 20.0
    min_people: int = 1
    max_people: int = 3
    hard_rate: float = 0.3                  # target fraction of frames with an injected degradation
    severity: float = 1.0                   # scales occluder size, blur length, defocus radius
    motions: dict[str, float] = field(default_factory=lambda: dict(mocap.DEFAULT_MOTIONS))


@dataclass
class PersonTrack:
    track_id: int
    motion: str
    start_time: float          # seconds into the clip at frame 0
    speed: float               # playback rate
    heading: float             # yaw (radians) of the clip's +x axis in the world
    position: np.ndarray       # (3,) world position of the clip's start root (y = 0)
    scale: float               # body size
    style: PersonStyle


@dataclass
class Background:
    ground: np.ndarray         # (Hg, Wg, 3) uint8 tile
    ground_metres: float       # world size of one ground tile
    wall: np.ndarray           # (Hw, Ww, 3) uint8, wraps horizontally
    wall_radius: float         # the wall is a cylinder around the scene centre
    wall_height: float
    wall_repeats: int          # tiles around the cylinder
    sky_top: np.ndarray        # (3,) colour
    sky_bottom: np.ndarray     # (3,) colour
    centre: np.ndarray         # (3,)
    ground_mean: np.ndarray = field(init=False)   # (3,) colour the far ground fades to

    def __post_init__(self) -> None:
        self.ground_mean = self.ground.reshape(-1, 3).mean(axis=0)


@dataclass
class Occluder:
    """A textured blob crossing the image in front of everything for a few frames."""

    frames: tuple[int, ...]
    patch: np.ndarray          # (h, w, 3) uint8
    mask: np.ndarray           # (h, w) bool
    centre: np.ndarray         # (2,) pixel centre at frames[0]
    velocity: np.ndarray       # (2,) pixels per frame

    def top_left(self, frame: int) -> tuple[int, int]:
        centre = self.centre + self.velocity * (frame - self.frames[0])
        h, w = self.mask.shape
        return int(round(centre[0] - w / 2)), int(round(centre[1] - h / 2))


@dataclass
class FrameEffect:
    """A blur applied to one whole frame."""

    kind: str                  # "blur" (motion blur) | "defocus"
    size: float                # blur length or disc radius, pixels
    angle: float = 0.0         # motion direction, radians


@dataclass
class Scene:
    options: SceneOptions
    num_frames: int
    people: list[PersonTrack]
    background: Background
    cameras: list[Camera]
    points: list[list[dict[str, np.ndarray]]]       # [person][frame] body point -> (3,)
    occluders: list[Occluder] = field(default_factory=list)
    effects: dict[int, FrameEffect] = field(default_factory=dict)
    crossing_tracks: tuple[int, ...] = ()           # people set on crossing paths


# ---------------------------------------------------------------------------------------
# people


def sample_style(rng: np.random.Generator) -> PersonStyle:
    skin_tones = np.array([[170, 200, 240], [120, 160, 215], [90, 125, 180], [60, 85, 130], [45, 60, 95]], float)
    skin = skin_tones[rng.integers(0, len(skin_tones))] * rng.uniform(0.9, 1.1)
    return PersonStyle(
        shirt=rng.uniform(30, 230, 3),
        pants=rng.uniform(20, 200, 3),
        skin=np.clip(skin, 0, 255),
        hair=rng.uniform(10, 90, 3) * np.array([0.6, 0.8, 1.0]),
        shoes=rng.uniform(10, 120, 3),
        girth=float(rng.uniform(0.85, 1.2)),
    )


def sample_people(rng: np.random.Generator, options: SceneOptions, azimuth: float) -> list[PersonTrack]:
    """People spread side by side across the view (1 to 1.8 m apart), jittered in depth."""
    count = int(rng.integers(options.min_people, options.max_people + 1))
    names = list(options.motions)
    weights = np.array([options.motions[n] for n in names], float)
    back = np.array([np.cos(azimuth), 0.0, np.sin(azimuth)])      # from the scene to the camera
    side = np.cross(back, np.array([0.0, 1.0, 0.0]))
    slots = (np.arange(count) - (count - 1) / 2) * rng.uniform(1.0, 1.8)
    people = []
    for track_id in range(count):
        motion = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        clip = mocap.load_named_motion(motion)
        position = slots[track_id] * side + rng.uniform(-0.6, 0.6) * back + rng.normal(0, 0.15, 3)
        people.append(PersonTrack(
            track_id=track_id,
            motion=motion,
            start_time=float(rng.uniform(0, clip.duration)),
            speed=float(rng.uniform(0.8, 1.2)),
            heading=float(rng.uniform(0, 2 * np.pi)),
            position=position * np.array([1.0, 0.0, 1.0]),
            scale=float(rng.uniform(0.88, 1.1)),
            style=sample_style(rng),
        ))
    return people


def person_points(track: PersonTrack, num_frames: int, fps: float) -> list[dict[str, np.ndarray]]:
    """World body points of one person at every frame."""
    humanoid = _humanoid()
    clip = mocap.load_named_motion(track.motion)
    start_root = clip.pose(track.start_time).root_position * np.array([1.0, 0.0, 1.0])
    yaw = mocap.yaw_matrix(track.heading)
    frames = []
    for index in range(num_frames):
        pose = clip.pose(track.start_time + track.speed * index / fps)
        local = body_points(mocap.forward_kinematics(humanoid, pose))
        frames.append({name: yaw @ ((p - start_root) * track.scale) + track.position
                       for name, p in local.items()})
    return frames


_HUMANOID: list[mocap.Humanoid] = []


def _humanoid() -> mocap.Humanoid:
    if not _HUMANOID:
        _HUMANOID.append(mocap.load_humanoid())
    return _HUMANOID[0]


def heading_towards(motion: str, direction: np.ndarray) -> float:
    """Yaw that makes a clip's net root travel point along ``direction`` (x, z)."""
    offset = mocap.load_named_motion(motion).cycle_offset
    travel = np.arctan2(-offset[2], offset[0])                # the clip's own travel yaw
    return float(np.arctan2(-direction[2], direction[0]) - travel)


def set_crossing(people: list[PersonTrack], first: int, second: int, azimuth: float,
                 num_frames: int, fps: float, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Make ``second`` walk or run across the view and pass just in front of or behind
    ``first`` mid-video; returns its new body points."""
    back = np.array([np.cos(azimuth), 0.0, np.sin(azimuth)])
    side = np.cross(back, np.array([0.0, 1.0, 0.0]))
    walker = people[second]
    if walker.motion not in ("walk", "run"):
        walker.motion = "walk"
        walker.start_time = float(rng.uniform(0, mocap.load_named_motion("walk").duration))
    walker.heading = heading_towards(walker.motion, side * rng.choice([-1.0, 1.0]))
    walker.position = np.zeros(3)
    points = person_points(walker, num_frames, fps)
    first_points = person_points(people[first], num_frames, fps)
    middle = num_frames // 2
    gap = rng.uniform(0.35, 0.7) * rng.choice([-1.0, 1.0])
    meeting = first_points[middle]["pelvis"] + gap * back
    shift = (meeting - points[middle]["pelvis"]) * np.array([1.0, 0.0, 1.0])
    walker.position = shift
    return [{name: p + shift for name, p in frame.items()} for frame in points]


# ---------------------------------------------------------------------------------------
# background and camera


def sample_background(rng: np.random.Generator, wall_radius: float) -> Background:
    return Background(
        ground=random_texture(rng, 256, 256),
        ground_metres=float(rng.uniform(2.0, 6.0)),
        wall=random_texture(rng, 256, 768),
        wall_radius=wall_radius,
        wall_height=float(rng.uniform(3.0, 9.0)),
        wall_repeats=int(rng.integers(2, 6)),
        sky_top=rng.uniform(120, 255, 3),
        sky_bottom=rng.uniform(150, 255, 3),
        centre=np.zeros(3),
    )


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding."""
    if window <= 1 or len(values) < 2:
        return values
    pad = window // 2
    padded = np.concatenate([np.repeat(values[:1], pad, 0), values, np.repeat(values[-1:], pad, 0)])
    kernel = np.ones(window) / window
    flat = padded.reshape(len(padded), -1)
    out = np.stack([np.convolve(flat[:, i], kernel, mode="valid") for i in range(flat.shape[1])], 1)
    return out.reshape(values.shape)


def sample_cameras(rng: np.random.Generator, points: list[list[dict[str, np.ndarray]]],
                   options: SceneOptions, azimuth: float) -> list[Camera]:
    """A camera that follows the group with slow pan, orbit and zoom."""
    width, height, fps = options.width, options.height, options.fps
    num_frames = len(points[0])
    times = np.arange(num_frames) / fps
    pelvis = np.array([[frame["pelvis"] for frame in person] for person in points])   # (P, F, 3)
    body = np.array([[list(frame.values()) for frame in person] for person in points])  # (P, F, J, 3)
    centroid = pelvis.mean(axis=0) * np.array([1.0, 0.0, 1.0])                       # (F, 3)
    flat = (body - centroid[None, :, None]) * np.array([1.0, 0.0, 1.0])
    spread = np.linalg.norm(flat, axis=-1).max(axis=(0, 2))                          # (F,)
    tallest = body[..., 1].max(axis=(0, 2))                                          # (F,)

    focal = (height / 2) / np.tan(np.radians(rng.uniform(40, 60)) / 2)
    person_fraction = rng.uniform(0.45, 0.75)
    distance = np.maximum.reduce([
        np.full(num_frames, focal * 1.75 / (person_fraction * height)),  # standing person's share
        focal * (spread + 0.25) / (0.45 * width),           # everyone fits across
        focal * (tallest + 0.2) / (0.85 * height),          # jumps and raised arms fit
    ])
    distance = _smooth(distance, 9)
    centroid = _smooth(centroid, 9)

    elevation = np.radians(rng.uniform(2, 22))
    orbit = azimuth + rng.normal(0, 0.15) * times
    zoom = 1 + rng.uniform(0, 0.15) * np.sin(2 * np.pi * times / rng.uniform(2, 6) + rng.uniform(0, 2 * np.pi))
    pan_amplitude, pan_period = rng.uniform(0, 0.35), rng.uniform(2, 6)
    pan_phase = rng.uniform(0, 2 * np.pi)
    aim_height = rng.uniform(0.75, 1.0)

    cameras = []
    for index in range(num_frames):
        back = np.array([np.cos(orbit[index]), 0.0, np.sin(orbit[index])])
        side = np.cross(back, np.array([0.0, 1.0, 0.0]))
        pan = pan_amplitude * np.sin(2 * np.pi * times[index] / pan_period + pan_phase)
        target = centroid[index] + np.array([0.0, aim_height, 0.0]) + pan * side
        eye = target + distance[index] * (np.cos(elevation) * back + np.array([0.0, np.sin(elevation), 0.0]))
        cameras.append(Camera(eye=eye, target=target, focal=float(focal * zoom[index]),
                              width=width, height=height))
    return cameras


# ---------------------------------------------------------------------------------------
# hard cases


def plan_hard_frames(rng: np.random.Generator, num_frames: int, hard_rate: float) -> list[tuple[int, int]]:
    """Events as (first frame, length) of 1-2 frames, each followed by >= 2 clean frames,
    so every degraded frame t has clean frames at t-2 and t+2 (inside the video)."""
    # at each step an event (mean 1.5 degraded frames, 3.5 frames with its gap) starts with
    # probability q, else one clean frame passes: rate = 1.5 q / (1 + 2.5 q); saturates at 3/7
    rate = float(np.clip(hard_rate, 0.0, 1.0))
    start_probability = 1.0 if rate >= 0.6 else rate / (1.5 - 2.5 * rate)
    events: list[tuple[int, int]] = []
    frame = int(rng.integers(0, 3))
    while frame < num_frames:
        length = int(rng.integers(1, 3))
        if rate > 0 and rng.random() < start_probability:
            events.append((frame, min(length, num_frames - frame)))
            frame += length + 2
        else:
            frame += 1
    return events


def make_occluder(rng: np.random.Generator, frames: tuple[int, ...], centre: np.ndarray,
                  size: float) -> Occluder:
    size = max(size, 10.0)
    h = int(size * rng.uniform(0.7, 1.3))
    w = int(size * rng.uniform(0.7, 1.3))
    patch = random_texture(rng, h, w, kinds=("noise", "stripes", "bricks", "shapes", "gradient"))
    mask = np.zeros((h, w), np.uint8)
    shape = rng.integers(0, 3)
    if shape == 0:
        mask[:] = 1
    elif shape == 1:
        cv2.ellipse(mask, (w // 2, h // 2), (max(w // 2 - 1, 1), max(h // 2 - 1, 1)), 0, 0, 360, 1, -1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        radii = rng.uniform(0.7, 1.0, len(angles))
        polygon = np.stack([w / 2 + radii * (w / 2 - 1) * np.cos(angles),
                            h / 2 + radii * (h / 2 - 1) * np.sin(angles)], 1)
        cv2.fillPoly(mask, [polygon.astype(np.int32)], 1)
    speed = rng.uniform(0.1, 0.35) * size
    direction = rng.uniform(0, 2 * np.pi)
    return Occluder(frames=frames, patch=patch, mask=mask.astype(bool),
                    centre=np.asarray(centre, float) - speed * np.array([np.cos(direction), np.sin(direction)]) * (len(frames) - 1) / 2,
                    velocity=speed * np.array([np.cos(direction), np.sin(direction)]))


def sample_effect(rng: np.random.Generator, kind: str, width: int, severity: float = 1.0) -> FrameEffect:
    """Motion blur of 9-17 px or a defocus disc of radius 3-5.5 px at 320 px wide, times
    ``severity``."""
    unit = width / 320.0 * severity
    if kind == "blur":
        return FrameEffect("blur", float(rng.uniform(9, 17) * unit), float(rng.uniform(0, np.pi)))
    return FrameEffect("defocus", float(rng.uniform(3.0, 5.5) * unit))


def sample_hard_cases(rng: np.random.Generator, scene: Scene) -> None:
    """Fill ``scene.occluders`` and ``scene.effects`` (targets occluders at visible joints).

    An occluder is 0.3-0.55 of the target person's height (times ``severity``), so at
    severity >= 2 it hides most of the body for its 1-2 frames."""
    options = scene.options
    for first, length in plan_hard_frames(rng, scene.num_frames, options.hard_rate):
        frames = tuple(range(first, first + length))
        kind = ("occluder", "blur", "defocus")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        if kind != "occluder":
            effect = sample_effect(rng, kind, options.width, options.severity)
            for frame in frames:
                scene.effects[frame] = effect
            continue
        target = _occluder_target(rng, scene, frames[len(frames) // 2])
        if target is None:
            continue
        centre, person_height, person_centre = target
        # severe occluders aim closer to the body's middle (the joint pulled in by 1/severity)
        if options.severity > 1.0:
            centre = person_centre + (centre - person_centre) / options.severity
        size = rng.uniform(0.3, 0.55) * person_height * options.severity
        scene.occluders.append(make_occluder(rng, frames, centre + rng.normal(0, 0.1 * size, 2), size))


def _occluder_target(rng: np.random.Generator, scene: Scene, frame: int
                     ) -> tuple[np.ndarray, float, np.ndarray] | None:
    """(pixel of a random visible joint, its person's height in pixels, the centre of that
    person's visible joints), or None when no joint is in view."""
    camera = scene.cameras[frame]
    candidates = []
    for person in scene.points:
        names = ["nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                 "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                 "right_knee", "left_ankle", "right_ankle"]
        pixels, depth = camera.project(np.stack([person[frame][n] for n in names]))
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < camera.width) & \
                 (pixels[:, 1] >= 0) & (pixels[:, 1] < camera.height) & (depth > 0.1)
        if inside.any():
            height = float(np.ptp(pixels[:, 1])) + 1.0
            middle = (pixels[inside].min(axis=0) + pixels[inside].max(axis=0)) / 2
            candidates += [(pixels[i], height, middle) for i in np.flatnonzero(inside)]
    if not candidates:
        return None
    return candidates[int(rng.integers(0, len(candidates)))]


# ---------------------------------------------------------------------------------------


def sample_scene(rng: np.random.Generator, options: SceneOptions, num_frames: int) -> Scene:
    """Sample one video scene: people, crossing, camera path, background, hard cases."""
    azimuth = float(rng.uniform(0, 2 * np.pi))
    people = sample_people(rng, options, azimuth)
    points = [person_points(track, num_frames, options.fps) for track in people]
    crossing: tuple[int, ...] = ()
    if len(people) >= 2 and rng.random() < options.hard_rate:
        first, second = (int(i) for i in rng.choice(len(people), 2, replace=False))
        points[second] = set_crossing(people, first, second, azimuth, num_frames, options.fps, rng)
        crossing = (first, second)
    cameras = sample_cameras(rng, points, options, azimuth)
    max_distance = max(float(np.linalg.norm(c.eye * np.array([1, 0, 1]))) for c in cameras)
    background = sample_background(rng, wall_radius=max(12.0, max_distance + rng.uniform(4, 10)))
    scene = Scene(options=options, num_frames=num_frames, people=people, background=background,
                  cameras=cameras, points=points, crossing_tracks=crossing)
    sample_hard_cases(rng, scene)
    return scene
