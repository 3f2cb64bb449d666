"""Preflight: everything a run needs, checked before it starts (``glsmamba check-data``).

One :class:`Report` of findings, each ``ok`` / ``info`` / ``warning`` / ``fatal``:

* layout: the data root and the annotation folders / split files the config names;
* annotations: every annotation file parses (the run's own parsers, via the builder);
* counts: videos, labelled frames and annotated people per split, against the official
  sizes in ``glsmamba/data/datasets/split_sizes.json`` (a mismatch is a warning);
* frames: every frame a clip needs exists; a sample of them decodes (all with ``full``);
* detections: the detections file of a detected-box protocol names only val images and
  covers the labelled val frames (a file of another split is fatal);
* weights: the model builds as the run builds it (``model.pretrained`` resolved and loaded
  strictly, a frozen encoder without weights refused) and one clip gives finite features;
* scan: the selective-scan backend a run on this device uses, and its self-test verdict;
* disk: the feature cache's projected size against the free space;
* memory: the projected training peak for the configured batch, from one measured
  batch-1 step (on a GPU, or with ``full``) plus the counted weights / gradients / AdamW.

Exit status of :meth:`Report.exit_code`: 0 all good, 1 warnings, 2 a run would fail.
``fast=True`` (what ``glsmamba train`` runs first) decodes a few frames and measures no step.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glsmamba.errors import GlsmambaError

SPLIT_SIZES = Path(__file__).resolve().parent / "data" / "datasets" / "split_sizes.json"
LEVELS = {"ok": 0, "info": 0, "warning": 1, "fatal": 2}
DECODE_SAMPLE = 48          # frames decoded by default (all with --full)
DECODE_SAMPLE_FAST = 8      # frames decoded by the check `glsmamba train` runs first
GIB = 2 ** 30


@dataclass
class Finding:
    level: str      # ok | info | warning | fatal
    topic: str      # layout, annotations, counts, frames, detections, weights, scan, disk, memory
    text: str


@dataclass
class Report:
    """The findings of one check, in the order they were made."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, level: str, topic: str, text: str) -> None:
        self.findings.append(Finding(level, topic, text))

    @property
    def exit_code(self) -> int:
        return max((LEVELS[f.level] for f in self.findings), default=0)

    def fatal(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "fatal"]

    def format(self) -> str:
        lines = [f"[{f.level:>7}] {f.topic}: {f.text}" for f in self.findings]
        counts = {level: sum(f.level == level for f in self.findings) for level in ("warning", "fatal")}
        verdict = {0: "ready to run", 1: "runs, with warnings", 2: "a run would fail"}[self.exit_code]
        lines.append(f"check-data: {verdict} ({counts['fatal']} fatal, {counts['warning']} "
                     f"warning(s); exit {self.exit_code})")
        return "\n".join(lines)


# ------------------------------------------------------------------------ helpers
def config_env_vars(source: str | os.PathLike | None, section: str, key: str) -> list[str]:
    """The ``${VAR}`` names a config file's raw ``section.key`` reads (before expansion)."""
    if not source or not Path(source).is_file():
        return []
    try:
        raw = tomllib.loads(Path(source).read_text()).get(section, {}).get(key, "")
    except (tomllib.TOMLDecodeError, OSError, AttributeError):
        return []
    return re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", raw) if isinstance(raw, str) else []


def folder_hint(path: Path) -> str:
    """What the nearest existing parent of a missing ``path`` holds (a renamed folder shows)."""
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    try:
        names = sorted(p.name for p in parent.iterdir() if p.is_dir())[:8]
    except OSError:
        return ""
    return f" ({parent} holds: {', '.join(names) or 'no folders'})"


