"""Composable clip transforms for top-down video pose estimation.

Each transform is a small callable ``results -> results`` on a plain dict. Keys used:

* inputs (filled by :class:`~glsmamba.data.clip_dataset.ClipDataset`): ``frame_paths``
  (T,), ``bbox_xywh`` (4,), ``keypoints`` (K, 2) image pixels, ``visible`` (K,),
  ``bbox_score``, ``index``, ``rng`` (``np.random.Generator``, random transforms draw only
  from it so a seeded generator gives the same clip every time);
* ``frames`` (list of T (H, W, 3) uint8 RGB images; repeated clamped frames share one array),
  ``image_size`` (W, H) of the estimated frame (``target_index``; default the centre);
* ``center`` (2,), ``scale`` (2,) crop size in image pixels, ``rotation`` degrees,
  ``flipped`` bool; ``keypoints`` stay in (flipped) image pixels until :class:`ClipAffine`
  maps them to crop pixels and stores the 2x3 ``affine``;
* ``heatmaps`` (K, h, w), ``target_weight`` (K,), ``clip`` (T, 3, H, W) float32 tensor.

Conventions are the common top-down ones (HRNet / mmpose): the box centre is ``x + w/2``,
a horizontal flip maps ``x -> W - 1 - x``, rotation is in degrees and positive rotations
turn the crop counter-clockwise on screen, the crop centre is the output centre (``W/2``; UDP:
``(W-1)/2``).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from glsmamba.data.codec import HeatmapCodec
from glsmamba.errors import DataError

MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

# half-body crop centre: "extent" = centre of the selected joints' bounding box (ours),
# "mean" = mean of the selected joints (HRNet's / DCPose's ``half_body_transform``)
HALF_BODY_CENTERS = ("extent", "mean")
# HRNet / DCPose try the upper body first when ``np.random.randn() < 0.5``: P = Phi(0.5)
HRNET_UPPER_PROB = 0.5 * (1.0 + math.erf(0.5 / math.sqrt(2.0)))  # 0.6915


# ---------------------------------------------------------------------------- geometry
def get_affine_matrix(center: Sequence[float], scale: Sequence[float], rot: float,
                      output_size: Sequence[int], inv: bool = False, udp: bool = False) -> np.ndarray:
    """2x3 matrix taking image pixels to crop pixels (or back with ``inv=True``).

    The box of size ``scale`` (W, H pixels) around ``center``, rotated by ``rot`` degrees, fills
    the ``output_size`` (W, H) crop. ``udp`` uses the unbiased data processing geometry
    (pixel centres at ``0 .. size-1``).
    """
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    out_w, out_h = float(output_size[0]), float(output_size[1])
    if udp:
        zoom = np.array([(out_w - 1) / scale[0], (out_h - 1) / scale[1]])
        dst_center = np.array([(out_w - 1) / 2, (out_h - 1) / 2])
    else:
        zoom = np.array([out_w / scale[0], out_h / scale[1]])
        dst_center = np.array([out_w / 2, out_h / 2])
    theta = np.deg2rad(rot)
    cos, sin = np.cos(theta), np.sin(theta)
    rotate = np.array([[cos, sin], [-sin, cos]])        # R(-rot)
    linear = zoom[:, None] * rotate
    matrix = np.concatenate([linear, (dst_center - linear @ center)[:, None]], axis=1)
    return invert_affine(matrix) if inv else matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]], axis=1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to points (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def flip_matrix(image_width: float) -> np.ndarray:
    """2x3 matrix of the horizontal flip ``x -> W - 1 - x``."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])


