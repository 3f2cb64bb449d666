"""The training loop: AdamW + multi-step schedule, AMP, DDP, checkpoints, exact resume.

The :class:`Trainer` knows nothing of datasets or model presets: it takes a model (with
``forward(clip)`` and ``forward_features(feats)``), a training dataset whose items are
dicts holding ``clip`` (or ``feats``), ``heatmaps`` and ``target_weight``, a config
(see :mod:`glsmamba.config`) and an optional validation callback.

Resume: ``last`` is written at the end of every epoch, every ``train.checkpoint_interval``
steps, on ``train.max_steps``, and on Ctrl-C (after the step in flight finishes). It holds
the optimiser, scheduler, grad scaler, the python / numpy / torch RNG states and the
position inside the epoch; the sampler's order depends only on (seed, epoch), so a resumed
run draws the same batches an uninterrupted run would have drawn. Augmentation is exact
too when the dataset seeds each item from (seed, epoch, index) (``ClipDataset(seed=...)``,
as :mod:`glsmamba.engine.api` builds it); randomness drawn from the global RNGs (dropout,
drop path) is restored from the checkpoint, which is exact with ``workers = 0`` or when the
pipeline draws nothing from them.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from glsmamba.data.clip_dataset import worker_init_fn
from glsmamba.engine import distributed as du
from glsmamba.checkpoint import (load_train_state, recover_interrupted, remove_stale_tmp,
                                       save_checkpoint)
from glsmamba.config import dump_config
from glsmamba.fileio import atomic_write_text, create_exclusive, open_append, temp_sibling
from glsmamba.outputs import lock_folder, unlock_folder
from glsmamba.errors import CheckpointError, ConfigError, GlsmambaError

RUN_FILES = ("log.jsonl", "config.toml", "last.safetensors", "last.json", "last_state.pt",
             "best.safetensors", "best.json")


class TrainingDiverged(GlsmambaError):
    """The loss became NaN or infinite."""


def heatmap_mse(heatmaps: torch.Tensor, targets: torch.Tensor,
                target_weight: torch.Tensor) -> torch.Tensor:
    """Weighted MSE: mean over (B, K, h, w) of (w_k * (pred - target))^2, in float32
    whatever the dtype of the (autocast) heatmaps."""
    weight = target_weight.float()[:, :, None, None]  # (B, K, 1, 1)
    return F.mse_loss(heatmaps.float() * weight, targets.float() * weight)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ModelStep(nn.Module):
    """Dispatch ``clip`` or cached ``feats`` through one module (so DDP sees one forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, from_features: bool) -> torch.Tensor:
        if from_features:
            return self.model.forward_features(inputs)
        return self.model(inputs)


RESUME_CHANGEABLE = {
    # take effect by themselves (read from the config as training goes)
    ("train", "epochs"), ("train", "max_steps"), ("train", "grad_clip"),
    ("train", "log_interval"), ("train", "val_interval"), ("train", "checkpoint_interval"),
    ("train", "grad_checkpointing"),  # recomputes activations: same values and gradients
    ("data", "workers"), ("data", "root"), ("data", "val_batch_size"), ("data", "val_ann"),
    ("data", "val_detections"), ("data", "det_score_thr"), ("data", "max_val_samples"),
    ("eval", "flip_test"), ("eval", "decode"), ("eval", "boxes"), ("eval", "protocol"),
    # applied to the restored optimiser / scheduler (see Trainer._apply_resume_changes)
    ("train", "lr"), ("train", "weight_decay"), ("train", "milestones"), ("train", "gamma"),
}


def _flat(config: dict) -> dict:
    from glsmamba.config import DEFAULTS
    flat = {}
    for section, defaults in DEFAULTS.items():
        values = (config or {}).get(section) or {}
        for key, default in defaults.items():
            value = values.get(key, default)
            if isinstance(default, dict):
                for name in sorted(set(value or {})):
                    flat[(section, f"{key}.{name}")] = value[name]
            else:
                flat[(section, key)] = value
    return flat


