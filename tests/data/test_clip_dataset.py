"""ClipDataset: item contract, frame order inside a clip, seeding, DataLoader batching."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from glsmamba.data.clip_dataset import ClipDataset, build_pipeline, worker_init_fn
from glsmamba.data.datasets import PoseTrack18Dataset
from glsmamba.data.transforms import MEAN_RGB, STD_RGB
from glsmamba.errors import DataError

KEYS = {"clip", "heatmaps", "target_weight", "center", "scale", "rotation", "flipped", "bbox_score", "index"}


def test_train_items_follow_the_contract(tiny_posetrack):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root)
    clips = ClipDataset(dataset.samples, build_pipeline("train", metainfo=dataset.metainfo), seed=1)
    item = clips[0]
    assert set(item) == KEYS
    assert item["clip"].shape == (5, 3, 256, 192) and item["clip"].dtype == torch.float32
    assert item["heatmaps"].shape == (17, 64, 48) and item["target_weight"].shape == (17,)
    assert item["center"].shape == (2,) and item["scale"].shape == (2,) and item["index"] == 0
    # annotated joints carry the joint weights (wrist 1.5); unannotated joints get 0
    weights = item["target_weight"].numpy()
    assert weights[1] == 0 and weights[9] in (0.0, 1.5)


def test_test_items_keep_frame_order_and_normalise(tiny_posetrack, posetrack_builder):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root)
    clips = ClipDataset(dataset.samples, build_pipeline("test", metainfo=dataset.metainfo, padding=1.0))
    index = next(i for i, s in enumerate(dataset.samples) if s.frame_index == 5)
    item = clips[index]
    assert "heatmaps" not in item and item["flipped"].item() is False and item["rotation"].item() == 0
    # centre pixel of each crop frame = grey level of the source frame (clamped at the end)
    value = posetrack_builder["frame_value"]
    centre = item["clip"][:, 0, 128, 96] * STD_RGB[0] + MEAN_RGB[0]
    expected = [value(0, t) for t in (3, 4, 5, 5, 5)]
    np.testing.assert_allclose(centre.numpy(), expected, atol=2.5)
    box = dataset.samples[index].bbox_xywh
    np.testing.assert_allclose(item["center"].numpy(), [box[0] + box[2] / 2, box[1] + box[3] / 2])


def test_seeded_items_are_reproducible_and_vary_by_epoch(tiny_posetrack):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root)
    pipeline = build_pipeline("train", metainfo=dataset.metainfo)
    first = ClipDataset(dataset.samples, pipeline, seed=3)
    second = ClipDataset(dataset.samples, pipeline, seed=3)
    assert first[1]["clip"].equal(second[1]["clip"])
    draws = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        item = first[1]
        draws.add((round(item["rotation"].item(), 4), round(item["scale"][0].item(), 3)))
    assert len(draws) > 1


def test_unseeded_items_follow_torch_seed(tiny_posetrack):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root)
    clips = ClipDataset(dataset.samples, build_pipeline("train", metainfo=dataset.metainfo))
    torch.manual_seed(7)
    a = clips[0]
    torch.manual_seed(7)
    b = clips[0]
    assert a["clip"].equal(b["clip"]) and a["rotation"] == b["rotation"]


def test_dataloader_batches_with_workers(tiny_posetrack):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root)
    clips = ClipDataset(dataset.samples, build_pipeline("train", metainfo=dataset.metainfo), seed=0)

    def batches():
        loader = DataLoader(clips, batch_size=2, num_workers=1, worker_init_fn=worker_init_fn)
        return list(loader)

    one, two = batches(), batches()
    assert one[0]["clip"].shape == (2, 5, 3, 256, 192) and one[0]["index"].tolist() == [0, 1]
    assert all(a["clip"].equal(b["clip"]) for a, b in zip(one, two))


def test_build_pipeline_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        build_pipeline("val")


def test_fixture_targets_decode_back_to_the_annotation(fixtures_dir):
    """Real PoseTrack18 frames: target heatmaps -> DARK decode -> inverse affine = GT joints."""
    from glsmamba.data.codec import HeatmapCodec
    from glsmamba.data.transforms import crop_to_image

    root = fixtures_dir / "posetrack18"
    dataset = PoseTrack18Dataset(root / "annotations" / "val", root)
    samples = [s for s in dataset.samples if s.video_id == "009473_mpii_test"]
    clips = ClipDataset(samples, build_pipeline("test", metainfo=dataset.metainfo, with_target=True,
                                                use_joint_weights=False))
    codec = HeatmapCodec()
    for index, sample in enumerate(samples):
        item = clips[index]
        assert item["clip"].shape == (5, 3, 256, 192) and torch.isfinite(item["clip"]).all()
        crop_points, _ = codec.decode(item["heatmaps"][None], method="dark")
        points = crop_to_image(crop_points[0].numpy(), item["center"].numpy(), item["scale"].numpy(),
                               item["rotation"].item(), codec.input_size)
        used = item["target_weight"].numpy() > 0
        assert used.sum() >= 10
        pixels_per_cell = item["scale"][0].item() / 48
        error = np.abs(points[used] - sample.keypoints[used]).max()
        assert error < 0.1 * pixels_per_cell, (error, pixels_per_cell)


def test_relative_sample_paths_use_the_data_root(tiny_posetrack):
    root, _ = tiny_posetrack
    dataset = PoseTrack18Dataset(root / "annotations" / "val", ".")
    relative = dataset.samples[:1]
    assert not Path(relative[0].image_path).is_absolute()
    item = ClipDataset(relative, build_pipeline("test"), data_root=str(root))[0]
    assert item["clip"].shape == (5, 3, 256, 192)
    with pytest.raises(DataError, match="image file not found"):
        ClipDataset(relative, build_pipeline("test"), data_root=str(root / "nowhere"))[0]
