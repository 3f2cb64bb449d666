"""Rendering vs annotations: joints land on bodies, occlusion flags match the pixels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from glsmamba.synth.annotate import frame_degradations, label_people
from glsmamba.synth.camera import Camera
from glsmamba.synth.render import OCCLUDER_LABEL, defocus, motion_blur, render_frame
from glsmamba.synth.scene import SceneOptions, plan_hard_frames, sample_scene

PLAIN = (255, 0, 255)   # a background colour no body part uses exactly


def _scene(seed: int, hard_rate: float, people=(1, 3), frames: int = 10):
    options = SceneOptions(width=160, height=120, min_people=people[0], max_people=people[1],
                           hard_rate=hard_rate)
    return sample_scene(np.random.default_rng([seed, 99]), options, frames)


def test_camera_projects_the_target_to_the_centre_and_rays_back():
    camera = Camera(eye=np.array([3.0, 1.5, 4.0]), target=np.array([0.0, 1.0, 0.0]), focal=200.0,
                    width=160, height=120)
    pixels, depth = camera.project(camera.target[None])
    np.testing.assert_allclose(pixels[0], camera.centre, atol=1e-9)
    assert depth[0] == pytest.approx(np.linalg.norm(camera.target - camera.eye))
    rays = camera.rays()
    point = camera.eye + 2.0 * rays[30, 100]      # a point on pixel (x=100, y=30)'s ray
    np.testing.assert_allclose(camera.project(point[None])[0][0], [100, 30], atol=1e-3)


def test_visible_joints_land_on_the_rendered_body():
    checked = 0
    for seed in range(3):
        scene = _scene(seed, hard_rate=0.0)
        for frame in (0, 5, 9):
            image, labels = render_frame(scene, frame, background=False, background_colour=PLAIN)
            for person in label_people(scene, frame, labels):
                for x, y, v in person.keypoints:
                    if v != 2:
                        continue
                    pixel = image[int(round(y)), int(round(x))].astype(int)
                    assert np.abs(pixel - PLAIN).sum() > 30, (seed, frame, x, y, pixel)
                    checked += 1
    assert checked > 100


def test_ears_are_never_annotated_and_off_image_joints_are_zero():
    scene = _scene(1, hard_rate=0.0)
    image, labels = render_frame(scene, 0, background=False)
    for person in label_people(scene, 0, labels):
        assert (person.keypoints[3:5] == 0).all()
        inside = person.keypoints[:, 2] > 0
        assert (person.keypoints[inside, 0] <= 159).all() and (person.keypoints[inside, 1] <= 119).all()
        x, y, w, h = person.bbox
        assert x >= 0 and y >= 0 and x + w <= 159 + 1e-6 and y + h <= 119 + 1e-6


def test_occluded_flag_matches_occluder_pixels():
    flagged = unflagged = 0
    for seed in range(6):
        scene = _scene(seed, hard_rate=1.0)
        for occluder in scene.occluders:
            for frame in occluder.frames:
                with_occluders, labels = render_frame(scene, frame, background=False, effects=False)
                without, _ = render_frame(scene, frame, background=False, occluders=False, effects=False)
                left, top = occluder.top_left(frame)
                for person in label_people(scene, frame, labels):
                    for (x, y, v), by in zip(person.keypoints, person.occluded_by):
                        if v == 0:
                            continue
                        col, row = int(round(x)), int(round(y))
                        if by == 1:
                            assert v == 1
                            # the pixel shows some occluder's texture, not the person
                            assert labels[row, col] == OCCLUDER_LABEL
                            if 0 <= row - top < occluder.mask.shape[0] and 0 <= col - left < occluder.mask.shape[1] \
                                    and occluder.mask[row - top, col - left]:
                                np.testing.assert_array_equal(with_occluders[row, col],
                                                              occluder.patch[row - top, col - left])
                            flagged += 1
                        elif by == 0:
                            assert v == 2
                            # nothing was pasted over a joint that is marked visible
                            np.testing.assert_array_equal(with_occluders[row, col], without[row, col])
                            unflagged += 1
    assert flagged >= 3 and unflagged > 20


def test_degradations_are_recorded_per_frame():
    scene = _scene(2, hard_rate=1.0)
    seen = set()
    for frame in range(scene.num_frames):
        image, labels = render_frame(scene, frame)
        people = label_people(scene, frame, labels)
        found = frame_degradations(scene, frame, people)
        seen.update(found)
        assert ("blur" in found) == (frame in scene.effects and scene.effects[frame].kind == "blur")
        assert ("defocus" in found) == (frame in scene.effects and scene.effects[frame].kind == "defocus")
        assert ("occluded" in found) == any((p.occluded_by == 1).any() for p in people)
        assert ("crossing" in found) == any((p.occluded_by == 2).any() for p in people)
        if frame in scene.effects:   # the blur really softens the frame
            sharp, _ = render_frame(scene, frame, effects=False)
            sharpness = [cv2.Laplacian(cv2.cvtColor(i, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() for i in (image, sharp)]
            assert sharpness[0] < 0.7 * sharpness[1]
    assert seen & {"blur", "defocus"}


def test_hard_frames_leave_t_plus_minus_two_clean_and_follow_the_rate():
    for rate in (0.1, 0.3):
        degraded = total = 0
        for seed in range(40):
            events = plan_hard_frames(np.random.default_rng(seed), 40, rate)
            hard = np.zeros(40, bool)
            for first, length in events:
                assert 1 <= length <= 2
                hard[first:first + length] = True
            for t in np.flatnonzero(hard):
                for neighbour in (t - 2, t + 2):
                    if 0 <= neighbour < 40:
                        assert not hard[neighbour], (seed, t)
            degraded += hard.sum()
            total += 40
        assert abs(degraded / total - rate) < 0.07, (rate, degraded / total)
    assert plan_hard_frames(np.random.default_rng(0), 40, 0.0) == []


def test_blur_kernels_keep_brightness():
    image = np.full((40, 50, 3), 100, np.uint8)
    image[18:22, 23:27] = 220                                   # a small bright square
    for blurred in (motion_blur(image, 9.0, 0.7), defocus(image, 4.0)):
        assert abs(float(blurred.mean()) - float(image.mean())) < 1.0   # kernels sum to 1
        assert blurred.max() < 200 and blurred[20, 25].max() > 105      # spread out, centred


def test_crossing_flag_matches_the_pixels_of_the_person_in_front():
    import dataclasses

    hidden = shown = same = differ = 0
    for seed in range(8):
        scene = _scene(seed, hard_rate=1.0, people=(2, 3), frames=12)
        for frame in range(0, 12, 2):
            full, labels = render_frame(scene, frame, background=False, background_colour=PLAIN,
                                        occluders=False, effects=False)
            for person in label_people(scene, frame, labels):
                index = person.track_id
                alone = dataclasses.replace(scene, people=[scene.people[index]], points=[scene.points[index]])
                solo, _ = render_frame(alone, frame, background=False, background_colour=PLAIN,
                                       occluders=False, effects=False)
                for (x, y, v), by in zip(person.keypoints, person.occluded_by):
                    if v == 0:
                        continue
                    pixel = (int(round(y)), int(round(x)))
                    # a joint on the anti-aliased rim of its own thin limb blends with what
                    # is behind it; "the same" allows that blend, not another body on top
                    change = int(np.abs(full[pixel].astype(int) - solo[pixel]).max())
                    equal = change <= 40
                    if by == 2:
                        assert v == 1
                        hidden += 1
                        differ += change > 0     # someone else is painted over the joint
                    else:
                        shown += 1
                        same += equal            # nothing else is painted over the joint
    assert hidden >= 5
    assert differ >= 0.9 * hidden and same >= 0.98 * shown, (hidden, differ, shown, same)


def test_severity_scales_the_first_hard_case_and_keeps_the_plan():
    def scene(seed: int, severity: float):
        options = SceneOptions(width=160, height=120, min_people=1, max_people=2, hard_rate=1.0,
                               severity=severity)
        return sample_scene(np.random.default_rng([seed, 7]), options, 12)

    def first_event(s):
        events = [(min(o.frames), "occluder", o) for o in s.occluders]
        events += [(frame, e.kind, e) for frame, e in s.effects.items()]
        return min(events, key=lambda item: item[0])

    kinds = set()
    for seed in range(8):
        mild, severe = scene(seed, 1.0), scene(seed, 2.5)
        # the people, cameras and the first event are the same draws; only sizes scale
        # (an occluder's texture has as many random values as pixels, so later draws differ)
        np.testing.assert_allclose(mild.cameras[0].eye, severe.cameras[0].eye)
        (frame, kind, small), (frame2, kind2, big) = first_event(mild), first_event(severe)
        assert (frame, kind) == (frame2, kind2)
        kinds.add(kind)
        if kind == "occluder":
            if min(small.mask.shape) > 12:        # above the 10 px floor on the size
                assert 2.0 < np.sqrt(big.mask.size / small.mask.size) < 3.0
        else:
            assert big.size == pytest.approx(2.5 * small.size)
    assert "occluder" in kinds and kinds & {"blur", "defocus"}


def test_severe_occluders_hide_most_joints_of_someone():
    options = SceneOptions(width=160, height=120, min_people=1, max_people=1, hard_rate=1.0,
                           severity=2.5)
    hidden_shares = []
    for seed in range(3):
        scene = sample_scene(np.random.default_rng([seed, 11]), options, 12)
        for occluder in scene.occluders:
            frame = occluder.frames[0]
            _, labels = render_frame(scene, frame)
            for person in label_people(scene, frame, labels):
                annotated = person.keypoints[:, 2] > 0
                if annotated.sum() >= 6:
                    hidden_shares.append((person.occluded_by[annotated] == 1).mean())
    assert hidden_shares and float(np.median(hidden_shares)) >= 0.5
