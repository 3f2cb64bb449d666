"""``glsmamba demo``: synthetic benchmark -> baseline vs tiny GLSMamba -> report folder.

Protocol (mirrors the paper's setting on a CPU budget):

1. generate the synthetic PoseTrack18-style benchmark (:mod:`glsmamba.synth`);
2. stage 1 trains the single-frame tiny ViTPose (encoder + 1x1 head) end to end on the
   clean training frames: this is the baseline, and its encoder plays the role of the
   COCO-pretrained ViTPose (which has not seen the target videos' hard frames either);
3. stage 2 freezes that encoder, caches its features of the 2δ+1 frames of every clip
   (all training frames), and trains GSM + LRM + head of a tiny GLSMamba on top;
4. the baseline gets the same extra budget on all training frames: as many steps as
   stage 2, same batch size and schedule, encoder frozen too (``baseline_extra_frozen``);
5. both are scored with poseval's mAP on the val split (GT boxes), overall and on the
   frames whose image record lists degradations (occluded, blur, defocus, crossing).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import cv2
import numpy as np

from glsmamba.engine import api
from glsmamba.errors import ConfigError
from glsmamba.engine.config import DEFAULTS
from glsmamba.engine.trainer import read_log

# tuned for a 2-core CPU (see docs/USAGE.md); --quick shrinks everything for tests.
# severity scales the injected hard cases (docs/SYNTH.md): at 2.5 an occluder hides most of
# a person and blur / defocus wipe out the limbs for 1-2 frames, while frames t-2 and t+2
# stay clean, the situation (PoseTrack's occlusions and blur) the paper's temporal model
# is for. Crops are 64x96 (W x H): heatmaps 16x24 and GLSMamba's features 8x12 at 1/8.
FULL = dict(videos=40, frames=30, size=(240, 180), hard_rate=0.5, severity=2.5,
            input_size=[64, 96], stage1_epochs=12, stage2_epochs=5, batch_size=16,
            lr1=2e-3, lr2=4e-3, baseline_extra_frozen=True, workers=2)
QUICK = dict(videos=3, frames=10, size=(160, 120), hard_rate=0.5, severity=2.5,
             input_size=[64, 96], stage1_epochs=1, stage2_epochs=1, batch_size=8, lr1=2e-3,
             lr2=2e-3, baseline_extra_frozen=True, workers=1)
GLSMAMBA_OVERRIDES = dict(dim=32, d_state=1, gsm_depth=1, lrm_depth=1, mlp_ratio=2.0)
KINDS = ("occluded", "blur", "defocus", "crossing")


def base_config(data_root: Path, recipe: dict, seed: int) -> dict:
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(type="posetrack18", root=str(data_root), val_detections="",
                          batch_size=recipe["batch_size"], val_batch_size=32, workers=0,
                          augment=False, sigma=1.5)
    config["train"].update(seed=seed, log_interval=1, val_interval=0, grad_clip=1.0,
                           weight_decay=1e-4, amp="off")
    config["eval"].update(flip_test=False, boxes="gt", decode="quarter")
    return config


def write_clean_annotations(data_root: Path, split: str = "train",
                            name: str = "train_clean") -> str:
    """Copy ``annotations/<split>`` without the labels of degraded frames (their image
    records stay, marked unlabelled); returns the folder relative to ``data_root``.

    Stage 1 trains on these: the encoder stands in for a ViTPose pre-trained on other
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
        (target / path.name).write_text(json.dumps(document, separators=(",", ":")))
    return f"annotations/{name}"


def baseline_config(base: dict, recipe: dict, init_from: str = "") -> dict:
    config = copy.deepcopy(base)
    config["model"].update(name="vitpose-tiny", init_from=init_from,
                           overrides={"freeze_encoder": False, "input_size": recipe["input_size"]})
    config["data"]["delta"] = 0
    config["train"].update(epochs=recipe["stage1_epochs"], lr=recipe["lr1"],
                           milestones=[max(1, int(recipe["stage1_epochs"] * 0.75))])
    return config


