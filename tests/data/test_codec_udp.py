"""UDP (unbiased data processing) in the codec: round trips and the flip test's shift.

A mirrored crop maps crop pixel x to W - 1 - x. Under UDP the heatmap's array flip is the
exact image of that mirror, so the flip test needs no shift; under the standard mapping
the array flip lands 1 - w/W heatmap pixels off and HRNet's one-pixel shift leaves a
quarter-pixel (one crop pixel at stride 4) error. These tests measure both.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from glsmamba.data.codec import HeatmapCodec, flip_back
from glsmamba.data.metainfo import load_metainfo
from glsmamba.data.decoding import predict_heatmaps

FLIP = load_metainfo("posetrack").flip_indices
IN, HM = (192, 256), (48, 64)


def _codec(udp: bool) -> HeatmapCodec:
    return HeatmapCodec(IN, HM, sigma=2.0, unbiased=True, udp=udp)


def _keypoints(seed=0, n=17):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(30, IN[0] - 30, n), rng.uniform(30, IN[1] - 30, n)], axis=1)


def _mirror(points):
    out = points.copy()
    out[:, 0] = IN[0] - 1 - out[:, 0]
    return out[FLIP]


def test_flip_shift_comes_from_the_codec():
    assert _codec(True).flip_shift == 0
    assert _codec(False).flip_shift == 1


@pytest.mark.parametrize("udp", [True, False])
def test_encode_decode_round_trip(udp):
    codec = _codec(udp)
    points = _keypoints()
    heatmaps, weights = codec.encode(points, np.ones(17))
    assert weights.all()
    decoded, _ = codec.decode(heatmaps[None], method="dark")
    assert np.abs(decoded[0] - points).max() < 0.05            # crop pixels


def _flip_round_trip_error(codec: HeatmapCodec, shift: bool | None = None) -> float:
    """Encode a pose and its mirror, flip the mirror's maps back, merge, decode."""
    points = _keypoints(seed=1)
    direct, _ = codec.encode(points, np.ones(17))
    mirrored, _ = codec.encode(_mirror(points), np.ones(17))
    merged = codec.merge_flip(direct[None], mirrored[None], FLIP, shift=shift)
    back = flip_back(mirrored[None], FLIP)
    if shift if shift is not None else codec.flip_shift:
        back = np.concatenate([back[..., :1], back[..., :-1]], axis=-1)
    decoded_back, _ = codec.decode(back, method="dark")
    decoded_merged, _ = codec.decode(merged, method="dark")
    assert np.abs(decoded_merged[0] - points).max() <= np.abs(decoded_back[0] - points).max() + 0.05
    return float(np.abs(decoded_back[0, :, 0] - points[:, 0]).max())


def test_flip_round_trip_udp_is_exact_and_standard_is_not():
    udp_error = _flip_round_trip_error(_codec(True))
    standard_error = _flip_round_trip_error(_codec(False))              # with its 1-px shift
    standard_unshifted = _flip_round_trip_error(_codec(False), shift=False)
    udp_shifted = _flip_round_trip_error(_codec(True), shift=True)      # a constant shift = wrong
    assert udp_error < 0.05
    assert standard_error == pytest.approx(1.0, abs=0.1)                # 0.25 heatmap px x 4
    assert standard_unshifted == pytest.approx(3.0, abs=0.1)            # 0.75 heatmap px x 4
    assert udp_shifted == pytest.approx(IN[0] / HM[0] * (IN[0] - 1) / IN[0] * HM[0] / (HM[0] - 1),
                                        abs=0.1)                         # one UDP heatmap px
    assert udp_error < standard_error < standard_unshifted


