"""Model outputs -> image-space keypoints: flip test, decoding, inverse affine, person scores."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from glsmamba.data.codec import HeatmapCodec
from glsmamba.data.transforms import crop_to_image
from glsmamba.engine import distributed as du

JOINT_SCORE_THR = 0.2   # joints above this peak count toward the person score


@torch.no_grad()
def predict_heatmaps(model: nn.Module, clip: torch.Tensor,
                     flip_indices: Sequence[int] | None = None,
                     from_features: bool = False, codec: HeatmapCodec | None = None) -> torch.Tensor:
    """Heatmaps (B, K, h, w) of ``clip`` (B, T, 3, H, W); averaged with the mirror if flipping.

    The flip test's alignment shift is the codec's (:attr:`HeatmapCodec.flip_shift`: none
    under UDP, one pixel otherwise); without a codec the standard (non-UDP) mapping is
    assumed. ``from_features``: ``clip`` holds encoder features (B, T, C, h, w), which are
    mirrored along their width like the pixels.
    """
    run = model.forward_features if from_features else model
    heatmaps = run(clip).float()
    if flip_indices is not None:
        flipped = run(clip.flip(-1)).float()
        codec = codec if codec is not None else HeatmapCodec(udp=False)
        heatmaps = codec.merge_flip(heatmaps, flipped, flip_indices)
    return heatmaps


def person_scores(bbox_scores: np.ndarray, joint_scores: np.ndarray,
                  thr: float = JOINT_SCORE_THR) -> np.ndarray:
    """Box score x mean of the confident joint scores (all joints if none is confident)."""
    confident = joint_scores > thr                                   # (N, K)
    counts = confident.sum(axis=1)
    mean_conf = np.where(counts > 0, (joint_scores * confident).sum(axis=1) / np.maximum(counts, 1),
                         joint_scores.mean(axis=1))
    return np.asarray(bbox_scores, dtype=np.float64) * mean_conf


def decode_to_image(heatmaps: torch.Tensor, codec: HeatmapCodec, center: np.ndarray,
                    scale: np.ndarray, rotation: np.ndarray, method: str = "quarter",
                    flip_width: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, K, h, w) -> keypoints (N, K, 2) image pixels, joint scores (N, K)."""
    crop_points, scores = codec.decode(heatmaps.cpu(), method=method)
    points = crop_to_image(crop_points.numpy(), np.asarray(center), np.asarray(scale),
                           np.asarray(rotation), codec.input_size, udp=codec.udp,
                           flip_width=flip_width)
    return points.astype(np.float32), scores.numpy().astype(np.float32)


def _as_numpy(value) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset, samples: Sequence, codec: HeatmapCodec,
                    flip_indices: Sequence[int] | None = None, batch_size: int = 32,
                    workers: int = 0, decode: str = "quarter",
                    device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """Run the model over ``dataset`` (a ClipDataset over ``samples``) -> prediction dicts.

    Each dict: ``image_id``, ``video_id``, ``keypoints`` (K, 3) image x, y and the heatmap
    peak, ``score`` (person: box score x mean of the joints above 0.2), ``bbox``,
    ``bbox_score``, ``area`` (crop width x height in image pixels, the object area of
    OKS-NMS), ``track_id``, ``index``. An evaluation protocol
    (:func:`glsmamba.evaluation.protocols.apply_protocol`) turns these into the written
    scores. Under DDP every rank predicts
    its share and every rank receives all predictions (in sample order).
    """
    info = du.current()
    indices = du.shard_indices(len(dataset), info)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                        num_workers=workers)
    from_features = getattr(dataset, "provides_features", False)
    model.eval()
    predictions: list[dict] = []
    for batch in _progress(loader, progress and info.is_main, "predict"):
        inputs = batch["feats" if from_features else "clip"].to(device)
        heatmaps = predict_heatmaps(model, inputs, flip_indices, from_features, codec=codec)
        points, scores = decode_to_image(heatmaps, codec, _as_numpy(batch["center"]),
                                         _as_numpy(batch["scale"]), _as_numpy(batch["rotation"]),
                                         decode)
        box_scores = _as_numpy(batch["bbox_score"]).astype(np.float64)
        areas = np.prod(_as_numpy(batch["scale"]).astype(np.float64), axis=1)
        predictions += _records(samples, _as_numpy(batch["index"]), points, scores,
                                person_scores(box_scores, scores), box_scores, areas)
    predictions = du.gather_objects(predictions)
    return sorted(predictions, key=lambda p: p["index"])


def _records(samples, indices, points, scores, people, box_scores, areas) -> list[dict]:
    records = []
    for index, joints, joint_scores, score, box_score, area in zip(indices, points, scores, people,
                                                                   box_scores, areas):
        sample = samples[int(index)]
        keypoints = np.concatenate([joints, joint_scores[:, None]], axis=1)   # (K, 3)
        records.append({"index": int(index), "image_id": sample.image_id,
                        "video_id": sample.video_id, "keypoints": keypoints,
                        "score": float(score), "track_id": int(sample.track_id),
                        "bbox": [float(v) for v in sample.bbox_xywh],
                        "bbox_score": float(box_score), "area": float(area)})
    return records


def _progress(iterable: Iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from glsmamba.progress import progress
    return progress(iterable, desc=desc, unit="batch", leave=False)
