"""Frame sources for inference: a video file, a folder of images, a camera, a stream URL,
or any iterable of frames; read lazily, one frame at a time.

Every source yields BGR uint8 frames (OpenCV's order) of one size. Iterables of frames are
taken as RGB unless ``channels="bgr"``. Bad input is an error naming the file (or the
frame number): an undecodable or truncated image, a frame of another size than the first,
a camera that does not open. A video file that ends before the frame count its header
announces (truncated, or frames the decoder cannot read) gives a warning with both counts.
"""
from __future__ import annotations

import itertools
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from glsmamba.data.transforms import read_image
from glsmamba.errors import ConfigError, DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CHANNELS = ("rgb", "bgr")


def warn_stderr(message: str) -> None:
    """The default warning sink of the inference package."""
    print(f"glsmamba: warning: {message}", file=sys.stderr, flush=True)


def check_max_frames(max_frames) -> int | None:
    """``None``/0 = all frames; a positive int; anything else is a ConfigError."""
    if max_frames is None:
        return None
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)):
        raise ConfigError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    if max_frames < 0:
        raise ConfigError(f"max_frames must be a positive integer (0 or None = all frames), "
                          f"got {max_frames}")
    return int(max_frames) or None


def decode_image_file(path: Path) -> np.ndarray:
    """An image file -> BGR uint8; a DataError naming the file when it cannot be used
    (the training data's rules: :func:`glsmamba.data.transforms.read_image`)."""
    return read_image(str(path), to_rgb=False)


def _camera_index(source) -> int | None:
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return int(source)
    if isinstance(source, str) and source.isdigit() and not os.path.exists(source):
        return int(source)
    return None


