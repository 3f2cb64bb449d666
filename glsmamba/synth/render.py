"""numpy/cv2 rasteriser: textured ground and wall, shaded capsule people drawn with a
painter's algorithm over all people's parts, occluders, motion blur and defocus.

Next to the colour image it fills a label map (uint8, same size): 0 background,
``i + 1`` for person ``i``, ``OCCLUDER_LABEL`` for occluders; the annotator reads joint
visibility from it.
"""
from __future__ import annotations

import cv2
import numpy as np

from glsmamba.synth.body import Part, body_parts
from glsmamba.synth.camera import Camera
from glsmamba.synth.scene import Background, FrameEffect, Occluder, Scene

OCCLUDER_LABEL = 255
SHIFT = 4                    # cv2 sub-pixel bits
ONE = 1 << SHIFT
LIGHT = np.array([-0.45, -0.7])  # image-space direction the light comes from (up-left)


# ---------------------------------------------------------------------------------------
# background


COARSE = 4   # the smooth per-pixel quantities are computed on a 1/COARSE grid, then resized


def render_background(camera: Camera, background: Background) -> np.ndarray:
    """(H, W, 3) uint8: textured ground plane y = 0, a cylindrical wall, sky above.

    A ray meets the ground before the wall iff it is below y = 0 at the wall, so the wall
    height of each pixel's ray (smooth in the image) selects ground / wall / sky. Smooth
    quantities are computed on a coarse grid and resized; the ground texture is one exact
    perspective warp (the ground is a plane).
    """
    width, height = camera.width, camera.height
    rays = _coarse_rays(camera)                                     # (h, w, 3)
    wall_y, wall_x = _wall_hits(camera, background, rays)           # (h, w) each
    norm = np.linalg.norm(rays, axis=-1)
    ground_distance = camera.eye[1] * norm / np.maximum(-rays[..., 1], 1e-4)
    fog = np.clip((ground_distance - 5.0) / 25.0, 0.0, 0.75)
    weight = np.clip(rays[..., 1] / norm, 0, 1)[..., None]          # sky: 0 at horizon, 1 at zenith
    sky = background.sky_bottom + weight * (background.sky_top - background.sky_bottom)
    coarse = np.concatenate([np.stack([wall_y, wall_x, fog], axis=-1), sky], axis=-1).astype(np.float32)
    full = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)   # (H, W, 6)
    wall_y, wall_x, fog = full[..., 0], full[..., 1], full[..., 2]

    image = np.clip(full[..., 3:], 0, 255).astype(np.uint8)
    rows = background.wall.shape[0]
    map_y = np.clip((1 - wall_y / background.wall_height) * (rows - 1), 0, rows - 1)
    wall = cv2.remap(background.wall, np.ascontiguousarray(wall_x), map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_WRAP)
    np.copyto(image, wall, where=(wall_y < background.wall_height)[..., None])
    np.copyto(image, _ground(camera, background, fog), where=(wall_y < 0)[..., None])
    return image


def _coarse_rays(camera: Camera) -> np.ndarray:
    """World rays at the full-resolution positions cv2.resize samples the coarse grid at."""
    h, w = -(-camera.height // COARSE), -(-camera.width // COARSE)
    scale_x, scale_y = camera.width / w, camera.height / h
    cx, cy = camera.centre
    xs = ((np.arange(w) + 0.5) * scale_x - 0.5 - cx) / camera.focal
    ys = ((np.arange(h) + 0.5) * scale_y - 0.5 - cy) / camera.focal
    grid = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.ones((1, 1))), axis=-1)
    return grid @ camera.rotation                                   # (h, w, 3)


