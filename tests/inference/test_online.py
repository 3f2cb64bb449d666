"""Online (causal) mode: frame t is estimated from frames t-2δ..t only, and yielded at once.

The causality checks change the frames after t and require the output of frame t to stay
bit-identical; the centred model is the sanity check that the same change does reach it.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from glsmamba.data.windows import clamped_indices
from glsmamba.errors import ConfigError
from glsmamba.inference import PoseEstimator
from glsmamba.inference.clips import stream_clips
from glsmamba.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(input_size=(48, 64), dim=16, d_state=1, gsm_depth=1, lrm_depth=1, mlp_ratio=1.0)
CHANGED_FROM = 4          # frames 4.. differ between the two videos


def as_table(boxes):
    return {t: (np.asarray([b], np.float32), np.asarray([0.9], np.float32))
            for t, b in enumerate(boxes)}


def stir(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights of a visible size (the initialisation's near-zero residual branches
    would mix frames by ~1e-6 only), the same for every window."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def tiny_model(window: str, name: str = "glsmamba-tiny") -> torch.nn.Module:
    kwargs = dict(TINY) if name == "glsmamba-tiny" else dict(input_size=(48, 64))
    return stir(create_model(name, clip_window=window, **kwargs).eval())


def two_videos(count: int = 8):
    """Two clips of ``count`` frames, equal up to frame CHANGED_FROM - 1."""
    rng = np.random.default_rng(0)
    video = torch.randn(count, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    other = video.clone()
    other[CHANGED_FROM:] = torch.from_numpy(rng.normal(size=other[CHANGED_FROM:].shape)).float()
    return video, other


def per_frame_heatmaps(model, video: torch.Tensor, delta: int, window: str) -> list[torch.Tensor]:
    """Heatmaps of every frame t of ``video`` (N, 3, H, W) from its clip of that window."""
    last = len(video) - 1
    with torch.no_grad():
        return [model(video[clamped_indices(t, delta, last, window)][None])[0]
                for t in range(len(video))]


@pytest.mark.parametrize("name", ["glsmamba-tiny", "vitpose-tiny"])
def test_causal_model_output_ignores_later_frames(name):
    video, other = two_videos()
    causal = tiny_model("causal", name)
    a = per_frame_heatmaps(causal, video, 2, "causal")
    b = per_frame_heatmaps(causal, other, 2, "causal")
    for t in range(CHANGED_FROM):
        assert torch.equal(a[t], b[t]), t
    assert not torch.equal(a[CHANGED_FROM], b[CHANGED_FROM])
    if name == "vitpose-tiny":
        return                                     # single-frame: nothing else to see
    # sanity: the centred model of the same weights does see frames t+1..t+2
    centred = tiny_model("centered", name)
    a = per_frame_heatmaps(centred, video, 2, "centered")
    b = per_frame_heatmaps(centred, other, 2, "centered")
    assert not torch.equal(a[CHANGED_FROM - 1], b[CHANGED_FROM - 1])
    assert (a[CHANGED_FROM - 1] - b[CHANGED_FROM - 1]).abs().max() > 1e-4


def test_causal_model_estimates_the_last_frame():
    model = tiny_model("causal")
    assert model.target_index == model.num_frames - 1 == 4
    clip = torch.randn(1, 5, 3, 64, 48)
    with torch.no_grad():
        feats = model.encode(clip)
        tokens = model.forward_blocks(model.embed(feats))
        expected = model.head(tokens[:, -1])
        assert torch.equal(model.forward_features(feats), expected)
    with pytest.raises(ConfigError, match="clip window"):
        create_model("glsmamba-tiny", clip_window="future", **TINY)


def test_stream_clips_causal_yields_each_frame_when_read():
    pulled = []

    def frames():
        for i in range(6):
            pulled.append(i)
            yield i

    got = []
    for t, window in stream_clips(frames(), delta=2, window="causal"):
        assert len(pulled) == t + 1                     # no frame after t was read
        got.append((t, list(window)))
    assert [t for t, _ in got] == list(range(6))
    assert got[0][1] == [0, 0, 0, 0, 0] and got[2][1] == [0, 0, 0, 1, 2]
    assert got[5][1] == [1, 2, 3, 4, 5]


@pytest.fixture()
def causal_checkpoint(tiny_config, tmp_path):
    """A random tiny checkpoint trained (here: saved) with data.window = causal."""
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    config = copy.deepcopy(tiny_config)
    config["data"]["window"] = "causal"
    model = stir(build_model(config, log=lambda *_: None))
    save_checkpoint(tmp_path / "causal", "last", model, {"config": config})
    return tmp_path / "causal"


def changed_frames(frames):
    rng = np.random.default_rng(1)
    return frames[:CHANGED_FROM] + [rng.integers(0, 255, f.shape, dtype=np.uint8)
                                    for f in frames[CHANGED_FROM:]]


def test_predict_video_causal_is_online_and_ignores_later_frames(causal_checkpoint, walking):
    estimator = PoseEstimator.from_checkpoint(causal_checkpoint, device="cpu", detector=None,
                                              warn=lambda message: None)
    assert estimator.window == "causal" and estimator.model.clip_window == "causal"
    assert estimator.delay_frames == 0 and estimator.target_index == 2 * estimator.delta
    frames, boxes = walking
    pulled = []

    def generate(source):
        for frame in source:
            pulled.append(1)
            yield frame

    first = [r.people[0].keypoints for r in
             _checked(estimator.predict_video(generate(frames), as_table(boxes)), pulled)]
    pulled.clear()
    second = [r.people[0].keypoints for r in
              _checked(estimator.predict_video(generate(changed_frames(frames)),
                                               as_table(boxes)), pulled)]
    for t in range(CHANGED_FROM):
        assert np.array_equal(first[t], second[t]), t
    assert not np.array_equal(first[CHANGED_FROM], second[CHANGED_FROM])
    # predict_clip takes frames t-2δ..t and agrees with the stream
    t = 5
    clip = frames[t - 2 * estimator.delta: t + 1]
    assert np.allclose(estimator.predict_clip(clip, [boxes[t]])[0], first[t], atol=1e-4)
    with pytest.raises(ConfigError, match=r"t-2\.\.t\+0"):
        estimator.predict_clip(frames[:2], [boxes[0]])


def _checked(results, pulled):
    """Yield the results, checking each came with no frame after it read (0 delay)."""
    for result in results:
        assert result.delay_frames == 0 and len(pulled) == result.index + 1
        yield result


def test_predict_video_centred_waits_and_sees_later_frames(estimator, walking):
    frames, boxes = walking
    delta = estimator.delta
    assert estimator.window == "centered" and estimator.delay_frames == delta
    results = list(estimator.predict_video(frames, as_table(boxes)))
    delays = [r.delay_frames for r in results]
    assert delays == [delta] * (len(frames) - delta) + list(range(delta - 1, -1, -1))
    stir(estimator.model)
    first = [r.people[0].keypoints for r in estimator.predict_video(frames, as_table(boxes))]
    second = [r.people[0].keypoints for r in
              estimator.predict_video(changed_frames(frames), as_table(boxes))]
    assert not np.array_equal(first[CHANGED_FROM - 1], second[CHANGED_FROM - 1])


def test_window_must_match_the_model(estimator):
    with pytest.raises(ConfigError, match="clip_window"):
        PoseEstimator(estimator.model, estimator.codec, estimator.delta, window="causal",
                      detector=None)
