"""Config -> model, datasets and the validation metric (the glue between the parts)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glsmamba.data.clip_dataset import ClipDataset, build_pipeline
from glsmamba.data.codec import HeatmapCodec
from glsmamba.engine import distributed as du
from glsmamba.engine.checkpoint import load_checkpoint, load_model_weights
from glsmamba.engine.inference import predict_dataset
from glsmamba.errors import CheckpointError, ConfigError, DataError

METAINFO = {"posetrack18": "posetrack", "posetrack17": "posetrack", "posetrack21": "posetrack",
            "jhmdb": "jhmdb"}


def num_frames(config: dict) -> int:
    return 2 * config["data"]["delta"] + 1


# ---------------------------------------------------------------------------- model
def build_model(config: dict, log=print, for_training: bool = True) -> nn.Module:
    """``create_model`` with the config's overrides, pretrained encoder and ``init_from``.

    ``for_training=False`` (eval / infer: a checkpoint follows) skips ``init_from`` and the
    warning about a frozen encoder without weights.
    """
    from glsmamba.data.metainfo import load_metainfo
    from glsmamba.models import create_model
    model_cfg = config["model"]
    overrides: dict[str, Any] = {"num_joints": load_metainfo(METAINFO[config["data"]["type"]]).num_joints,
                                 "num_frames": num_frames(config)}
    overrides.update(model_cfg["overrides"])
    for key in ("input_size",):
        if key in overrides and isinstance(overrides[key], list):
            overrides[key] = tuple(overrides[key])
    model = create_model(model_cfg["name"], **overrides)
    if model_cfg["pretrained"]:
        from glsmamba.models.vitpose import load_vitpose
        load_vitpose(model.encoder, model_cfg["pretrained"])
        log(f"encoder weights loaded from {model_cfg['pretrained']}")
    if model_cfg["init_from"] and for_training:
        init_from_checkpoint(model, model_cfg["init_from"], log)
    encoder = getattr(model, "encoder", None)
    frozen = encoder is not None and not any(p.requires_grad for p in encoder.parameters())
    if for_training and frozen and not model_cfg["pretrained"] and not model_cfg["init_from"]:
        log("warning: the encoder is frozen but no weights were given (model.pretrained or "
            "model.init_from): it keeps its random initialisation")
    return model


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike, log=print) -> list[str]:
    """Copy every checkpoint tensor whose name and shape match (e.g. a trained encoder)."""
    tensors, _, path = load_checkpoint(path)
    state = model.state_dict()
    matched = {k: v for k, v in tensors.items() if k in state and state[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"{path}: no tensor matches the model (nothing to initialise from)")
    model.load_state_dict(matched, strict=False)
    log(f"initialised {len(matched)}/{len(state)} tensors from {path}")
    return sorted(matched)


def allowed_missing(model: nn.Module, meta: dict) -> set[str]:
    """Keys a checkpoint may omit: those it says it left out (frozen, pretrained encoder)."""
    return set(meta.get("omitted_keys", []))


def load_for_eval(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a checkpoint into ``model`` (strict, listing any missing keys); return its meta."""
    tensors, meta, path = load_checkpoint(path)
    omitted = allowed_missing(model, meta)
    if omitted and not meta.get("config", {}).get("model", {}).get("pretrained"):
        # the run saved no encoder and named no pretrained file to rebuild it from
        omitted = set()
    load_model_weights(model, tensors, path, omitted)
    return meta


# ---------------------------------------------------------------------------- data
@dataclass
class Split:
    """A parsed dataset and its ClipDataset (with targets when ``with_target``)."""

    parsed: Any
    clips: ClipDataset
    codec: HeatmapCodec


def data_root(config: dict) -> Path:
    root = Path(config["data"]["root"])
    if not root.is_dir():
        raise DataError("data root not found (set it in the config, with --set data.root=..., "
                        "or through the environment variable the config names)", str(root))
    return root


def parse_split(config: dict, split: str, boxes: str = "gt"):
    """The dataset parser for ``split`` ("train" | "val")."""
    from glsmamba.data.datasets import DATASETS, find_split_file
    data_cfg = config["data"]
    root = data_root(config)
    kind = data_cfg["type"]
    ann = root / data_cfg["train_ann" if split == "train" else "val_ann"]
    mode = "train" if split == "train" else "test"
    if kind == "jhmdb":
        ann = find_split_file(ann, data_cfg["split"], mode)
    detections = None
    if boxes == "detections":
        if not data_cfg["val_detections"]:
            raise ConfigError("--boxes detections needs data.val_detections in the config")
        detections = root / data_cfg["val_detections"]
    return DATASETS[kind](ann, data_root=root, delta=data_cfg["delta"], detections=detections,
                          det_score_thr=data_cfg["det_score_thr"], mode=mode)


