"""Motion files, URDF parsing and forward kinematics of the DeepMimic humanoid."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glsmamba.errors import DataError
from glsmamba.synth import mocap
from glsmamba.synth.body import KEYPOINT_NAMES, body_points, keypoints_3d


def _random_quaternions(rng, count):
    q = rng.normal(size=(count, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_quaternion_matrix_is_a_rotation_and_slerp_hits_its_ends():
    rng = np.random.default_rng(0)
    for q0, q1 in zip(_random_quaternions(rng, 20), _random_quaternions(rng, 20)):
        matrix = mocap.quat_to_matrix(q0)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(matrix) == pytest.approx(1.0)
        np.testing.assert_allclose(mocap.quat_to_matrix(mocap.quat_slerp(q0, q1, 0.0)), matrix, atol=1e-9)
        np.testing.assert_allclose(mocap.quat_to_matrix(mocap.quat_slerp(q0, q1, 1.0)),
                                   mocap.quat_to_matrix(q1), atol=1e-9)
        # the midpoint is equally far (in angle) from both ends
        mid = mocap.quat_slerp(q0, q1, 0.5)
        assert abs(abs(np.dot(mid, q0)) - abs(np.dot(mid, mocap.quat_normalize(q1)))) < 1e-9


def test_bundled_clips_parse_with_the_deepmimic_layout():
    names = mocap.available_motions()
    for expected in ("walk", "run", "backflip", "cartwheel", "dance_a", "getup_faceup"):
        assert expected in names
    walk = mocap.load_named_motion("walk")
    assert walk.frames.shape[1] == 44 and walk.loop
    # walking moves the root forward (+x) by about 1.2 m per cycle, the height stays ~0.85 m
    assert 0.8 < walk.cycle_offset[0] < 1.6 and abs(walk.cycle_offset[2]) < 0.2
    assert abs(walk.frames[:, 2].mean() - 0.85) < 0.1


def test_pose_at_key_frame_times_is_the_key_frame_and_loops_with_offset():
    clip = mocap.load_named_motion("walk")
    third = float(clip.frames[:3, 0].sum())          # start time of key frame 3
    pose = clip.pose(third)
    np.testing.assert_allclose(pose.root_position, clip.frames[3, 1:4], atol=1e-9)
    np.testing.assert_allclose(pose.local_rotations["right_knee"], clip.frames[3, 20:21], atol=1e-9)
    np.testing.assert_allclose(pose.local_rotations["chest"], mocap.quat_to_matrix(clip.frames[3, 8:12]), atol=1e-9)
    later = clip.pose(third + clip.duration)
    np.testing.assert_allclose(later.root_position, pose.root_position + clip.cycle_offset, atol=1e-9)


def _bone_lengths(points):
    pairs = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
             ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("neck", "head_top")]
    return np.array([np.linalg.norm(points[a] - points[b]) for a, b in pairs])


def test_forward_kinematics_is_rigid_and_matches_the_scaled_urdf():
    humanoid = mocap.load_humanoid()
    clip = mocap.load_named_motion("cartwheel")
    lengths = [_bone_lengths(body_points(mocap.forward_kinematics(humanoid, clip.pose(t))))
               for t in np.linspace(0, clip.duration, 9)]
    np.testing.assert_allclose(lengths, np.repeat(lengths[:1], 9, axis=0), atol=1e-9)
    # elbow -> wrist is 1.035788 in the URDF, scaled by 0.25
    assert lengths[0][1] == pytest.approx(1.035788 * 0.25)


def test_forward_kinematics_matches_pybullet():
    pybullet = pytest.importorskip("pybullet")
    from scipy.spatial.transform import Rotation

    humanoid = mocap.load_humanoid()
    pose = mocap.load_named_motion("spinkick").pose(0.61)
    client = pybullet.connect(pybullet.DIRECT)
    try:
        body = pybullet.loadURDF(str(mocap.pybullet_data_dir() / "humanoid" / "humanoid.urdf"),
                                 globalScaling=0.25, useFixedBase=True, physicsClientId=client)
        pybullet.resetBasePositionAndOrientation(
            body, pose.root_position.tolist(), Rotation.from_matrix(pose.root_rotation).as_quat().tolist(),
            physicsClientId=client)
        links = {}
        for index in range(pybullet.getNumJoints(body, physicsClientId=client)):
            info = pybullet.getJointInfo(body, index, physicsClientId=client)
            joint, link = info[1].decode(), info[12].decode()
            links[link] = index
            value = pose.local_rotations.get(joint)
            if value is not None and value.shape == (3, 3):
                pybullet.resetJointStateMultiDof(body, index, Rotation.from_matrix(value).as_quat().tolist(),
                                                 physicsClientId=client)
            elif value is not None:
                pybullet.resetJointState(body, index, float(value[0]), physicsClientId=client)
        ours = mocap.forward_kinematics(humanoid, pose)
        for link, index in links.items():
            state = pybullet.getLinkState(body, index, computeForwardKinematics=True, physicsClientId=client)
            np.testing.assert_allclose(ours[link][1], state[4], atol=1e-5, err_msg=link)
            rotation = np.array(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            np.testing.assert_allclose(ours[link][0], rotation, atol=1e-5, err_msg=link)
    finally:
        pybullet.disconnect(client)


def test_keypoints_are_anatomically_ordered_for_a_standing_pose():
    humanoid = mocap.load_humanoid()
    points = body_points(mocap.forward_kinematics(humanoid, mocap.load_named_motion("walk").pose(0.0)))
    keypoints = dict(zip(KEYPOINT_NAMES, keypoints_3d(points)))
    height = {name: point[1] for name, point in keypoints.items()}   # y is up
    assert height["head_top"] > height["nose"] > height["head_bottom"] > height["left_hip"]
    assert height["left_shoulder"] > height["left_hip"] > height["left_knee"] > height["left_ankle"] > 0
    # the humanoid faces +x and has its right side at +z
    assert keypoints["nose"][0] > keypoints["head_bottom"][0]
    assert keypoints["right_shoulder"][2] > keypoints["left_shoulder"][2]
    assert 1.4 < height["head_top"] < 1.8


def test_bad_motion_file_names_the_file_and_the_frame(tmp_path):
    path = tmp_path / "humanoid3d_broken.txt"
    frames = [[0.1] + [0.0] * 43, [0.1] + [0.0] * 42]
    path.write_text(json.dumps({"Loop": "wrap", "Frames": frames}))
    with pytest.raises(DataError) as err:
        mocap.load_motion(path)
    assert str(path) in str(err.value) and "Frames[1]" in str(err.value)
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read motion file"):
        mocap.load_motion(path)


def test_small_urdf_written_here_parses_into_a_chain(tmp_path):
    urdf = tmp_path / "arm.urdf"
    urdf.write_text("""<robot name="arm">
      <link name="base"/><link name="upper"/><link name="lower"/>
      <joint name="elbow" type="revolute"><parent link="upper"/><child link="lower"/>
        <origin xyz="0 -2 0"/><axis xyz="0 0 1"/></joint>
      <joint name="shoulder" type="spherical"><parent link="base"/><child link="upper"/>
        <origin xyz="0 4 0"/></joint>
    </robot>\x00""")
    arm = mocap.load_humanoid(urdf, scale=0.5)
    assert [j.name for j in arm.joints] == ["shoulder", "elbow"]     # parents first
    pose = mocap.Pose(np.zeros(3), np.eye(3), {"shoulder": np.eye(3), "elbow": np.array([np.pi / 2])})
    frames = mocap.forward_kinematics(arm, pose)
    np.testing.assert_allclose(frames["lower"][1], [0, 1, 0])   # 4*0.5 up, then 2*0.5 down
    np.testing.assert_allclose(frames["lower"][0] @ [0, -1, 0], [1, 0, 0], atol=1e-12)  # bent 90 deg about z
    urdf.write_text("<robot><joint name='x'><parent link='a'/></joint></robot>")
    with pytest.raises(DataError, match="x"):
        mocap.load_humanoid(urdf)
