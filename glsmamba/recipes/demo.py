"""``glsmamba demo``: synthetic benchmark -> baselines vs tiny GLSMamba (T = 1, T = 5) -> report.

Protocol (mirrors the paper's setting on a CPU budget):

1. generate the synthetic PoseTrack18-style benchmark (:mod:`glsmamba.synth`), and a
   second, clean one (other seed, no hard cases) that stands in for COCO;
2. stage 1 trains the single-frame tiny ViTPose (encoder + deconvs + 1x1 head) end to end
   on the clean pre-training set (with pixel augmentation): its encoder plays the role of
   the COCO-pretrained ViTPose, which has seen neither the target videos nor their hard
   frames;
3. stage 2 freezes that encoder, caches its features (1/4 resolution by default, as in the
   paper) of the 2δ+1 frames of every clip (all training frames of the benchmark), and
   trains GSM + LRM + head of a tiny GLSMamba on top, at T = 5 and, as the control, the
   same model at T = 1 (δ = 0: no temporal context, same parameters and budget);
4. the baseline gets the same extra budget on all training frames: as many steps as
   stage 2, same batch size and schedule, (a) with its encoder frozen (the paper's
   "backbone only" row: only its 1x1 head trains) and (b) labelled as such, with its
   encoder fine-tuned too;
5. all four are scored with poseval's mAP on the val split (GT boxes), overall and on the
   frames whose image record lists degradations (occluded, blur, defocus, crossing).
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from glsmamba.engine import api
from glsmamba.errors import ConfigError
from glsmamba.config import DEFAULTS
from glsmamba.engine.trainer import read_log
from glsmamba.fileio import atomic_write_bytes, atomic_write_text, write_json_atomic
from glsmamba.models.registry import GLSMAMBA_DEMO_WIDTHS

# tuned for a 2-core CPU (see docs/USAGE.md); --quick shrinks everything for tests.
# severity scales the injected hard cases (docs/SYNTH.md): at 2.5 an occluder hides most of
# a person and blur / defocus wipe out the limbs for 1-2 frames, while frames t-2 and t+2
# stay clean, the situation (PoseTrack's occlusions and blur) the paper's temporal model
# is for. pretrain_videos x pretrain_frames: the clean pre-training set of stage 1 (0 =
# the clean frames of the benchmark's own training split). Crops are 96x128 (W x H):
# heatmaps 24x32; feature_stride 4 = the paper's 1/4, so GLSMamba reads 24x32 x T tokens
# (8 = the deconvs' first half).
# Stage 1 (measured, docs/USAGE.md): many short clean videos beat few long ones (people,
# motions and backgrounds vary per video), and pixel augmentation slows this small ViT's
# training more than it helps within the budget.
# Stage 2: 2 epochs at a constant lr (stage2_decay_at 1.0) in batches of 4 (stage 1: 16);
# decaying after the first epoch cost T = 5 2-4 mAP on degraded frames and T = 1 1.5, and
# batches of 4 instead of 16 (4x the steps, less wall time for T = 5) gave T = 5 4-5 mAP
# more and T = 1 1-2 (docs/USAGE.md).
FULL = dict(videos=40, frames=30, size=(240, 180), hard_rate=0.5, severity=2.5,
            pretrain_videos=400, pretrain_frames=6, stage1_augment=False,
            input_size=[96, 128], feature_stride=4, stage1_epochs=6, stage2_epochs=2,
            stage2_decay_at=1.0, batch_size=16, stage2_batch_size=4, lr1=2e-3, lr2=4e-3,
            workers=2, parallel=True, decode="dark")
QUICK = dict(videos=3, frames=10, size=(160, 120), hard_rate=0.5, severity=2.5,
             pretrain_videos=6, pretrain_frames=4, stage1_augment=False,
             input_size=[64, 96], feature_stride=4, stage1_epochs=1, stage2_epochs=1,
             batch_size=8, lr1=2e-3, lr2=2e-3, workers=1, parallel=True, decode="dark")
# the two presets the demo trains (`glsmamba models` lists them): stage 1 and the
# baseline rows are `vitpose-tiny`, stage 2 is `glsmamba-demo` on its frozen encoder
BASELINE_MODEL, DEMO_MODEL = "vitpose-tiny", "glsmamba-demo"
GLSMAMBA_OVERRIDES = dict(GLSMAMBA_DEMO_WIDTHS)   # spelled out in the run configs
KINDS = ("occluded", "blur", "defocus", "crossing")
PRETRAIN_SEED_OFFSET = 1000   # the pre-training set's seed: the benchmark's + this

# the rows of the demo table: (run folder, label)
ROWS = (("baseline_frozen", f"backbone only: single-frame {BASELINE_MODEL}, encoder frozen"),
        ("baseline_finetuned", f"single-frame {BASELINE_MODEL}, encoder fine-tuned (same budget)"),
        ("glsmamba_t1", f"{DEMO_MODEL}, T = 1 (no temporal context)"),
        ("glsmamba_t5", f"{DEMO_MODEL}, T = 5"))
# what each training stage is called in the log and the timings
STAGE_NAMES = {"glsmamba_t5": f"stage 2: {DEMO_MODEL} T = 5 on cached features",
               "glsmamba_t1": f"stage 2: {DEMO_MODEL} T = 1 (control)",
               "baseline_frozen": "baseline, encoder frozen, extra budget",
               "baseline_finetuned": "baseline, encoder fine-tuned, extra budget"}


def base_config(data_root: Path, recipe: dict, seed: int) -> dict:
    config = copy.deepcopy(DEFAULTS)
    config["model"]["random_encoder_ok"] = True   # synthetic data; stage 2 inits from stage 1
    config["data"].update(type="posetrack18", root=str(data_root), val_detections="",
                          batch_size=recipe["batch_size"], val_batch_size=32, workers=0,
                          augment=False, sigma=1.5)
    config["train"].update(seed=seed, log_interval=1, val_interval=0, grad_clip=1.0,
                           weight_decay=1e-4, amp="off")
    config["eval"].update(flip_test=False, boxes="gt", decode=recipe.get("decode", "quarter"))
    return config


def write_clean_annotations(data_root: Path, split: str = "train",
                            name: str = "train_clean") -> str:
    """Copy ``annotations/<split>`` without the labels of degraded frames (their image
    records stay, marked unlabelled); returns the folder relative to ``data_root``.

    Stage 1 trains on these when no separate pre-training set is generated
    (``pretrain_videos = 0``): the encoder stands in for a ViTPose pre-trained on other
    images (COCO), so it must not have memorised the hard training frames that stage 2
    learns to recover from their neighbours.
    """
    source, target = data_root / "annotations" / split, data_root / "annotations" / name
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.json")):
        document = json.loads(path.read_text())
        degraded = {image["id"] for image in document["images"] if image.get("degradations")}
        for image in document["images"]:
            if image["id"] in degraded:
                image["is_labeled"] = False
        document["annotations"] = [a for a in document["annotations"]
                                   if a["image_id"] not in degraded]
        atomic_write_text(target / path.name, json.dumps(document, separators=(",", ":")))
    from glsmamba.synth.generate import owned_files, record_outputs
    if owned_files(data_root) is not None:     # listed, so that demo --overwrite may remove them
        record_outputs(data_root, [f"annotations/{name}/{p.name}" for p in sorted(target.glob("*.json"))])
    return f"annotations/{name}"


def generate_pretrain(root: Path, recipe: dict, seed: int, progress: bool = False) -> Path:
    """The clean pre-training set of stage 1 (COCO's stand-in): other people, motions and
    backgrounds (seed + PRETRAIN_SEED_OFFSET), no hard cases, no val split to speak of."""
    from glsmamba.synth.generate import generate_dataset
    return generate_dataset(root, videos=recipe["pretrain_videos"],
                            frames=recipe["pretrain_frames"], seed=seed + PRETRAIN_SEED_OFFSET,
                            size=recipe["size"], hard_rate=0.0, severity=recipe["severity"],
                            val_fraction=0.05, overwrite=True, progress=progress,
                            workers=recipe["workers"])


def stage1_config(base: dict, recipe: dict, data_root: Path, pretrain_root: Path | None) -> dict:
    """Stage 1: the single-frame baseline trained end to end on clean frames only."""
    config = baseline_config(base, recipe)
    if pretrain_root is not None:
        config["data"].update(root=str(pretrain_root), train_ann="annotations/train")
    else:
        config["data"]["train_ann"] = write_clean_annotations(data_root)
    config["data"]["augment"] = bool(recipe.get("stage1_augment", False))
    return config


def baseline_config(base: dict, recipe: dict, init_from: str = "") -> dict:
    config = copy.deepcopy(base)
    config["model"].update(name=BASELINE_MODEL, init_from=init_from,
                           overrides={"freeze_encoder": False, "input_size": recipe["input_size"]})
    config["data"]["delta"] = 0
    config["train"].update(epochs=recipe["stage1_epochs"], lr=recipe["lr1"],
                           milestones=[max(1, int(recipe["stage1_epochs"] * 0.75))])
    return config


def glsmamba_config(base: dict, recipe: dict, encoder_from: str,
                    overrides: dict | None = None, delta: int = 2,
                    model: str = DEMO_MODEL) -> dict:
    """Stage 2: ``model`` (``glsmamba-demo``, or any preset taking the same overrides) on the
    frozen, cached encoder; ``delta`` = 0 is the T = 1 control."""
    config = copy.deepcopy(base)
    overrides = GLSMAMBA_OVERRIDES if overrides is None else overrides
    overrides = {"feature_stride": recipe.get("feature_stride", 8), **overrides,
                 "input_size": recipe["input_size"]}
    config["model"].update(name=model, init_from=encoder_from, overrides=overrides)
    config["data"]["delta"] = delta
    config["data"]["batch_size"] = recipe.get("stage2_batch_size", recipe["batch_size"])
    # lr x0.1 after this fraction of the epochs (1.0: no decay within the run)
    decay_at = recipe.get("stage2_decay_at", 0.75)
    config["train"].update(epochs=recipe["stage2_epochs"], lr=recipe["lr2"], cache_features=True,
                           milestones=[max(1, int(recipe["stage2_epochs"] * decay_at))])
    return config


def extra_baseline_config(base: dict, recipe: dict, stage1_ckpt: str, stage2: dict, steps: int,
                          frozen: bool) -> dict:
    """The baseline's extra budget: from its stage-1 weights, as many steps as stage 2 on
    all training frames, same batch size, lr and schedule; encoder frozen or fine-tuned."""
    config = baseline_config(base, recipe, init_from=stage1_ckpt)
    config["model"]["overrides"]["freeze_encoder"] = bool(frozen)
    config["data"]["batch_size"] = stage2["data"]["batch_size"]
    # same samples (one per GT person) so the same steps per epoch: same epochs and schedule
    config["train"].update(epochs=stage2["train"]["epochs"], max_steps=steps, lr=recipe["lr2"],
                           milestones=list(stage2["train"]["milestones"]))
    return config


def _train_job(config: dict, work_dir: str, threads: int | None) -> None:
    import torch
    if threads:
        torch.set_num_threads(threads)
    api.train(config, Path(work_dir), overwrite=True, progress=False, log=lambda *_: None)


def start_training(config: dict, work_dir: Path, threads: int | None):
    """``api.train`` in a spawned process (started, not joined)."""
    import multiprocessing
    process = multiprocessing.get_context("spawn").Process(
        target=_train_job, args=(config, str(work_dir), threads or 1), name="glsmamba-demo-t5")
    process.start()
    return process


class StageClock:
    """Wall time per stage, logged as each stage ends; ``finish`` adds total and CPU time."""

    def __init__(self, log=print):
        self.log, self.timings = log, {}
        self.started = self.last = time.perf_counter()

    def stage(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.last
        self.last = now
        self.log(f"[demo] {name}: {self.timings[name]:.0f} s")

    def finish(self) -> dict[str, float]:
        self.timings["total"] = time.perf_counter() - self.started
        self.timings.update(cpu_seconds())
        return self.timings


def cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process and of its joined children (the second training process,
    data workers): on a busy machine wall time overstates what a quiet one needs."""
    try:
        import resource
    except ImportError:             # not on Windows
        return {}
    out = {}
    for key, who in (("cpu: this process", resource.RUSAGE_SELF),
                     ("cpu: child processes", resource.RUSAGE_CHILDREN)):
        usage = resource.getrusage(who)
        out[key] = usage.ru_utime + usage.ru_stime
    return out


def run_demo(out_dir: str | Path, quick: bool = False, seed: int = 0, progress: bool = True,
             threads: int | None = None, log=print, recipe: dict | None = None,
             glsmamba_overrides: dict | None = None, overwrite: bool = False) -> dict:
    """Run the whole demo; returns the results table (also written to summary.md).

    A non-empty ``out_dir`` is refused unless ``overwrite`` (its data, runs and report
    are then replaced).

    ``threads`` sets torch's intra-op threads (1 is much faster on a CPU shared with other
    busy processes; the default keeps torch's choice). ``recipe`` / ``glsmamba_overrides``
    update :data:`FULL` (or :data:`QUICK`) / :data:`GLSMAMBA_OVERRIDES` for experiments.
    """
    import torch
    if threads:
        torch.set_num_threads(threads)
    recipe = {**(QUICK if quick else FULL), **(recipe or {})}
    overrides = {**GLSMAMBA_OVERRIDES, **(glsmamba_overrides or {})}
    out_dir = prepare_out_dir(out_dir, overwrite)
    clock = StageClock(log)
    data_root, pretrain_root = generate_data(out_dir, recipe, seed, progress)
    clock.stage("generate synthetic data")
    base = base_config(data_root, recipe, seed)
    runs = out_dir / "runs"
    api.train(stage1_config(base, recipe, data_root, pretrain_root), runs / "stage1_baseline",
              overwrite=True, progress=progress, log=log)
    clock.stage("stage 1: single-frame baseline (encoder pre-training)")
    configs = stage2_configs(base, recipe, str(runs / "stage1_baseline" / "last.safetensors"),
                             overrides)
    steps = train_stage2(configs, runs, recipe, threads, progress, log, clock)
    results = score_rows(configs, runs, out_dir / "predictions", progress, log)
    clock.stage("evaluation")
    report = out_dir / "report"
    media = write_media(results, runs, report, data_root, progress)
    clock.stage("report")
    timings = clock.finish()
    table = results_table(results)
    write_summary(report / "summary.md", table, results, timings, recipe, steps, overrides,
                  media)
    write_json_atomic(report / "results.json",
                      {results[label]["run"]: results[label]["metrics"] for label in results})
    log(table)
    cpu = (f", CPU {timings['cpu: this process']:.0f} s here + "
           f"{timings['cpu: child processes']:.0f} s in child processes"
           if "cpu: this process" in timings else "")
    log(f"[demo] total {timings['total']:.0f} s wall{cpu}; report in {report}")
    return {"table": table, "results": {k: v["metrics"] for k, v in results.items()},
            "timings": timings, "report": report, "steps": steps, "media": media}


def prepare_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """The output folder, absolute (the run configs name the data by it), created; a
    non-empty one is refused unless ``overwrite``."""
    out_dir = Path(out_dir).absolute()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{out_dir} is not empty: choose another --out or pass --overwrite "
                          "to replace its data, runs and report")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def generate_data(out_dir: Path, recipe: dict, seed: int,
                  progress: bool) -> tuple[Path, Path | None]:
    """The benchmark (``out_dir/data``) and, when the recipe has one, the clean
    pre-training set (``out_dir/pretrain_data``); returns both roots."""
    from glsmamba.synth.generate import generate_dataset
    data_root = out_dir / "data"
    generate_dataset(data_root, videos=recipe["videos"], frames=recipe["frames"], seed=seed,
                     size=recipe["size"], hard_rate=recipe["hard_rate"],
                     severity=recipe["severity"], overwrite=True, progress=progress,
                     workers=recipe["workers"])
    pretrain_root = None
    if recipe.get("pretrain_videos"):
        pretrain_root = generate_pretrain(out_dir / "pretrain_data", recipe, seed, progress)
    return data_root, pretrain_root