def build_split(config: dict, model: nn.Module, split: str, boxes: str = "gt",
                augment: bool | None = None, with_target: bool = True) -> Split:
    """Parsed samples + the train / test pipeline sized for ``model``."""
    data_cfg = config["data"]
    parsed = parse_split(config, split, boxes)
    samples = parsed.samples
    limit = data_cfg["max_train_samples" if split == "train" else "max_val_samples"]
    if limit:
        samples = samples[:limit]
    augment = data_cfg["augment"] if augment is None else augment
    mode = "train" if (split == "train" and augment) else "test"
    input_size, heatmap_size = tuple(model.input_size), tuple(model.heatmap_size)
    pipeline = build_pipeline(mode, input_size, heatmap_size, parsed.metainfo,
                              sigma=data_cfg["sigma"], with_target=with_target)
    seed = config["train"]["seed"] if split == "train" else None
    clips = ClipDataset(samples, pipeline, seed=seed)
    codec = HeatmapCodec(input_size, heatmap_size, data_cfg["sigma"])
    return Split(parsed, clips, codec)


# ---------------------------------------------------------------------------- metric
def load_gt(config: dict) -> dict[str, dict]:
    """GT videos (name -> PoseTrack JSON) of the val annotation folder / merged file."""
    from glsmamba.evaluation import load_json_dir
    return load_json_dir(data_root(config) / config["data"]["val_ann"])


class Evaluator:
    """Predict a val split and score it: PoseTrack mAP (poseval) or Sub-JHMDB PCK."""

    def __init__(self, config: dict, split: Split, out_dir: Path | None = None,
                 flip: bool | None = None, decode: str | None = None, progress: bool = True):
        self.config, self.split, self.out_dir = config, split, out_dir
        eval_cfg = config["eval"]
        self.flip = eval_cfg["flip_test"] if flip is None else flip
        self.decode = decode or eval_cfg["decode"]
        self.is_jhmdb = config["data"]["type"] == "jhmdb"
        self.progress = progress
        self.gt = None if self.is_jhmdb else load_gt(config)
        self.last_result = None
        self.predictions: list[dict] = []

    @property
    def metric_key(self) -> str:
        return "PCK" if self.is_jhmdb else "mAP"

    def __call__(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        flip_indices = self.split.parsed.metainfo.flip_indices if self.flip else None
        data_cfg = self.config["data"]
        self.predictions = predict_dataset(
            model, self.split.clips, self.split.clips.samples, self.split.codec, flip_indices,
            data_cfg["val_batch_size"], data_cfg["workers"], self.decode, device, self.progress)
        if not du.current().is_main:
            return {}
        return self.score_pck() if self.is_jhmdb else self.score_posetrack()

    def score_posetrack(self, image_ids: set | None = None) -> dict[str, float]:
        from glsmamba.evaluation import evaluate_posetrack, load_json_dir, write_posetrack_predictions
        out_dir = self.out_dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"glsmamba-val-{os.getpid()}"
        write_posetrack_predictions(out_dir, self.split.parsed.videos, self.predictions,
                                    overwrite=True)
        self.pred_json = load_json_dir(out_dir)
        gt = {name: self.gt[name] for name in self.pred_json if name in self.gt}
        self.last_result = evaluate_posetrack(gt, self.pred_json, image_ids)
        return {"mAP": self.last_result.total, **self.last_result.columns}

    def score_pck(self) -> dict[str, float]:
        from glsmamba.evaluation import pck_accuracy
        samples = self.split.clips.samples
        pred = np.stack([p["keypoints"][:, :2] for p in self.predictions])
        gt = np.stack([samples[p["index"]].keypoints for p in self.predictions])
        visible = np.stack([samples[p["index"]].visible for p in self.predictions])
        boxes = np.stack([samples[p["index"]].bbox_xywh for p in self.predictions])
        joint_names = self.split.parsed.metainfo.joint_names
        self.last_result = pck_accuracy(pred, gt, visible, boxes, joint_names=joint_names)
        return {"PCK": self.last_result.mean, **self.last_result.groups}


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
