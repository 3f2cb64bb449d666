"""The evaluation loop: a model over a dataset -> per-person prediction records."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from glsmamba.data.codec import HeatmapCodec
from glsmamba.data.decoding import decode_to_image, person_scores, predict_heatmaps
from glsmamba.engine import distributed as du


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