def size_text(nbytes: float) -> str:
    """Bytes as GiB (from 1 GiB) or MiB."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / 2 ** 20:.1f} MiB"


def load_split_sizes() -> dict:
    """The official split sizes (one owner: ``data/datasets/split_sizes.json``)."""
    return json.loads(SPLIT_SIZES.read_text())


def split_keys(config: dict) -> dict[str, str]:
    """Run split -> key in split_sizes.json (Sub-JHMDB: per split number)."""
    if config["data"]["type"] == "jhmdb":
        number = config["data"]["split"]
        return {"train": f"split{number}_train", "val": f"split{number}_test"}
    return {"train": "train", "val": "val"}


# ------------------------------------------------------------------------ layout
def check_layout(config: dict, report: Report, source=None) -> bool:
    """Data root and annotation paths; False when nothing further can be checked."""
    from glsmamba.data.datasets import find_split_file
    data_cfg = config["data"]
    root = Path(data_cfg["root"])
    if not root.is_dir():
        names = config_env_vars(source, "data", "root")
        via = f" or the environment variable {' / '.join(names)}" if names else ""
        make = (" (synthetic data: glsmamba synth --out DIR)"
                if any("SYNTH" in n for n in names) else " (docs/DATASETS.md)")
        report.add("fatal", "layout", f"data root {root} not found{folder_hint(root)}: set "
                   f"data.root (--set data.root=DIR){via}{make}")
        return False
    report.add("ok", "layout", f"data root {root}")
    ok = True
    for split, key in (("train", "train_ann"), ("val", "val_ann")):
        ann = root / data_cfg[key]
        try:
            if data_cfg["type"] == "jhmdb":
                ann = find_split_file(ann, data_cfg["split"], "train" if split == "train" else "test")
            elif not ann.exists():
                raise FileNotFoundError
            report.add("ok", "layout", f"{split} annotations {ann}")
        except (GlsmambaError, FileNotFoundError) as err:
            detail = str(err) if isinstance(err, GlsmambaError) else f"{ann}: not found"
            report.add("fatal", "layout", f"{split} annotations (data.{key}): {detail}"
                       f"{folder_hint(ann) if not ann.exists() else ''}")
            ok = False
    return ok


# ------------------------------------------------------------------------ annotations
def check_annotations(config: dict, report: Report) -> dict[str, Any]:
    """Parse each split with the run's parser (GT boxes); split -> parsed dataset."""
    from glsmamba.engine.builder import parse_split
    parsed = {}
    for split in ("train", "val"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                parsed[split] = parse_split(config, split, boxes="gt")
            except GlsmambaError as err:
                report.add("fatal", "annotations", f"{split}: {err}")
                continue
        for warning in caught[:3]:
            report.add("warning", "annotations", f"{split}: {warning.message}")
        report.add("ok", "annotations", f"{split}: {len(parsed[split].videos)} video(s) parsed "
                   f"({parsed[split].ann_path})")
    return parsed


def split_counts(parsed) -> dict[str, int]:
    """Videos, frames (image records), labelled frames and annotated people (GT samples)."""
    images = [image for video in parsed.videos.values() for image in video.images]
    labelled = sum(1 for image in images if image.get("is_labeled", True))
    return {"videos": len(parsed.videos), "frames": len(images), "labelled_frames": labelled,
            "people": len(parsed.samples)}


def check_counts(config: dict, parsed: dict, report: Report) -> None:
    """Each split's counts against the official sizes; a mismatch is a warning."""
    from glsmamba.synth.generate import read_meta
    synthetic = read_meta(Path(config["data"]["root"])) is not None
    official = {} if synthetic else load_split_sizes().get(config["data"]["type"], {})
    for split, key in split_keys(config).items():
        if split not in parsed:
            continue
        counts = split_counts(parsed[split])
        text = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in counts.items())
        expected = official.get(key, {})
        known = {k: expected[k] for k in counts if isinstance(expected.get(k), int)}
        wrong = {k: v for k, v in known.items() if counts[k] != v}
        if wrong:
            listed = "; ".join(f"{k.replace('_', ' ')} {counts[k]:,} (official {v:,})"
                               for k, v in wrong.items())
            report.add("warning", "counts", f"{split}: {listed} [{expected.get('source', '')}]")
        elif known:
            report.add("ok", "counts", f"{split}: {text} (as the official split)")
        else:
            why = ("synthetic data (glsmamba synth)" if synthetic else
                   f"no official size on record for {config['data']['type']} {key}")
            report.add("info", "counts", f"{split}: {text} ({why})")