def compose_affine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Matrix of ``second(first(p))``."""
    linear = second[:, :2] @ first[:, :2]
    return np.concatenate([linear, (second[:, :2] @ first[:, 2] + second[:, 2])[:, None]], axis=1)


def crop_to_image(keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, rotation,
                  input_size: Sequence[int], udp: bool = False, flip_width=None) -> np.ndarray:
    """Crop-pixel keypoints back to image pixels (inverse of :class:`ClipAffine`).

    Works on one person ((K, 2), ``center``/``scale`` (2,), scalar ``rotation``) or a batch
    ((N, K, 2), (N, 2), (N, 2), (N,)). ``flip_width`` (scalar or (N,)): image width of samples
    that were flipped before cropping, to return coordinates in the unflipped image; ``None``
    or a value <= 0 means not flipped.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if keypoints.ndim == 2:
        inverse = get_affine_matrix(center, scale, float(np.asarray(rotation)), input_size, inv=True, udp=udp)
        points = apply_affine(keypoints, inverse)
        if flip_width is not None and float(flip_width) > 0:
            points = apply_affine(points, flip_matrix(float(flip_width)))
        return points
    rotation = np.broadcast_to(np.asarray(rotation, dtype=np.float64), (len(keypoints),))
    widths = [None] * len(keypoints) if flip_width is None else np.broadcast_to(
        np.asarray(flip_width, dtype=np.float64), (len(keypoints),))
    return np.stack([crop_to_image(k, c, s, r, input_size, udp, w)
                     for k, c, s, r, w in zip(keypoints, center, scale, rotation, widths)])


