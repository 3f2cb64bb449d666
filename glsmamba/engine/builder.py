"""Config -> model, datasets and the validation metric (the glue between the parts)."""
from __future__ import annotations

import os
import warnings
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
from glsmamba.engine.evaluator import predict_dataset
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
        if not config["data"].get("udp", False):
            log("note: the official ViTPose checkpoints are trained with UDP; data.udp = true "
                "keeps crop, targets, decoding and flip test consistent with them")
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


def load_for_eval(model: nn.Module, path: str | os.PathLike, config: dict | None = None) -> dict:
    """Load a checkpoint into ``model`` (strict, listing any missing keys); return its meta.

    With ``config`` (the evaluation's), warn when the checkpoint was trained with another
    data.udp setting: crop geometry, targets and flip alignment would not match.
    """
    tensors, meta, path = load_checkpoint(path)
    trained_udp = meta.get("config", {}).get("data", {}).get("udp")
    if config is not None and trained_udp is not None and bool(trained_udp) != bool(config["data"]["udp"]):
        warnings.warn(f"{path}: trained with data.udp = {str(bool(trained_udp)).lower()}, evaluated "
                      f"with data.udp = {str(bool(config['data']['udp'])).lower()} (set it to match)",
                      stacklevel=2)
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


def parse_split(config: dict, split: str, boxes: str = "gt", det_score_thr: float | None = None,
                clip_detections: bool = True):
    """The dataset parser for ``split`` ("train" | "val").

    ``det_score_thr``: detections scoring below are dropped (default: data.det_score_thr;
    an evaluation protocol passes its own threshold).
    """
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
            raise ConfigError("detected person boxes (eval.protocol dcpose / mmpose) need "
                              "data.val_detections (the config names its environment variable, "
                              "or --set data.val_detections=FILE); --set eval.protocol=gt "
                              "evaluates on GT boxes instead")
        detections = root / data_cfg["val_detections"]
        if not detections.is_file():
            raise DataError("detections file not found (data.val_detections; or --set "
                            "eval.protocol=gt for GT boxes)", str(detections))
    threshold = data_cfg["det_score_thr"] if det_score_thr is None else det_score_thr
    extra = {} if kind == "jhmdb" else {"clip_detections": clip_detections}
    return DATASETS[kind](ann, data_root=root, delta=data_cfg["delta"], detections=detections,
                          det_score_thr=threshold, mode=mode, **extra)


def codec_for(config: dict, model: nn.Module) -> HeatmapCodec:
    """The heatmap codec of a run: the model's sizes, data.sigma and data.udp. Targets,
    decoding and the flip test all use this one codec (and the crop its UDP geometry)."""
    return HeatmapCodec(tuple(model.input_size), tuple(model.heatmap_size),
                        config["data"]["sigma"], udp=bool(config["data"].get("udp", False)))


def build_split(config: dict, model: nn.Module, split: str, boxes: str = "gt",
                augment: bool | None = None, with_target: bool = True,
                det_score_thr: float | None = None, clip_detections: bool = True) -> Split:
    """Parsed samples + the train / test pipeline sized for ``model``."""
    data_cfg = config["data"]
    parsed = parse_split(config, split, boxes, det_score_thr, clip_detections)
    samples = parsed.samples
    limit = data_cfg["max_train_samples" if split == "train" else "max_val_samples"]
    if limit:
        samples = samples[:limit]
    augment = data_cfg["augment"] if augment is None else augment
    mode = "train" if (split == "train" and augment) else "test"
    input_size, heatmap_size = tuple(model.input_size), tuple(model.heatmap_size)
    pipeline = build_pipeline(mode, input_size, heatmap_size, parsed.metainfo,
                              sigma=data_cfg["sigma"], with_target=with_target,
                              udp=bool(data_cfg.get("udp", False)),
                              half_body_center=data_cfg["half_body_center"],
                              half_body_upper_prob=float(data_cfg["half_body_upper_prob"]))
    seed = config["train"]["seed"] if split == "train" else None
    clips = ClipDataset(samples, pipeline, seed=seed)
    return Split(parsed, clips, codec_for(config, model))


# ---------------------------------------------------------------------------- metric
def load_gt(config: dict) -> dict[str, dict]:
    """GT videos (name -> PoseTrack JSON) of the val annotation folder / merged file."""
    from glsmamba.evaluation import load_json_dir
    return load_json_dir(data_root(config) / config["data"]["val_ann"])


def resolve_protocol(config: dict, name: str | None = None, boxes: str | None = None):
    """The evaluation protocol of a run: ``name`` (e.g. ``--protocol``), else eval.protocol.

    ``boxes`` (the legacy ``--boxes`` / eval.boxes): "gt" selects the ``gt`` protocol;
    "detections" requires a protocol on detected boxes (dcpose / mmpose).
    """
    from glsmamba.evaluation.protocols import get_protocol
    if config["data"]["type"] == "jhmdb":
        return get_protocol("gt")
    protocol = get_protocol(name or config["eval"]["protocol"])
    if boxes is None and name is None and config["eval"].get("boxes") == "detections":
        boxes = "detections"
    if boxes == "gt":
        return get_protocol("gt")
    if boxes == "detections" and protocol.boxes != "detections":
        raise ConfigError("detected boxes are chosen by the evaluation protocol: use "
                          "eval.protocol = \"dcpose\" or \"mmpose\" (--set eval.protocol=dcpose)")
    return protocol