# ------------------------------------------------------------------------ frames
def needed_frames(parsed: dict) -> list[str]:
    """Every frame any clip of any split reads, sorted, once each."""
    return sorted({path for split in parsed.values() for s in split.samples for path in s.frame_paths})


def decode_sample(paths: list[str], count: int) -> list[str]:
    """``count`` paths spread evenly over ``paths`` (first and last included)."""
    if len(paths) <= count:
        return list(paths)
    picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in sorted(set(picks.tolist()))]


def check_frames(parsed: dict, report: Report, full: bool, fast: bool, show_progress: bool) -> None:
    """All needed frames exist; a sample (``full``: all) decodes (``read_image``)."""
    from glsmamba.data.transforms import read_image
    from glsmamba.progress import progress
    paths = needed_frames(parsed)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        report.add("fatal", "frames", f"{len(missing):,} of {len(paths):,} frames missing, first "
                   f"{missing[0]}{folder_hint(Path(missing[0]))}")
    gone = set(missing)
    present = [p for p in paths if p not in gone]
    chosen = present if full else decode_sample(present, DECODE_SAMPLE_FAST if fast else DECODE_SAMPLE)
    bad = []
    for path in progress(chosen, total=len(chosen), desc="decoding frames", unit="frame",
                         enabled=show_progress and len(chosen) > 50):
        try:
            read_image(path)
        except GlsmambaError as err:
            bad.append(str(err))
    if not full:
        bad += structural_problems([p for p in present if p not in set(chosen)], show_progress)
    if bad:
        report.add("fatal", "frames", f"{len(bad)} of {len(present):,} frames are broken: "
                   + "; ".join(bad[:3]))
    elif not missing:
        scope = "all decode" if full else (f"a sample of {len(chosen)} decodes, the others end "
                                           "as whole JPEG / PNG files (--full: decode all)")
        report.add("ok", "frames", f"{len(paths):,} frames exist; {scope}")


def structural_problems(paths: list, show_progress: bool) -> list[str]:
    """Files among ``paths`` that are not whole JPEG / PNG files (cut short, empty, another
    format), read from their ends only: cheap enough for every frame of a split."""
    from glsmamba.data.transforms import image_file_problem
    from glsmamba.progress import progress
    bad = []
    for path in progress(paths, total=len(paths), desc="checking frame files", unit="frame",
                         enabled=show_progress and len(paths) > 500):
        try:
            problem = image_file_problem(path)
        except OSError as err:
            problem = f"cannot be read ({err.strerror})"
        if problem:
            bad.append(f"{path}: {problem}")
    return bad


# ------------------------------------------------------------------------ detections
def check_detections(config: dict, parsed: dict, report: Report) -> None:
    """The protocol's detections file: present, of the val split, covering labelled frames."""
    from glsmamba.engine.builder import parse_split, resolve_protocol
    try:
        protocol = resolve_protocol(config)
    except GlsmambaError as err:
        report.add("fatal", "detections", str(err))
        return
    if protocol.boxes != "detections":
        report.add("info", "detections", f"eval.protocol = {protocol.name}: GT boxes, no "
                   "detections file needed")
        return
    if not config["data"]["val_detections"]:
        report.add("warning", "detections", f"eval.protocol = {protocol.name} needs "
                   "data.val_detections: training validates on GT boxes and `glsmamba eval` "
                   "will refuse (docs/DATASETS.md says where the files come from)")
        return
    try:
        with warnings.catch_warnings():            # the GT parse above reported them
            warnings.simplefilter("ignore")
            dets = parse_split(config, "val", boxes="detections",
                               det_score_thr=protocol.box_score_thr,
                               clip_detections=protocol.clip_boxes)
    except GlsmambaError as err:
        hint = (": is it the detections file of another split?"
                if "not in the annotations" in str(err) else "")
        report.add("fatal", "detections", f"data.val_detections: {err}{hint}")
        return
    if "val" in parsed:
        covered_frames(dets, parsed["val"], protocol.name, report)