class DotModel(nn.Module):
    """A stand-in pose model whose heatmaps follow the codec's geometry exactly.

    Input channel k holds one bright dot where joint k is; channel 17 holds a marker that
    sits on the left half of an unmirrored image. Like a real model that tells left from
    right by context, the model relabels the joints (k -> flip[k]) when the marker is on
    the right half. Joint k's map is the codec's Gaussian at its dot, so the model is
    mirror-equivariant and a flip test must give back the unmirrored answer.
    """

    def __init__(self, codec: HeatmapCodec):
        super().__init__()
        self.codec = codec
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, clip):
        centre = clip[:, clip.shape[1] // 2]                             # (B, 18, H, W)
        b, c, h, w = centre.shape
        index = centre.reshape(b, c, -1).argmax(-1)
        points = torch.stack([index % w, index // w], dim=-1).double().numpy()   # (B, 18, 2)
        maps = []
        for p in points:
            joints = p[:17][FLIP] if p[17, 0] > (w - 1) / 2 else p[:17]
            maps.append(self.codec.encode(joints, np.ones(17))[0])
        return torch.from_numpy(np.stack(maps)) + self.anchor * 0


@pytest.mark.parametrize("udp, tolerance", [(True, 0.05), (False, 1.1)])
def test_flip_test_of_a_mirrored_dot_decodes_to_its_position(udp, tolerance):
    codec = _codec(udp)
    rng = np.random.default_rng(2)
    clip = torch.zeros(1, 1, 18, IN[1], IN[0])
    dots = np.stack([rng.integers(20, IN[0] - 20, 17), rng.integers(20, IN[1] - 20, 17)], axis=1)
    for k, (x, y) in enumerate(dots):
        clip[0, 0, k, y, x] = 1.0
    clip[0, 0, 17, 10, 5] = 1.0                                          # the left-side marker
    model = DotModel(codec)
    plain = predict_heatmaps(model, clip, None, codec=codec)
    flipped = predict_heatmaps(model, clip, FLIP, codec=codec)
    decoded_plain, _ = codec.decode(plain, method="dark")
    decoded_flip, _ = codec.decode(flipped, method="dark")
    assert np.abs(decoded_plain[0].numpy() - dots).max() < 0.05
    error = np.abs(decoded_flip[0].numpy() - dots).max()
    assert error < tolerance
    if udp:        # HRNet's constant shift would move the mirrored half of the average 4 px
        with torch.no_grad():
            wrong = codec.merge_flip(model(clip), model(clip.flip(-1)), FLIP, shift=True)
        assert np.abs(codec.decode(wrong, method="dark")[0][0].numpy() - dots).max() > 1.5


def test_config_udp_reaches_targets_crop_and_codec(fixtures_dir):
    """data.udp switches the crop geometry, the training targets and the eval codec together."""
    from glsmamba.data.transforms import ClipAffine, GenerateTarget
    from glsmamba.engine.builder import build_split
    from glsmamba.config import DEFAULTS

    class Sized:
        input_size, heatmap_size = IN, HM

    config = copy.deepcopy(DEFAULTS)
    config["data"].update(root=str(fixtures_dir / "posetrack18"), train_ann="annotations/val",
                          augment=False)
    for udp in (True, False):
        config["data"]["udp"] = udp
        split = build_split(config, Sized(), "train")
        steps = split.clips.pipeline.transforms
        affine = next(s for s in steps if isinstance(s, ClipAffine))
        target = next(s for s in steps if isinstance(s, GenerateTarget))
        assert affine.udp is udp and target.codec.udp is udp and split.codec.udp is udp
        item = split.clips[0]
        sample = split.clips.samples[0]
        # the target's peak decodes back to the GT joint in the image, through the same geometry
        from glsmamba.data.transforms import crop_to_image
        joint = int(np.flatnonzero(sample.visible)[0])
        crop_xy, _ = split.codec.decode(item["heatmaps"][None].numpy(), method="dark")
        image_xy = crop_to_image(crop_xy[0], item["center"].numpy(), item["scale"].numpy(), 0.0,
                                 IN, udp=udp)
        assert np.abs(image_xy[joint] - sample.keypoints[joint]).max() < 0.2


def test_udp_changes_the_pipeline_signature():
    """The feature cache keys on the pipeline's repr: UDP (and sigma) must change it."""
    from glsmamba.data.clip_dataset import build_pipeline
    udp = repr(build_pipeline("test", udp=True, with_target=True))
    assert "udp=True" in udp
    assert udp != repr(build_pipeline("test", udp=False, with_target=True))
    assert udp != repr(build_pipeline("test", udp=True, with_target=True, sigma=3.0))
    assert udp == repr(build_pipeline("test", udp=True, with_target=True))
