"""Pose tracking on the embedded benchmark's val split: IoU tracker vs pose tracker.

For each trained run (``--run NAME=WORK_DIR``, e.g. the demo's T = 5 and T = 1 GLSMamba),
each box source (the GT boxes with score 1, and the benchmark's synthetic detections) and
each tracker (``iou``, ``pose``), every val video goes through
``PoseEstimator.predict_video`` (the tracker runs inside it, the pose tracker after the
pose model) and the predictions are scored with poseval's rules: tracking MOTA and
identity switches (``glsmamba.evaluation.evaluate_tracking``, summed over the 15 joints)
and per-frame mAP (``evaluate_posetrack``; the trackers do not change poses, so mAP only
depends on the run and the boxes). poseval scores every predicted joint, so MOTA is also
given with the joints scored below ``--joint-thr`` (default 0.5) left out, as PoseTrack
entries do before tracking evaluation. It also reports the tracker's share of
``predict_video``'s wall time (tracker seconds / total seconds).

    python benchmarks/tracking.py --data DEMO/data \\
        --run "T = 5=DEMO/runs/glsmamba_t5" --run "T = 1=DEMO/runs/glsmamba_t1" \\
        [--json out.json] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def _val_videos(data: Path) -> dict[str, dict]:
    from glsmamba.evaluation import load_json_dir
    return load_json_dir(data / "annotations" / "val")


def _box_tables(data: Path, gt: dict) -> dict[str, dict[str, dict]]:
    """source -> video -> {frame index: (boxes (N, 4), scores (N,))}."""
    detections = json.loads((data / "detections" / "val.json").read_text())
    by_image: dict = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)
    tables: dict[str, dict] = {"GT boxes": {}, "detections": {}}
    for name, video in gt.items():
        images = sorted(video["images"], key=lambda im: im["file_name"])
        gt_by_image: dict = {}
        for ann in video["annotations"]:
            gt_by_image.setdefault(ann["image_id"], []).append(ann)
        for source, table in (("GT boxes", gt_by_image), ("detections", by_image)):
            tables[source][name] = {
                t: (np.array([d["bbox"] for d in table.get(im["id"], [])],
                             np.float32).reshape(-1, 4),
                    np.array([d.get("score", 1.0) if source == "detections" else 1.0
                              for d in table.get(im["id"], [])], np.float32))
                for t, im in enumerate(images)}
    return tables


def _predict(estimator, data: Path, name: str, video: dict, boxes: dict) -> tuple[dict, dict]:
    """PoseTrack18 prediction of one video (GT image ids) and predict_video's stats."""
    images = sorted(video["images"], key=lambda im: im["file_name"])
    folder = data / Path(images[0]["file_name"]).parent
    annotations = []
    for result in estimator.predict_video(folder, detections=boxes):
        image_id = images[result.index]["id"]
        for k, person in enumerate(result.people):
            annotations.append(person.to_posetrack(image_id, len(annotations) + k))
    prediction = {"images": video["images"], "annotations": annotations,
                  "categories": video["categories"]}
    return prediction, dict(estimator.last_stats)


def _without_low_joints(predictions: dict, thr: float) -> dict:
    """A copy of the predictions with joints scored below ``thr`` written as (0, 0, 0)."""
    out = {}
    for name, video in predictions.items():
        annotations = []
        for ann in video["annotations"]:
            keypoints = list(ann["keypoints"])
            for k, score in enumerate(ann["scores"]):
                if score < thr:
                    keypoints[3 * k:3 * k + 3] = [0, 0, 0]
            annotations.append({**ann, "keypoints": keypoints})
        out[name] = {**video, "annotations": annotations}
    return out


def evaluate_combination(run_dir: Path, data: Path, gt: dict, boxes: dict,
                         tracker: str, joint_thr: float = 0.5) -> dict:
    """MOTA, switches, mAP and timing of one (run, boxes, tracker)."""
    from glsmamba.evaluation import evaluate_posetrack, evaluate_tracking
    from glsmamba.inference import PoseEstimator
    estimator = PoseEstimator.from_checkpoint(run_dir, device="cpu", detector=None,
                                              warn=lambda m: None, tracker=tracker)
    predictions, seconds, track_seconds, frames = {}, 0.0, 0.0, 0
    for name in sorted(gt):
        predictions[name], stats = _predict(estimator, data, name, gt[name], boxes[name])
        seconds += stats["seconds"]
        track_seconds += stats.get("track_seconds", 0.0)
        frames += stats["frames"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mot = evaluate_tracking(gt, predictions)
        confident = evaluate_tracking(gt, _without_low_joints(predictions, joint_thr))
        ap = evaluate_posetrack(gt, predictions)
    return {"mota": float(mot.mota[-1]), "switches": mot.num_switches,
            "mota_thr": float(confident.mota[-1]), "switches_thr": confident.num_switches,
            "motp": float(mot.motp[-1]), "map": float(ap.total), "frames": frames,
            "seconds": seconds, "track_seconds": track_seconds,
            "track_share": track_seconds / max(seconds, 1e-9)}


def render(rows: list[dict], markdown: bool, joint_thr: float = 0.5) -> str:
    head = ["run", "boxes", "tracker", "MOTA", "ID switches", f"MOTA (joints >= {joint_thr})",
            f"ID switches (>= {joint_thr})", "mAP", "tracking share"]
    cells = [[r["run"], r["boxes"], r["tracker"], f"{r['mota']:.1f}", str(r["switches"]),
              f"{r['mota_thr']:.1f}", str(r["switches_thr"]), f"{r['map']:.1f}",
              f"{100 * r['track_share']:.2f} %"] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] * 3 + ["---:"] * 6) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(x) for x in col) for col in zip(head, *cells)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*c) for c in cells])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path,
                        help="benchmark root (annotations/val, detections/val.json, images)")
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=WORK_DIR")
    parser.add_argument("--trackers", nargs="+", default=["iou", "pose"])
    parser.add_argument("--joint-thr", type=float, default=0.5,
                        help="second MOTA column: joints scored below this are left out")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    gt = _val_videos(args.data)
    tables = _box_tables(args.data, gt)
    rows = []
    for spec in args.run:
        label, _, work_dir = spec.rpartition("=")
        for source, boxes in tables.items():
            for tracker in args.trackers:
                started = time.perf_counter()
                row = evaluate_combination(Path(work_dir), args.data, gt, boxes, tracker,
                                           args.joint_thr)
                rows.append({"run": label, "boxes": source, "tracker": tracker, **row})
                print(f"{label} / {source} / {tracker}: MOTA {row['mota']:.1f}, "
                      f"{row['switches']} switches, mAP {row['map']:.1f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
    print(render(rows, args.markdown, args.joint_thr))
    if args.json:
        from glsmamba.fileio import write_json_atomic
        write_json_atomic(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