def covered_frames(dets, val, protocol: str, report: Report) -> None:
    """Share of labelled val frames with at least one kept detection."""
    labelled = {image["id"] for video in val.videos.values() for image in video.images
                if image.get("is_labeled", True)}
    covered = labelled & {s.image_id for s in dets.samples}
    share = len(covered) / max(len(labelled), 1)
    text = (f"{dets.detections}: {len(dets.samples):,} boxes kept by protocol {protocol} on "
            f"{len(covered):,} of {len(labelled):,} labelled val frames ({share:.0%})")
    level = "fatal" if not covered else ("warning" if share < 0.9 else "ok")
    report.add(level, "detections", text)


# ------------------------------------------------------------------------ weights
def first_frame(parsed: dict) -> str | None:
    """The first labelled frame on disk (val first), for the forward check; None if none."""
    for split in ("val", "train"):
        for sample in parsed[split].samples if split in parsed else []:
            if os.path.isfile(sample.image_path):
                return sample.image_path
    return None


def check_weights(config: dict, parsed: dict, report: Report, source=None):
    """Build the model as a run does; load weights; one clip -> finite features."""
    from glsmamba.engine.builder import build_model
    logs: list[str] = []
    try:
        model = build_model(config, log=logs.append)
    except GlsmambaError as err:
        names = config_env_vars(source, "model", "pretrained")
        via = f" (the config reads it from {', '.join(names)})" if names else ""
        report.add("fatal", "weights", f"{err}{via}")
        return None
    meta = getattr(model, "pretrained_weights", None)
    encoder = getattr(model, "encoder", None)
    if meta:
        from glsmamba.models.vitpose_hf import read_vitpose_state
        state = read_vitpose_state(Path(meta["path"]), strict=False)
        dtypes = sorted({str(t.dtype).replace("torch.", "") for t in state.values()
                         if t.is_floating_point()})
        report.add("ok", "weights", f"{meta['path']} (sha256 {meta['sha256'][:16]}) loads into "
                   f"{getattr(encoder, 'arch', '?')} of {config['model']['name']}; dtype {', '.join(dtypes)}")
    elif encoder is not None and config["model"]["init_from"]:
        report.add("ok", "weights", f"encoder from model.init_from {config['model']['init_from']}")
    elif encoder is not None and not any(p.requires_grad for p in encoder.parameters()):
        report.add("info", "weights", "frozen encoder with random weights "
                   "(model.random_encoder_ok = true)")
    feats = finite_features(model, first_frame(parsed), report)
    model.feature_shape = None if feats is None else tuple(feats.shape[1:])   # (T, C, h, w)
    return model


def crop_clip(model, image_path: str | None) -> torch.Tensor:
    """One normalised clip (1, T, 3, H, W): a real frame resized, else noise."""
    import cv2

    from glsmamba.data.transforms import MEAN_RGB, STD_RGB, read_image
    width, height = model.input_size
    if image_path:
        image = cv2.resize(read_image(image_path), (width, height)).astype(np.float32)
        image = (image - MEAN_RGB) / STD_RGB
        crop = torch.from_numpy(image).permute(2, 0, 1).float()
    else:
        crop = torch.randn(3, height, width, generator=torch.Generator().manual_seed(0))
    return crop.expand(1, getattr(model, "num_frames", 1), 3, height, width).contiguous()


