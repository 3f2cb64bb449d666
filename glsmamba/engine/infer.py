"""``glsmamba infer``: poses on any video or frame folder -> PoseTrack JSON + annotated MP4."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from glsmamba.data.codec import HeatmapCodec
from glsmamba.data.transforms import box_to_center_scale
from glsmamba.engine.checkpoint import atomic_write_bytes
from glsmamba.engine.inference import decode_to_image, person_scores, predict_heatmaps
from glsmamba.engine.video import (FrameSource, IouTracker, crop_clip, draw_poses,
                                   open_video_writer, stream_clips)

BoxFn = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]


def infer_video(model: nn.Module, source: FrameSource, out_dir: Path, boxes_for: BoxFn,
                codec: HeatmapCodec, delta: int, skeleton: Sequence[tuple[int, int]],
                link_colors: Sequence[Sequence[int]], flip_indices: Sequence[int] | None = None,
                decode: str = "quarter", batch_size: int = 16, device: str | torch.device = "cpu",
                progress: bool = True, video_name: str | None = None) -> dict:
    """Stream ``source`` through detection, tracking and the model; write JSON and MP4.

    ``boxes_for(t, frame_bgr) -> (boxes xywh (N, 4), scores (N,))`` gives the people of
    frame t (a detector or a detections file). Returns paths and timing.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    name = video_name or source.path.stem
    mp4_path, json_path = out_dir / f"{name}.mp4", out_dir / f"{name}.json"
    writer = open_video_writer(mp4_path, source.fps, source.size)
    tracker = IouTracker()
    model.eval().to(device)
    images, annotations = [], []
    bar = _bar(source.count, progress)
    started = time.perf_counter()
    frames_done = 0
    try:
        for t, window in stream_clips(_with_boxes(source, boxes_for, tracker), delta):
            frame_bgr, boxes, scores, ids = window[delta]
            frames_rgb = [cv2.cvtColor(item[0], cv2.COLOR_BGR2RGB) for item in window]
            people = estimate_people(model, frames_rgb, boxes, scores, ids, codec, flip_indices,
                                     decode, batch_size, device)
            images.append(_image_record(t, source, name))
            annotations += [_annotation(images[-1]["id"], len(annotations), p) for p in people]
            writer.write(draw_poses(frame_bgr, people, skeleton, link_colors))
            frames_done += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(fps=f"{frames_done / (time.perf_counter() - started):.2f}")
    finally:
        writer.release()
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    for image in images:
        image["nframes"] = len(images)
    result = {"images": images, "annotations": annotations,
              "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
    atomic_write_bytes(json_path, json.dumps(result).encode())
    return {"json": json_path, "mp4": mp4_path, "frames": frames_done, "people": len(annotations),
            "seconds": elapsed, "fps": frames_done / max(elapsed, 1e-9)}


def _with_boxes(source: FrameSource, boxes_for: BoxFn, tracker: IouTracker):
    """Frames paired with their boxes, scores and track ids (tracked in reading order)."""
    for t, frame in enumerate(source):
        boxes, scores = boxes_for(t, frame)
        ids = tracker.update(boxes)
        yield frame, boxes, scores, ids


@torch.no_grad()
def estimate_people(model: nn.Module, frames_rgb: list[np.ndarray], boxes: np.ndarray,
                    scores: np.ndarray, track_ids: list[int], codec: HeatmapCodec,
                    flip_indices, decode: str, batch_size: int, device) -> list[dict]:
    """Poses of the people boxed in the centre frame of ``frames_rgb``."""
    if len(boxes) == 0:
        return []
    input_size = tuple(codec.input_size)
    aspect = input_size[0] / input_size[1]
    centers, scales = zip(*(box_to_center_scale(b, aspect) for b in boxes))
    centers, scales = np.stack(centers), np.stack(scales)
    people = []
    for start in range(0, len(boxes), batch_size):
        part = slice(start, start + batch_size)
        clips = torch.stack([crop_clip(frames_rgb, c, s, input_size)
                             for c, s in zip(centers[part], scales[part])])  # (B, T, 3, H, W)
        heatmaps = predict_heatmaps(model, clips.to(device), flip_indices)
        points, joint_scores = decode_to_image(heatmaps, codec, centers[part], scales[part],
                                               np.zeros(len(clips)), decode)
        person = person_scores(scores[part], joint_scores)
        for i in range(len(clips)):
            keypoints = np.concatenate([points[i], joint_scores[i][:, None]], axis=1)
            people.append({"keypoints": keypoints, "score": float(person[i]),
                           "bbox": [float(v) for v in boxes[start + i]],
                           "track_id": int(track_ids[start + i])})
    return people


def _image_record(t: int, source: FrameSource, name: str) -> dict:
    return {"id": t, "frame_id": t, "vid_id": name, "file_name": f"{name}/{source.frame_name(t)}",
            "is_labeled": True, "ignore_regions_x": [], "ignore_regions_y": []}


def _annotation(image_id: int, ann_id: int, person: dict) -> dict:
    keypoints = person["keypoints"]
    flat = np.concatenate([keypoints[:, :2], np.ones((len(keypoints), 1))], axis=1)
    return {"id": ann_id, "image_id": image_id, "track_id": person["track_id"],
            "category_id": 1, "bbox": person["bbox"], "score": person["score"],
            "keypoints": [round(float(v), 2) for v in flat.reshape(-1)],
            "scores": [round(float(s), 4) for s in keypoints[:, 2]]}


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total or None, desc="infer", unit="frame", dynamic_ncols=True)
