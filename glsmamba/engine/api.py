"""High-level entry points used by the CLI and the demo: train, evaluate, infer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from glsmamba.engine import distributed as du
from glsmamba.engine.builder import (Evaluator, build_model, build_split, load_for_eval)
from glsmamba.engine.trainer import Trainer, prepare_work_dir, seed_everything
from glsmamba.errors import ConfigError


def train(config: dict, work_dir: str | os.PathLike, resume: bool = False,
          overwrite: bool = False, progress: bool = True, log: Callable = print,
          step_callback=None) -> dict:
    """Train as the config says; returns {"metrics", "best", "work_dir", "evaluator"}."""
    info = du.init_distributed()
    work_dir = Path(work_dir)
    if info.is_main:
        prepare_work_dir(work_dir, resume, overwrite)
    du.barrier()
    seed_everything(config["train"]["seed"])
    model = build_model(config, log)
    train_split = build_split(config, model, "train")
    val_split = build_split(config, model, "val", boxes=config["eval"]["boxes"], with_target=False)
    train_set, val_set = train_split.clips, val_split.clips
    if config["train"]["cache_features"]:
        train_set, val_set = _cached(config, model, work_dir, train_set, val_set, log, progress)
        val_split.clips = val_set
    evaluator = None
    if config["train"]["val_interval"]:
        evaluator = Evaluator(config, val_split, out_dir=work_dir / "val_predictions",
                              progress=progress)
    trainer = Trainer(model, train_set, config, work_dir, validate=evaluator,
                      metric_key=evaluator.metric_key if evaluator else None,
                      resume=resume, overwrite=True, progress=progress, log=log,
                      save_frozen=not config["model"]["pretrained"], step_callback=step_callback)
    metrics = trainer.fit()
    return {"metrics": metrics, "best": trainer.best, "work_dir": work_dir, "evaluator": evaluator,
            "model": model}


def _cached(config, model, work_dir: Path, train_set, val_set, log, progress):
    from glsmamba.engine.feature_cache import FeatureCacheDataset
    encoder = getattr(model, "encoder", None)
    if encoder is None or any(p.requires_grad for p in encoder.parameters()):
        raise ConfigError("train.cache_features needs a frozen encoder")
    if config["data"]["augment"]:
        raise ConfigError("train.cache_features needs data.augment = false (augmented crops "
                          "change every epoch, so cached features would be stale)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    cache_dir = work_dir / "feature_cache"
    batch = config["data"]["val_batch_size"]
    train_set = FeatureCacheDataset(train_set, model, cache_dir, batch, log=log, progress=progress)
    val_set = FeatureCacheDataset(val_set, model, cache_dir, batch, log=log, progress=progress)
    return train_set, val_set


def evaluate(config: dict, checkpoint: str | os.PathLike, boxes: str | None = None,
             flip: bool | None = None, out_dir: str | os.PathLike | None = None,
             progress: bool = True, log: Callable = print):
    """Score a checkpoint on the val split; returns (metrics, evaluator)."""
    du.init_distributed()
    boxes = boxes or config["eval"]["boxes"]
    model = build_model(config, log, for_training=False)
    load_for_eval(model, checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    split = build_split(config, model, "val", boxes=boxes, with_target=False)
    if out_dir is None:
        out_dir = Path(checkpoint).resolve().parent / f"predictions_{boxes}"
    evaluator = Evaluator(config, split, out_dir=Path(out_dir), flip=flip, progress=progress)
    metrics = evaluator(model)
    return metrics, evaluator


def format_result(evaluator: Evaluator, title: str, markdown: bool = False) -> str:
    if evaluator.is_jhmdb:
        from glsmamba.evaluation import format_pck_table
        return format_pck_table(evaluator.last_result, title=title, markdown=markdown)
    from glsmamba.evaluation import format_table
    return format_table(evaluator.last_result, title=title, markdown=markdown)


def infer(source: str | os.PathLike, checkpoint: str | os.PathLike, config: str | None = None,
          overrides: list[str] | None = None, detections: str | None = None,
          detector: str = "hog", detector_weights: str | None = None, det_thr: float = 0.3,
          det_upscale: float = 1.0, out_dir: str | os.PathLike = "glsmamba_infer",
          max_frames: int | None = None, flip: bool = False, batch_size: int = 16,
          progress: bool = True, log: Callable = print) -> dict:
    """Poses on a video or frame folder; returns paths, counts and frames per second."""
    from glsmamba.data.codec import HeatmapCodec
    from glsmamba.data.metainfo import load_metainfo
    from glsmamba.engine.builder import METAINFO
    from glsmamba.engine.infer import infer_video
    from glsmamba.engine.video import FrameSource, load_video_detections
    run_config = _config_for(checkpoint, config, overrides)
    model = build_model(run_config, log=log, for_training=False)
    load_for_eval(model, checkpoint)
    source_frames = FrameSource.open(source, max_frames)
    boxes_for = _box_source(source_frames, detections, detector, detector_weights, det_thr,
                            det_upscale)
    info = load_metainfo(METAINFO[run_config["data"]["type"]])
    codec = HeatmapCodec(tuple(model.input_size), tuple(model.heatmap_size),
                         run_config["data"]["sigma"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return infer_video(model, source_frames, Path(out_dir), boxes_for, codec,
                       run_config["data"]["delta"], info.skeleton, info.link_colors,
                       info.flip_indices if flip else None, run_config["eval"]["decode"],
                       batch_size, device, progress)


def _config_for(checkpoint, config: str | None, overrides: list[str] | None) -> dict:
    from glsmamba.engine.checkpoint import load_checkpoint
    from glsmamba.engine.config import apply_override, expand_config, load_config, merge_config
    if config:
        return load_config(config, overrides)
    _, meta, path = load_checkpoint(checkpoint)
    if "config" not in meta:
        raise ConfigError(f"{path}: the checkpoint stores no config; pass --config")
    stored = merge_config(meta["config"], source=str(path.with_suffix(".json")))
    for item in overrides or []:
        apply_override(stored, item)
    return expand_config(stored)


def _box_source(source, detections, detector: str, weights, det_thr: float, upscale: float):
    import numpy as np
    from glsmamba.engine.video import default_detector, load_video_detections
    if detections:
        table = load_video_detections(detections, source, det_thr)
        empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
        return lambda t, frame: table.get(t, empty)
    if detector == "torchvision":
        from glsmamba.engine.torchvision_detector import TorchvisionDetector
        found = TorchvisionDetector(weights, det_thr)
        return lambda t, frame: found(frame)
    found = default_detector(det_thr, upscale)
    return lambda t, frame: found(frame)