def config_changes(stored: dict, config: dict) -> tuple[dict, dict]:
    """(changes that may be applied on resume, changes that may not), each
    ``"section.key" -> (stored value, new value)``."""
    old, new = _flat(stored), _flat(config)
    allowed, refused = {}, {}
    for name in sorted(set(old) | set(new), key=str):
        before, after = old.get(name), new.get(name)
        if before == after or (isinstance(before, (int, float)) and isinstance(after, (int, float))
                               and not isinstance(before, bool) and float(before) == float(after)):
            continue
        target = allowed if name in RESUME_CHANGEABLE else refused
        target[".".join(name)] = (before, after)
    return allowed, refused


def check_resume_config(work_dir: Path, config: dict) -> dict:
    """The applicable changes of ``config`` against the run's ``last.json``; ConfigError
    listing the keys that cannot change on resume."""
    meta_path = work_dir / "last.json"
    try:
        stored = json.loads(meta_path.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return {}                         # load_checkpoint reports a broken JSON
    if not isinstance(stored, dict):
        return {}
    allowed, refused = config_changes(stored, config)
    if refused:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise ConfigError(
            f"{meta_path}: cannot resume with changed {listed} (these keys cannot change "
            "on resume; keys that can: train.lr, train.epochs, train.max_steps, "
            "train.milestones, train.gamma, train.weight_decay, train.grad_clip, intervals, "
            "data.workers, data.root, validation and eval keys); drop the --set or start a "
            "new run with --overwrite or another --work-dir")
    return allowed


def prepare_work_dir(work_dir: str | os.PathLike, resume: bool, overwrite: bool,
                     config: dict | None = None) -> Path:
    """Create ``work_dir``; refuse to clobber an existing run unless resuming/overwriting.

    A work dir that is a file, cannot be created or is not writable is a ConfigError; so is
    ``--resume`` with ``config`` values that cannot change on resume."""
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise ConfigError(f"{work_dir}: the work dir exists and is not a folder")
    lock_folder(work_dir, "training into this work dir", "--work-dir")
    if resume and work_dir.is_dir():
        try:
            recover_interrupted(work_dir)      # a checkpoint write killed mid-rename
        except OSError:
            pass
    existing = [name for name in RUN_FILES if (work_dir / name).exists()]
    if resume:
        if not (work_dir / "last_state.pt").is_file():
            raise ConfigError(f"{work_dir}: nothing to resume (no last_state.pt)")
        if config is not None:
            check_resume_config(work_dir, config)
    elif existing:
        if not overwrite:
            raise ConfigError(f"{work_dir} already holds a run ({', '.join(existing)}); "
                              "use --resume to continue it or --overwrite to start again")
        stale = [p for pattern in (".*.commit", ".*.tmp*", ".*.partial.*")
                 for p in work_dir.glob(pattern) if p.is_symlink() or not p.is_dir()]
        for name in [p.name for p in stale] + existing:   # the feature cache stays: its key
            try:                                           # says whether it is valid
                (work_dir / name).unlink()
            except OSError as err:
                raise ConfigError(f"{work_dir / name}: cannot remove it to start again: "
                                  f"{err.strerror or err}") from None
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe = temp_sibling(work_dir / "write_test")
        create_exclusive(probe).close()
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{work_dir}: the work dir cannot be created or written: "
                          f"{err.strerror or err}") from None
    return work_dir


