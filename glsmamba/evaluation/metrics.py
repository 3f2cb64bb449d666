"""Metrics as objects: each dataset names the one that scores it (``PoseDataset.metric``).

A metric has one small interface:

* ``score(predictions, dataset, out_dir=None, image_ids=None, **write_options) -> result``: score the
  prediction records of :func:`glsmamba.engine.evaluator.predict_dataset` (one per person
  box: ``index`` into ``dataset.samples``, ``image_id``, ``keypoints`` (K, 3) ...) against
  the parsed ``dataset``;
* ``summary(result) -> {name: value}``: the numbers logged and selected on (``key`` first);
* ``format_table(result, title, markdown) -> str``: the printed table;
* ``describe() -> str``: one line saying which rules scored it.

``uses_protocol``: the predictions are people in poseval files, passed through the run's
evaluation protocol (boxes, scores, NMS) and written to ``out_dir`` before scoring.

Register a new metric with :func:`register_metric`; ``get_metric(name)`` returns a fresh
instance (a metric may cache its ground truth).
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glsmamba.errors import ConfigError
from glsmamba.evaluation.pck import PckResult, format_pck_table, pck_accuracy
from glsmamba.evaluation.posetrack21 import evaluate_posetrack21
from glsmamba.evaluation.posetrack_map import MapResult, evaluate_posetrack, format_table
from glsmamba.evaluation.poseval_io import load_json_dir

METRICS: dict[str, type["Metric"]] = {}


def register_metric(cls: type["Metric"]) -> type["Metric"]:
    """Class decorator: make ``cls`` selectable as ``PoseDataset.metric = cls.name``."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__name__} needs a 'name' to be registered")
    METRICS[cls.name] = cls
    return cls


def get_metric(name: str) -> "Metric":
    """A new instance of the metric registered as ``name``."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r} (one of: {', '.join(sorted(METRICS))})")
    return METRICS[name]()


def list_metrics() -> list[str]:
    return sorted(METRICS)


class Metric:
    """Base class; see the module docstring for the interface."""

    name = ""
    key = ""                       # the headline number of ``summary`` (selected on)
    uses_protocol = False

    def score(self, predictions: Sequence[Mapping], dataset: Any, out_dir: Path | None = None,
              image_ids: set | None = None, **write_options) -> Any:
        raise NotImplementedError

    def summary(self, result: Any) -> dict[str, float]:
        raise NotImplementedError

    def format_table(self, result: Any, title: str | None = None, markdown: bool = False) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@register_metric
class PoseTrackMAP(Metric):
    """poseval's PoseTrack mAP (the PoseTrack 2017 / 2018 rules) on poseval files.

    ``score`` writes the predictions as one poseval JSON per GT video into ``out_dir``
    and scores them against the dataset's annotation files (``dataset.ann_path``); the
    ground truth and the written predictions stay in ``gt`` / ``pred_json``.
    """

    name = "posetrack_map"
    key = "mAP"
    uses_protocol = True
    rules = "poseval"              # ``glsmamba eval-predictions --rules``
    rules_label = "poseval"

    def __init__(self):
        self.gt: dict[str, dict] | None = None
        self.pred_json: dict[str, dict] = {}

    def evaluate(self, gt: Mapping[str, Mapping], pred: Mapping[str, Mapping],
                 image_ids: set | None = None, strict: bool = True,
                 sources: Mapping[str, str] | None = None) -> MapResult:
        """The AP arithmetic on ``video name -> JSON dict`` maps."""
        return evaluate_posetrack(gt, pred, image_ids, strict=strict, sources=sources)

    def score(self, predictions, dataset, out_dir=None, image_ids=None,
              **write_options) -> MapResult:
        """``write_options`` go to :func:`~glsmamba.evaluation.writer.write_posetrack_predictions`
        (``replace_foreign``, ``inputs``, ``extra_files``); without ``out_dir`` the files go
        to a temporary folder, removed after scoring."""
        from glsmamba.evaluation.writer import write_posetrack_predictions
        with tempfile.TemporaryDirectory(prefix="glsmamba-val-") as scratch:
            folder = Path(out_dir) if out_dir is not None else Path(scratch) / "predictions"
            write_posetrack_predictions(folder, dataset.videos, predictions, overwrite=True,
                                        **write_options)
            self.pred_json = load_json_dir(folder)
        if self.gt is None:
            self.gt = load_json_dir(dataset.ann_path)
        gt = {name: self.gt[name] for name in self.pred_json if name in self.gt}
        return self.evaluate(gt, self.pred_json, image_ids)

    def summary(self, result: MapResult) -> dict[str, float]:
        return {self.key: result.total, **result.columns}

    def format_table(self, result: MapResult, title: str | None = None,
                     markdown: bool = False) -> str:
        return format_table(result, title=title, markdown=markdown)

    def describe(self) -> str:
        return f"AP rules {self.rules_label}"


@register_metric
class PoseTrack21MAP(PoseTrackMAP):
    """The PoseTrack21 kit's AP rules over poseval's (glsmamba.evaluation.posetrack21)."""

    name = "posetrack21_map"
    rules = "posetrack21"
    rules_label = "PoseTrack21 kit"

    def evaluate(self, gt, pred, image_ids=None, strict=True, sources=None) -> MapResult:
        return evaluate_posetrack21(gt, pred, image_ids, strict=strict, sources=sources)


@register_metric
class SubJhmdbPCK(Metric):
    """Sub-JHMDB PCK@0.2 (box-normalised) of each box prediction against its sample's joints."""

    name = "pck"
    key = "PCK"
    alpha = 0.2

    def score(self, predictions, dataset, out_dir=None, image_ids=None,
              **write_options) -> PckResult:
        samples = dataset.samples
        pred = np.stack([p["keypoints"][:, :2] for p in predictions])
        gt = np.stack([samples[p["index"]].keypoints for p in predictions])
        visible = np.stack([samples[p["index"]].visible for p in predictions])
        boxes = np.stack([samples[p["index"]].bbox_xywh for p in predictions])
        return pck_accuracy(pred, gt, visible, boxes, alpha=self.alpha,
                            joint_names=dataset.metainfo.joint_names)

    def summary(self, result: PckResult) -> dict[str, float]:
        return {self.key: result.mean, **result.groups}

    def format_table(self, result: PckResult, title: str | None = None,
                     markdown: bool = False) -> str:
        return format_pck_table(result, title=title, markdown=markdown)

    def describe(self) -> str:
        return f"Sub-JHMDB PCK@{self.alpha:g} on GT boxes"


def file_rules() -> dict[str, type[PoseTrackMAP]]:
    """``--rules`` name -> metric class, for the metrics that score poseval files alone."""
    return {cls.rules: cls for cls in METRICS.values() if getattr(cls, "rules", None)}