def finite_features(model, image_path: str | None, report: Report):
    """``model.encode`` (or the model) on one clip; fatal when not finite."""
    model.eval()
    try:
        clip = crop_clip(model, image_path)
        with torch.no_grad():
            out = model.encode(clip) if hasattr(model, "encode") else model(clip)
    except (GlsmambaError, RuntimeError) as err:
        report.add("fatal", "weights", f"forward on one clip failed: {err}")
        return None
    if not torch.isfinite(out).all():
        report.add("fatal", "weights", f"forward on one clip gives {int((~torch.isfinite(out)).sum())} "
                   "non-finite values (corrupt weights?)")
        return None
    report.add("ok", "weights", f"one clip -> features {tuple(out.shape)}, finite")
    return out


# ------------------------------------------------------------------------ scan
def check_scan(report: Report, run_selftest: bool = True) -> None:
    """The backend ``selective_scan`` picks on this device and the self-test verdicts
    (``glsmamba.ops.selective_scan.scan_backend_report``): a backend that fails its self-test
    where scans would raise is fatal; one that ``auto`` falls back from is a warning."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        from glsmamba.ops.selective_scan import scan_backend_report
    except ImportError:           # a version without the self-test
        from glsmamba.ops.selective_scan import resolve_backend
        backend = resolve_backend("auto", device, torch.float32)
        report.add("info", "scan", f"selective scan on {device}: {backend}; no self-test in "
                   "this version")
        return
    try:
        line = scan_backend_report(device, run=run_selftest)
    except GlsmambaError as err:
        report.add("fatal", "scan", str(err))
        return
    level = "fatal" if "scans raise" in line else ("warning" if "FAILED" in line else "ok")
    report.add(level, "scan", line)


# ------------------------------------------------------------------------ disk
def cache_bytes(config: dict, model, parsed: dict) -> int:
    """Projected feature-cache size: float16 features per sample, float32 targets (train
    only: the val cache holds no heatmaps) and ~16 float32 per-sample fields."""
    t, c, h, w = model.feature_shape
    hw, hh = model.heatmap_size
    features = t * c * h * w * 2 + 16 * 4
    targets = (model.num_joints * hh * hw + model.num_joints) * 4
    total = 0
    for split, key in (("train", "max_train_samples"), ("val", "max_val_samples")):
        if split in parsed:
            limit = config["data"][key]
            count = min(len(parsed[split].samples), limit) if limit else len(parsed[split].samples)
            total += count * (features + (targets if split == "train" else 0))
    return total


def check_disk(config: dict, model, parsed: dict, work_dir: Path, report: Report) -> None:
    """The feature cache's projected size against the free space where it goes."""
    if not config["train"]["cache_features"]:
        report.add("info", "disk", "no feature cache (train.cache_features = false)")
        return
    if len(getattr(model, "feature_shape", None) or ()) != 4:    # (T, C, h, w) of encode()
        return
    need = cache_bytes(config, model, parsed)
    where = Path(work_dir)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    text = (f"feature cache ~{size_text(need)} (float16) under {Path(work_dir) / 'feature_cache'}; "
            f"{size_text(free)} free on {where}")
    level = "fatal" if need > free else ("warning" if need > 0.8 * free else "ok")
    report.add(level, "disk", text)


# ------------------------------------------------------------------------ memory
def static_bytes(model) -> tuple[int, int]:
    """(weights + buffers, gradients + AdamW state) in bytes, counted from the model."""
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return weights, trainable * 4 * 3          # grads + exp_avg + exp_avg_sq, float32


