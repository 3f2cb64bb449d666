"""``PoseEstimator``: the Python entry point for poses on videos, cameras and frame lists.

Detect people (or take given boxes), crop each person's clip t-δ..t+δ with one affine and
run the pose model, while the video streams through a ring buffer of 2δ+1 frames (bounded
memory on long videos and live streams); link people over time into track ids (the pose
tracker after the model, from boxes and poses; or the IoU tracker on the boxes).
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
from glsmamba.data.windows import check_window, delay_frames, target_index, window_offsets
from glsmamba.errors import ConfigError, DataError
from glsmamba.inference.clips import crop_clip, stream_clips
from glsmamba.inference.detectors import (BoxReport, MotionPersonDetector, build_detector,
                                          clip_boxes, load_video_detections)
from glsmamba.inference.drawing import draw_poses
from glsmamba.inference.sources import CHANNELS, FrameSource, warn_stderr
from glsmamba.trackers import IouTracker, PoseTracker, build_tracker

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
    delay_frames: int = 0           # frames read after this one before it was yielded

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
                 warn: Callable[[str], None] | None = None, config: dict | None = None,
                 window: str | None = None, runtime: str = "torch",
                 tracker: str | None = None, tracker_options: Mapping | None = None,
                 oks_sigmas: Sequence[float] | None = None):
        """Most users want :meth:`from_checkpoint`. Here: a pose ``model`` (clips
        (B, 2δ+1, 3, H, W) -> heatmaps), the ``codec`` that decodes its heatmaps, the clip
        half-length ``delta``, the dataset's ``skeleton`` / ``link_colors`` (drawing) and
        ``flip_indices`` (flip test when ``flip``); ``decode`` ``quarter|dark``;
        ``batch_size`` people per forward; ``det_thr`` / ``det_upscale`` /
        ``detector_options`` configure the detector; ``window`` ``centered|causal`` (default:
        the model's ``clip_window``) says which clip frame is estimated (causal: frames
        t-2δ..t, each frame yielded as soon as it is read); ``tracker`` ``pose|iou``
        (default: the config's ``track.method``), ``tracker_options`` (``track.*`` keys
        replacing the config's) and ``oks_sigmas`` (per joint, for the pose tracker's OKS)
        configure tracking (glsmamba/trackers.py)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if delta < 0:
            raise ConfigError(f"delta must be >= 0, got {delta}")
        model, self.runtime = _runtime_model(model, runtime)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.codec, self.delta = codec, int(delta)
        self.window = _model_window(model, window)
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
        self._tracker_spec = _tracker_spec(config, tracker, tracker_options, oks_sigmas)

    @property
    def clip_length(self) -> int:
        """Frames per clip, 2δ+1 (frame ``target_index`` is the one estimated)."""
        return 2 * self.delta + 1

    @property
    def target_index(self) -> int:
        """Index of the estimated frame in a clip: δ (centered) or 2δ (causal)."""
        return target_index(self.clip_length, self.window)

    @property
    def delay_frames(self) -> int:
        """Frames after t that ``predict_video`` reads before yielding t: δ, or 0 (causal)."""
        return delay_frames(self.delta, self.window)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        detector="auto", *, config: str | None = None,
                        overrides: Sequence[str] | None = None, runtime: str = "torch",
                        **options) -> "PoseEstimator":
        """Build from a glsmamba checkpoint (``.safetensors`` or a work dir); with
        ``runtime="onnxruntime"``, from a ``glsmamba export`` ONNX file (:meth:`from_onnx`).

        The model config is the one stored with the checkpoint (or ``config``, a TOML path
        or bundled name); ``overrides`` are ``key=value`` config overrides as ``--set``
        takes them. ``options`` go to the constructor: ``detector_weights``, ``det_thr``,
        ``det_upscale``, ``detector_options`` (ONNX preprocessing), ``flip``,
        ``batch_size``, ``decode``, ``warn``.
        """
        from glsmamba.engine.builder import (build_model, codec_for, dataset_metainfo,
                                             load_for_eval)
        from glsmamba.checkpoint import load_checkpoint
        if _runtime_name(runtime) == "onnxruntime":
            if config or overrides:
                raise ConfigError("config / overrides do not apply to an exported ONNX model")
            return cls.from_onnx(path, device, detector, **options)
        loaded = load_checkpoint(path)              # read once: its config and its weights
        run_config = config_for(path, config, overrides, loaded=loaded)
        model = build_model(run_config, log=lambda *_: None, for_training=False)
        load_for_eval(model, path, loaded=loaded)
        info = dataset_metainfo(run_config)
        codec = codec_for(run_config, model)      # the run's UDP setting: crop, decoding, flip
        options.setdefault("decode", run_config["eval"]["decode"])
        options.setdefault("oks_sigmas", info.sigmas)     # the pose tracker's OKS
        options.setdefault("window", run_config["data"].get("window", "centered"))
        return cls(model, codec, run_config["data"]["delta"], info.skeleton, info.link_colors,
                   info.flip_indices, device=device, detector=detector, config=run_config,
                   **options)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                  detector="auto", *, threads: int = 0, **options) -> "PoseEstimator":
        """Build from a ``glsmamba export`` ONNX file: the model runs in ONNX Runtime's CPU
        provider (``threads`` 0 = its default), detection, tracking and decoding as with
        :meth:`from_checkpoint`; δ, window, codec and joints come from ``FILE.json``."""
        from glsmamba.export.runtime import estimator_parts
        if device is not None and torch.device(device).type != "cpu":
            raise ConfigError(f"runtime onnxruntime runs on the CPU, got device {device!r}")
        parts = estimator_parts(path, threads)
        options.setdefault("decode", parts["decode"])
        options.setdefault("window", parts["window"])
        return cls(parts["model"], parts["codec"], parts["delta"], parts["skeleton"],
                   parts["link_colors"], parts["flip_indices"], device="cpu", detector=detector,
                   runtime="onnxruntime", **options)

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
        yielded once frame ``t+δ`` has been read (a causal model: as soon as frame ``t``
        is read; ``result.delay_frames`` says how many frames after t were read). ``self.last_stats`` holds frames,
        people, seconds and frames/s of the last finished (or stopped) run.
        """
        frames = self.open(source, max_frames, channels)
        boxes_for, table = self._box_source(detections, frames)
        report = BoxReport()
        tracker = build_tracker(*self._tracker_spec)
        box_tracker = tracker if isinstance(tracker, IouTracker) else None
        started, done, people_count = time.perf_counter(), 0, 0
        self.last_stats = {"frames": 0, "people": 0, "seconds": 0.0, "fps": 0.0}
        try:
            stream = self._annotated(frames, boxes_for, box_tracker, report)
            for t, window in stream_clips(stream, self.delta, self.window):
                frame_bgr, boxes, scores, ids = window[self.target_index][:4]
                people = self._estimate([item[4] for item in window], boxes, scores, ids)
                if isinstance(tracker, PoseTracker):
                    _assign_pose_tracks(tracker, people)      # after the model: poses count
                done, people_count = done + 1, people_count + len(people)
                elapsed = time.perf_counter() - started
                self.last_stats = {"frames": done, "people": people_count, "seconds": elapsed,
                                   "fps": done / max(elapsed, 1e-9),
                                   "track_seconds": tracker.seconds}
                yield FrameResult(t, people, frame_bgr, frames.frame_name(t), frames.name,
                                  delay_frames=frames.frames_read - 1 - t)
        finally:
            frames.close()
            message = report.message()
            if message:
                self.warn(f"{frames.name}: {message}")
        if table is not None:
            self._check_past_end(table, frames, detections)

    def _annotated(self, frames: FrameSource, boxes_for: Detections,
                   tracker: IouTracker | None, report: BoxReport):
        """(frame_bgr, boxes, scores, track ids, frame_rgb) in reading order (ids -1 when
        the pose tracker assigns them after the model)."""
        for t, frame in enumerate(frames):
            boxes, scores = boxes_for(t, frame)
            boxes, scores = clip_boxes(boxes, scores, frames.size, t, report)
            ids = tracker.update(boxes) if tracker is not None else [-1] * len(boxes)
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
            table = detections_table(detections)
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
        """Keypoints (N, K, 3) (x, y, score in image pixels) of ``boxes`` in frame t.

        ``frames``: 2δ+1 (``clip_length``) H x W x 3 uint8 frames t-δ..t+δ (a causal
        model: t-2δ..t) in ``channels`` order; ``boxes``: (N, 4) x, y, w, h in frame t (your own
        detector's); ``scores`` only scale the person scores (not returned here).
        """
        if channels not in CHANNELS:
            raise ConfigError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        frames = [np.asarray(f) for f in frames]
        if len(frames) != self.clip_length:
            first, last = min(window_offsets(self.delta, self.window)), self.delay_frames
            raise ConfigError(f"predict_clip needs {self.clip_length} frames (t{first:+d}.."
                              f"t{last:+d}), got {len(frames)}")
        for i, frame in enumerate(frames):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 \
                    or frame.shape != frames[0].shape:
                raise DataError(f"expected H x W x 3 uint8 frames of one size, got shape "
                                f"{frame.shape} dtype {frame.dtype}", f"<frames>, frame {i}")
        if channels == "bgr":
            frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
        from glsmamba.inference.detectors import as_boxes
        boxes, scores = as_boxes(boxes, scores, "boxes")
        boxes, scores = boxes.astype(np.float32), scores.astype(np.float32)
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
        """People boxed in frame ``target_index`` of ``frames_rgb``."""
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


def detections_table(detections: Mapping) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{frame index: (boxes (N, 4), scores (N,))}`` from a user's dict; a key that is not
    a frame index >= 0, or a value that is not a (boxes, scores) pair of matching shapes,
    is a DataError naming the key."""
    from glsmamba.inference.detectors import as_boxes
    table = {}
    for key, value in detections.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
            raise DataError(f"keys must be frame indices (whole numbers >= 0), got {key!r:.40}",
                            "detections")
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise DataError("each value must be a (boxes (N, 4), scores (N,)) pair",
                            f"detections[{key}]")
        boxes, scores = as_boxes(value[0], value[1], f"detections[{key}]")
        table[int(key)] = (boxes.astype(np.float32), scores.astype(np.float32))
    return table


def _runtime_name(runtime: str) -> str:
    from glsmamba.export.runtime import check_runtime
    return check_runtime(runtime)


def _runtime_model(model, runtime: str) -> tuple[nn.Module, str]:
    """(model, runtime): ``runtime="onnxruntime"`` takes an exported ``.onnx`` path or an
    :class:`~glsmamba.export.runtime.OnnxPoseModel`."""
    from glsmamba.export.runtime import OnnxPoseModel
    if _runtime_name(runtime) == "onnxruntime" and isinstance(model, (str, os.PathLike)):
        model = OnnxPoseModel(model)
    if (runtime == "onnxruntime") != isinstance(model, OnnxPoseModel):
        raise ConfigError(f"runtime {runtime!r} does not match the model "
                          f"({type(model).__name__})")
    return model, runtime


def _tracker_spec(config: dict | None, method: str | None, options: Mapping | None,
                  sigmas: Sequence[float] | None) -> tuple:
    """(method, options, sigmas) for ``build_tracker``: the config's ``[track]`` section
    (or its defaults) updated by the explicit arguments."""
    from glsmamba.config import DEFAULTS
    section = dict(DEFAULTS["track"])
    section.update((config or {}).get("track") or {})
    section.update(options or {})
    method = method or section["method"]
    build_tracker(method, section, sigmas)            # bad names / values fail here, early
    return method, section, None if sigmas is None else list(sigmas)


def _assign_pose_tracks(tracker: PoseTracker, people: list[Person]) -> None:
    """Set the track id of each person of one frame from boxes, poses and box scores."""
    if not people:
        tracker.update(np.zeros((0, 4)), np.zeros((0, 1, 3)), np.zeros(0))
        return
    ids = tracker.update(np.stack([p.box for p in people]),
                         np.stack([p.keypoints for p in people]),
                         np.array([p.box_score for p in people]))
    for person, track_id in zip(people, ids):
        person.track_id = int(track_id)


def _model_window(model: nn.Module, window: str | None) -> str:
    """The clip window: ``window`` if given (it must match the model's), else the model's."""
    own = getattr(model, "clip_window", None)
    if window is None:
        return check_window(own or "centered")
    if own is not None and own != check_window(window):
        raise ConfigError(f"window {window!r} does not match the model's clip_window {own!r}")
    return window


def config_for(checkpoint, config: str | None = None,
               overrides: Sequence[str] | None = None, loaded: tuple | None = None) -> dict:
    """The run config of a checkpoint (:func:`glsmamba.engine.builder.checkpoint_config`)."""
    from glsmamba.engine.builder import checkpoint_config
    return checkpoint_config(checkpoint, config, overrides, loaded)