def glsmamba_config(base: dict, recipe: dict, encoder_from: str,
                    overrides: dict | None = None) -> dict:
    config = copy.deepcopy(base)
    overrides = GLSMAMBA_OVERRIDES if overrides is None else overrides
    config["model"].update(name="glsmamba-tiny", init_from=encoder_from,
                           overrides={**overrides, "input_size": recipe["input_size"]})
    config["data"]["delta"] = 2
    config["train"].update(epochs=recipe["stage2_epochs"], lr=recipe["lr2"], cache_features=True,
                           milestones=[max(1, int(recipe["stage2_epochs"] * 0.75))])
    return config


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
    from glsmamba.synth.generate import generate_dataset
    if threads:
        torch.set_num_threads(threads)
    recipe = {**(QUICK if quick else FULL), **(recipe or {})}
    overrides = {**GLSMAMBA_OVERRIDES, **(glsmamba_overrides or {})}
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{out_dir} is not empty: choose another --out or pass --overwrite "
                          "to replace its data, runs and report")
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str, since: float) -> float:
        timings[name] = time.perf_counter() - since
        log(f"[demo] {name}: {timings[name]:.0f} s")
        return time.perf_counter()

    t = time.perf_counter()
    data_root = out_dir / "data"
    generate_dataset(data_root, videos=recipe["videos"], frames=recipe["frames"], seed=seed,
                     size=recipe["size"], hard_rate=recipe["hard_rate"],
                     severity=recipe["severity"], overwrite=True, progress=progress,
                     workers=recipe["workers"])
    t = stage("generate synthetic data", t)
    base = base_config(data_root, recipe, seed)
    runs = out_dir / "runs"

    stage1 = baseline_config(base, recipe)
    stage1["data"]["train_ann"] = write_clean_annotations(data_root)
    api.train(stage1, runs / "stage1_baseline", overwrite=True, progress=progress, log=log)
    stage1_ckpt = str(runs / "stage1_baseline" / "last.safetensors")
    t = stage("stage 1: single-frame baseline", t)

    stage2 = glsmamba_config(base, recipe, stage1_ckpt, overrides)
    api.train(stage2, runs / "stage2_glsmamba", overwrite=True, progress=progress, log=log)
    steps = json.loads((runs / "stage2_glsmamba" / "last.json").read_text())["step"]
    t = stage("stage 2: GLSMamba on cached features", t)

    extra = baseline_config(base, recipe, init_from=stage1_ckpt)
    # same conditions as stage 2: the encoder is frozen, the part on top (here the 1x1 head) trains
    extra["model"]["overrides"]["freeze_encoder"] = bool(recipe["baseline_extra_frozen"])
    # same samples (one per GT person) so the same steps per epoch: same epochs and schedule
    extra["train"].update(epochs=stage2["train"]["epochs"], max_steps=steps, lr=recipe["lr2"],
                          milestones=list(stage2["train"]["milestones"]))
    api.train(extra, runs / "baseline_extra", overwrite=True, progress=progress, log=log)
    t = stage(f"baseline: {steps} more steps", t)

    results = {}
    for name, config, run in (("single-frame baseline (ViTPose-tiny)", extra, "baseline_extra"),
                              ("GLSMamba-tiny", stage2, "stage2_glsmamba")):
        results[name] = score(config, runs / run / "last.safetensors", out_dir / "predictions" / run,
                              progress)
    t = stage("evaluation", t)

    report = out_dir / "report"
    report.mkdir(exist_ok=True)
    plot_losses(runs, report / "loss_curves.png")
    plot_per_joint(results, report / "per_joint_ap.png")
    side_by_side_video(results, report / "side_by_side.mp4", data_root)
    t = stage("report", t)
    timings["total"] = time.perf_counter() - started
    table = results_table(results)
    write_summary(report / "summary.md", table, results, timings, recipe, steps, overrides)
    log(table)
    log(f"[demo] total {timings['total']:.0f} s; report in {report}")
    return {"table": table, "results": {k: v["metrics"] for k, v in results.items()},
            "timings": timings, "report": report}


def score(config: dict, checkpoint: Path, out_dir: Path, progress: bool) -> dict:
    """mAP overall, on degraded frames, per degradation kind and on clean frames."""
    from glsmamba.evaluation import evaluate_posetrack, image_ids_with
    metrics, evaluator = api.evaluate(config, checkpoint, boxes="gt", flip=False,
                                      out_dir=out_dir, progress=progress, log=lambda *_: None)
    gt, pred = evaluator.gt, evaluator.pred_json
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


