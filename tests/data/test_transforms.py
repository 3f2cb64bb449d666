"""Clip transforms: affine geometry, flip, half body, scale/rotation, loading, determinism."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from glsmamba.data.clip_dataset import build_pipeline
from glsmamba.data.metainfo import load_metainfo
from glsmamba.data.transforms import (BoxToCenterScale, ClipAffine, Compose, LoadClip, RandomFlip,
                                      RandomHalfBody, RandomScaleRotation, apply_affine,
                                      box_to_center_scale, crop_to_image, get_affine_matrix)
from glsmamba.errors import DataError

INFO = load_metainfo("posetrack")
INPUT = (192, 256)


def _hrnet_reference(center, scale, rot, output_size):
    """Three-point construction of the common top-down affine (HRNet), independent of ours."""
    rad = np.deg2rad(rot)
    src_dir = np.array([0 * np.cos(rad) - (-0.5 * scale[0]) * np.sin(rad),
                        0 * np.sin(rad) + (-0.5 * scale[0]) * np.cos(rad)])
    dst_dir = np.array([0, -0.5 * output_size[0]])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], src[1] = center, center + src_dir
    dst[0] = [output_size[0] * 0.5, output_size[1] * 0.5]
    dst[1] = dst[0] + dst_dir
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src, dst)


def _results(keypoints=None, width=320, height=240, frames=3, rng=0):
    if keypoints is None:
        keypoints = np.random.default_rng(11).uniform([100, 60], [220, 200], size=(17, 2)).astype(np.float32)
    images = [np.full((height, width, 3), 30 * t, np.uint8) for t in range(frames)]
    for image in images:
        cv2.circle(image, (150, 120), 6, (255, 255, 255), -1)
    return {"frames": images, "image_size": (width, height), "bbox_xywh": np.array([110, 50, 100, 160], np.float32),
            "keypoints": keypoints, "visible": np.ones(17, np.float32), "bbox_score": 1.0,
            "rng": np.random.default_rng(rng)}


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("rot", [0.0, 30.0, -75.0])
def test_affine_matches_three_point_reference(rot):
    center, scale = np.array([150.0, 120.0]), np.array([150.0, 200.0])
    ours = get_affine_matrix(center, scale, rot, INPUT)
    np.testing.assert_allclose(ours, _hrnet_reference(center, scale, rot, INPUT), atol=1e-3)


@pytest.mark.parametrize("udp", [False, True])
def test_affine_round_trip(udp):
    rng = np.random.default_rng(0)
    for _ in range(10):
        center = rng.uniform(50, 500, 2)
        scale = rng.uniform(40, 400) * np.array([0.75, 1.0])
        rot = rng.uniform(-90, 90)
        image_points = rng.uniform(0, 600, size=(17, 2))
        crop = apply_affine(image_points, get_affine_matrix(center, scale, rot, INPUT, udp=udp))
        back = crop_to_image(crop, center, scale, rot, INPUT, udp=udp)
        np.testing.assert_allclose(back, image_points, atol=1e-3)
        inverse = get_affine_matrix(center, scale, rot, INPUT, inv=True, udp=udp)
        np.testing.assert_allclose(apply_affine(crop, inverse), image_points, atol=1e-3)
    # the box centre lands on the crop centre
    matrix = get_affine_matrix([100, 80], [90, 120], 20, INPUT)
    np.testing.assert_allclose(apply_affine(np.array([100.0, 80.0]), matrix), [96, 128], atol=1e-9)


def test_crop_to_image_batched():
    rng = np.random.default_rng(1)
    centers, scales, rots = rng.uniform(50, 300, (4, 2)), rng.uniform(60, 200, (4, 2)), rng.uniform(-40, 40, 4)
    points = rng.uniform(0, 192, (4, 17, 2))
    batched = crop_to_image(points, centers, scales, rots, INPUT)
    for i in range(4):
        np.testing.assert_allclose(batched[i], crop_to_image(points[i], centers[i], scales[i], rots[i], INPUT))


def test_box_to_center_scale():
    center, scale = box_to_center_scale([10, 20, 30, 80], 0.75, 1.25)
    np.testing.assert_allclose(center, [25, 60])
    np.testing.assert_allclose(scale, [60 * 1.25, 80 * 1.25])
    _, wide = box_to_center_scale([0, 0, 120, 40], 0.75, 1.0)
    np.testing.assert_allclose(wide, [120, 160])
    with pytest.raises(DataError, match="positive size"):
        BoxToCenterScale()({"bbox_xywh": [0, 0, 0, 5], "index": 3})
    with pytest.raises(DataError, match=r"b\.jpg \[sample 3\]: box must be"):
        BoxToCenterScale()({"bbox_xywh": [0, 0, 4, -1], "index": 3, "frame_paths": ["a.jpg", "b.jpg", "c.jpg"]})


# ------------------------------------------------------------------ flip
def test_flip_twice_is_identity():
    base = BoxToCenterScale()(_results())
    flip = RandomFlip(INFO.flip_indices, p=1.0)
    twice = flip(flip({**base, "keypoints": base["keypoints"].copy()}))
    np.testing.assert_allclose(twice["keypoints"], base["keypoints"])
    np.testing.assert_allclose(twice["center"], base["center"])
    assert twice["flipped"] is False
    crop_once = ClipAffine(INPUT)({**BoxToCenterScale()(_results()), "rng": None})
    crop_twice = ClipAffine(INPUT)(twice)
    np.testing.assert_array_equal(crop_twice["frames"][1], crop_once["frames"][1])


def test_flip_swaps_pairs_and_mirrors():
    results = BoxToCenterScale()(_results())
    original = results["keypoints"].copy()
    results["visible"][3] = 0
    flipped = RandomFlip(INFO.flip_indices, p=1.0)(results)
    left, right = INFO.index("left_shoulder"), INFO.index("right_shoulder")
    np.testing.assert_allclose(flipped["keypoints"][left], [319 - original[right, 0], original[right, 1]])
    np.testing.assert_allclose(flipped["keypoints"][0], [319 - original[0, 0], original[0, 1]])
    assert flipped["visible"][4] == 0 and flipped["visible"][3] == 1     # ears swapped
    assert RandomFlip(INFO.flip_indices, p=0.0)(_results())["keypoints"] is not None


def test_flipped_udp_crop_is_the_mirror_image():
    image = np.random.default_rng(2).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    base = BoxToCenterScale()({**_results(), "frames": [image]})
    plain = ClipAffine(INPUT, udp=True)({**base})
    flipped = ClipAffine(INPUT, udp=True)(RandomFlip(INFO.flip_indices, p=1.0)({**base}))
    diff = np.abs(flipped["frames"][0][:, ::-1].astype(int) - plain["frames"][0].astype(int))
    assert diff.mean() < 1.0


# ------------------------------------------------------------------ augmentations
def test_half_body_crops_a_body_half():
    results = BoxToCenterScale()(_results())
    keypoints = results["keypoints"]
    out = RandomHalfBody(INFO.upper_body, INFO.lower_body, p=1.0)({**results})
    assert out.get("half_body")
    upper, lower = keypoints[list(INFO.upper_body)], keypoints[list(INFO.lower_body)]
    centres = [(p.min(0) + p.max(0)) / 2 for p in (upper, lower)]
    assert any(np.allclose(out["center"], c, atol=1e-4) for c in centres)
    assert out["scale"][0] / out["scale"][1] == pytest.approx(0.75)
    few = {**results, "visible": np.r_[np.ones(8), np.zeros(9)].astype(np.float32)}
    assert "half_body" not in RandomHalfBody(INFO.upper_body, INFO.lower_body, p=1.0)(few)


def test_scale_rotation_ranges():
    transform = RandomScaleRotation(0.35, 45, 90, 0.6)
    rng = np.random.default_rng(3)
    factors, rotations = [], []
    for _ in range(2000):
        out = transform({"scale": np.array([100.0, 100.0]), "rng": rng})
        factors.append(out["scale"][0] / 100)
        rotations.append(out["rotation"])
    factors, rotations = np.array(factors), np.array(rotations)
    assert factors.min() >= 0.65 - 1e-6 and factors.max() <= 1.35 + 1e-6
    assert np.abs(rotations).max() <= 90
    assert 0.35 < np.mean(rotations == 0) < 0.45          # p(no rotation) = 0.4
    assert 30 < rotations[rotations != 0].std() < 50


# ------------------------------------------------------------------ clip affine
def test_same_affine_on_every_frame():
    results = BoxToCenterScale()(_results(frames=3))
    results["rotation"] = 25.0
    out = ClipAffine(INPUT)(results)
    matrix = out["affine"]
    source = _results(frames=3)["frames"]
    expected_marker = apply_affine(np.array([150.0, 120.0]), matrix)
    for crop, frame in zip(out["frames"], source):
        np.testing.assert_array_equal(crop, cv2.warpAffine(frame, matrix, INPUT, flags=cv2.INTER_LINEAR))
        ys, xs = np.nonzero(crop[..., 0] > 250)
        assert len(xs) > 20
        np.testing.assert_allclose([xs.mean(), ys.mean()], expected_marker, atol=0.6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augmented_keypoints_map_back_to_the_image(seed):
    results = _results(rng=seed)
    original = results["keypoints"].copy()
    pipeline = Compose([BoxToCenterScale(), RandomFlip(INFO.flip_indices, p=0.5),
                        RandomScaleRotation(), ClipAffine(INPUT)])
    out = pipeline(results)
    width = 320 if out["flipped"] else None
    back = crop_to_image(out["keypoints"], out["center"], out["scale"], out["rotation"], INPUT, flip_width=width)
    expected = original[INFO.flip_indices] if out["flipped"] else original
    np.testing.assert_allclose(back, expected, atol=1e-3)


# ------------------------------------------------------------------ loading and determinism
def _write_clip(tmp_path, n=3):
    paths = []
    for t in range(n):
        path = tmp_path / f"{t:06d}.jpg"
        image = np.zeros((120, 160, 3), np.uint8)
        image[..., 2] = 200                       # red in BGR
        image[10:20, 10 + 20 * t: 30 + 20 * t] = 255
        cv2.imwrite(str(path), image)
        paths.append(str(path))
    return paths


def test_load_clip_reads_rgb_once_per_path(tmp_path):
    paths = _write_clip(tmp_path)
    out = LoadClip()({"frame_paths": [paths[0], paths[0], paths[1]]})
    assert out["frames"][0] is out["frames"][1] and out["image_size"] == (160, 120)
    assert out["frames"][2][60, 80, 0] > 190 and out["frames"][2][60, 80, 2] < 20   # RGB order
    out = LoadClip(data_root=str(tmp_path))({"frame_paths": ["000002.jpg"]})
    assert out["frames"][0].shape == (120, 160, 3)


def test_load_clip_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.jpg \[sample 4\]: image file not found"):
        LoadClip()({"frame_paths": [str(tmp_path / "missing.jpg")], "index": 4})
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"corrupt\.jpg.*cannot decode"):
        LoadClip()({"frame_paths": [str(corrupt)], "index": 0})


def test_train_pipeline_is_deterministic_under_a_seed(tmp_path):
    paths = _write_clip(tmp_path, 5)
    pipeline = build_pipeline("train", metainfo=INFO, half_body_p=0.5)
    keypoints = np.random.default_rng(0).uniform(20, 100, (17, 2)).astype(np.float32)

    def run(seed):
        return pipeline({"frame_paths": paths, "bbox_xywh": np.array([20, 10, 90, 100], np.float32),
                         "keypoints": keypoints.copy(), "visible": np.ones(17, np.float32),
                         "bbox_score": 1.0, "rng": np.random.default_rng(seed)})

    a, b = run(5), run(5)
    assert a["clip"].shape == (5, 3, 256, 192)
    assert a["clip"].equal(b["clip"]) and np.array_equal(a["heatmaps"], b["heatmaps"])
    assert a["rotation"] == b["rotation"] and a["flipped"] == b["flipped"]
    others = [run(s) for s in range(6, 12)]
    assert any(not o["clip"].equal(a["clip"]) for o in others)