def _stream_name(url: str) -> str:
    rest = url.split("://", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", rest).strip("_.")
    return (name[:60] or "stream")


@dataclass
class FrameSource:
    """Frames of a video file, frame folder, camera, stream or iterable (BGR uint8).

    ``kind`` is ``video | folder | camera | stream | frames``; ``count`` the number of
    frames that will be read when known (0 for cameras, streams and iterables without a
    length); ``size`` (W, H); ``name`` the stem of the output files.
    """

    path: Path | None
    kind: str = "video"
    name: str = ""
    max_frames: int | None = None
    fps: float = 25.0
    count: int = 0
    size: tuple[int, int] = (0, 0)        # (W, H)
    names: list[str] = field(default_factory=list)
    channels: str = "bgr"
    warn: Callable[[str], None] = warn_stderr
    frames_read: int = 0                  # after iteration: frames actually yielded
    announced: int = 0                    # video files: the header's frame count
    _target: object = None                # what cv2.VideoCapture opens
    _capture: object = None
    _first: np.ndarray | None = None
    _frames: Iterable | None = None

    @classmethod
    def open(cls, source, max_frames: int | None = None, channels: str = "rgb",
             warn: Callable[[str], None] | None = None) -> "FrameSource":
        """``source``: a video path, a folder of images, a camera index (``0`` or ``"0"``),
        a stream URL (``rtsp://``, ``http://`` ...; anything OpenCV opens), or an iterable
        of H x W x 3 uint8 frames in ``channels`` order (``"rgb"`` default, or ``"bgr"``)."""
        max_frames = check_max_frames(max_frames)
        if channels not in CHANNELS:
            raise ConfigError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        warn = warn or warn_stderr
        camera = _camera_index(source)
        if camera is not None:
            made = cls(None, "camera", f"camera{camera}", max_frames, warn=warn, _target=camera)
            made._probe_capture(f"camera {camera}",
                                "cannot open camera (no such device, busy, or no permission)")
        elif isinstance(source, str) and "://" in source:
            made = cls(None, "stream", _stream_name(source), max_frames, warn=warn,
                       _target=source)
            made._probe_capture(source, "cannot open stream (unreachable, or a protocol or "
                                        "codec this OpenCV build does not support)")
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise DataError("video or frame folder not found", str(path))
            made = cls(path, "folder" if path.is_dir() else "video", path.stem, max_frames,
                       warn=warn)
            if path.is_dir():
                made._probe_folder()
            else:
                made._target = str(path)
                made._probe_capture(str(path), "cannot read video (not a video, corrupt, or "
                                               "codec unsupported)")
        elif isinstance(source, np.ndarray) and source.ndim == 3:
            raise DataError("a single image was given; pass a list of frames (or a 4-D "
                            "array T x H x W x 3)", "<frames>")
        elif isinstance(source, Iterable):
            made = cls(None, "frames", "frames", max_frames, channels=channels, warn=warn)
            made._probe_frames(source)
        else:
            raise ConfigError(f"unsupported video source {type(source).__name__}: give a path, "
                              "a camera index, a URL or an iterable of frames")
        if max_frames:
            made.count = min(made.count, max_frames) if made.count else 0
        return made

    # ------------------------------------------------------------------ probing
    def _probe_folder(self) -> None:
        files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError("no image files (jpg/png/bmp/webp) in this folder", str(self.path))
        self.names = [p.name for p in files]
        self._first = decode_image_file(files[0])
        self.size, self.count = (self._first.shape[1], self._first.shape[0]), len(files)

    def _probe_capture(self, label: str, message: str) -> None:
        capture = cv2.VideoCapture(self._target)
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            capture.release()
            raise DataError(message, label)
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and 0 < fps < 1000 else 25.0
        self.size = (frame.shape[1], frame.shape[0])
        if self.kind == "video":
            self.announced = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            self.count = self.announced
        self._capture, self._first = capture, frame

    def _probe_frames(self, frames: Iterable) -> None:
        self.count = len(frames) if hasattr(frames, "__len__") else 0
        iterator = iter(frames)
        try:
            first = next(iterator)
        except StopIteration:
            raise DataError("no frames in the given iterable", "<frames>") from None
        first = self._as_bgr(first, 0)
        self.size = (first.shape[1], first.shape[0])
        self._frames = itertools.chain([first], iterator)
        self._first = None

    # ------------------------------------------------------------------ reading
    def frame_name(self, index: int) -> str:
        return self.names[index] if self.names else f"{index:06d}.jpg"

    def _label(self, index: int) -> str:
        if self.kind == "folder":
            return str(self.path / self.names[index])
        where = str(self.path) if self.path else (self.name if self.kind != "frames" else "<frames>")
        return f"{where}, frame {index}"

    def _check_size(self, frame: np.ndarray, index: int) -> np.ndarray:
        size = (frame.shape[1], frame.shape[0])
        if size != self.size:
            raise DataError(f"frame size {size[0]}x{size[1]} differs from the first frame's "
                            f"{self.size[0]}x{self.size[1]} (all frames must share one size)",
                            self._label(index))
        return frame

    def _as_bgr(self, frame, index: int) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise DataError(f"expected an H x W x 3 uint8 frame, got shape {frame.shape} "
                            f"dtype {frame.dtype}", f"<frames>, frame {index}")
        if self.channels == "rgb":
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        return np.ascontiguousarray(frame)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.frames_read = 0
        limit = self.max_frames or None
        for index, frame in enumerate(self._raw()):
            if limit is not None and index >= limit:
                break
            self.frames_read = index + 1
            yield self._check_size(frame, index)
        expected = min(self.announced, limit) if limit else self.announced
        if self.kind == "video" and expected and self.frames_read < expected:
            self.warn(f"{self.path}: the video ended after {self.frames_read} of the "
                      f"{self.announced} frames its header announces (truncated, or frames the "
                      f"decoder cannot read); the outputs hold the {self.frames_read} frames read")

    def _raw(self) -> Iterator[np.ndarray]:
        if self.kind == "folder":
            names = self.names[: self.max_frames] if self.max_frames else self.names
            for index, name in enumerate(names):
                if index == 0 and self._first is not None:
                    yield self._first
                else:
                    yield decode_image_file(self.path / name)
            return
        if self.kind == "frames":
            if self._frames is None:
                raise DataError("the frames iterable was already consumed", "<frames>")
            frames, self._frames = self._frames, None
            for index, frame in enumerate(frames):
                yield frame if index == 0 else self._as_bgr(frame, index)
            return
        capture, first = self._capture, self._first
        self._capture = self._first = None
        if capture is None:                           # a second pass: reopen
            capture = cv2.VideoCapture(self._target)
            ok, first = capture.read() if capture.isOpened() else (False, None)
            if not ok:
                capture.release()
                raise DataError("cannot read video", self._label(0))
        try:
            yield from self._timeline(capture, first)
        finally:
            capture.release()

    RETRIES = 8          # failed reads in a row before a video is taken to have ended

    def _timeline(self, capture, first: np.ndarray) -> Iterator[np.ndarray]:
        """The frames of a video file in its own timeline: a frame the decoder cannot read
        in the middle (a failed read followed by good ones) is replaced by the previous
        frame, placed by the next good frame's timestamp, so that frame ``i`` stays frame
        ``i`` of the video (a detections file stays aligned); the lost indices are warned."""
        self.lost = []
        previous, index = first, 0
        yield first
        failures = 0
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                failures += 1
                if failures > self.RETRIES or not self.announced or index + 1 >= self.announced:
                    break
                continue
            target = index + 1
            if failures:                  # after a decoding failure: place it by timestamp
                stamp = capture.get(cv2.CAP_PROP_POS_MSEC)
                if stamp and np.isfinite(stamp):
                    target = max(target, int(round(stamp * self.fps / 1000.0)))
                target = min(target, index + 1 + failures)
                for lost in range(index + 1, target):
                    self.lost.append(lost)
                    yield previous
            failures = 0
            previous, index = frame, target
            yield frame
        if self.lost:
            shown = ", ".join(map(str, self.lost[:10])) + (" ..." if len(self.lost) > 10 else "")
            self.warn(f"{self.path}: {len(self.lost)} frame(s) in the middle could not be decoded "
                      f"(frames {shown}); each was replaced by the frame before it, so that frame "
                      "indices keep the video's timeline")

    def close(self) -> None:
        """Release a camera / stream opened by :meth:`open` and not iterated."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
