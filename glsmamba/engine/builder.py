"""Config -> model, datasets and the validation metric (the glue between the parts)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from glsmamba.data.clip_dataset import ClipDataset, build_pipeline
from glsmamba.data.codec import HeatmapCodec
from glsmamba.engine import distributed as du
from glsmamba.checkpoint import load_checkpoint, load_model_weights
from glsmamba.config import section
from glsmamba.engine.evaluator import predict_dataset
from glsmamba.errors import CheckpointError, ConfigError, DataError


def dataset_class(config: dict) -> type:
    """The parser registered as data.type (it declares its metainfo, metric and files)."""
    from glsmamba.data.datasets import get_dataset
    return get_dataset(section(config, "data").type)


def dataset_metainfo(config: dict):
    """The joint layout (DatasetInfo) of the config's dataset type."""
    from glsmamba.data.metainfo import load_metainfo
    return load_metainfo(dataset_class(config).default_metainfo)


def num_frames(config: dict) -> int:
    return 2 * section(config, "data").delta + 1


# ---------------------------------------------------------------------------- model
def build_model(config: dict, log=print, for_training: bool = True) -> nn.Module:
    """``create_model`` with the config's overrides, pretrained encoder and ``init_from``.

    ``for_training=False`` (eval / infer: a checkpoint follows) skips ``init_from`` and the
    refusal of a frozen encoder without weights (``require_encoder_weights``).
    """
    from glsmamba.models import create_model
    model_cfg, data = section(config, "model"), section(config, "data")
    overrides: dict[str, Any] = {"num_joints": dataset_metainfo(config).num_joints,
                                 "num_frames": num_frames(config)}
    if data.window != "centered":                  # the estimated frame's index
        overrides["clip_window"] = data.window
    overrides.update(model_cfg.overrides)
    for key in ("input_size",):
        if key in overrides and isinstance(overrides[key], list):
            overrides[key] = tuple(overrides[key])
    model = create_model(model_cfg.name, **overrides)
    if model_cfg.pretrained:
        from glsmamba.models.pretrained import resolve_pretrained
        from glsmamba.models.vitpose import load_vitpose
        resolved = resolve_pretrained(model_cfg.pretrained)   # hf://, file or folder
        load_vitpose(model.encoder, resolved.path)
        model.pretrained_weights = resolved.as_meta()             # -> the run's metadata
        log(f"encoder weights loaded from {resolved.path} (sha256 {resolved.sha256[:16]})")
        if not data.udp:
            log("note: the official ViTPose checkpoints are trained with UDP; data.udp = true "
                "keeps crop, targets, decoding and flip test consistent with them")
    if model_cfg.init_from and for_training:
        init_from_checkpoint(model, model_cfg.init_from, log)
    if for_training:
        from glsmamba.models.pretrained import require_encoder_weights
        require_encoder_weights(config, model)     # ConfigError: frozen + random encoder
    return model


def checkpoint_config(checkpoint: str | os.PathLike, config: str | None = None,
                      overrides=None, loaded: tuple | None = None) -> dict:
    """The run config of a checkpoint: ``config`` (a TOML path or bundled name) if given,
    else the one stored with it; ``overrides`` are ``--set`` items. ``loaded``: the
    checkpoint as ``load_checkpoint`` returned it, not to read it again."""
    from glsmamba.config import apply_override, expand_config, load_config, merge_config
    if config:
        return load_config(config, list(overrides or []))
    _, meta, path = loaded if loaded is not None else load_checkpoint(checkpoint)
    if "config" not in meta:
        raise ConfigError(f"{path}: the checkpoint stores no config; pass --config")
    stored = merge_config(meta["config"], source=str(path.with_suffix(".json")))
    for item in overrides or []:
        apply_override(stored, item)
    return expand_config(stored)


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


def load_for_eval(model: nn.Module, path: str | os.PathLike, config: dict | None = None,
                  loaded: tuple | None = None) -> dict:
    """Load a checkpoint into ``model`` (strict, listing any missing keys); return its meta.

    With ``config`` (the evaluation's), warn when the checkpoint was trained with another
    data.udp setting: crop geometry, targets and flip alignment would not match.
    ``loaded``: what ``load_checkpoint(path)`` returned, when the caller read it already.
    """
    tensors, meta, path = loaded if loaded is not None else load_checkpoint(path)
    trained_udp = meta.get("config", {}).get("data", {}).get("udp")
    udp = None if config is None else bool(section(config, "data").udp)
    if udp is not None and trained_udp is not None and bool(trained_udp) != udp:
        warnings.warn(f"{path}: trained with data.udp = {str(bool(trained_udp)).lower()}, evaluated "
                      f"with data.udp = {str(udp).lower()} (set it to match)", stacklevel=2)
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