def _wall_hits(camera: Camera, background: Background, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Height and texture column where each ray meets the wall cylinder (far root)."""
    ex = camera.eye[0] - background.centre[0]
    ez = camera.eye[2] - background.centre[2]
    dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
    a = dx * dx + dz * dz + 1e-9
    b = 2 * (ex * dx + ez * dz)
    c = ex * ex + ez * ez - background.wall_radius ** 2
    t = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0))) / (2 * a)
    hit_x, hit_z = ex + t * dx, ez + t * dz
    # angle measured from the view direction, so the +-pi seam is behind the camera
    view = camera.target - camera.eye
    angle = np.angle(np.exp(1j * (np.arctan2(hit_z, hit_x) - np.arctan2(view[2], view[0]))))
    cols = background.wall.shape[1]
    offset = (np.arctan2(view[2], view[0]) / (2 * np.pi)) % 1.0
    wall_x = (angle / (2 * np.pi) + offset) * background.wall_repeats * cols
    return camera.eye[1] + t * dy, wall_x


def _ground(camera: Camera, background: Background, fog: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the ground texture warped onto the image by its homography, faded
    toward its mean colour by ``fog`` (H, W) in [0, 1]."""
    size = background.ground.shape[0]
    per_metre = size / background.ground_metres
    ex, ey, ez = camera.eye
    # [u', v', w] = M [x, y, 1], texture coordinate = (u'/w, v'/w); w = ray's y component
    plane = np.array([[-per_metre * ey, per_metre * ex, 0.0],
                      [0.0, per_metre * ez, -per_metre * ey],
                      [0.0, 1.0, 0.0]])
    cx, cy = camera.centre
    intrinsics_inv = np.array([[1 / camera.focal, 0, -cx / camera.focal],
                               [0, 1 / camera.focal, -cy / camera.focal], [0, 0, 1]])
    matrix = plane @ camera.rotation.T @ intrinsics_inv
    texels = cv2.warpPerspective(background.ground, matrix, (camera.width, camera.height),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_WRAP)
    haze = np.empty_like(texels)
    haze[:] = np.round(background.ground_mean).astype(np.uint8)
    return cv2.blendLinear(texels, haze, np.ascontiguousarray(1.0 - fog), np.ascontiguousarray(fog))


# ---------------------------------------------------------------------------------------
# people


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> cv2 fixed point (``SHIFT`` fractional bits)."""
    return np.round(np.asarray(points) * ONE).astype(np.int64)


def _tup(point) -> tuple[int, int]:
    return int(point[0]), int(point[1])


def _colour(value) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(value, 0, 255))


def draw_capsule(image: np.ndarray, labels: np.ndarray, p0: np.ndarray, p1: np.ndarray,
                 radius: float, colour: np.ndarray, label: int) -> None:
    """A shaded tube: dark rim, base colour, a highlight toward the light."""
    radius = max(radius, 1.0)
    a, b = _fixed(p0), _fixed(p1)
    thick = max(int(round(2 * radius)), 2)
    cv2.line(labels, _tup(a), _tup(b), label, thick, cv2.LINE_8, SHIFT)
    cv2.line(image, _tup(a), _tup(b), _colour(colour * 0.55), thick, cv2.LINE_AA, SHIFT)
    if thick > 3:
        cv2.line(image, _tup(a), _tup(b), _colour(colour), thick - 2, cv2.LINE_AA, SHIFT)
    if radius >= 2.5:
        offset = _fixed(LIGHT * radius * 0.35)
        cv2.line(image, _tup(a + offset), _tup(b + offset), _colour(colour * 1.2 + 25),
                 max(int(radius * 0.6), 1), cv2.LINE_AA, SHIFT)


def draw_polygon(image: np.ndarray, labels: np.ndarray, pixels: np.ndarray, radius: float,
                 colour: np.ndarray, label: int) -> None:
    polygon = _fixed(pixels).astype(np.int32)
    hull = cv2.convexHull(polygon)
    thick = max(int(round(2 * radius)), 1)
    cv2.fillConvexPoly(labels, hull, label, cv2.LINE_8, SHIFT)
    cv2.polylines(labels, [hull], True, label, thick, cv2.LINE_8, SHIFT)
    cv2.polylines(image, [hull], True, _colour(colour * 0.55), thick, cv2.LINE_AA, SHIFT)
    cv2.fillConvexPoly(image, hull, _colour(colour), cv2.LINE_AA, SHIFT)


def draw_head(image: np.ndarray, labels: np.ndarray, part: Part, camera: Camera,
              hair: np.ndarray, label: int) -> None:
    """Skin sphere with hair at the back and eyes on the face: shows where it faces."""
    centre3, forward3, up3 = part.points
    forward, up = forward3 - centre3, up3 - centre3
    side = np.cross(forward, up)
    r = part.radius
    hair3 = centre3 + r * (0.3 * up - 0.35 * forward)
    eyes3 = [centre3 + r * (0.8 * forward + 0.15 * up + s * 0.38 * side) for s in (-1, 1)]
    pixels, depth = camera.project(np.stack([centre3, hair3, *eyes3, centre3 + r * forward]))
    radius_px = max(camera.focal * r / max(depth[0], 1e-3), 1.5)
    hair_in_front = depth[1] < depth[0]
    centre = _tup(_fixed(pixels[0]))
    hair_circle = (_tup(_fixed(pixels[1])), int(round(radius_px * 0.92 * ONE)))
    cv2.circle(labels, centre, int(round(radius_px * ONE)), label, -1, cv2.LINE_8, SHIFT)
    cv2.circle(labels, hair_circle[0], hair_circle[1], label, -1, cv2.LINE_8, SHIFT)
    if not hair_in_front:
        cv2.circle(image, hair_circle[0], hair_circle[1], _colour(hair), -1, cv2.LINE_AA, SHIFT)
    cv2.circle(image, centre, int(round(radius_px * ONE)), _colour(part.colour * 0.6), -1, cv2.LINE_AA, SHIFT)
    cv2.circle(image, centre, int(round((radius_px - 1) * ONE)), _colour(part.colour), -1, cv2.LINE_AA, SHIFT)
    if hair_in_front:
        cv2.circle(image, hair_circle[0], hair_circle[1], _colour(hair), -1, cv2.LINE_AA, SHIFT)
    eye_radius = max(radius_px * 0.16, 0.8)
    for pixel, eye_depth in zip(pixels[2:4], depth[2:4]):
        if eye_depth < depth[0]:
            cv2.circle(image, _tup(_fixed(pixel)), int(round(eye_radius * ONE)), (20, 20, 20), -1,
                       cv2.LINE_AA, SHIFT)


def project_parts(parts: list[Part], camera: Camera) -> list[tuple[Part, np.ndarray, float, float]]:
    """(part, pixels (P, 2), mean depth, radius in pixels) of each part, in one projection.
    A head is placed by its centre (its first point)."""
    anchors = [part.points[:1] if part.kind == "head" else part.points for part in parts]
    pixels, depth = camera.project(np.concatenate(anchors))
    projected, start = [], 0
    for part, anchor in zip(parts, anchors):
        stop = start + len(anchor)
        mean_depth = float(depth[start:stop].mean())
        radius = camera.focal * part.radius / max(mean_depth, 1e-3)
        projected.append((part, pixels[start:stop], mean_depth, radius))
        start = stop
    return projected


def draw_people(image: np.ndarray, labels: np.ndarray, scene: Scene, frame: int) -> None:
    """All parts of all people in the frame, far to near."""
    camera = scene.cameras[frame]
    queue = []
    for index, (track, points) in enumerate(zip(scene.people, scene.points)):
        parts = body_parts(points[frame], track.style, track.scale)
        queue += [(index, *item) for item in project_parts(parts, camera)]
    queue.sort(key=lambda item: -item[3])
    for index, part, pixels, depth, radius in queue:
        if depth < 0.2:
            continue
        label = index + 1
        if part.kind == "head":
            draw_head(image, labels, part, camera, scene.people[index].style.hair, label)
        elif part.kind == "polygon":
            draw_polygon(image, labels, pixels, radius, part.colour, label)
        else:
            draw_capsule(image, labels, pixels[0], pixels[1], radius, part.colour, label)


def draw_shadows(image: np.ndarray, scene: Scene, frame: int) -> None:
    """Soft dark ellipses on the ground under each person."""
    camera = scene.cameras[frame]
    overlay = np.zeros(image.shape[:2], np.float32)
    for points in scene.points:
        feet = (points[frame]["left_ankle"] + points[frame]["right_ankle"]) / 2
        centre = np.array([feet[0], 0.0, feet[2]])
        ring = np.stack([centre + np.array([0.25 * np.cos(a), 0.0, 0.2 * np.sin(a)])
                         for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)])
        pixels, depth = camera.project(ring)
        if (depth > 0.2).all():
            cv2.fillConvexPoly(overlay, _fixed(pixels).astype(np.int32), 1.0, cv2.LINE_AA, SHIFT)
    overlay = cv2.GaussianBlur(overlay, (0, 0), 2.0)
    image[:] = (image * (1 - 0.25 * overlay[..., None])).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# occluders and degradations


def draw_occluder(image: np.ndarray, labels: np.ndarray, occluder: Occluder, frame: int) -> None:
    """Paste the occluder's patch where its mask is set (clipped to the image)."""
    left, top = occluder.top_left(frame)
    h, w = occluder.mask.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, image.shape[0]), min(left + w, image.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    mask = occluder.mask[y0 - top:y1 - top, x0 - left:x1 - left]
    image[y0:y1, x0:x1][mask] = occluder.patch[y0 - top:y1 - top, x0 - left:x1 - left][mask]
    labels[y0:y1, x0:x1][mask] = OCCLUDER_LABEL


def motion_blur(image: np.ndarray, length: float, angle: float) -> np.ndarray:
    size = max(int(np.ceil(length)) | 1, 3)
    kernel = np.zeros((size, size), np.float32)
    half = (size - 1) / 2
    direction = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    start = np.array([half, half]) - direction
    end = np.array([half, half]) + direction
    cv2.line(kernel, _tup(_fixed(start)), _tup(_fixed(end)), 1.0, 1, cv2.LINE_AA, SHIFT)
    kernel /= max(float(kernel.sum()), 1e-6)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def defocus(image: np.ndarray, radius: float) -> np.ndarray:
    size = int(np.ceil(radius)) * 2 + 1
    kernel = np.zeros((size, size), np.float32)
    cv2.circle(kernel, (size // 2 * ONE, size // 2 * ONE), int(radius * ONE), 1.0, -1, cv2.LINE_AA, SHIFT)
    kernel /= float(kernel.sum())
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def apply_effect(image: np.ndarray, effect: FrameEffect) -> np.ndarray:
    if effect.kind == "blur":
        return motion_blur(image, effect.size, effect.angle)
    return defocus(image, effect.size)


# ---------------------------------------------------------------------------------------


def render_frame(scene: Scene, frame: int, background: bool = True, occluders: bool = True,
                 effects: bool = True, background_colour: tuple[int, int, int] = (128, 128, 128)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 BGR, labels (H, W) uint8) of one frame.

    ``background=False`` paints a plain ``background_colour`` instead of the textures;
    ``occluders`` / ``effects`` switch the hard cases off (used by tests and previews).
    """
    camera = scene.cameras[frame]
    if background:
        image = render_background(camera, scene.background)
        draw_shadows(image, scene, frame)
    else:
        image = np.empty((camera.height, camera.width, 3), np.uint8)
        image[:] = background_colour
    labels = np.zeros((camera.height, camera.width), np.uint8)
    draw_people(image, labels, scene, frame)
    if occluders:
        for occluder in scene.occluders:
            if frame in occluder.frames:
                draw_occluder(image, labels, occluder, frame)
    if effects and frame in scene.effects:
        image = apply_effect(image, scene.effects[frame])
    return image, labels
