"""Parser shared by every COCO-style video pose layout (PoseTrack 2017/2018/2021, Sub-JHMDB JSON).

Layout: ``{"images": [...], "annotations": [...], "categories": [...]}`` in one file per video
(a folder of them) or one merged file. Image records carry ``file_name`` (relative to the
data root), ``id`` and usually ``vid_id``, ``frame_id``, ``nframes``, ``is_labeled``.

Videos are the folders of ``file_name``; their frames are the video's own image records in
``frame_id`` order (``file_name`` order when a record lacks ``frame_id``). Frame names are
never parsed. When a video lists fewer records than its ``nframes`` (e.g. a file holding
only labelled frames), clip neighbours come from the sorted listing of the frame's folder
(same extension) under the data root; if that folder is missing or does not hold the listed
frames, the listed records alone are used and a warning says so.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from glsmamba.data.datasets.base import (PoseDataset, VideoInfo, check_annotation_record,
                                         check_image_record, check_mode, clip_box_to_image,
                                         clip_indices, load_json, parse_box, parse_keypoints)
from glsmamba.data.metainfo import DatasetInfo
from glsmamba.data.sample import PoseSample
from glsmamba.data.windows import check_window
from glsmamba.errors import DataError


def annotation_files(ann_path: str | Path) -> list[str]:
    """A merged JSON file -> [it]; a folder -> its ``*.json`` files, sorted."""
    path = Path(ann_path)
    if path.is_dir():
        files = sorted(str(p) for p in path.glob("*.json"))
        if not files:
            raise DataError("no *.json annotation files in folder", str(path))
        return files
    if not path.is_file():
        raise DataError("annotation file or folder not found", str(path))
    return [str(path)]


def video_name_of(file_name: str) -> str:
    """Video of an image record: the name of the folder holding the frame."""
    return os.path.basename(os.path.dirname(os.path.normpath(file_name))) or "."


def _frame_sort_key(image: dict) -> tuple:
    frame_id = image.get("frame_id")
    try:
        return (0, int(frame_id), image["file_name"])
    except (TypeError, ValueError):
        return (1, 0, image["file_name"])


def _as_int(value: Any, path: str, image: dict) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError) as err:
        raise DataError(f"'nframes' must be an integer, got {value!r}", path,
                        f"image id={image.get('id')}") from err


class PoseTrackBase(PoseDataset):
    """COCO-style video pose annotations -> :class:`PoseSample` per person box.

    Args:
        ann_path: folder of per-video JSON files, or one merged JSON file.
        data_root: folder that the images' ``file_name`` are relative to.
        delta: clip half-length; clips hold ``2 * delta + 1`` frames.
        window: ``"centered"`` (frames t-delta..t+delta) or ``"causal"`` (t-2 delta..t).
        detections: JSON list of ``{image_id | image_name | file_name, bbox, score,
            category_id}``; when given, samples are these boxes (GT keypoints zero).
        det_score_thr: detections scoring below are dropped.
        labelled_only: only frames with ``is_labeled`` (missing flag = labelled).
        min_keypoints: GT persons with fewer annotated joints are skipped.
        mode: ``"train"`` or ``"test"`` (kept for the pipeline; parsing is the same).
        bad_gt_box: ``"error"`` (default) raises DataError for a GT box of zero size after
            clipping to the image; ``"skip"`` drops it with a warning. Zero-size detections are
            always dropped with a warning (detectors emit them).
        clip_detections: clip detected boxes to the image (default). DCPose and mmpose use
            detections as they come (only GT boxes are cleaned), so their protocols pass False.
    """

    default_metainfo = "posetrack"
    coordinate_offset = 0.0          # subtracted from x, y (1 for 1-based files)
    visibility = "flag"              # "flag": v > 0; "coordinates": x > 0 and y > 0

    @classmethod
    def for_split(cls, root, ann, *, mode, delta, window, split, detections, det_score_thr,
                  clip_detections):
        return cls(cls.annotation_path(root, ann, split, mode), data_root=root, delta=delta,
                   detections=detections, det_score_thr=det_score_thr, mode=mode,
                   clip_detections=clip_detections, window=window)

    def __init__(self, ann_path: str | Path, data_root: str | Path = ".", delta: int = 2,
                 detections: str | Path | None = None, det_score_thr: float = 0.0,
                 labelled_only: bool = True, min_keypoints: int = 1, mode: str = "train",
                 metainfo: str | DatasetInfo | None = None, bad_gt_box: str = "error",
                 clip_detections: bool = True, window: str = "centered"):
        super().__init__(metainfo or self.default_metainfo, data_root)
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        if bad_gt_box not in ("error", "skip"):
            raise ValueError(f"bad_gt_box must be 'error' or 'skip', got {bad_gt_box!r}")
        self.ann_path = str(ann_path)
        self.delta, self.window = delta, check_window(window)
        self.mode = check_mode(mode)
        self.labelled_only = labelled_only
        self.min_keypoints = min_keypoints
        self.bad_gt_box = bad_gt_box
        self.det_score_thr = det_score_thr
        self.clip_detections = clip_detections
        self.detections = None if detections is None else str(detections)
        self._annotations: dict[str, list[tuple[str, dict]]] = {}   # video -> (file, ann)
        self._frame_index: dict[str, dict[Any, int]] = {}           # video -> image id -> index
        self._image_at: dict[Any, str] = {}                         # image id -> where it is
        self._video_ids: dict[str, Any] = {}                        # frame folder -> vid_id
        per_video = Path(ann_path).is_dir()
        for path in annotation_files(ann_path):
            self._read_file(path, load_json(path), per_video)
        for video in self.videos.values():
            self._resolve_frames(video)
        if self.detections is None:
            self._add_gt_samples()
        else:
            self._add_detection_samples(self.detections)

    # ------------------------------------------------------------------ reading
    def _check_image(self, image: Any, path: str, record: str, per_video: bool) -> str:
        """Validate one image record (types, unique id, file inside the data root, its
        folder = the file's video); return its video name."""
        check_image_record(image, path, record)
        where = f"image id={image['id']}"
        if image["id"] in self._image_at:
            raise DataError(f"image id {image['id']!r} is used twice (also {self._image_at[image['id']]}): "
                            "ids must be unique, or frames and labels would mix", path, where)
        self._image_at[image["id"]] = f"{os.path.basename(path)} {record}"
        self.check_inside_root(self.image_path(image["file_name"]), path, where)
        name = video_name_of(image["file_name"])
        stem = Path(path).stem
        if per_video and name != stem:
            raise DataError(f"frame {image['file_name']!r} lies in folder {name!r} but this file "
                            f"is video {stem!r}: per-video annotation files must be named as "
                            "their image folder (predictions and scores pair them by name)",
                            path, where)
        other = self.videos.get(name)
        if other is not None and other.ann_file != path:
            raise DataError(f"frame folder {name!r} is also used by {other.ann_file}: two videos "
                            "cannot share one frame folder", path, where)
        video_id = self._video_ids.setdefault(name, image.get("vid_id"))
        if image.get("vid_id") != video_id:
            raise DataError(f"frame folder {name!r} holds frames of two videos (vid_id "
                            f"{video_id!r} and {image.get('vid_id')!r}): two videos cannot "
                            "share one frame folder", path, where)
        return name

    def _read_file(self, path: str, data: Any, per_video: bool = False) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError("expected a JSON object with an 'images' list (PoseTrack/COCO layout)", path)
        annotations = data.get("annotations") or []
        if not isinstance(annotations, list):
            raise DataError("'annotations' must be a list", path)
        image_video: dict[Any, str] = {}
        for i, image in enumerate(data["images"]):
            name = self._check_image(image, path, f"images[{i}]", per_video)
            video = self.videos.get(name)
            if video is None:
                video = self.videos[name] = VideoInfo(name, path, [], categories=data.get("categories", []))
            video.images.append(image)
            image_video[image["id"]] = name
        for i, ann in enumerate(annotations):
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if isinstance(ann, dict) and not isinstance(image_id, (str, int)):
                raise DataError(f"'image_id' must be an integer or a string, got {image_id!r:.60}",
                                path, f"annotations[{i}]")
            if not isinstance(ann, dict) or ann.get("image_id") not in image_video:
                raise DataError(f"annotation refers to unknown image_id {image_id!r}", path,
                                f"annotations[{i}]")
            self._annotations.setdefault(image_video[ann["image_id"]], []).append((path, ann))

    def _resolve_frames(self, video: VideoInfo) -> None:
        ordered = sorted(video.images, key=_frame_sort_key)     # video.images keep the file's order
        listed = [self.image_path(image["file_name"]) for image in ordered]
        nframes = max(_as_int(image.get("nframes"), video.ann_file, image) for image in ordered)
        video.complete = nframes == 0 or len(ordered) >= nframes
        video.frame_paths = listed if video.complete else self._fallback_frames(video, listed)
        position = {path: i for i, path in enumerate(video.frame_paths)}
        self._frame_index[video.name] = {image["id"]: position[path]
                                         for image, path in zip(ordered, listed)}

    def _fallback_frames(self, video: VideoInfo, listed: list[str]) -> list[str]:
        folder = os.path.dirname(listed[0])
        extension = os.path.splitext(listed[0])[1].lower()
        if os.path.isdir(folder):
            names = sorted(n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() == extension)
            found = [os.path.join(folder, n) for n in names]
            if set(listed) <= set(found):
                for path in found:          # a listed frame may be a link out of the root
                    self.check_inside_root(path, video.ann_file, f"video {video.name}")
                return found
        warnings.warn(f"{video.ann_file}: video {video.name} lists {len(listed)} of its frames and "
                      f"its image folder {folder} does not hold them; clips use the listed frames only",
                      stacklevel=3)
        return listed

    # ------------------------------------------------------------------ samples
    def _image_lookup(self) -> dict[Any, tuple[VideoInfo, dict]]:
        return {image["id"]: (video, image) for video in self.videos.values() for image in video.images}

    def _is_used(self, image: dict) -> bool:
        return not self.labelled_only or bool(image.get("is_labeled", True))

    def _clip(self, video: VideoInfo, image: dict) -> tuple[int, list[str]]:
        index = self._frame_index[video.name][image["id"]]
        indices = clip_indices(index, len(video.frame_paths), self.delta, self.window)
        return index, [video.frame_paths[i] for i in indices]

    def _visible(self, raw: np.ndarray) -> np.ndarray:
        if self.visibility == "coordinates":
            return ((raw[:, 0] > 0) & (raw[:, 1] > 0)).astype(np.float32)
        return (raw[:, 2] > 0).astype(np.float32)

    def _extra(self, ann: dict | None, image: dict, raw: np.ndarray | None) -> dict:
        extra: dict = {}
        if "degradations" in image:
            extra["degradations"] = list(image["degradations"])
        if ann is not None and ann.get("bbox_head"):
            extra["bbox_head"] = [float(v) for v in ann["bbox_head"]]
        if "width" in image and "height" in image:
            extra["image_size"] = (int(image["width"]), int(image["height"]))
        return extra

    def _add_gt_samples(self) -> None:
        lookup = self._image_lookup()
        skipped_boxes = 0
        num_joints = self.metainfo.num_joints
        for name in self.videos:
            for path, ann in self._annotations.get(name, []):
                video, image = lookup[ann["image_id"]]
                if not self._is_used(image):
                    continue
                record = f"annotation id={ann.get('id')} (image {image['id']})"
                check_annotation_record(ann, path, record)
                raw = parse_keypoints(ann.get("keypoints", [0.0] * 3 * num_joints), num_joints, path, record)
                visible = self._visible(raw)
                if visible.sum() < self.min_keypoints:
                    continue
                keypoints = (raw[:, :2] - self.coordinate_offset) * visible[:, None]
                if "bbox" not in ann:
                    raise DataError("annotation has no 'bbox'", path, record)
                box = self._clean_box(parse_box(ann["bbox"], path, record), image)
                if box[2] <= 0 or box[3] <= 0:
                    if self.bad_gt_box == "error":
                        raise DataError(f"box with zero size {list(map(float, ann['bbox']))} "
                                        "(after clipping to the image)", path, record)
                    skipped_boxes += 1
                    continue
                index, frames = self._clip(video, image)
                self.samples.append(PoseSample(
                    image_path=self.image_path(image["file_name"]), frame_paths=frames,
                    bbox_xywh=box, keypoints=keypoints.astype(np.float32), visible=visible,
                    bbox_score=1.0, image_id=image["id"], video_id=video.name, frame_index=index,
                    track_id=int(ann.get("track_id", -1)), ann_id=ann.get("id", -1),
                    extra=self._extra(ann, image, raw)))
        if skipped_boxes:
            warnings.warn(f"{self.ann_path}: skipped {skipped_boxes} GT boxes of zero size", stacklevel=3)

    def _clean_box(self, box: np.ndarray, image: dict) -> np.ndarray:
        box = box.copy()
        box[:2] -= self.coordinate_offset
        return clip_box_to_image(box, image.get("width"), image.get("height"))

    def _detection_list(self, path: str) -> list:
        data = load_json(path)
        if isinstance(data, dict) and isinstance(data.get("annotations"), list):
            data = data["annotations"]
        if not isinstance(data, list):
            raise DataError("detections must be a JSON list of {image_id or image_name, bbox, score}", path)
        return data

    def _add_detection_samples(self, path: str) -> None:
        by_id = self._image_lookup()
        by_name: dict[str, tuple[VideoInfo, dict]] = {}
        for video, image in by_id.values():
            norm = os.path.normpath(image["file_name"])
            by_name[norm] = (video, image)
            by_name.setdefault("/".join(Path(norm).parts[-2:]), (video, image))
        num_joints = self.metainfo.num_joints
        zero_boxes = 0
        for i, det in enumerate(self._detection_list(path)):
            record = f"detection #{i}"
            if not isinstance(det, dict) or "bbox" not in det:
                raise DataError("detection needs 'bbox' and 'image_id' or 'image_name'", path, record)
            if det.get("category_id", 1) != 1:
                continue
            try:
                score = float(det.get("score", 1.0))
            except (TypeError, ValueError):
                raise DataError(f"detection score must be a number, got {det.get('score')!r}",
                                path, record) from None
            if not np.isfinite(score):
                raise DataError(f"detection score is {score}; it must be a finite number",
                                path, record)
            if score < self.det_score_thr:
                continue
            found = self._find_image(det, by_id, by_name)
            if found is None:
                key = det.get("image_id", det.get("image_name", det.get("file_name")))
                raise DataError(f"detection names an image not in the annotations: {key!r}", path, record)
            video, image = found
            if not self._is_used(image):
                continue
            box = parse_box(det["bbox"], path, record)
            if self.clip_detections:
                box = self._clean_box(box, image)
            else:
                box = box.astype(np.float32).copy()
                box[:2] -= self.coordinate_offset
            if box[2] <= 0 or box[3] <= 0:
                zero_boxes += 1
                continue
            index, frames = self._clip(video, image)
            self.samples.append(PoseSample(
                image_path=self.image_path(image["file_name"]), frame_paths=frames, bbox_xywh=box,
                keypoints=np.zeros((num_joints, 2), np.float32), visible=np.zeros(num_joints, np.float32),
                bbox_score=score, image_id=image["id"], video_id=video.name, frame_index=index,
                track_id=-1, ann_id=-1, extra=self._extra(None, image, None)))
        if zero_boxes:
            warnings.warn(f"{path}: dropped {zero_boxes} detections of zero size", stacklevel=3)

    @staticmethod
    def _find_image(det: dict, by_id: dict, by_name: dict) -> tuple[VideoInfo, dict] | None:
        if "image_id" in det:
            if isinstance(det["image_id"], (list, dict, bool)) or det["image_id"] is None:
                return None                   # a list, an object ...: names no image
            found = by_id.get(det["image_id"])
            if found is None and isinstance(det["image_id"], str) and det["image_id"].isdigit():
                found = by_id.get(int(det["image_id"]))
            return found
        name = det.get("image_name", det.get("file_name"))
        if not isinstance(name, str):
            return None
        norm = os.path.normpath(name)
        return by_name.get(norm) or by_name.get("/".join(Path(norm).parts[-2:]))
