"""``PoseEstimator``: the Python entry point for poses on videos, cameras and frame lists.

Detect people (or take given boxes), link them over time by IoU into track ids, crop each
person's clip t-δ..t+δ with one affine and run the pose model, while the video streams
through a ring buffer of 2δ+1 frames (bounded memory on long videos and live streams).
``glsmamba infer`` is a thin layer over it that writes the JSON and MP4.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from glsmamba.data.codec import HeatmapCodec
from glsmamba.data.transforms import box_to_center_scale
from glsmamba.data.decoding import decode_to_image, person_scores, predict_heatmaps
from glsmamba.errors import ConfigError, DataError
from glsmamba.inference.clips import crop_clip, stream_clips
from glsmamba.inference.detectors import (BoxReport, MotionPersonDetector, build_detector,
                                          clip_boxes, load_video_detections)
from glsmamba.inference.drawing import draw_poses
from glsmamba.inference.sources import CHANNELS, FrameSource, warn_stderr
from glsmamba.inference.tracker import IouTracker

Detections = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]
_EMPTY = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass
class Person:
    """One person in one frame: ``keypoints`` (K, 3) = x, y, score in image pixels."""

    track_id: int
    box: np.ndarray                 # (4,) x, y, w, h (image pixels)
    keypoints: np.ndarray           # (K, 3)
    score: float                    # box score x mean confident joint score
    box_score: float = 1.0

    def to_posetrack(self, image_id: int, ann_id: int = 0) -> dict:
        """A PoseTrack18 annotation (keypoints visibility 1, per-joint ``scores``)."""
        flat = np.concatenate([self.keypoints[:, :2], np.ones((len(self.keypoints), 1))], axis=1)
        return {"id": ann_id, "image_id": image_id, "track_id": int(self.track_id),
                "category_id": 1, "bbox": [float(v) for v in self.box],
                "score": float(self.score),
                "keypoints": [round(float(v), 2) for v in flat.reshape(-1)],
                "scores": [round(float(s), 4) for s in self.keypoints[:, 2]]}


@dataclass
class FrameResult:
    """The people of frame ``index``; ``image`` is that frame (BGR uint8, OpenCV's order)."""

    index: int
    people: list[Person]
    image: np.ndarray = field(repr=False)
    name: str = ""                  # frame file name (folders) or %06d.jpg
    video: str = ""                 # video name (output stem)

    @property
    def image_rgb(self) -> np.ndarray:
        return cv2.cvtColor(self.image, cv2.COLOR_BGR2RGB)

    def to_posetrack(self, first_ann_id: int = 0) -> dict:
        """``{"image": PoseTrack image record, "annotations": [...]}`` of this frame."""
        image = {"id": self.index, "frame_id": self.index, "vid_id": self.video,
                 "file_name": f"{self.video}/{self.name}", "is_labeled": True,
                 "ignore_regions_x": [], "ignore_regions_y": []}
        return {"image": image,
                "annotations": [p.to_posetrack(self.index, first_ann_id + i)
                                for i, p in enumerate(self.people)]}


class PoseEstimator:
    """Video pose estimation from Python: any video, frame folder, camera, stream or list of
    frames in; per-frame people with track ids, boxes and keypoints out, as the video
    streams.

    Example::

        import glsmamba
        estimator = glsmamba.PoseEstimator.from_checkpoint("work_dirs/synth_tiny")
        for result in estimator.predict_video("vtest.avi", max_frames=50):
            for person in result.people:
                print(result.index, person.track_id, person.box, person.keypoints[0])
        # your own frames (RGB uint8 by default) and boxes
        keypoints = estimator.predict_clip(frames, boxes=[[10, 20, 60, 150]])   # (N, K, 3)

    ``detector``: ``"auto"`` (OpenCV's HOG people detector; the motion detector when this
    OpenCV lacks it), ``"hog"``, ``"motion"``, ``"torchvision"`` / ``"onnx"`` (with
    ``detector_weights``), a callable ``frame_bgr -> (boxes xywh (N, 4), scores (N,))``,
    or ``None`` (then every call must pass ``detections``). Boxes reaching outside the
    image are clipped to it and boxes outside it (or with NaN/inf values) dropped, with
    one warning per video saying how many (``warn`` receives the messages; default:
    stderr).
    """

    def __init__(self, model: nn.Module, codec: HeatmapCodec, delta: int,
                 skeleton: Sequence[tuple[int, int]] = (), link_colors: Sequence = (),
                 flip_indices: Sequence[int] | None = None, decode: str = "quarter",
                 device: str | torch.device | None = None, detector="auto",
                 detector_weights: str | None = None, det_thr: float = 0.3,
                 det_upscale: float = 1.0, flip: bool = False, batch_size: int = 16,
                 detector_options: Mapping | None = None,
                 warn: Callable[[str], None] | None = None, config: dict | None = None):
        """Most users want :meth:`from_checkpoint`. Here: a pose ``model`` (clips
        (B, 2δ+1, 3, H, W) -> heatmaps), the ``codec`` that decodes its heatmaps, the clip
        half-length ``delta``, the dataset's ``skeleton`` / ``link_colors`` (drawing) and
        ``flip_indices`` (flip test when ``flip``); ``decode`` ``quarter|dark``;
        ``batch_size`` people per forward; ``det_thr`` / ``det_upscale`` /
        ``detector_options`` configure the detector."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if delta < 0:
            raise ConfigError(f"delta must be >= 0, got {delta}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.codec, self.delta = codec, int(delta)
        self.skeleton, self.link_colors = list(skeleton), list(link_colors)
        self.flip_indices = list(flip_indices) if (flip and flip_indices is not None) else None
        self.num_joints = len(flip_indices) if flip_indices is not None else \
            int(getattr(model, "num_joints", 17))
        self.decode, self.batch_size, self.config = decode, int(batch_size), config
        self.warn = warn or warn_stderr
        self._detector_spec = (detector, detector_weights, det_thr, det_upscale,
                               dict(detector_options or {}))
        self.detector = self._make_detector()
        self.last_stats: dict = {}

    @property
    def clip_length(self) -> int:
        """Frames per clip, 2δ+1 (the centre frame is the one estimated)."""
        return 2 * self.delta + 1

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        detector="auto", *, config: str | None = None,
                        overrides: Sequence[str] | None = None, **options) -> "PoseEstimator":
        """Build from a glsmamba checkpoint (``.safetensors`` or a work dir).

        The model config is the one stored with the checkpoint (or ``config``, a TOML path
        or bundled name); ``overrides`` are ``key=value`` config overrides as ``--set``
        takes them. ``options`` go to the constructor: ``detector_weights``, ``det_thr``,
        ``det_upscale``, ``detector_options`` (ONNX preprocessing), ``flip``,
        ``batch_size``, ``decode``, ``warn``.
        """
        from glsmamba.data.metainfo import load_metainfo
        from glsmamba.engine.builder import METAINFO, build_model, codec_for, load_for_eval
        run_config = config_for(path, config, overrides)
        model = build_model(run_config, log=lambda *_: None, for_training=False)
        load_for_eval(model, path)
        info = load_metainfo(METAINFO[run_config["data"]["type"]])
        codec = codec_for(run_config, model)      # the run's UDP setting: crop, decoding, flip
        options.setdefault("decode", run_config["eval"]["decode"])
        return cls(model, codec, run_config["data"]["delta"], info.skeleton, info.link_colors,
                   info.flip_indices, device=device, detector=detector, config=run_config,
                   **options)

    def _make_detector(self):
        name, weights, thr, upscale, options = self._detector_spec
        return build_detector(name, weights, thr, upscale,
                              log=lambda m: self.warn(m.removeprefix("note: ")), **options)

    # ------------------------------------------------------------------ videos
    def open(self, source, max_frames: int | None = None, channels: str = "rgb") -> FrameSource:
        """The :class:`FrameSource` ``predict_video`` would read (to inspect fps, size ...)."""
        if isinstance(source, FrameSource):
            return source
        return FrameSource.open(source, max_frames, channels=channels, warn=self.warn)

    def predict_video(self, source, detections=None, max_frames: int | None = None,
                      channels: str = "rgb") -> Iterator[FrameResult]:
        """Per-frame results of ``source``, yielded as the video streams.

        ``source``: a video file, a folder of images (sorted by name), a camera index
        (``0``), a stream URL OpenCV opens (``rtsp://...``), a :class:`FrameSource`, or any
        iterable of H x W x 3 uint8 frames in ``channels`` order (RGB by default; files,
        cameras and streams are read by OpenCV). ``detections``: a detections JSON path
        (``[{"frame_index" | "image_name", "bbox": [x, y, w, h], "score"}]``), a dict
        ``frame index -> (boxes (N, 4), scores (N,))``, or a callable
        ``(index, frame_bgr) -> (boxes, scores)``; default: the detector. Frame ``t`` is
        yielded once frame ``t+δ`` has been read. ``self.last_stats`` holds frames,
        people, seconds and frames/s of the last finished (or stopped) run.
        """
        frames = self.open(source, max_frames, channels)
        boxes_for, table = self._box_source(detections, frames)
        report = BoxReport()
        tracker = IouTracker()
        started, done, people_count = time.perf_counter(), 0, 0
        self.last_stats = {"frames": 0, "people": 0, "seconds": 0.0, "fps": 0.0}
        try:
            stream = self._annotated(frames, boxes_for, tracker, report)
            for t, window in stream_clips(stream, self.delta):
                frame_bgr, boxes, scores, ids = window[self.delta][:4]
                people = self._estimate([item[4] for item in window], boxes, scores, ids)
                done, people_count = done + 1, people_count + len(people)
                elapsed = time.perf_counter() - started
                self.last_stats = {"frames": done, "people": people_count, "seconds": elapsed,
                                   "fps": done / max(elapsed, 1e-9)}
                yield FrameResult(t, people, frame_bgr, frames.frame_name(t), frames.name)
        finally:
            frames.close()
            message = report.message()
            if message:
                self.warn(f"{frames.name}: {message}")
        if table is not None:
            self._check_past_end(table, frames, detections)

    def _annotated(self, frames: FrameSource, boxes_for: Detections, tracker: IouTracker,
                   report: BoxReport):
        """(frame_bgr, boxes, scores, track ids, frame_rgb) in reading order."""
        for t, frame in enumerate(frames):
            boxes, scores = boxes_for(t, frame)
            boxes, scores = clip_boxes(boxes, scores, frames.size, t, report)
            ids = tracker.update(boxes)
            yield frame, boxes, scores, ids, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _box_source(self, detections, frames: FrameSource):
        """(boxes_for, table or None) from the ``detections`` argument or the detector."""
        if detections is None:
            if self.detector is None:
                raise ConfigError("no detector (detector=None) and no detections given")
            if isinstance(self.detector, MotionPersonDetector):
                self.detector = self._make_detector()     # a background model per video
            detector = self.detector
            return (lambda t, frame: detector(frame)), None
        if callable(detections):
            return detections, None
        if isinstance(detections, (str, os.PathLike)):
            table = load_video_detections(detections, frames)
        elif isinstance(detections, Mapping):
            table = {int(t): (np.asarray(b, np.float32).reshape(-1, 4),
                              np.asarray(s, np.float32).reshape(-1))
                     for t, (b, s) in detections.items()}
        else:
            raise ConfigError("detections must be a JSON path, a dict frame -> (boxes, "
                              "scores) or a callable (index, frame) -> (boxes, scores)")
        return (lambda t, frame: table.get(t, _EMPTY)), table

    def _check_past_end(self, table: dict, frames: FrameSource, detections) -> None:
        read = frames.frames_read
        if frames.max_frames and read >= frames.max_frames:
            return                         # cut short on purpose: later frames are expected
        past = sorted(t for t in table if t >= read)
        if past:
            count = sum(len(table[t][0]) for t in past)
            where = detections if isinstance(detections, (str, os.PathLike)) else "detections"
            self.warn(f"{where}: {count} detection(s) for frame indices {past[0]}..{past[-1]} "
                      f"past the end of the video ({read} frames, last index {read - 1}) "
                      "were ignored")

    # ------------------------------------------------------------------ clips
    def predict_clip(self, frames: Sequence[np.ndarray], boxes, scores=None,
                     channels: str = "rgb") -> np.ndarray:
        """Keypoints (N, K, 3) (x, y, score in image pixels) of ``boxes`` in the centre frame.

        ``frames``: 2δ+1 (``clip_length``) H x W x 3 uint8 frames t-δ..t+δ in
        ``channels`` order; ``boxes``: (N, 4) x, y, w, h in the centre frame (your own
        detector's); ``scores`` only scale the person scores (not returned here).
        """
        if channels not in CHANNELS:
            raise ConfigError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        frames = [np.asarray(f) for f in frames]
        if len(frames) != self.clip_length:
            raise ConfigError(f"predict_clip needs {self.clip_length} frames (t-{self.delta}.."
                              f"t+{self.delta}), got {len(frames)}")
        for i, frame in enumerate(frames):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 \
                    or frame.shape != frames[0].shape:
                raise DataError(f"expected H x W x 3 uint8 frames of one size, got shape "
                                f"{frame.shape} dtype {frame.dtype}", f"<frames>, frame {i}")
        if channels == "bgr":
            frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32)
        height, width = frames[0].shape[:2]
        report = BoxReport()
        kept, kept_scores = clip_boxes(boxes, scores, (width, height), 0, report)
        if len(kept) != len(boxes):
            raise DataError(f"{report.message()}; predict_clip returns one pose per box, so "
                            "every box must overlap the image and be finite", "boxes")
        people = self._estimate(frames, kept, kept_scores, list(range(len(kept))))
        if not people:
            return np.zeros((0, self.num_joints, 3), np.float32)
        return np.stack([p.keypoints for p in people])

    @torch.no_grad()
    def _estimate(self, frames_rgb: list[np.ndarray], boxes: np.ndarray, scores: np.ndarray,
                  track_ids: Sequence[int]) -> list[Person]:
        """People boxed in the centre frame of ``frames_rgb``."""
        if len(boxes) == 0:
            return []
        input_size = tuple(self.codec.input_size)
        aspect = input_size[0] / input_size[1]
        centers, scales = zip(*(box_to_center_scale(b, aspect) for b in boxes))
        centers, scales = np.stack(centers), np.stack(scales)
        people: list[Person] = []
        for start in range(0, len(boxes), self.batch_size):
            part = slice(start, start + self.batch_size)
            clips = torch.stack([crop_clip(frames_rgb, c, s, input_size, udp=self.codec.udp)
                                 for c, s in zip(centers[part], scales[part])])  # (B, T, 3, H, W)
            heatmaps = predict_heatmaps(self.model, clips.to(self.device), self.flip_indices,
                                        codec=self.codec)
            points, joint_scores = decode_to_image(heatmaps, self.codec, centers[part],
                                                   scales[part], np.zeros(len(clips)), self.decode)
            person = person_scores(scores[part], joint_scores)
            for i in range(len(clips)):
                keypoints = np.concatenate([points[i], joint_scores[i][:, None]], axis=1)
                people.append(Person(int(track_ids[start + i]), boxes[start + i].copy(),
                                     keypoints.astype(np.float32), float(person[i]),
                                     float(scores[start + i])))
        return people

    def draw(self, result: FrameResult, score_thr: float = 0.3) -> np.ndarray:
        """``result.image`` with skeletons, boxes and track ids drawn (BGR)."""
        people = [{"keypoints": p.keypoints, "bbox": list(p.box), "track_id": p.track_id}
                  for p in result.people]
        return draw_poses(result.image, people, self.skeleton, self.link_colors, score_thr)


def config_for(checkpoint, config: str | None = None,
               overrides: Sequence[str] | None = None) -> dict:
    """The run config of a checkpoint: ``config`` if given, else the one stored with it."""
    from glsmamba.engine.checkpoint import load_checkpoint
    from glsmamba.engine.config import apply_override, expand_config, load_config, merge_config
    if config:
        return load_config(config, list(overrides or []))
    _, meta, path = load_checkpoint(checkpoint)
    if "config" not in meta:
        raise ConfigError(f"{path}: the checkpoint stores no config; pass --config")
    stored = merge_config(meta["config"], source=str(path.with_suffix(".json")))
    for item in overrides or []:
        apply_override(stored, item)
    return expand_config(stored)
