"""``torch.utils.data.Dataset`` = parsed samples + a transform pipeline.

Randomness: every item gets its own ``np.random.Generator`` in ``results["rng"]``. With
``seed=None`` its seed is drawn from torch's global generator, which PyTorch seeds
per DataLoader worker from the loader's base seed, so ``torch.manual_seed`` (or the
DataLoader's ``generator``) makes a run reproducible for a fixed ``num_workers``. With an
integer ``seed`` the generator is ``default_rng((seed, epoch, index))``: identical whatever
the number of workers; call ``set_epoch`` each epoch to vary the augmentation.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from glsmamba.data.codec import HeatmapCodec
from glsmamba.data.metainfo import DatasetInfo, load_metainfo
from glsmamba.data.sample import PoseSample
from glsmamba.data.windows import WINDOWS, check_window, target_index  # noqa: F401 (re-export)
from glsmamba.data.transforms import (MEAN_RGB, STD_RGB, BoxToCenterScale, ClipAffine, Compose,
                                      GenerateTarget, LoadClip, NormalizeToTensor, RandomFlip,
                                      RandomHalfBody, RandomScaleRotation)


class ClipDataset(Dataset):
    """Items are dicts: ``clip`` (T, 3, H, W) float32, ``heatmaps`` (K, h, w) and
    ``target_weight`` (K,) when the pipeline makes targets, ``center`` (2,), ``scale`` (2,)
    (crop size in pixels), ``rotation``, ``flipped``, ``bbox_score``, ``index``.

    The parsers already put their data root into the samples' paths; ``data_root`` here is
    for samples built elsewhere with relative paths (:class:`LoadClip` joins it; an absolute
    path is kept as is). ``window`` (:data:`~glsmamba.data.windows.WINDOWS`) is the one
    the parser built the clips with: the estimated frame is the centre one (``"centered"``)
    or the last one (``"causal"``).
    """

    def __init__(self, samples: Sequence[PoseSample], pipeline: Callable[[dict], dict],
                 data_root: str | None = None, seed: int | None = None,
                 window: str = "centered"):
        self.samples = list(samples)
        self.window = check_window(window)
        self.pipeline = pipeline
        self.data_root = data_root
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng((self.seed, self.epoch, index))
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))

    def results_of(self, index: int) -> dict:
        """The pipeline's input dict for sample ``index``."""
        sample = self.samples[index]
        return {
            "frame_paths": list(sample.frame_paths),
            "data_root": self.data_root,
            "bbox_xywh": np.asarray(sample.bbox_xywh, dtype=np.float32),
            "keypoints": np.asarray(sample.keypoints, dtype=np.float32).copy(),
            "visible": np.asarray(sample.visible, dtype=np.float32).copy(),
            "bbox_score": float(sample.bbox_score),
            "index": index,
            "rng": self._rng(index),
            "target_index": target_index(len(sample.frame_paths), self.window),
            # (W, H) of the centre frame as its image record says (None when not recorded)
            "expected_size": (sample.extra or {}).get("image_size"),
        }

    def __getitem__(self, index: int) -> dict:
        results = self.pipeline(self.results_of(index))
        item = {
            "clip": results["clip"],
            "center": torch.as_tensor(np.asarray(results["center"], dtype=np.float32)),
            "scale": torch.as_tensor(np.asarray(results["scale"], dtype=np.float32)),
            "rotation": torch.tensor(float(results.get("rotation", 0.0)), dtype=torch.float32),
            "flipped": torch.tensor(bool(results.get("flipped", False))),
            "bbox_score": torch.tensor(float(results["bbox_score"]), dtype=torch.float32),
            "index": index,
        }
        if "heatmaps" in results:
            item["heatmaps"] = torch.from_numpy(results["heatmaps"])
            item["target_weight"] = torch.from_numpy(results["target_weight"])
        return item


def build_pipeline(mode: str = "train", input_size: Sequence[int] = (192, 256),
                   heatmap_size: Sequence[int] = (48, 64), metainfo: str | DatasetInfo = "posetrack",
                   sigma: float = 2.0, data_root: str | None = None, padding: float = 1.25,
                   flip_p: float = 0.5, half_body_p: float = 0.3, scale_sigma: float = 0.35,
                   rot_sigma: float = 45.0, rot_max: float = 90.0, rot_prob: float = 0.6,
                   with_target: bool | None = None, use_joint_weights: bool = True,
                   unbiased: bool = True, udp: bool = False,
                   mean: Sequence[float] = MEAN_RGB, std: Sequence[float] = STD_RGB,
                   half_body_center: str = "extent", half_body_upper_prob: float = 0.5) -> Compose:
    """The standard top-down clip pipeline.

    train: load, box -> centre/scale, flip, half body, scale/rotation, affine, targets, tensor.
    test: load, box -> centre/scale, affine, (targets if ``with_target``), tensor.
    """
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    info = metainfo if isinstance(metainfo, DatasetInfo) else load_metainfo(metainfo)
    aspect_ratio = input_size[0] / input_size[1]
    steps: list = [LoadClip(data_root), BoxToCenterScale(aspect_ratio, padding)]
    if mode == "train":
        steps += [
            RandomFlip(info.flip_indices, p=flip_p),
            RandomHalfBody(info.upper_body, info.lower_body, p=half_body_p, aspect_ratio=aspect_ratio,
                           upper_prob=half_body_upper_prob, center=half_body_center),
            RandomScaleRotation(scale_sigma, rot_sigma, rot_max, rot_prob),
        ]
    steps.append(ClipAffine(input_size, udp=udp))
    if with_target if with_target is not None else mode == "train":
        codec = HeatmapCodec(input_size, heatmap_size, sigma, unbiased=unbiased, udp=udp)
        steps.append(GenerateTarget(codec, info.joint_weights if use_joint_weights else None))
    steps.append(NormalizeToTensor(mean, std))
    return Compose(steps)


def worker_init_fn(worker_id: int) -> None:
    """Seed ``random`` and numpy's legacy global RNG from the worker's torch seed (which the
    DataLoader derives from its base seed), so any library using them is reproducible too."""
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)