def missing_root_message(root: Path) -> str:
    """What to do about a data root that does not exist (the synthetic benchmark: make
    it; a real dataset: where the bundled configs look for it)."""
    if "synth" in root.name.lower():
        return (f"data root not found; make the synthetic benchmark there (run: glsmamba synth "
                f"--out {root}), or point GLSMAMBA_DATA (its synth/ folder), "
                "GLSMAMBA_SYNTH_ROOT or --set data.root=DIR at an existing one")
    return ("data root not found; set GLSMAMBA_DATA (the bundled configs read "
            "$GLSMAMBA_DATA/<dataset>, default ./data), the config's own variable (its header "
            "names it) or --set data.root=DIR; docs/DATASETS.md says where each dataset comes from")


def data_root(config: dict) -> Path:
    root = Path(section(config, "data").root)
    if not root.is_dir():
        raise DataError(missing_root_message(root), str(root))
    from glsmamba.synth.generate import check_complete
    check_complete(root)                  # a killed `glsmamba synth` is not a benchmark
    return root


def parse_split(config: dict, split: str, boxes: str = "gt", det_score_thr: float | None = None,
                clip_detections: bool = True):
    """The dataset parser for ``split`` ("train" | "val").

    ``det_score_thr``: detections scoring below are dropped (default: data.det_score_thr;
    an evaluation protocol passes its own threshold).
    """
    parser, data = dataset_class(config), section(config, "data")
    root = data_root(config)
    detections = detections_file(data.val_detections, root, parser) \
        if boxes == "detections" else None
    threshold = data.det_score_thr if det_score_thr is None else det_score_thr
    from glsmamba.data.datasets.base import outside_root_allowed
    with outside_root_allowed(data.allow_outside_root):
        return parser.for_split(root, data.train_ann if split == "train" else data.val_ann,
                                mode="train" if split == "train" else "test",
                                delta=data.delta, window=data.window, split=data.split,
                                detections=detections, det_score_thr=threshold,
                                clip_detections=clip_detections)


def detections_file(val_detections: str, root: Path, parser: type) -> Path:
    """The detected person boxes of the val split (data.val_detections), found by the parser."""
    if not val_detections:
        raise ConfigError("detected person boxes (eval.protocol dcpose / mmpose) need "
                          "data.val_detections (the config names its environment variable, "
                          "or --set data.val_detections=FILE); --set eval.protocol=gt "
                          "evaluates on GT boxes instead")
    detections = parser.detections_path(root, val_detections)
    if not detections.is_file():
        raise DataError("detections file not found (data.val_detections; or --set "
                        "eval.protocol=gt for GT boxes)", str(detections))
    return detections


def codec_for(config: dict, model: nn.Module) -> HeatmapCodec:
    """The heatmap codec of a run: the model's sizes, data.sigma and data.udp. Targets,
    decoding and the flip test all use this one codec (and the crop its UDP geometry)."""
    data = section(config, "data")
    return HeatmapCodec(tuple(model.input_size), tuple(model.heatmap_size), data.sigma,
                        udp=bool(data.udp))


def build_split(config: dict, model: nn.Module, split: str, boxes: str = "gt",
                augment: bool | None = None, with_target: bool = True,
                det_score_thr: float | None = None, clip_detections: bool = True) -> Split:
    """Parsed samples + the train / test pipeline sized for ``model``."""
    data = section(config, "data")
    parsed = parse_split(config, split, boxes, det_score_thr, clip_detections)
    samples = parsed.samples
    limit = data.max_train_samples if split == "train" else data.max_val_samples
    if limit:
        samples = samples[:limit]
    augment = data.augment if augment is None else augment
    mode = "train" if (split == "train" and augment) else "test"
    input_size, heatmap_size = tuple(model.input_size), tuple(model.heatmap_size)
    pipeline = build_pipeline(mode, input_size, heatmap_size, parsed.metainfo,
                              sigma=data.sigma, with_target=with_target, udp=bool(data.udp),
                              half_body_center=data.half_body_center,
                              half_body_upper_prob=float(data.half_body_upper_prob))
    seed = section(config, "train").seed if split == "train" else None
    clips = ClipDataset(samples, pipeline, seed=seed, window=data.window)
    return Split(parsed, clips, codec_for(config, model))