def box_to_center_scale(bbox_xywh: Sequence[float], aspect_ratio: float = 192 / 256,
                        padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Box -> centre (2,) and crop size (2,) padded to ``aspect_ratio`` (w/h) and enlarged."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w * padding, h * padding], dtype=np.float32)


# ---------------------------------------------------------------------------- transforms
class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        self.transforms = list(transforms)

    def __call__(self, results: dict) -> dict:
        for transform in self.transforms:
            results = transform(results)
        return results

    def __repr__(self) -> str:
        """Each step with its settings (the feature cache keys on this text, so a change
        of e.g. ``udp``, ``sigma`` or the input size must change it)."""
        inner = ", ".join(_describe_step(t) for t in self.transforms)
        return f"Compose([{inner}])"


def _describe_step(step) -> str:
    """``Name(key=value, ...)`` of a transform's plain settings, in a stable order."""
    fields = []
    for key, value in sorted(getattr(step, "__dict__", {}).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, HeatmapCodec):
            value = _describe_step(value)
        elif isinstance(value, np.ndarray):
            value = np.round(value.astype(np.float64), 6).tolist()
        elif not isinstance(value, (bool, int, float, str, tuple, list, type(None))):
            continue
        fields.append(f"{key}={value}")
    return f"{type(step).__name__}({', '.join(fields)})"


def _rng(results: dict) -> np.random.Generator:
    rng = results.get("rng")
    if rng is None:
        rng = np.random.default_rng()
        results["rng"] = rng
    return rng


class LoadClip:
    """Read every frame of ``frame_paths`` with OpenCV (BGR -> RGB); one read per distinct path."""

    def __init__(self, data_root: str | None = None, to_rgb: bool = True):
        self.data_root = data_root
        self.to_rgb = to_rgb

    def _read(self, path: str, record: str) -> np.ndarray:
        return read_image(path, record, self.to_rgb)

    def __call__(self, results: dict) -> dict:
        record = f"sample {results.get('index', '?')}"
        root = results.get("data_root") or self.data_root
        cache: dict[str, np.ndarray] = {}
        frames, paths = [], []
        for path in results["frame_paths"]:
            full = os.path.join(root, path) if root else path
            if full not in cache:
                cache[full] = self._read(full, record)
            frames.append(cache[full])
            paths.append(full)
        results["frames"] = frames
        target = results.get("target_index", len(frames) // 2)   # the estimated frame
        centre = frames[target]
        results["image_size"] = (centre.shape[1], centre.shape[0])
        expected = results.get("expected_size")     # (W, H) from the annotation's image record
        if expected is not None and tuple(int(v) for v in expected) != results["image_size"]:
            raise DataError(f"image is {results['image_size'][0]}x{results['image_size'][1]} but "
                            f"its annotation says {int(expected[0])}x{int(expected[1])}",
                            paths[target], record)
        for frame, full in zip(frames, paths):       # one affine crops every frame of the clip
            if frame.shape[:2] != centre.shape[:2]:
                raise DataError(f"frame is {frame.shape[1]}x{frame.shape[0]} but the clip's centre "
                                f"frame is {centre.shape[1]}x{centre.shape[0]}", full, record)
        return results


JPEG_SOI, PNG_SIGNATURE = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"
_NAMED_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def image_problem(data: bytes, name: str = "") -> str | None:
    """Why an encoded image cannot be trusted, checked before decoding; None if it can.

    OpenCV decodes a file cut short into a partly grey image with only libjpeg's unnamed
    "premature end" warning, so: a JPEG needs an end-of-image marker after its last scan,
    a PNG an IEND chunk after its last IDAT (bytes after either are fine). A file named
    ``.jpg`` / ``.jpeg`` / ``.png`` must hold a JPEG or a PNG (the content decides which).
    """
    if data.startswith(JPEG_SOI):
        last_scan = data.rfind(b"\xff\xda")         # none at all: the decoder says why
        if last_scan >= 0 and data.find(b"\xff\xd9", last_scan) < 0:
            return "truncated JPEG (no end-of-image marker after the last scan)"
        return None
    if data.startswith(PNG_SIGNATURE):
        last_data = data.rfind(b"IDAT")
        if last_data < 0 or data.find(b"IEND", last_data) < 0:
            return "truncated PNG (no IEND chunk after the image data)"
        return None
    expected = _NAMED_FORMATS.get(os.path.splitext(name)[1].lower())
    if expected:
        return f"not a {expected} file (neither a JPEG start-of-image marker nor a PNG signature)"
    return None


def image_file_problem(path: str | os.PathLike, tail: int = 4096) -> str | None:
    """:func:`image_problem` of a file without reading all of it when it is sound: the
    start and the last ``tail`` bytes answer for a whole JPEG / PNG; only a file whose tail
    lacks the end marker is read whole (so bytes after the marker still pass)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return "empty file"
        handle.seek(max(0, size - tail))
        end = handle.read()
    if head.startswith(JPEG_SOI) and b"\xff\xd9" in end:
        return None
    if head.startswith(PNG_SIGNATURE) and b"IEND" in end:
        return None
    with open(path, "rb") as handle:
        return image_problem(handle.read(), str(path))


DEFAULT_MAX_IMAGE_PIXELS = 100_000_000       # 100 megapixels: 4x an 8K frame


def max_image_pixels() -> int:
    """The largest image (width x height) decoded: ``GLSMAMBA_MAX_IMAGE_PIXELS`` or 100 M."""
    text = os.environ.get("GLSMAMBA_MAX_IMAGE_PIXELS", "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"GLSMAMBA_MAX_IMAGE_PIXELS must be a positive whole number, got {text!r}")
    return value


_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) an encoded PNG (IHDR) or JPEG (SOF segment) declares, read from its
    header without decoding; None for other formats or when the header cannot be found."""
    import struct
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if not data.startswith(JPEG_SOI):
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:                       # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if marker in _JPEG_SOF and position + 9 <= len(data):
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height
        if marker == 0xDA or length < 2:         # scan data before any frame header
            return None
        position += 2 + length
    return None


def read_image(path: str, record: str | None = None, to_rgb: bool = True) -> np.ndarray:
    """Decode an image file (H, W, 3) uint8; a missing, unreadable, truncated or
    undecodable file, or one whose header declares more than :func:`max_image_pixels`
    pixels (refused before decoding), is a DataError naming it."""
    if not os.path.isfile(path):
        raise DataError("image file not found", path, record)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise DataError(f"cannot read image: {err.strerror or err}", path, record) from None
    problem = image_problem(data, path)
    if problem:
        raise DataError(problem, path, record)
    size = image_dimensions(data)
    if size is not None and size[0] * size[1] > max_image_pixels():
        raise DataError(f"image header declares {size[0]}x{size[1]} pixels, more than the limit "
                        f"of {max_image_pixels()} (GLSMAMBA_MAX_IMAGE_PIXELS); not decoded",
                        path, record)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError("cannot decode image (corrupt or unsupported format)", path, record)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if to_rgb else image


class BoxToCenterScale:
    """``bbox_xywh`` -> ``center``, ``scale`` (crop size in pixels); resets rotation/flip."""

    def __init__(self, aspect_ratio: float = 192 / 256, padding: float = 1.25):
        self.aspect_ratio = aspect_ratio
        self.padding = padding

    def __call__(self, results: dict) -> dict:
        box = np.asarray(results["bbox_xywh"], dtype=np.float32)
        if box.shape != (4,) or box[2] <= 0 or box[3] <= 0:
            paths = results.get("frame_paths") or ["<no image>"]
            raise DataError(f"box must be (x, y, w, h) with positive size, got {box.tolist()}",
                            str(paths[min(results.get("target_index", len(paths) // 2),
                                          len(paths) - 1)]),
                            f"sample {results.get('index', '?')}")
        results["center"], results["scale"] = box_to_center_scale(box, self.aspect_ratio, self.padding)
        results.setdefault("rotation", 0.0)
        results.setdefault("flipped", False)
        return results


class RandomFlip:
    """Mirror the whole clip with probability ``p``: joints swap sides, ``x -> W - 1 - x``.

    Images are not copied here; :class:`ClipAffine` folds the flip into its warp.
    """

    def __init__(self, flip_indices: Sequence[int], p: float = 0.5):
        self.flip_indices = list(flip_indices)
        self.p = p

    def __call__(self, results: dict) -> dict:
        if _rng(results).random() >= self.p:
            return results
        width = results["image_size"][0]
        keypoints = np.asarray(results["keypoints"], dtype=np.float32).copy()
        keypoints[:, 0] = width - 1 - keypoints[:, 0]
        results["keypoints"] = keypoints[self.flip_indices]
        results["visible"] = np.asarray(results["visible"])[self.flip_indices]
        center = np.asarray(results["center"], dtype=np.float32).copy()
        center[0] = width - 1 - center[0]
        results["center"] = center
        results["flipped"] = not results.get("flipped", False)
        return results


class RandomHalfBody:
    """With probability ``p`` (and more than ``min_joints`` annotated joints), crop to the
    upper or lower body (upper first with probability ``upper_prob``).

    The crop is the selected joints' extent padded to the aspect ratio and enlarged by
    ``padding``; its centre is the centre of that extent (``center="extent"``, default) or
    the mean of the selected joints (``center="mean"``, HRNet / DCPose). Their
    ``upper_prob`` is :data:`HRNET_UPPER_PROB` (0.69).
    """

    def __init__(self, upper_body: Sequence[int], lower_body: Sequence[int], p: float = 0.3,
                 min_joints: int = 8, upper_prob: float = 0.5, aspect_ratio: float = 192 / 256,
                 padding: float = 1.5, center: str = "extent"):
        if center not in HALF_BODY_CENTERS:
            raise ValueError(f"half-body centre {center!r}: choose one of {HALF_BODY_CENTERS}")
        if not 0.0 <= upper_prob <= 1.0:
            raise ValueError(f"half-body upper_prob must be in [0, 1], got {upper_prob}")
        self.center = center
        self.upper_body = list(upper_body)
        self.lower_body = list(lower_body)
        self.p = p
        self.min_joints = min_joints
        self.upper_prob = upper_prob
        self.aspect_ratio = aspect_ratio
        self.padding = padding

    def _pick(self, visible: np.ndarray, rng: np.random.Generator) -> list[int]:
        upper = [k for k in self.upper_body if visible[k] > 0]
        lower = [k for k in self.lower_body if visible[k] > 0]
        if rng.random() < self.upper_prob and len(upper) > 2:
            return upper
        return lower if len(lower) > 2 else upper

    def __call__(self, results: dict) -> dict:
        visible = np.asarray(results["visible"])
        rng = _rng(results)
        if (visible > 0).sum() <= self.min_joints or rng.random() >= self.p:
            return results
        chosen = self._pick(visible, rng)
        if len(chosen) < 2:
            return results
        points = np.asarray(results["keypoints"], dtype=np.float32)[chosen]
        low, high = points.min(axis=0), points.max(axis=0)
        w, h = high - low
        if w <= 0 and h <= 0:
            return results
        centre = points.mean(axis=0) if self.center == "mean" else (low + high) / 2
        results["center"] = centre.astype(np.float32)
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        else:
            w = h * self.aspect_ratio
        results["scale"] = np.array([w, h], dtype=np.float32) * self.padding
        results["half_body"] = True
        return results


class RandomScaleRotation:
    """Scale factor ~ clip(N(1, sigma), 1 +- sigma); rotation ~ clip(N(0, rot_sigma), +-rot_max)
    applied with probability ``rot_prob``."""

    def __init__(self, scale_sigma: float = 0.35, rot_sigma: float = 45.0, rot_max: float = 90.0,
                 rot_prob: float = 0.6):
        self.scale_sigma = scale_sigma
        self.rot_sigma = rot_sigma
        self.rot_max = rot_max
        self.rot_prob = rot_prob

    def __call__(self, results: dict) -> dict:
        rng = _rng(results)
        factor = np.clip(1.0 + rng.standard_normal() * self.scale_sigma,
                         1.0 - self.scale_sigma, 1.0 + self.scale_sigma)
        results["scale"] = (np.asarray(results["scale"], dtype=np.float32) * factor).astype(np.float32)
        rotation = float(np.clip(rng.standard_normal() * self.rot_sigma, -self.rot_max, self.rot_max))
        results["rotation"] = rotation if rng.random() < self.rot_prob else 0.0
        return results


class ClipAffine:
    """Crop every frame with the one affine of the centre frame's box (and flip, if any)."""

    def __init__(self, input_size: Sequence[int] = (192, 256), udp: bool = False):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.udp = udp

    def matrix(self, results: dict) -> np.ndarray:
        """Image pixels (of the unflipped frames) -> crop pixels."""
        crop = get_affine_matrix(results["center"], results["scale"], results.get("rotation", 0.0),
                                 self.input_size, udp=self.udp)
        if results.get("flipped", False):
            crop = compose_affine(flip_matrix(results["image_size"][0]), crop)
        return crop

    def __call__(self, results: dict) -> dict:
        matrix = self.matrix(results)
        warped: dict[int, np.ndarray] = {}
        frames = []
        for frame in results["frames"]:
            if id(frame) not in warped:
                warped[id(frame)] = cv2.warpAffine(frame, matrix, self.input_size, flags=cv2.INTER_LINEAR)
            frames.append(warped[id(frame)])
        results["frames"] = frames
        # keypoints are already in flipped image coordinates: only the crop part applies
        crop = get_affine_matrix(results["center"], results["scale"], results.get("rotation", 0.0),
                                 self.input_size, udp=self.udp)
        results["keypoints"] = apply_affine(results["keypoints"], crop).astype(np.float32)
        results["affine"] = matrix
        results["input_size"] = self.input_size
        return results


class GenerateTarget:
    """``heatmaps`` (K, h, w) and ``target_weight`` (K,) = codec weight x per-joint weight."""

    def __init__(self, codec: HeatmapCodec, joint_weights: Sequence[float] | None = None):
        self.codec = codec
        self.joint_weights = None if joint_weights is None else np.asarray(joint_weights, dtype=np.float32)

    def __call__(self, results: dict) -> dict:
        heatmaps, weights = self.codec.encode(results["keypoints"], results["visible"])
        if self.joint_weights is not None:
            weights = weights * self.joint_weights
        results["heatmaps"] = heatmaps
        results["target_weight"] = weights.astype(np.float32)
        return results


class NormalizeToTensor:
    """``frames`` -> ``clip`` (T, 3, H, W) float32, ``(pixel - mean) / std`` per RGB channel."""

    def __init__(self, mean: Sequence[float] = MEAN_RGB, std: Sequence[float] = STD_RGB):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, results: dict) -> dict:
        stacked = np.stack(results["frames"])                                  # (T, H, W, 3)
        clip = torch.from_numpy(stacked).permute(0, 3, 1, 2).float()          # (T, 3, H, W)
        results["clip"] = (clip - self.mean) / self.std
        return results