def split_for_protocol(config: dict, model: nn.Module, protocol) -> Split:
    """The val split with the protocol's person boxes (and its detection score threshold)."""
    threshold = protocol.box_score_thr if protocol.boxes == "detections" else None
    return build_split(config, model, "val", boxes=protocol.boxes, with_target=False,
                       det_score_thr=threshold, clip_detections=protocol.clip_boxes)


class Evaluator:
    """Predict a val split and score it: PoseTrack mAP (poseval) or Sub-JHMDB PCK.

    PoseTrack predictions pass through the evaluation ``protocol`` (boxes, scores, NMS;
    :mod:`glsmamba.evaluation.protocols`) before they are written; the protocol, flip
    and decoding settings are written to ``<out_dir>/eval_meta.toml``.
    """

    META_FILE = "eval_meta.toml"

    def __init__(self, config: dict, split: Split, out_dir: Path | None = None,
                 flip: bool | None = None, decode: str | None = None, progress: bool = True,
                 protocol=None):
        from glsmamba.evaluation.protocols import get_protocol
        self.config, self.split, self.out_dir = config, split, out_dir
        eval_cfg = config["eval"]
        self.flip = eval_cfg["flip_test"] if flip is None else flip
        self.decode = decode or eval_cfg["decode"]
        self.is_jhmdb = config["data"]["type"] == "jhmdb"
        if protocol is None:
            protocol = resolve_protocol(config)
        self.protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
        self.progress = progress
        self.gt = None if self.is_jhmdb else load_gt(config)
        self.last_result = None
        self.predictions: list[dict] = []
        self.raw_predictions: list[dict] = []
        self.checkpoint: str = ""          # label of the evaluated checkpoint (api.evaluate)

    def describe(self) -> str:
        """The protocol line printed with every table (decoding and UDP included)."""
        if self.is_jhmdb:
            return (f"Sub-JHMDB PCK@0.2 on GT boxes; flip test {'on' if self.flip else 'off'}; "
                    f"decoding {self.decode}")
        udp = "on" if self.split.codec.udp else "off"
        rules = ("PoseTrack21 kit" if self.config["data"]["type"] == "posetrack21" else "poseval")
        return (f"{self.protocol.describe(self.flip)}; decoding {self.decode}; UDP {udp}; "
                f"AP rules {rules}")

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
        self.raw_predictions = self.predictions           # one per box, raw heatmap peaks
        if not du.current().is_main:
            return {}
        return self.score_pck() if self.is_jhmdb else self.score_posetrack()

    def score_posetrack(self, image_ids: set | None = None) -> dict[str, float]:
        from glsmamba.evaluation import evaluate_posetrack, load_json_dir, write_posetrack_predictions
        from glsmamba.evaluation.protocols import apply_protocol
        out_dir = self.out_dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"glsmamba-val-{os.getpid()}"
        if self.predictions is self.raw_predictions:       # not yet through the protocol
            self.predictions = apply_protocol(self.protocol, self.raw_predictions,
                                              self.split.parsed.metainfo.sigmas)
        write_posetrack_predictions(out_dir, self.split.parsed.videos, self.predictions,
                                    overwrite=True)
        self.write_meta(out_dir)
        self.pred_json = load_json_dir(out_dir)
        gt = {name: self.gt[name] for name in self.pred_json if name in self.gt}
        if self.config["data"]["type"] == "posetrack21":      # the PoseTrack21 kit's rules
            from glsmamba.evaluation.posetrack21 import evaluate_posetrack21 as evaluate_posetrack
        self.last_result = evaluate_posetrack(gt, self.pred_json, image_ids)
        return {"mAP": self.last_result.total, **self.last_result.columns}

    def metadata(self) -> dict:
        """What produced the predictions: protocol rules, flip, decoding, codec."""
        codec = self.split.codec
        protocol = {k: ("none" if v is None else v) for k, v in self.protocol.as_dict().items()}
        return {
            "eval": {"protocol": self.protocol.name, "description": self.describe(),
                     "flip_test": bool(self.flip), "decode": self.decode,
                     "udp": bool(codec.udp), "flip_shift": int(codec.flip_shift),
                     "boxes_file": str(getattr(self.split.parsed, "detections", None) or ""),
                     "num_box_predictions": len(self.raw_predictions),
                     "num_people_written": len(self.predictions),
                     "checkpoint": self.checkpoint},
            "protocol": protocol,
        }

    def write_meta(self, out_dir: Path) -> Path:
        from glsmamba.engine.config import dump_config
        path = Path(out_dir) / self.META_FILE
        path.write_text("# written by glsmamba eval: how these predictions were made\n"
                        + dump_config(self.metadata()))
        return path

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