def plot_losses(runs: Path, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, label in (("stage1_baseline", "stage 1: baseline"),
                       ("baseline_extra", "baseline, extra steps"),
                       ("stage2_glsmamba", "stage 2: GLSMamba")):
        records = [r for r in read_log(runs / run / "log.jsonl") if r["type"] == "train"]
        offset = 0
        if run == "baseline_extra" or run == "stage2_glsmamba":
            stage1 = [r for r in read_log(runs / "stage1_baseline" / "log.jsonl") if r["type"] == "train"]
            offset = stage1[-1]["step"] if stage1 else 0
        ax.plot([r["step"] + offset for r in records], [r["loss"] for r in records], label=label)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("heatmap MSE")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_joint(results: dict, path: Path, subset: str = "degraded") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4))
    names = next(iter(results.values()))["joints"]
    width = 0.8 / len(results)
    for i, (label, result) in enumerate(results.items()):
        values = result["per_joint"].get(subset) or result["per_joint"]["overall"]
        ax.bar(np.arange(len(names)) + i * width, np.nan_to_num(values), width, label=label)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set_ylabel(f"AP ({subset} frames)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def side_by_side_video(results: dict, path: Path, data_root: Path, max_frames: int = 60) -> None:
    """GT | baseline | GLSMamba for the first val video."""
    from glsmamba.data.metainfo import load_metainfo
    from glsmamba.engine.video import draw_poses, open_video_writer
    info = load_metainfo("posetrack")
    names = list(results)
    first = results[names[0]]
    video = sorted(first["gt"])[0]
    images = first["gt"][video]["images"][:max_frames]
    panels_of = [("GT", first["gt"][video])] + [(n, results[n]["pred"][video]) for n in names]
    writer = None
    for image in images:
        frame = cv2.imread(str(Path(data_root) / image["file_name"]))
        if frame is None:
            continue
        tiles = []
        for label, data in panels_of:
            people = [_person(a) for a in data["annotations"] if a["image_id"] == image["id"]]
            tile = draw_poses(frame, people, info.skeleton, info.link_colors, score_thr=0.2,
                              boxes=False)
            cv2.putText(tile, label[:28], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            tags = ",".join(image.get("degradations", []))
            if tags:
                cv2.putText(tile, tags, (4, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                            (0, 0, 255), 1)
            tiles.append(tile)
        canvas = np.concatenate(tiles, axis=1)
        if writer is None:
            writer = open_video_writer(path, 10, (canvas.shape[1], canvas.shape[0]))
        writer.write(canvas)
    if writer is not None:
        writer.release()


def _person(annotation: dict) -> dict:
    keypoints = np.asarray(annotation["keypoints"], np.float32).reshape(-1, 3)
    scores = annotation.get("scores") or []
    if len(scores) == len(keypoints):
        keypoints[:, 2] = np.asarray(scores, np.float32)
    return {"keypoints": keypoints, "bbox": annotation.get("bbox"),
            "track_id": annotation.get("track_id")}


def write_summary(path: Path, table: str, results: dict, timings: dict, recipe: dict,
                  steps: int, overrides: dict | None = None) -> None:
    overrides = GLSMAMBA_OVERRIDES if overrides is None else overrides
    counts = next(iter(results.values()))["counts"]
    lines = [
        "# GLSMamba demo: temporal vs single-frame on the synthetic benchmark", "",
        "PoseTrack mAP (poseval rules, GT boxes, no flip test) on the val split.", "",
        table, "",
        "Frames per subset: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v), "",
        "## Protocol", "",
        f"- data: {recipe['videos']} synthetic videos x {recipe['frames']} frames "
        f"({recipe['size'][0]}x{recipe['size'][1]}), hard-case rate {recipe['hard_rate']}, "
        f"severity {recipe['severity']} (docs/SYNTH.md), "
        "25% of the videos held out for validation;",
        f"- crops {recipe['input_size'][0]}x{recipe['input_size'][1]} (W x H), heatmaps at 1/4;",
        f"- stage 1: single-frame ViTPose-tiny (encoder + 1x1 head) trained end to end for "
        f"{recipe['stage1_epochs']} epochs (AdamW, lr {recipe['lr1']}) on the clean training "
        "frames only (its encoder plays the COCO-pretrained ViTPose, which has not seen the "
        "hard frames either);",
        f"- stage 2: its encoder frozen (as the paper freezes a pretrained ViTPose), features of "
        f"the 5-frame clips cached, GSM + LRM + head of GLSMamba-tiny ({overrides}) "
        f"trained for {recipe['stage2_epochs']} epochs = {steps} steps (lr {recipe['lr2']});",
        f"- the baseline gets the same extra budget: {steps} more steps from its stage-1 "
        "weights on all training frames, same batch size, lr and schedule, under the same "
        "conditions as stage 2 "
        + ("(encoder frozen, the head on top trains);" if recipe["baseline_extra_frozen"]
           else "(encoder and head both train);"),
        "- both scored with the same code: predictions written one poseval JSON per video, "
        "then mAP overall and on frames whose record lists a degradation.", "",
        "## Wall time (this machine)", "",
        *[f"- {k}: {v:.0f} s" for k, v in timings.items()], "",
        "Files: `loss_curves.png`, `per_joint_ap.png` (degraded frames), `side_by_side.mp4` "
        "(GT | baseline | GLSMamba on the first val video).", "",
    ]
    path.write_text("\n".join(lines))