def step_peak(model, config: dict, device: torch.device) -> int:
    """Peak bytes one batch-1 training step adds (CUDA: allocator; CPU: profiler events)."""
    from glsmamba.engine.trainer import amp_dtype, heatmap_mse
    model = model.to(device).train()
    if config["train"]["grad_checkpointing"] and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    clip = crop_clip(model, None).to(device)
    hw, hh = model.heatmap_size
    target = torch.zeros(1, model.num_joints, hh, hw, device=device)
    weight = torch.ones(1, model.num_joints, device=device)
    dtype = amp_dtype(config["train"]["amp"], device)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(clip)
        heatmap_mse(out.float(), target, weight).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return profiler_peak_bytes(prof, "cpu")


def profiler_peak_bytes(prof, device: str = "cpu") -> int:
    """Running maximum of the summed ``[memory]`` events of ``device`` in time order (bytes).

    The raw allocation records come from the profiler's kineto results (its ``events()``
    list folds the allocations made inside an op into that op)."""
    kind = "CUDA" if device == "cuda" else "CPU"
    records = sorted((e for e in prof.profiler.kineto_results.events()
                      if e.name() == "[memory]" and str(e.device_type()).endswith(kind)),
                     key=lambda e: e.start_ns())
    live = peak = 0
    for record in records:
        live += record.nbytes()
        peak = max(peak, live)
    return peak


def check_memory(config: dict, model, report: Report, measure: bool) -> None:
    """Projected peak = weights + grads + AdamW (counted) + batch x measured per-clip step."""
    weights, optimiser = static_bytes(model)
    batch = config["data"]["batch_size"]
    if not measure:
        report.add("info", "memory", f"weights {weights / GIB:.2f} GiB + gradients/AdamW "
                   f"{optimiser / GIB:.2f} GiB; the per-clip step is measured with --full (or on a GPU)")
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    try:        # the step's peak holds the gradients once, whatever the batch: not per clip
        per_clip = max(step_peak(model, config, device) - grads, 0)
    except (RuntimeError, GlsmambaError) as err:     # e.g. out of memory at batch 1
        report.add("fatal", "memory", f"one batch-1 training step failed on {device}: {err}")
        return
    from glsmamba.engine.trainer import amp_dtype
    dtype = amp_dtype(config["train"]["amp"], device)
    precision = "fp32" if dtype is None else f"{str(dtype).replace('torch.', '')} autocast"
    projected = weights + optimiser + batch * per_clip
    text = (f"projected training peak at batch {batch}: {projected / GIB:.2f} GiB = weights "
            f"{weights / GIB:.2f} + grads/AdamW {optimiser / GIB:.2f} + {batch} x "
            f"{per_clip / GIB:.3f} GiB per clip (a measured batch-1 step on {device.type}, "
            f"{precision})")
    total = device_memory(device)
    level = "ok"
    if total:
        text += (f"; {total / GIB:.1f} GiB on this GPU" if device.type == "cuda" else
                 f"; {total / GIB:.1f} GiB available on this host")
        level = "fatal" if projected > total and device.type == "cuda" else \
            ("warning" if projected > 0.9 * total else "ok")
    report.add(level, "memory", text)


def device_memory(device: torch.device) -> int:
    """Total GPU memory, or the host's available memory (bytes; 0 when unknown)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------------ all
def run_checks(config: dict, work_dir: str | os.PathLike = "work_dirs/check", full: bool = False,
               fast: bool = False, progress: bool = True, source=None) -> Report:
    """Every check, in order; later checks run on what earlier ones could read.

    ``source``: the config file (its raw ``${VAR}`` names go into messages)."""
    report = Report()
    if not check_layout(config, report, source):
        check_weights(config, {}, report, source)
        return report
    parsed = check_annotations(config, report)
    check_counts(config, parsed, report)
    check_frames(parsed, report, full, fast, progress)
    check_detections(config, parsed, report)
    model = check_weights(config, parsed, report, source)
    check_scan(report)          # the GPU self-test is cached once run
    if model is not None:
        check_disk(config, model, parsed, Path(work_dir), report)
        measure = not fast and (full or torch.cuda.is_available())
        check_memory(config, model, report, measure)
    return report
