"""Run configs: small TOML files, merged over typed defaults, with ``--set key=value``.

A config has four sections, ``[model]``, ``[data]``, ``[train]`` and ``[eval]``. Every
key must exist in :data:`DEFAULTS` and keep its type; the one free-form table is
``[model.overrides]`` (keyword arguments for ``create_model``, checked by the registry).
String values may use environment variables: ``${VAR}`` or ``${VAR:-default}``
(nestable), expanded when the config is loaded.
"""
from __future__ import annotations

import copy
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from glsmamba.data.windows import WINDOWS
from glsmamba.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {
        "name": "glsmamba-tiny",
        "pretrained": "",        # encoder weights: .pth / .safetensors / HF folder / hf://OWNER/NAME ("" = none)
        "random_encoder_ok": False,  # allow a frozen encoder without weights (synthetic data, tests)
        "init_from": "",         # a glsmamba checkpoint to start from ("" = none)
        "overrides": {},         # create_model keyword arguments
    },
    "data": {
        "type": "posetrack18",   # a registered dataset: `glsmamba.data.datasets.list_datasets()`
        "root": "${GLSMAMBA_DATA:-data}/posetrack18",
        "train_ann": "annotations/train",
        "val_ann": "annotations/val",
        "val_detections": "",    # detections JSON (relative to root) for --boxes detections
        "det_score_thr": 0.0,
        "split": 1,              # Sub-JHMDB split (1..3)
        "delta": 2,              # clip = frames t-delta .. t+delta
        "window": "centered",    # centered (t-delta..t+delta) | causal (t-2delta..t: online, no delay)
        "sigma": 2.0,            # Gaussian target sigma at heatmap resolution
        "udp": False,            # unbiased data processing (crop, targets, decoding, flip); on for ViTPose encoders
        "batch_size": 32,
        "val_batch_size": 32,
        "workers": 4,
        "augment": True,         # flip / half body / scale-rotation in training
        "half_body_center": "extent",  # half-body crop centre: extent (ours) | mean (HRNet / DCPose)
        "half_body_upper_prob": 0.5,   # P(upper body first); HRNet / DCPose: 0.6915 (randn < 0.5)
        "max_train_samples": 0,  # 0 = all (for quick runs)
        "max_val_samples": 0,
        "allow_outside_root": False,  # read images an annotation places outside data.root
    },
    "train": {
        "epochs": 20,
        "lr": 1e-4,
        "milestones": [6, 12],
        "gamma": 0.1,
        "weight_decay": 1e-4,
        "grad_clip": 1.0,        # max gradient norm (0 = off)
        "amp": "auto",           # auto (bf16 on CUDA, off on CPU) | bf16 (CUDA or CPU) | fp16 | off
        "grad_checkpointing": False,  # recompute block activations in backward (less memory)
        "seed": 0,
        "cache_features": False,  # cache frozen-encoder features (no pixel augmentation)
        "log_interval": 10,
        "val_interval": 1,       # validate every N epochs (0 = never)
        "max_steps": 0,          # stop after this many optimiser steps (0 = no limit)
        "checkpoint_interval": 0,  # also save "last" every N steps (0 = end of epoch only)
    },
    "eval": {
        "flip_test": True,
        "decode": "quarter",     # quarter | dark
        "protocol": "gt",        # a registered protocol (evaluation/protocols.py): boxes, scores, NMS (docs/EVALUATION.md)
        "boxes": "gt",           # legacy: "detections" needs a detected-box eval.protocol
    },
    "track": {                   # inference tracking (glsmamba/trackers.py, docs/USAGE.md)
        "method": "pose",        # pose (IoU + OKS + constant velocity, two stages) | iou (greedy box IoU)
        "iou_weight": 0.5,       # cost = (iou_weight (1 - IoU) + oks_weight (1 - OKS)) / sum of weights
        "oks_weight": 0.5,
        "max_cost": 0.8,         # pairs costing more never match
        "high_score": 0.5,       # box score of the first stage; only these start tracks
        "low_score": 0.1,        # second stage (continue tracks only) down to this box score
        "max_age": 8,            # frames an unmatched track survives
        "momentum": 0.8,         # weight of the old velocity when it is re-estimated
        "keypoint_thr": 0.3,     # joints below this score are left out of OKS
    },
}