def stage2_configs(base: dict, recipe: dict, stage1_ckpt: str, overrides: dict) -> dict[str, dict]:
    """The four stage-2 runs: T = 5, its T = 1 control and the baseline's extra budget
    (frozen, fine-tuned); all with the same epochs over the same samples (one per GT
    person), so the same steps."""
    configs = {"glsmamba_t5": glsmamba_config(base, recipe, stage1_ckpt, overrides, delta=2),
               "glsmamba_t1": glsmamba_config(base, recipe, stage1_ckpt, overrides, delta=0)}
    for run, frozen in (("baseline_frozen", True), ("baseline_finetuned", False)):
        configs[run] = extra_baseline_config(base, recipe, stage1_ckpt, configs["glsmamba_t5"],
                                             0, frozen)
    return configs


def train_stage2(configs: dict[str, dict], runs: Path, recipe: dict, threads: int | None,
                 progress: bool, log, clock: StageClock) -> int:
    """Train the stage-2 runs (T = 5 in a second process when the recipe is parallel and
    two cores exist); returns their common number of steps."""
    child = None
    order = ("glsmamba_t5", "glsmamba_t1", "baseline_frozen", "baseline_finetuned")
    if recipe.get("parallel") and (os.cpu_count() or 1) >= 2:
        log(f"[demo] {DEMO_MODEL} T = 5 trains in a second process (its log: "
            f"{runs / 'glsmamba_t5' / 'log.jsonl'})")
        child = start_training(configs["glsmamba_t5"], runs / "glsmamba_t5", threads)
        order = order[1:]
    try:
        for run in order:
            # the second process trains silently, so this one may show its progress
            api.train(configs[run], runs / run, overwrite=True, progress=progress, log=log)
            clock.stage(STAGE_NAMES[run])
        if child is not None:
            wait_for_second_process(child, runs / "glsmamba_t5", progress, log,
                                    total=run_steps(runs / order[0]))
    except BaseException:
        if child is not None:       # do not leave the second process training
            child.terminate()
        raise
    finally:
        if child is not None:
            child.join()
    if child is not None:
        if child.exitcode != 0:
            raise RuntimeError(f"{DEMO_MODEL} T = 5 training failed (exit code "
                               f"{child.exitcode}); see its traceback above and "
                               f"{runs / 'glsmamba_t5'}")
        clock.stage(STAGE_NAMES["glsmamba_t5"] + " (the wait for the second process)")
    steps_of = {run: run_steps(runs / run) for run in configs}
    if len(set(steps_of.values())) != 1:
        raise RuntimeError(f"the runs did not get the same budget: {steps_of}")
    return steps_of["glsmamba_t5"]


