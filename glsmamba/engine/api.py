"""High-level entry points used by the CLI and the demo: train, evaluate, infer."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable

import torch

from glsmamba.engine import distributed as du
from glsmamba.engine.builder import (Evaluator, build_model, build_split, load_for_eval,
                                     resolve_protocol, split_for_protocol)
from glsmamba.engine.trainer import Trainer, prepare_work_dir, seed_everything
from glsmamba.errors import ConfigError


def train(config: dict, work_dir: str | os.PathLike, resume: bool = False,
          overwrite: bool = False, progress: bool = True, log: Callable = print,
          step_callback=None) -> dict:
    """Train as the config says; returns {"metrics", "best", "work_dir", "evaluator"}."""
    from glsmamba.config import validate_config
    validate_config(config)
    info = du.init_distributed()
    work_dir = Path(work_dir)
    if info.is_main:
        _refuse_data_as_work_dir(config, work_dir)
        prepare_work_dir(work_dir, resume, overwrite, config=config)
    du.barrier()
    seed_everything(config["train"]["seed"])
    model = build_model(config, log)
    train_split = build_split(config, model, "train")
    protocol = resolve_protocol(config)
    if protocol.boxes == "detections" and not config["data"]["val_detections"]:
        # training can monitor without the detections file; `glsmamba eval` cannot
        log(f"warning: eval.protocol = {protocol.name} needs data.val_detections; validating "
            "during training on GT boxes (protocol gt) instead")
        protocol = resolve_protocol(config, "gt")
    val_split = split_for_protocol(config, model, protocol)
    train_set, val_set = train_split.clips, val_split.clips
    if config["train"]["cache_features"]:
        train_set, val_set = _cached(config, model, work_dir, train_set, val_set, log, progress)
        val_split.clips = val_set
    evaluator = None
    if config["train"]["val_interval"]:
        evaluator = Evaluator(config, val_split, out_dir=work_dir / "val_predictions",
                              progress=progress, protocol=protocol)
        if info.is_main:
            log(f"validation: {evaluator.describe()}")
    trainer = Trainer(model, train_set, config, work_dir, validate=evaluator,
                      metric_key=evaluator.metric_key if evaluator else None,
                      resume=resume, overwrite=True, progress=progress, log=log,
                      save_frozen=not config["model"]["pretrained"], step_callback=step_callback)
    metrics = trainer.fit()
    return {"metrics": metrics, "best": trainer.best, "work_dir": work_dir, "evaluator": evaluator,
            "model": model}


def _refuse_data_as_work_dir(config: dict, work_dir: Path) -> None:
    """A work dir holding the annotation or detection files would mix run files (last.json
    ...) into the data: OutputRefused, even with --overwrite."""
    from glsmamba.outputs import refuse_input_folder, refuse_inputs
    data = config["data"]
    root = Path(str(data.get("root") or "."))
    inputs = [root / str(data[key]) for key in ("train_ann", "val_ann", "val_detections")
              if data.get(key)]
    refuse_inputs([work_dir], inputs, option="--work-dir")
    refuse_input_folder(work_dir, inputs, option="--work-dir")


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


def build_shared_cache(config: dict, folder: Path) -> Path:
    """Encode the train and val clips of ``config`` with its frozen encoder once into
    ``folder/feature_cache`` (skipped when ``folder/built`` exists), so that runs training
    side by side on the same features only read it; returns the cache folder."""
    folder = Path(folder)
    if not (folder / "built").is_file():
        model = build_model(config, log=lambda *_: None)
        train_set = build_split(config, model, "train").clips
        val_set = build_split(config, model, "val", with_target=False).clips
        _cached(config, model, folder, train_set, val_set, lambda *_: None, False)
        from glsmamba.fileio import atomic_write_text
        atomic_write_text(folder / "built", "ok")
    return folder / "feature_cache"


def link_feature_cache(work_dir: Path, cache_dir: Path) -> None:
    """Let a run in ``work_dir`` read (and extend) an existing feature cache folder."""
    link = Path(work_dir) / "feature_cache"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(cache_dir).resolve(), target_is_directory=True)


def config_for_eval(checkpoint: str | os.PathLike, config: str | os.PathLike | dict | None = None,
                    overrides: list[str] | None = None, log: Callable = print) -> dict:
    """The config that scores ``checkpoint``.

    Without ``config``: the one stored with the checkpoint by its run (as ``infer``).
    With ``config`` (a bundled name, a path or a dict): its data and evaluation settings,
    but the model of the run that wrote the checkpoint (its ``model`` table and clip:
    ``data.delta``, ``data.window``), so that a config naming another preset cannot fail
    with missing keys; a one-line note says so when the two differ. ``overrides`` are
    ``key=value`` items (``--set``) applied to the config.
    """
    from glsmamba.checkpoint import load_checkpoint
    from glsmamba.engine.builder import checkpoint_config as config_for
    if config is None:
        return config_for(checkpoint, None, overrides)
    if isinstance(config, dict):
        chosen = copy.deepcopy(config)
    else:
        from glsmamba.config import load_config
        chosen = load_config(config, list(overrides or []))
    _, meta, path = load_checkpoint(checkpoint)
    if "config" not in meta:
        return chosen
    run = config_for(path)
    clip_keys = [key for key in ("delta", "window") if key in run["data"]]
    if _model_line(chosen) != _model_line(run) or any(
            chosen["data"].get(key) != run["data"][key] for key in clip_keys):
        log(f"note: {path} was trained as {_model_line(run)}; scoring that model (the config "
            f"says {_model_line(chosen)}) with the config's data and evaluation settings")
    pretrained = chosen["model"].get("pretrained")      # the config's encoder file wins
    chosen["model"] = copy.deepcopy(run["model"])
    if pretrained:
        chosen["model"]["pretrained"] = pretrained
    chosen["data"].update({key: run["data"][key] for key in clip_keys})
    return chosen


def _model_line(config: dict) -> str:
    """``preset (overrides), T = n`` of a config."""
    model = config["model"]
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(model["overrides"].items()))
    frames = 2 * config["data"]["delta"] + 1
    return f"{model['name']}{f' ({overrides})' if overrides else ''}, T = {frames}"


def evaluate(config: dict | None, checkpoint: str | os.PathLike, boxes: str | None = None,
             flip: bool | None = None, out_dir: str | os.PathLike | None = None,
             progress: bool = True, log: Callable = print, protocol: str | None = None,
             overwrite: bool = False):
    """Score a checkpoint on the val split; returns (metrics, evaluator).

    ``protocol`` (gt | dcpose | mmpose) defaults to eval.protocol; ``boxes="gt"`` is the
    legacy spelling of ``protocol="gt"``. ``config=None``: the one stored with the
    checkpoint (see :func:`config_for_eval`). Predictions go to ``out_dir`` (default: inside
    the evaluated run); a folder glsmamba did not write is replaced only with ``overwrite``,
    and never an input.
    """
    du.init_distributed()
    if config is None:                     # the config stored with the checkpoint
        config = config_for_eval(checkpoint, log=log)
    chosen = resolve_protocol(config, protocol, boxes)
    model = build_model(config, log, for_training=False)
    meta = load_for_eval(model, checkpoint, config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    split = split_for_protocol(config, model, chosen)
    if out_dir is None:
        from glsmamba.outputs import default_prediction_dir
        out_dir = default_prediction_dir(checkpoint, chosen.name)
    evaluator = Evaluator(config, split, out_dir=Path(out_dir), flip=flip, progress=progress,
                          protocol=chosen)
    evaluator.checkpoint = checkpoint_label(checkpoint, meta)
    evaluator.overwrite = overwrite
    evaluator.inputs += _checkpoint_files(checkpoint)
    if evaluator.metric.uses_protocol:         # refuse a bad target before predicting
        from glsmamba.evaluation.writer import check_prediction_target
        check_prediction_target(Path(out_dir), [f"{n}.json" for n in split.parsed.videos],
                                overwrite, evaluator.inputs)
    metrics = evaluator(model)
    return metrics, evaluator


def _checkpoint_files(checkpoint: str | os.PathLike) -> list[Path]:
    """The checkpoint's files (weights, JSON, state) and its run folder's config."""
    from glsmamba.checkpoint import resolve_checkpoint
    path = resolve_checkpoint(checkpoint)
    return [path, path.with_suffix(".json"), path.with_name(f"{path.stem}_state.pt"),
            path.parent / "config.toml"]


def checkpoint_label(checkpoint: str | os.PathLike, meta: dict) -> str:
    """``path (epoch N)``; a ``best`` checkpoint is labelled as selected on val."""
    from glsmamba.checkpoint import resolve_checkpoint
    path = resolve_checkpoint(checkpoint)
    label = str(path)
    details = []
    if meta.get("epoch") is not None:
        details.append(f"epoch {meta['epoch']}")
    if path.stem == "best":
        details.append("best: selected on val")
    elif path.stem == "last":
        details.append("last epoch")
    return f"{label} ({', '.join(details)})" if details else label


def format_result(evaluator: Evaluator, title: str, markdown: bool = False) -> str:
    """The metric table with the evaluation protocol line under it."""
    table = evaluator.metric.format_table(evaluator.last_result, title=title, markdown=markdown)
    return f"{table.rstrip()}\n{evaluator.describe()}"