CHOICES = {
    ("train", "amp"): {"auto", "bf16", "fp16", "off"},
    ("eval", "decode"): {"quarter", "dark"},
    ("eval", "boxes"): {"gt", "detections"},
    ("data", "half_body_center"): {"extent", "mean"},
    ("data", "window"): set(WINDOWS),
}



def _dataset_types() -> list[str]:
    from glsmamba.data.datasets import list_datasets
    return list_datasets()


def _protocols() -> list[str]:
    from glsmamba.evaluation.protocols import list_protocols
    return list_protocols()


def _trackers() -> list[str]:
    from glsmamba.trackers import TRACKERS
    return list(TRACKERS)


def _model_names() -> list[str]:
    from glsmamba.models import list_models
    return [name for name, _ in list_models()]


# choices owned by a registry, read when a value is checked (a parser, protocol or preset
# registered by a plugin or a test is selectable without editing this file)
REGISTRY_CHOICES = {
    ("data", "type"): _dataset_types,
    ("eval", "protocol"): _protocols,
    ("model", "name"): _model_names,
    ("track", "method"): _trackers,
}


def choices_for(section: str, key: str) -> set | None:
    """The allowed values of ``section.key``, or None when any value of its type is."""
    source = REGISTRY_CHOICES.get((section, key))
    return set(source()) if source is not None else CHOICES.get((section, key))


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}")