def run_steps(work_dir: Path) -> int:
    """The optimiser steps of a finished run (its ``last.json``)."""
    return json.loads((work_dir / "last.json").read_text())["step"]


def wait_for_second_process(child, work_dir: Path, progress: bool, log,
                            total: int | None = None, interval: float | None = None) -> None:
    """Join ``child``, logging its last step (from its ``log.jsonl``) every ``interval``
    seconds (default: the progress interval, 30 s) when ``progress``: the wait is
    otherwise silent."""
    from glsmamba.progress import log_interval
    interval = log_interval() if interval is None else interval
    started = time.perf_counter()
    while True:
        child.join(interval)
        if child.exitcode is not None:
            return
        if progress:
            waited = time.perf_counter() - started
            log(f"[demo] waiting for {DEMO_MODEL} T = 5 in the second process "
                f"({waited:.0f} s): {run_status(work_dir / 'log.jsonl', total)}")


def run_status(log_path: Path, total: int | None = None) -> str:
    """``step N/total, loss L`` from a run's ``log.jsonl`` (no step yet: its features are
    being cached)."""
    records = ([r for r in read_log(log_path) if r.get("type") == "train"]
               if log_path.is_file() else [])
    if not records:
        return "no step yet (building its feature cache)"
    last = records[-1]
    of = f"/{total}" if total else ""
    return f"step {last['step']}{of}, loss {last['loss']:.3e}"