class JsonLogger:
    """Append-only JSON lines (+ TensorBoard scalars when it is installed)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled:
            self._open().close()            # created now (or checked): a link is refused
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self.tb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with self._open() as handle:
            handle.write((json.dumps(record) + "\n").encode("utf-8"))
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('type', 'train')}/{key}", value,
                                       record.get("step", 0))

    def _open(self):
        try:
            return open_append(self.path)
        except OSError as err:
            reason = "it is a link" if self.path.is_symlink() else (err.strerror or str(err))
            raise ConfigError(f"{self.path}: cannot write the training log: {reason}") from None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def check_batch_fits(samples: int, batch_size: int, world_size: int = 1) -> None:
    """ConfigError when the training split is smaller than one batch (batches are complete,
    so no optimiser step would ever run)."""
    if samples < batch_size * world_size:
        per = f" x {world_size} processes" if world_size > 1 else ""
        raise ConfigError(
            f"data.batch_size = {batch_size}{per} is larger than the training split "
            f"({samples} samples): not one optimiser step would run; lower data.batch_size")


def pick_device(info: du.DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp``: ``auto`` is bf16 (else fp16) on CUDA and off
    on the CPU; an explicit ``bf16`` also runs bf16 autocast on the CPU; fp16 is CUDA only."""
    if mode == "off":
        return None
    if device.type != "cuda":
        return torch.bfloat16 if mode == "bf16" and device.type == "cpu" else None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class Trainer:
    """Train ``model`` on ``train_set`` as the config says; see the module docstring."""

    def __init__(self, model: nn.Module, train_set, config: dict, work_dir: str | os.PathLike,
                 validate: Callable[[nn.Module], dict] | None = None,
                 metric_key: str | None = None, resume: bool = False,
                 overwrite: bool = False, save_frozen: bool = True,
                 step_callback: Callable[["Trainer"], None] | None = None,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.config, self.train_cfg = config, config["train"]
        self.info = du.current()
        self.device = pick_device(self.info)
        self.model = model.to(self.device)
        if self.train_cfg.get("grad_checkpointing"):
            if not hasattr(self.model, "set_grad_checkpointing"):
                raise ConfigError(f"train.grad_checkpointing: {type(self.model).__name__} "
                                  "has no set_grad_checkpointing")
            self.model.set_grad_checkpointing(True)
        self.train_set, self.validate, self.metric_key = train_set, validate, metric_key
        self.save_frozen, self.step_callback = save_frozen, step_callback
        self.progress = progress and self.info.is_main
        self.print = log if self.info.is_main else (lambda *_: None)
        self.work_dir = Path(work_dir)
        check_batch_fits(len(train_set), config["data"]["batch_size"], self.info.world_size)
        if self.info.is_main:
            prepare_work_dir(self.work_dir, resume, overwrite)
        du.barrier()
        self.logger = JsonLogger(self.work_dir / "log.jsonl", enabled=self.info.is_main)
        self.epoch, self.step, self.step_in_epoch = 0, 0, 0
        self.best: float | None = None
        self.metrics: dict = {}
        self._stop_requested = self._aborted = self._mid_step = False
        self._build_optim()
        self.runner = self._wrap(ModelStep(self.model))
        if resume:
            self._load_state()
        else:
            seed_everything(self.train_cfg["seed"] + self.info.rank)
            if self.info.is_main:
                atomic_write_text(self.work_dir / "config.toml", dump_config(config))

    # ---------------------------------------------------------------- setup
    def _amp_note(self) -> None:
        """Say what runs when the configured precision cannot run on this device."""
        if self.train_cfg["amp"] == "fp16" and self.device.type != "cuda":
            self.print(f'note: train.amp = "fp16" needs CUDA; on the {self.device.type} training '
                       'runs in float32 (train.amp = "bf16" gives bfloat16 autocast there)')

    def _build_optim(self) -> None:
        from glsmamba.engine.optim import param_groups
        cfg = self.train_cfg
        groups = param_groups(self.model, cfg["weight_decay"])   # no decay on norms, biases,
        if not groups:                                           # embeddings, A_log, D
            raise ConfigError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg["milestones"]), gamma=cfg["gamma"])
        self.autocast_dtype = amp_dtype(cfg["amp"], self.device)
        self._amp_note()
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.autocast_dtype == torch.float16)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.info.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def _loader(self) -> tuple[DataLoader, du.ResumableSampler]:
        data_cfg = self.config["data"]
        sampler = du.ResumableSampler(self.train_set, num_replicas=self.info.world_size,
                                      rank=self.info.rank, shuffle=True,
                                      seed=self.train_cfg["seed"], drop_last=True)
        sampler.set_epoch(self.epoch)
        sampler.set_start(self.step_in_epoch * data_cfg["batch_size"])
        generator = torch.Generator().manual_seed(
            (self.train_cfg["seed"] * 1000 + self.epoch * 10 + self.info.rank) % 2 ** 63)
        workers = data_cfg["workers"]
        loader = DataLoader(self.train_set, batch_size=data_cfg["batch_size"], sampler=sampler,
                            num_workers=workers, drop_last=True, generator=generator,
                            worker_init_fn=worker_init_fn,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        return loader, sampler

    # ---------------------------------------------------------------- state
    def _train_state(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "best": self.best, "metrics": self.metrics}

    def _meta(self) -> dict:
        return {"config": self.config, "epoch": self.epoch, "step": self.step,
                "step_in_epoch": self.step_in_epoch, "metrics": self.metrics,
                "best": self.best, "metric_key": self.metric_key,
                "world_size": self.info.world_size, "train_samples": len(self.train_set),
                "pretrained_weights": getattr(self.model, "pretrained_weights", None)}

    def nonfinite_tensors(self) -> list[str]:
        """Names of model parameters / buffers and optimiser state tensors holding NaN/inf."""
        bad = [name for name, t in self.model.state_dict().items()
               if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
        for index, state in enumerate(self.optimizer.state.values()):
            for key, t in state.items():
                if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    bad.append(f"optimizer state {index}.{key}")
        return bad

    def _diverged(self, what: str) -> TrainingDiverged:
        last = self.work_dir / "last.safetensors"
        kept = f"the last good checkpoint is kept at {last}" if last.exists() \
            else "no checkpoint had been written yet"
        return TrainingDiverged(f"{what}; training stopped and {kept} (try a lower train.lr "
                                "or train.grad_clip)")

    def save(self, tag: str = "last", with_state: bool = True) -> Path | None:
        """Rank 0 writes checkpoint ``tag``; all ranks wait for it. Weights or optimiser
        state holding NaN/inf are never written (TrainingDiverged; the previous checkpoint
        stays)."""
        bad = self.nonfinite_tensors()       # same on every rank (DDP keeps them equal)
        if bad:
            raise self._diverged(f"not writing checkpoint {tag!r} at epoch {self.epoch}, step "
                                 f"{self.step}: {len(bad)} tensor(s) hold NaN/inf (e.g. {bad[0]})")
        path = None
        if self.info.is_main:
            state = self._train_state() if with_state else None
            path = save_checkpoint(self.work_dir, tag, self.model, self._meta(), state,
                                   save_frozen=self.save_frozen)
        du.barrier()
        return path

    def _load_state(self) -> None:
        from glsmamba.checkpoint import load_checkpoint, load_model_weights
        from glsmamba.checkpoint import STATE_KEYS
        tensors, meta, path = load_checkpoint(self.work_dir / "last.safetensors")
        changes = {}
        if isinstance(meta.get("config"), dict):
            changes = check_resume_config(self.work_dir, self.config)
        stored_world = meta.get("world_size")
        if isinstance(stored_world, int) and stored_world != self.info.world_size:
            raise ConfigError(
                f"{path.with_suffix('.json')}: the run used {stored_world} process(es), this one "
                f"{self.info.world_size}; data.batch_size is per process, so the batches and "
                "the position in the epoch would differ: resume with the same number of "
                "processes (or start a new run from it with model.init_from)")
        stored_samples = meta.get("train_samples")
        if isinstance(stored_samples, int) and stored_samples != len(self.train_set):
            raise ConfigError(
                f"{path.with_suffix('.json')}: the run trained on {stored_samples} samples, the "
                f"training set now has {len(self.train_set)} (annotations changed?); a resume "
                "would not continue the same epochs: start a new run (--overwrite)")
        load_model_weights(self.model, tensors, path, set(meta.get("omitted_keys", [])))
        state_path = self.work_dir / "last_state.pt"
        state = load_train_state(state_path, set_id=meta.get("set_id"), required=STATE_KEYS)
        for key in ("epoch", "step", "step_in_epoch"):
            if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
                raise CheckpointError(f"{state_path}: {key} must be a non-negative integer, "
                                      f"got {state[key]!r}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as err:
            raise CheckpointError(f"{state_path}: the optimiser / scheduler / RNG state cannot be "
                                  f"restored into this model and config: {err}") from None
        self.epoch, self.step = state["epoch"], state["step"]
        self.step_in_epoch = state["step_in_epoch"]
        self.best, self.metrics = state.get("best"), state.get("metrics", {})
        remove_stale_tmp(self.work_dir)
        self.print(f"resumed from {path} at epoch {self.epoch}, step {self.step} "
                   f"({self.step_in_epoch} steps into the epoch)")
        if changes:
            self._apply_resume_changes(changes)

    def _apply_resume_changes(self, changes: dict) -> None:
        """Apply lr / weight decay / schedule changes of a resumed run, and log each change."""
        import collections
        cfg = self.train_cfg
        groups = self.optimizer.param_groups
        if "train.lr" in changes:
            old, new = changes["train.lr"]
            ratio = float(new) / float(old) if old else None
            for group in groups:
                for name in ("initial_lr", "lr"):
                    if name in group:
                        group[name] = group[name] * ratio if ratio is not None else float(new)
            if hasattr(self.scheduler, "base_lrs"):
                self.scheduler.base_lrs = [g.get("initial_lr", g["lr"]) for g in groups]
        if "train.weight_decay" in changes:
            old, new = changes["train.weight_decay"]
            for group in groups:
                if group.get("group") == "no_decay":          # norms, biases, A_log, D ...
                    continue
                group["weight_decay"] = group["weight_decay"] * new / old if old else float(new)
        schedule = {"train.lr", "train.milestones", "train.gamma"} & set(changes)
        if schedule and hasattr(self.scheduler, "milestones"):
            self.scheduler.milestones = collections.Counter(cfg["milestones"])
            self.scheduler.gamma = cfg["gamma"]
            done = sum(1 for m in cfg["milestones"] if m <= self.scheduler.last_epoch)
            for group, base in zip(groups, self.scheduler.base_lrs):
                group["lr"] = base * cfg["gamma"] ** done
            self.scheduler._last_lr = [g["lr"] for g in groups]
        elif schedule - {"train.lr"}:
            raise ConfigError("train.milestones / train.gamma cannot change on resume with "
                              f"this scheduler ({type(self.scheduler).__name__})")
        for key, (old, new) in changes.items():
            self.print(f"resume: {key} changed from {old!r} to {new!r} (applied)")
        self.logger.log({"type": "resume", "epoch": self.epoch, "step": self.step,
                         "changed": {k: [a, b] for k, (a, b) in changes.items()},
                         "lr": groups[0]["lr"]})
        if self.info.is_main:
            atomic_write_text(self.work_dir / "config.toml", dump_config(self.config))

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Train until ``train.epochs`` (or ``train.max_steps``); return the last metrics."""
        previous_handler = self._install_sigint()
        try:
            while self.epoch < self.train_cfg["epochs"] and not self._hit_max_steps():
                self._train_epoch()
                if self._hit_max_steps() and self.step_in_epoch:
                    break
                self._end_epoch()
            if self._hit_max_steps() and self.step_in_epoch and self.train_cfg["val_interval"]:
                self._validate()     # stopped mid-epoch by train.max_steps: score the result
            if self._hit_max_steps() or self.epoch >= self.train_cfg["epochs"]:
                self.save("last")
        except KeyboardInterrupt:
            if self._aborted or self._mid_step:
                # a second Ctrl-C (or one that struck inside a step): the weights may be
                # half-updated, so the previous `last` stays as it was
                last = self.work_dir / "last.safetensors"
                kept = f"{last} is unchanged" if last.exists() else "no checkpoint was written"
                self.print(f"aborted at epoch {self.epoch}, step {self.step}: {kept}")
                raise
            self.save("last")
            self.print(f"interrupted at epoch {self.epoch}, step {self.step}: checkpoint "
                       f"written to {self.work_dir / 'last.safetensors'}; continue with --resume")
            raise
        finally:
            self._restore_sigint(previous_handler)
            self.logger.close()
            if self.info.is_main:
                unlock_folder(self.work_dir)
        return self.metrics

    def _hit_max_steps(self) -> bool:
        return bool(self.train_cfg["max_steps"]) and self.step >= self.train_cfg["max_steps"]

    def _train_epoch(self) -> None:
        loader, sampler = self._loader()
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(self.epoch)
        self.runner.train()
        from_features = getattr(self.train_set, "provides_features", False)
        bar = self._progress_bar(len(loader))
        samples, started = 0, time.perf_counter()
        for batch in loader:
            self._mid_step = True        # weights may change until the counters follow
            loss = self._train_step(batch, from_features)
            self.step += 1
            self.step_in_epoch += 1
            self._mid_step = False
            samples += len(batch["heatmaps"]) * self.info.world_size
            rate = samples / max(time.perf_counter() - started, 1e-9)
            self._after_step(loss, rate, bar)
            if self._stop_requested:
                raise KeyboardInterrupt
            if self._hit_max_steps():
                break
        if bar is not None:
            bar.close()

    def _progress_bar(self, total: int):
        if not self.progress:
            return None
        if self.train_cfg["max_steps"]:          # train.max_steps ends the epoch early
            total = max(0, min(total, self.train_cfg["max_steps"] - self.step))
        from glsmamba.progress import progress
        return progress(total=total, desc=f"epoch {self.epoch + 1}/{self.train_cfg['epochs']}",
                        unit="step", leave=False)

    def _train_step(self, batch: dict, from_features: bool) -> float:
        key = "feats" if from_features else "clip"
        inputs = batch[key].to(self.device, non_blocking=True)
        targets = batch["heatmaps"].to(self.device, non_blocking=True)
        weights = batch["target_weight"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            heatmaps = self.runner(inputs, from_features)
        loss = heatmap_mse(heatmaps, targets, weights)
        self._check_finite(loss)
        self.scaler.scale(loss).backward()
        if self.train_cfg["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.requires_grad]
            norm = torch.nn.utils.clip_grad_norm_(params, self.train_cfg["grad_clip"])
        elif not self.scaler.is_enabled():
            norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None])
        if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):
            # a GradScaler skips such steps by itself; without one they would poison the weights
            raise self._diverged(f"gradients are not finite at epoch {self.epoch}, step "
                                 f"{self.step + 1} (the step was not applied)")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0], device=self.device)
        if self.info.enabled:
            torch.distributed.all_reduce(bad)
        if bad.item() > 0:
            raise self._diverged(f"loss is not finite at epoch {self.epoch}, step {self.step + 1}")

    def _after_step(self, loss: float, rate: float, bar) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3e}", samples_s=f"{rate:.1f}")
        if self.step % max(1, self.train_cfg["log_interval"]) == 0 or self.step == 1:
            loss = du.all_reduce_mean(loss, self.device)
            self.logger.log({"type": "train", "epoch": self.epoch, "step": self.step,
                             "loss": loss, "lr": lr, "samples_per_s": rate})
        interval = self.train_cfg["checkpoint_interval"]
        if interval and self.step % interval == 0:
            self.save("last")
        if self.step_callback is not None:
            self.step_callback(self)

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        with warnings.catch_warnings():  # a resume on an epoch boundary steps no optimiser first
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        interval = self.train_cfg["val_interval"]
        if interval and (self.epoch % interval == 0 or self.epoch == self.train_cfg["epochs"]):
            self._validate()
        self.save("last")

    def _validate(self) -> None:
        """Score the model, log it, and write ``best`` when the metric improves."""
        if self.validate is not None:
            self.model.eval()
            metrics = {k: float(v) for k, v in self.validate(self.model).items()}
            self.metrics = du.broadcast_object(metrics)   # rank 0 scored; all ranks agree
            self.model.train()
            self.logger.log({"type": "val", "epoch": self.epoch, "step": self.step,
                             **self.metrics})
            self.print(f"epoch {self.epoch}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in self.metrics.items()))
            score = self.metrics.get(self.metric_key) if self.metric_key else None
            if score is not None and not math.isnan(score) and (self.best is None or score > self.best):
                self.best = score
                self.save("best", with_state=False)

    # ---------------------------------------------------------------- Ctrl-C
    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        owner = os.getpid()

        def handler(signum, frame):
            if os.getpid() != owner:
                return            # a forked data-loader worker: the main process reports it
            if self._stop_requested:
                self._aborted = True
                raise KeyboardInterrupt
            self._stop_requested = True
            self.print("\nCtrl-C: finishing the current step, then writing a checkpoint "
                       "(press again to abort at once)")
        return signal.signal(signal.SIGINT, handler)

    def _restore_sigint(self, previous) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a ``log.jsonl``."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]