def expand_env(text: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}``, innermost first (defaults may nest)."""
    for _ in range(20):
        new = _ENV_PATTERN.sub(_env_value, text)
        if new == text:
            break
        text = new
    return text


def _env_value(match: re.Match) -> str:
    name, default = match.group(1), match.group(2)
    value = os.environ.get(name)
    if value:
        return value
    if default is None:
        raise ConfigError(f"environment variable {name} is not set (needed by the config)")
    return default


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A file path, or the name of a bundled config (``synth_tiny``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    if bundled.is_file() and len(path.parts) == 1:
        return bundled
    raise ConfigError(f"config {str(name_or_path)!r} not found (not a file, nor one of: "
                      f"{', '.join(list_configs())})")


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """Load a config, merge it over :data:`DEFAULTS`, apply ``key=value`` overrides."""
    path = resolve_config_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); a TOML config must be "
                          "saved as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
    config = merge_config(raw, source=str(path))
    for item in overrides or []:
        apply_override(config, item)
    return expand_config(config)


def merge_config(raw: dict, source: str = "config") -> dict:
    """Defaults updated with ``raw``; unknown sections/keys or wrong types -> ConfigError."""
    config = copy.deepcopy(DEFAULTS)
    for section, values in raw.items():
        if section not in DEFAULTS:
            raise ConfigError(f"{source}: unknown section [{section}] "
                              f"(known: {', '.join(DEFAULTS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in values.items():
            config[section][key] = _checked(section, key, value, source)
    return config


def _checked(section: str, key: str, value: Any, source: str) -> Any:
    if key not in DEFAULTS[section]:
        known = ", ".join(DEFAULTS[section])
        raise ConfigError(f"{source}: unknown key {section}.{key} (known in [{section}]: {known})")
    default = DEFAULTS[section][key]
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{source}: {section}.{key} must be {type(default).__name__}, "
                          f"got {value!r}")
    choices = choices_for(section, key)
    if choices and value not in choices:
        raise ConfigError(f"{source}: {section}.{key} = {value!r} is not one of {sorted(choices)}")
    _check_range(section, key, value, source)
    return value


# (section, key) -> (lowest allowed, whether the lowest itself is allowed, highest or None)
RANGES: dict[tuple[str, str], tuple[float, bool, float | None]] = {
    ("data", "split"): (1, True, 3),
    ("data", "delta"): (0, True, None),
    ("data", "sigma"): (0, False, None),
    ("data", "batch_size"): (1, True, None),
    ("data", "val_batch_size"): (1, True, None),
    ("data", "workers"): (0, True, None),
    ("data", "max_train_samples"): (0, True, None),
    ("data", "max_val_samples"): (0, True, None),
    ("data", "half_body_upper_prob"): (0, True, 1),
    ("train", "epochs"): (1, True, None),
    ("train", "lr"): (0, False, None),
    ("train", "gamma"): (0, False, None),
    ("train", "weight_decay"): (0, True, None),
    ("train", "grad_clip"): (0, True, None),
    ("train", "seed"): (0, True, 2 ** 63 - 1),      # what torch and numpy generators take
    ("train", "log_interval"): (0, True, None),
    ("train", "val_interval"): (0, True, None),
    ("train", "max_steps"): (0, True, None),
    ("train", "checkpoint_interval"): (0, True, None),
}


def _check_range(section: str, key: str, value: Any, source: str) -> None:
    """NaN / inf anywhere, and values outside :data:`RANGES`, are ConfigErrors."""
    name = f"{source}: {section}.{key} = {value!r}"
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{name} must be a finite number")
    if (section, key) == ("train", "milestones"):
        if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in value):
            raise ConfigError(f"{name}: milestones must be epoch numbers >= 1")
        return
    bounds = RANGES.get((section, key))
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, inclusive, high = bounds
    if value < low or (value == low and not inclusive) or (high is not None and value > high):
        wanted = (f">= {low}" if inclusive else f"> {low}") + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{name} is out of range (must be {wanted})")


class Section:
    """One config section as attributes (``data.delta``), read-only: what a part needs
    without the whole dict. A key the config lacks reads its :data:`DEFAULTS` value (a
    config written before the key existed); an unknown key is an AttributeError."""

    __slots__ = ("_name", "_values")

    def __init__(self, name: str, values: dict):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, key: str) -> Any:
        if key in self._values:
            return self._values[key]
        if key in DEFAULTS.get(self._name, {}):
            return copy.deepcopy(DEFAULTS[self._name][key])
        raise AttributeError(f"config section [{self._name}] has no key {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"config section [{self._name}] is read-only")

    def __repr__(self) -> str:
        return f"Section({self._name!r}, {self._values!r})"


def section(config: dict, name: str) -> Section:
    """``config[name]`` as a read-only :class:`Section` (``section(config, "data").delta``)."""
    return Section(name, config.get(name, {}))


def validate_config(config: dict, source: str = "config") -> dict:
    """Check every key's type and range, as a loaded config is checked (for configs built
    in Python); ConfigError naming the first bad value."""
    for section, values in config.items():
        if section not in DEFAULTS or not isinstance(values, dict):
            raise ConfigError(f"{source}: unknown section [{section}]")
        for key, value in values.items():
            if not isinstance(DEFAULTS[section].get(key), dict):
                _checked(section, key, value, source)
    return config


def parse_value(text: str) -> Any:
    """A TOML scalar/array (``2e-4``, ``true``, ``[6, 12]``, ``"x"``), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(config: dict, item: str) -> None:
    """Apply one ``section.key=value`` (or ``model.overrides.name=value``) in place."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    value = parse_value(text.strip())
    if len(parts) == 3 and parts[:2] == ["model", "overrides"]:
        config["model"]["overrides"][parts[2]] = value
        return
    if len(parts) != 2 or parts[0] not in DEFAULTS:
        raise ConfigError(f"--set {item!r}: unknown key {dotted!r} "
                          f"(use section.key with section in {', '.join(DEFAULTS)})")
    section, key = parts
    if isinstance(DEFAULTS[section].get(key), str) and not isinstance(value, str):
        value = text.strip()
    config[section][key] = _checked(section, key, value, "--set")


def expand_config(config: dict) -> dict:
    """Expand environment variables in every string value."""
    def walk(value):
        if isinstance(value, str):
            return expand_env(value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    return walk(config)


def dump_config(config: dict) -> str:
    """Serialise a (flat-valued) config back to TOML text."""
    lines: list[str] = []
    for section, values in config.items():
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
        for key, table in values.items():
            if isinstance(table, dict):
                lines.append(f"\n[{section}.{key}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")