# ---------------------------------------------------------------------------- metric
def resolve_protocol(config: dict, name: str | None = None, boxes: str | None = None):
    """The evaluation protocol of a run: ``name`` (e.g. ``--protocol``), else eval.protocol.

    ``boxes`` (the legacy ``--boxes`` / eval.boxes): "gt" selects the ``gt`` protocol;
    "detections" requires a protocol on detected boxes (dcpose / mmpose).
    """
    from glsmamba.evaluation.protocols import get_protocol
    if not dataset_class(config).detected_boxes:     # e.g. Sub-JHMDB: GT boxes only
        return get_protocol("gt")
    evaluation = section(config, "eval")
    protocol = get_protocol(name or evaluation.protocol)
    if boxes is None and name is None and evaluation.boxes == "detections":
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
    """Predict a val split and score it with the dataset's metric (PoseTrack mAP, PCK ...).

    PoseTrack predictions pass through the evaluation ``protocol`` (boxes, scores, NMS;
    :mod:`glsmamba.evaluation.protocols`) before they are written; the protocol, flip
    and decoding settings are written to ``<out_dir>/eval_meta.toml``.
    """

    META_FILE = "eval_meta.toml"

    def __init__(self, config: dict, split: Split, out_dir: Path | None = None,
                 flip: bool | None = None, decode: str | None = None, progress: bool = True,
                 protocol=None):
        from glsmamba.evaluation.metrics import get_metric
        from glsmamba.evaluation.protocols import get_protocol
        self.config, self.split, self.out_dir = config, split, out_dir
        evaluation = section(config, "eval")
        self.flip = evaluation.flip_test if flip is None else flip
        self.decode = decode or evaluation.decode
        self.metric = get_metric(dataset_class(config).metric)   # the dataset's own metric
        if protocol is None:
            protocol = resolve_protocol(config)
        self.protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
        self.progress = progress
        self.last_result = None
        self.predictions: list[dict] = []
        self.raw_predictions: list[dict] = []
        self.checkpoint: str = ""          # label of the evaluated checkpoint (api.evaluate)
        self.overwrite = False             # --overwrite: may replace a folder glsmamba did not write
        self.inputs: list = self._read_paths()   # never written over, even with --overwrite

    def _read_paths(self) -> list[Path]:
        """The GT annotations and the boxes file this evaluation reads."""
        data_cfg = self.config["data"]
        root = Path(str(data_cfg.get("root") or "."))
        return [root / str(data_cfg[key]) for key in ("val_ann", "train_ann", "val_detections")
                if data_cfg.get(key)]

    def describe(self) -> str:
        """The protocol line printed with every table (decoding and UDP included)."""
        if not self.metric.uses_protocol:
            return (f"{self.metric.describe()}; flip test {'on' if self.flip else 'off'}; "
                    f"decoding {self.decode}")
        udp = "on" if self.split.codec.udp else "off"
        return (f"{self.protocol.describe(self.flip)}; decoding {self.decode}; UDP {udp}; "
                f"{self.metric.describe()}")

    @property
    def metric_key(self) -> str:
        return self.metric.key

    def _check_gt_split(self) -> None:
        """An empty GT split is a DataError naming the annotations (not the predictions)."""
        parsed = self.split.parsed
        where = str(getattr(parsed, "ann_path", "") or self.config["data"]["val_ann"])
        if not parsed.videos:
            raise DataError("the ground-truth split holds no video (no image records): "
                            "nothing to evaluate", where)
        samples = getattr(self.split.clips, "samples", None)
        if samples is not None and not samples and getattr(self.protocol, "boxes", "gt") == "gt":
            raise DataError("the ground-truth split holds no labelled person: nothing to "
                            "evaluate", where)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        self._check_gt_split()
        device = next(model.parameters()).device
        flip_indices = self.split.parsed.metainfo.flip_indices if self.flip else None
        data = section(self.config, "data")
        self.predictions = predict_dataset(
            model, self.split.clips, self.split.clips.samples, self.split.codec, flip_indices,
            data.val_batch_size, data.workers, self.decode, device, self.progress)
        self.raw_predictions = self.predictions           # one per box, raw heatmap peaks
        if not du.current().is_main:
            return {}
        return self.score()

    def score(self, image_ids: set | None = None) -> dict[str, float]:
        """Score the predictions with the dataset's metric (``summary``: ``metric_key``
        first). A metric on poseval files gets the people the protocol keeps, written to
        ``out_dir`` (a temporary folder without one) with ``eval_meta.toml``."""
        options: dict = {}
        if self.metric.uses_protocol:
            from glsmamba.evaluation.protocols import apply_protocol
            if self.predictions is self.raw_predictions:       # not yet through the protocol
                self.predictions = apply_protocol(self.protocol, self.raw_predictions,
                                                  self.split.parsed.metainfo.sigmas)
            # one complete set with its eval_meta.toml; never over an input (GT, boxes,
            # checkpoint); a folder glsmamba did not write only with --overwrite
            options = dict(replace_foreign=self.overwrite, inputs=self.inputs,
                           extra_files={self.META_FILE: self.meta_text().encode()})
        self.last_result = self.metric.score(self.predictions, self.split.parsed, self.out_dir,
                                             image_ids, **options)
        return self.metric.summary(self.last_result)

    @property
    def gt(self) -> dict | None:
        """Ground truth the metric read (PoseTrack: video name -> JSON), None before scoring."""
        return getattr(self.metric, "gt", None)

    @property
    def pred_json(self) -> dict | None:
        """The prediction files as written and read back (PoseTrack metrics)."""
        return getattr(self.metric, "pred_json", None)

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

    def meta_text(self) -> str:
        from glsmamba.config import dump_config
        return ("# written by glsmamba eval: how these predictions were made\n"
                + dump_config(self.metadata()))

    def write_meta(self, out_dir: Path) -> Path:
        from glsmamba.fileio import atomic_write_text
        return atomic_write_text(Path(out_dir) / self.META_FILE, self.meta_text())

