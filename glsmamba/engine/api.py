"""High-level entry points used by the CLI and the demo: train, evaluate, infer."""
from __future__ import annotations

import copy
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
    config = copy.deepcopy(config)
    config["model"]["init_from"] = ""
    boxes = boxes or config["eval"]["boxes"]
    model = build_model(config, log)
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