def score_rows(configs: dict[str, dict], runs: Path, predictions: Path, progress: bool,
               log=print) -> dict[str, dict]:
    """:func:`score` of every row of :data:`ROWS` (label -> result with its ``run``)."""
    results = {}
    for run, label in ROWS:
        result = score(configs[run], runs / run / "last.safetensors", predictions / run,
                       progress)
        result["run"] = run
        results[label] = result
        metrics = result["metrics"]
        log(f"[demo] scored {run}: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
    return results


def score(config: dict, checkpoint: Path, out_dir: Path, progress: bool) -> dict:
    """mAP overall, on degraded frames, per degradation kind and on clean frames."""
    _, evaluator = api.evaluate(config, checkpoint, boxes="gt", flip=False, out_dir=out_dir,
                                progress=progress, log=lambda *_: None)
    return subset_scores(evaluator.gt, evaluator.pred_json)


def subset_scores(gt: dict, pred: dict) -> dict:
    """poseval mAP of ``pred`` on the frame subsets of a synthetic benchmark: overall,
    degraded (the image record lists degradations), clean, and one per kind in
    :data:`KINDS` (subsets without frames are left out).

    Returns ``{"metrics": {subset: total mAP}, "per_joint": {subset: [AP per joint]},
    "joints", "counts": {subset: frames}, "gt", "pred"}`` (``gt`` restricted to the
    videos of ``pred``, as the metric reads it).
    """
    from glsmamba.evaluation import evaluate_posetrack, image_ids_with
    gt = {name: gt[name] for name in pred if name in gt}
    all_ids = {image["id"] for video in gt.values() for image in video["images"]}
    degraded = image_ids_with(gt, "degradations")
    subsets = {"overall": None, "degraded": degraded, "clean": all_ids - degraded}
    subsets.update({kind: image_ids_with(gt, "degradations", kind) for kind in KINDS})
    out: dict = {}
    per_joint: dict = {}
    for subset, ids in subsets.items():
        if ids is not None and not ids:
            continue
        result = evaluate_posetrack(gt, pred, ids)
        out[subset] = result.total
        per_joint[subset] = result.ap.tolist()
    return {"metrics": out, "per_joint": per_joint, "gt": gt, "pred": pred,
            "joints": list(result.joint_names), "counts": {k: (len(v) if v else None)
                                                         for k, v in subsets.items()}}


def has_degradations(gt: dict) -> bool:
    """Whether any image record of ``gt`` lists degradations (a synthetic benchmark)."""
    return any(image.get("degradations") for video in gt.values() for image in video["images"])


def results_table(results: dict) -> str:
    columns = ["overall", "degraded", "clean", *KINDS]
    first = next(iter(results.values()))["metrics"]
    columns = [c for c in columns if c in first]
    lines = ["| model | " + " | ".join(f"mAP {c}" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, result in results.items():
        values = [f"{result['metrics'].get(c, float('nan')):.1f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


# one colour per run in every plot; the ground truth is drawn in one colour in the video
RUN_COLORS = {"stage1_baseline": "tab:green", "baseline_frozen": "tab:gray",
              "baseline_finetuned": "tab:brown", "glsmamba_t1": "tab:blue",
              "glsmamba_t5": "tab:red"}
RUN_LABELS = {"stage1_baseline": f"stage 1: {BASELINE_MODEL}, trained end to end",
              **{run: label for run, label in ROWS}}
GT_COLOR_RGB = (255, 230, 0)      # yellow on a dark outline: stands out on any background
VIDEO_PANEL_HEIGHT = 320          # at least this many pixels per panel (frames are upscaled)
VIDEO_FPS = 10
VIDEO_SCORE_THR = 0.1             # predicted joints drawn from this score on


def write_media(results: dict, runs: Path, report: Path, data_root: Path,
                progress: bool = False) -> dict:
    """The report's pictures: loss curves, per-joint AP (degraded frames) and the
    side-by-side video (GT | backbone only | T = 5); returns what the video holds."""
    report.mkdir(exist_ok=True)
    plot_losses(runs, report / "loss_curves.png")
    plot_per_joint(results, report / "per_joint_ap.png")
    labels = dict(ROWS)
    panels = {f"{BASELINE_MODEL}, encoder frozen (backbone only)": results[labels["baseline_frozen"]],
              f"{DEMO_MODEL}, T = 5": results[labels["glsmamba_t5"]]}
    return side_by_side_video(panels, report / "side_by_side.mp4", data_root, progress=progress)


def moving_average(values, window: int) -> np.ndarray:
    """Centred mean over ``window`` values (shorter at the ends); (N,) -> (N,)."""
    values = np.asarray(values, np.float64)
    if window <= 1 or len(values) < 2:
        return values
    kernel = np.ones(window)
    sums = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    return sums / counts


def _save_figure(fig, path: Path) -> None:
    """PNG through the atomic writer; the legend outside the axes is kept in the picture."""
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot_losses(runs: Path, path: Path, smooth_fraction: float = 0.05) -> None:
    """``loss_curves.png``: :func:`loss_figure` of the runs in ``runs``."""
    plt = _pyplot()
    fig = loss_figure(runs, smooth_fraction)
    _save_figure(fig, path)
    plt.close(fig)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def loss_figure(runs: Path, smooth_fraction: float = 0.05):
    """Training loss, one panel per stage, each curve a centred moving average over
    ``smooth_fraction`` of its steps (stage 2: the four runs of the same budget); the
    legends under the axes."""
    plt = _pyplot()
    stages = ((f"stage 1: single-frame {BASELINE_MODEL} (encoder pre-training)",
               ("stage1_baseline",)),
              ("stage 2: the same budget for every row", tuple(run for run, _ in ROWS)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, (title, names) in zip(axes, stages):
        windows = set()
        for run in names:
            if not (runs / run / "log.jsonl").is_file():
                continue
            records = [r for r in read_log(runs / run / "log.jsonl") if r["type"] == "train"]
            if not records:
                continue
            window = max(1, int(round(len(records) * smooth_fraction)))
            windows.add(window)
            ax.plot([r["step"] for r in records],
                    moving_average([r["loss"] for r in records], window),
                    color=RUN_COLORS[run], label=RUN_LABELS[run], linewidth=1.6)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("heatmap MSE (log scale)")
        ax.set_yscale("log")
        _plain_log_labels(ax)
        ax.grid(alpha=0.3, which="both")
        smoothing = (f"moving average over {'/'.join(str(w) for w in sorted(windows))} steps"
                     if max(windows, default=1) > 1 else "raw (too few steps to smooth)")
        ax.set_title(f"{title}\n{smoothing}", fontsize=10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False,
                  fontsize=9)
    fig.tight_layout()
    return fig


def _plain_log_labels(ax) -> None:
    """Tick labels of a log y axis as plain numbers (0.004, not 4 x 10^-3); the minor
    ticks labelled only when the axis spans less than a decade."""
    import matplotlib.ticker
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:.3g}")
    low, high = ax.get_ylim()
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if low > 0 and high / low < 10
                                 else matplotlib.ticker.NullFormatter())


def plot_per_joint(results: dict, path: Path, subset: str = "degraded") -> None:
    """``per_joint_ap.png``: :func:`per_joint_figure`."""
    plt = _pyplot()
    fig = per_joint_figure(results, subset)
    _save_figure(fig, path)
    plt.close(fig)


def per_joint_figure(results: dict, subset: str = "degraded"):
    """AP per joint on ``subset`` frames (grouped bars, one colour per row; the legend
    under the axes)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 4.6))
    first = next(iter(results.values()))
    names = first["joints"]
    subset = subset if subset in first["per_joint"] else "overall"
    width = 0.8 / len(results)
    for i, (label, result) in enumerate(results.items()):
        values = np.nan_to_num(result["per_joint"][subset])
        ax.bar(np.arange(len(names)) + i * width, values, width,
               color=RUN_COLORS.get(result.get("run"), None),
               label=f"{label} (mAP {result['metrics'][subset]:.1f})")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set_ylabel("AP")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    frames = first["counts"].get(subset) or sum(len(v["images"]) for v in first["gt"].values())
    ax.set_title(f"per-joint AP on {subset} frames ({frames} frames)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def side_by_side_video(results: dict, path: Path, data_root: Path,
                       max_videos: int | None = None, progress: bool = False) -> dict:
    """GT | one panel per entry of ``results`` (panel label -> scored row), every frame
    of every val video (the first ``max_videos``), frames upscaled to panels at least
    :data:`VIDEO_PANEL_HEIGHT` px high; the ground truth in one colour (also under the
    predictions). Returns ``{"codec", "videos", "frames", "panel", "size"}``."""
    from glsmamba.inference.drawing import VideoWriter
    from glsmamba.progress import progress as progress_bar
    first = next(iter(results.values()))
    videos = sorted(first["gt"])[:max_videos]
    frames = sum(len(first["gt"][v]["images"]) for v in videos)
    writer, panel = None, None
    bar = progress_bar(total=frames, desc="report video", unit="frame", enabled=progress)
    try:
        for video in videos:
            by_image = {label: _people_by_image(r["pred"][video]) for label, r in results.items()}
            gt_people = _people_by_image(first["gt"][video])
            images = first["gt"][video]["images"]
            for index, image in enumerate(images):
                place = f"{video}  frame {index + 1}/{len(images)}"
                canvas = _video_frame(data_root, image, place, gt_people, by_image)
                bar.update(1)
                if canvas is None:
                    continue
                if writer is None:
                    writer = VideoWriter(path, VIDEO_FPS, (canvas.shape[1], canvas.shape[0]),
                                         atomic=True)
                    panel = (canvas.shape[1] // (len(results) + 1), canvas.shape[0])
                writer.write(canvas)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    if writer is None:
        return {"codec": None, "videos": 0, "frames": 0, "panel": None, "size": None}
    writer.release()
    return {"codec": writer.codec, "videos": len(videos), "frames": writer.frames,
            "panel": panel, "size": writer.size}


def _people_by_image(document: dict) -> dict:
    people: dict = {}
    for annotation in document["annotations"]:
        people.setdefault(annotation["image_id"], []).append(_person(annotation))
    return people


def _video_frame(data_root: Path, image: dict, place: str, gt_people: dict,
                 predictions: dict) -> np.ndarray | None:
    """One row of panels for ``image`` (None when its file does not decode); ``place``
    names the video and frame."""
    from glsmamba.data.metainfo import load_metainfo
    from glsmamba.inference.drawing import draw_poses
    frame = cv2.imread(str(Path(data_root) / image["file_name"]))
    if frame is None:
        return None
    info = load_metainfo("posetrack")
    scale = max(1, -(-VIDEO_PANEL_HEIGHT // frame.shape[0]))       # ceil, whole pixels
    frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    gt_colors = [GT_COLOR_RGB] * len(info.skeleton)
    gt = [_scaled(p, scale) for p in gt_people.get(image["id"], [])]
    tags = ", ".join(image.get("degradations", [])) or "clean"
    outline = [(0, 0, 0)] * len(info.skeleton)
    gt_tile = draw_poses(frame, gt, info.skeleton, outline, 0.0, boxes=False, thickness=5,
                         radius=0)
    gt_tile = draw_poses(gt_tile, gt, info.skeleton, gt_colors, 0.0, boxes=False, thickness=2)
    tiles = [_label(gt_tile, "ground truth (yellow)", place, tags)]
    for label, people in predictions.items():
        tile = draw_poses(frame, gt, info.skeleton, gt_colors, 0.0, boxes=False, thickness=1,
                          radius=0)
        tile = draw_poses(tile, [_scaled(p, scale) for p in people.get(image["id"], [])],
                          info.skeleton, info.link_colors, VIDEO_SCORE_THR, boxes=False)
        tiles.append(_label(tile, label, "colours: prediction; thin yellow: GT", tags))
    return np.concatenate(tiles, axis=1)


def _scaled(person: dict, scale: float) -> dict:
    keypoints = person["keypoints"].copy()
    keypoints[:, :2] *= scale
    return {**person, "keypoints": keypoints}


def _label(tile: np.ndarray, title: str, note: str, tags: str) -> np.ndarray:
    """A title bar above ``tile`` and a bar below it (``note`` left, ``tags`` right, red
    unless the frame is clean)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    width = tile.shape[1]
    top = np.full((30, width, 3), 32, np.uint8)
    cv2.putText(top, title, (8, 21), font, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    bottom = np.full((24, width, 3), 32, np.uint8)
    cv2.putText(bottom, note, (8, 17), font, 0.45, (220, 220, 220), 1, cv2.LINE_AA)
    (text_w, _), _ = cv2.getTextSize(tags, font, 0.5, 1)
    color = (120, 220, 120) if tags == "clean" else (80, 80, 255)
    cv2.putText(bottom, tags, (max(8, width - text_w - 8), 17), font, 0.5, color, 1, cv2.LINE_AA)
    out = np.concatenate([top, tile, bottom], axis=0)
    out[:, -1] = 0                                  # a dark line between panels
    return out


def _person(annotation: dict) -> dict:
    keypoints = np.asarray(annotation["keypoints"], np.float32).reshape(-1, 3)
    scores = annotation.get("scores") or []
    if len(scores) == len(keypoints):
        keypoints[:, 2] = np.asarray(scores, np.float32)
    return {"keypoints": keypoints, "bbox": annotation.get("bbox"),
            "track_id": annotation.get("track_id")}
def write_summary(path: Path, table: str, results: dict, timings: dict, recipe: dict,
                  steps: int, overrides: dict | None = None, media: dict | None = None) -> None:
    """The report's ``summary.md``: the table, what each row measures, the protocol, the
    times and what the media files hold."""
    overrides = GLSMAMBA_OVERRIDES if overrides is None else overrides
    counts = next(iter(results.values()))["counts"]
    lines = [
        "# GLSMamba demo: temporal vs single-frame on the synthetic benchmark", "",
        f"PoseTrack mAP (poseval rules, GT boxes, no flip test, "
        f"{recipe.get('decode', 'quarter')} decoding) on the val split.", "",
        table, "",
        "Frames per subset: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v), "",
        "`glsmamba eval runs/RUN` scores one run again from its stored config (same numbers, "
        "same machine and library versions).", "",
        "## What the rows measure", "",
        f"- *backbone only* (the paper's row): the stage-1 baseline (preset `{BASELINE_MODEL}`) "
        "plus the extra budget with its encoder frozen, so only its 1x1 head trains;",
        "- *encoder fine-tuned*: the same baseline whose encoder and head both train in the "
        "extra budget (more trainable parameters than GLSMamba's stack; shown so that "
        "nothing is hidden, not a row of the paper);",
        f"- *T = 1*: preset `{DEMO_MODEL}`, same blocks, same frozen features and budget, one "
        "frame (a few k fewer trainable parameters: the per-clip channel-attention MLP is "
        "T x D wide): T = 5 minus T = 1 is the gain of temporal context alone;",
        f"- *T = 5*: `{DEMO_MODEL}` on frames t-2 .. t+2.", "",
        "## Protocol", "",
        *_protocol_lines(recipe, steps, overrides), "",
        "## Wall time and CPU time (this machine)", "",
        *[f"- {k}: {v:.0f} s" for k, v in timings.items()], "",
        "## Files", "",
        *_media_lines(media), "",
    ]
    atomic_write_text(path, "\n".join(lines))


def _protocol_lines(recipe: dict, steps: int, overrides: dict) -> list[str]:
    w, h = recipe["input_size"]
    stride = recipe.get("feature_stride", 8)
    if recipe.get("pretrain_videos"):
        pretrain = (f"a separate clean pre-training set ({recipe['pretrain_videos']} videos x "
                    f"{recipe['pretrain_frames']} frames, seed + {PRETRAIN_SEED_OFFSET}, no hard "
                    "cases), COCO's stand-in: the encoder sees neither the benchmark's videos "
                    "nor its hard frames")
    else:
        pretrain = ("the clean training frames of the benchmark only (the labels of degraded "
                    "frames dropped)")
    return [
        f"- data: {recipe['videos']} synthetic videos x {recipe['frames']} frames "
        f"({recipe['size'][0]}x{recipe['size'][1]}), hard-case rate {recipe['hard_rate']}, "
        f"severity {recipe['severity']} (docs/SYNTH.md), "
        "25% of the videos held out for validation;",
        f"- crops {w}x{h} (W x H), heatmaps at 1/4 ({w // 4}x{h // 4}); GLSMamba reads the "
        f"encoder's 1/{stride} features ({w // stride}x{h // stride} x T tokens);",
        f"- stage 1: single-frame `{BASELINE_MODEL}` (encoder + deconvs + 1x1 head) trained "
        f"end to end for {recipe['stage1_epochs']} epochs (AdamW, lr {recipe['lr1']}, batch "
        f"{recipe['batch_size']}, pixel "
        f"augmentation {'on' if recipe.get('stage1_augment') else 'off'}) on {pretrain};",
        f"- stage 2: its encoder frozen (as the paper freezes a pretrained ViTPose), features "
        f"cached, GSM + LRM + head of `{DEMO_MODEL}` ({overrides}) trained for "
        f"{recipe['stage2_epochs']} epochs = {steps} steps (batch "
        f"{recipe.get('stage2_batch_size', recipe['batch_size'])}, lr {recipe['lr2']}) on all "
        "training frames of the benchmark, at T = 5 and at T = 1;",
        f"- the baseline gets the same extra budget: {steps} more steps from its stage-1 "
        "weights on all training frames, same batch size, lr and schedule, once with its "
        "encoder frozen and once fine-tuned;",
        "- all scored with the same code: predictions written one poseval JSON per video, "
        "then mAP overall and on frames whose record lists a degradation.",
    ]


def _media_lines(media: dict | None) -> list[str]:
    lines = ["- `results.json`: the table's numbers per run;",
             "- `loss_curves.png`: training loss per stage (moving averages);",
             "- `per_joint_ap.png`: AP per joint on the degraded frames;"]
    if not media or not media.get("frames"):
        return lines + ["- `side_by_side.mp4`: not written (no val frame decoded)."]
    codec = media["codec"]
    note = ("" if codec.startswith("H.264") else
            " (many browsers do not play it: `pip install av` gives H.264)")
    return lines + [
        f"- `side_by_side.mp4`: ground truth | backbone only | {DEMO_MODEL} T = 5 on all "
        f"{media['frames']} frames of the {media['videos']} val videos, {VIDEO_FPS} frames/s, "
        f"panels {media['panel'][0]}x{media['panel'][1]} px, codec {codec}{note}."]
