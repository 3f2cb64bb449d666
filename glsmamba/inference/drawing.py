"""Skeletons, boxes and track ids drawn on frames; the MP4 writer."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from glsmamba.errors import DataError


def draw_poses(frame_bgr: np.ndarray, people: list[dict], skeleton: Sequence[tuple[int, int]],
               link_colors: Sequence[Sequence[int]], score_thr: float = 0.3,
               boxes: bool = True, thickness: int = 2, radius: int = 3) -> np.ndarray:
    """Skeletons (and boxes with track ids) drawn on a copy of the frame.

    ``link_colors`` are RGB; limbs are ``thickness`` px wide, joints white dots of
    ``radius`` px (0: no dots).
    """
    canvas = frame_bgr.copy()
    for person in people:
        points = np.asarray(person["keypoints"], np.float32).reshape(-1, 3)
        for (a, b), color in zip(skeleton, link_colors):
            if points[a, 2] > score_thr and points[b, 2] > score_thr:
                cv2.line(canvas, _pt(points[a]), _pt(points[b]), tuple(int(c) for c in color[::-1]),
                         thickness, cv2.LINE_AA)
        for x, y, s in points:
            if s > score_thr and radius > 0:
                cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 255, 255), -1,
                           cv2.LINE_AA)
        if boxes and person.get("bbox") is not None:
            x, y, w, h = (int(round(v)) for v in person["bbox"])
            cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 255, 255), 1)
            cv2.putText(canvas, str(person.get("track_id", "")), (x, max(10, y - 3)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
    return canvas


def _pt(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


VIDEO_CODECS = ("auto", "h264", "mp4v")


class VideoWriter:
    """BGR uint8 frames of one size -> an MP4 file; ``codec`` says what encodes it.

    ``codec="auto"``: H.264 (yuv420p, index at the front: what browsers play) through PyAV
    (``pip install av``, the ``video`` extra), else through imageio-ffmpeg, when one is
    installed; else OpenCV's MPEG-4 Part 2 (``mp4v``), which plays in VLC and most
    desktop players but not in many browsers. ``"h264"`` needs PyAV or imageio-ffmpeg;
    ``"mp4v"`` always uses OpenCV. Both codecs need even sizes: an odd width or height
    gets a one-pixel border (replicated edge) at the right / bottom. ``atomic``: frames go to a temporary sibling that :meth:`release` renames
    over ``path`` (a failed write leaves the previous file).
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int],
                 codec: str = "auto", atomic: bool = False):
        if codec not in VIDEO_CODECS:
            raise DataError(f"video codec must be one of {', '.join(VIDEO_CODECS)}, got "
                            f"{codec!r}", str(path))
        self.path, self.fps, self.size = Path(path), float(fps), (int(size[0]), int(size[1]))
        self.target = self.path
        if atomic:
            from glsmamba.fileio import temp_sibling
            self.target = temp_sibling(self.path).with_name(temp_sibling(self.path).name + ".mp4")
        self.frames, self._closed = 0, False
        self.codec, self._backend = self._open(codec)

    def _open(self, codec: str):
        even = (self.size[0] + self.size[0] % 2, self.size[1] + self.size[1] % 2)
        if codec in ("auto", "h264"):
            for name, opener in (("PyAV", _open_pyav), ("imageio-ffmpeg", _open_imageio)):
                backend = opener(self.target, self.fps, even)
                if backend is not None:
                    return f"H.264 ({name})", backend
            if codec == "h264":
                raise DataError("H.264 needs PyAV (pip install av) or imageio-ffmpeg with an "
                                "H.264 encoder; neither is available", str(self.path))
        writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                 even)
        if not writer.isOpened():
            raise DataError("cannot open the MP4 writer (mp4v codec missing?)", str(self.path))
        return "MPEG-4 Part 2 (mp4v, OpenCV)", _OpenCVBackend(writer, even)

    def isOpened(self) -> bool:      # noqa: N802 - cv2.VideoWriter's name
        return not self._closed

    def write(self, frame_bgr: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame_bgr, dtype=np.uint8)
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise DataError(f"frame of {frame.shape[1]}x{frame.shape[0]} for a "
                            f"{self.size[0]}x{self.size[1]} video", str(self.path))
        self._backend.write(frame)
        self.frames += 1

    def release(self) -> None:
        """Finish the file (and with ``atomic``, rename it over ``path``)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._backend.close()
        except BaseException:
            self._discard()
            raise
        if self.target != self.path:
            from glsmamba.fileio import commit_file
            commit_file(self.target, self.path)

    def abort(self) -> None:
        """Stop without keeping anything (an ``atomic`` writer leaves ``path`` as it was)."""
        if not self._closed:
            self._closed = True
            try:
                self._backend.close()
            finally:
                self._discard()

    def _discard(self) -> None:
        if self.target != self.path:
            self.target.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        self.abort() if kind is not None else self.release()


def _pad_even(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad the bottom / right edge by one pixel to ``size`` (W, H) (H.264's even sizes)."""
    pad_h, pad_w = size[1] - frame.shape[0], size[0] - frame.shape[1]
    if pad_h or pad_w:
        frame = cv2.copyMakeBorder(frame, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
    return frame


class _OpenCVBackend:
    def __init__(self, writer: cv2.VideoWriter, size: tuple[int, int]):
        self.writer, self.size = writer, size

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(_pad_even(frame, self.size))

    def close(self) -> None:
        self.writer.release()


class _PyAVBackend:
    def __init__(self, container, stream, size: tuple[int, int]):
        self.container, self.stream, self.size = container, stream, size

    def write(self, frame: np.ndarray) -> None:
        import av
        image = av.VideoFrame.from_ndarray(_pad_even(frame, self.size), format="bgr24")
        for packet in self.stream.encode(image):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()


def _open_pyav(path: Path, fps: float, size: tuple[int, int]):
    """An H.264 encoder through PyAV, or None (not installed, no H.264 encoder)."""
    try:
        import av
    except ImportError:
        return None
    from fractions import Fraction
    for encoder in ("libx264", "h264"):
        container = None
        try:
            container = av.open(str(path), mode="w", format="mp4",
                                container_options={"movflags": "+faststart"})
            stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.options = {"crf": "23", "preset": "medium"}
            stream.codec_context.open()     # fails here when the encoder cannot run
            return _PyAVBackend(container, stream, size)
        except Exception:  # noqa: BLE001 - any failure: try the next encoder / backend
            if container is not None:
                try:
                    container.close()
                except Exception:  # noqa: BLE001
                    pass
            path.unlink(missing_ok=True)
    return None


class _ImageioBackend:
    def __init__(self, generator, size: tuple[int, int]):
        self.generator, self.size = generator, size

    def write(self, frame: np.ndarray) -> None:
        self.generator.send(np.ascontiguousarray(_pad_even(frame, self.size)))

    def close(self) -> None:
        self.generator.close()


def _open_imageio(path: Path, fps: float, size: tuple[int, int]):
    """An H.264 encoder through imageio-ffmpeg's ffmpeg binary, or None."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        generator = imageio_ffmpeg.write_frames(
            str(path), size, pix_fmt_in="bgr24", pix_fmt_out="yuv420p", fps=fps,
            codec="libx264", macro_block_size=2, quality=None, ffmpeg_log_level="error",
            output_params=["-crf", "23", "-movflags", "+faststart", "-f", "mp4"])
        generator.send(None)                # starts ffmpeg
        return _ImageioBackend(generator, size)
    except Exception:  # noqa: BLE001 - no binary, no libx264: fall back
        path.unlink(missing_ok=True)
        return None


def open_video_writer(path: Path, fps: float, size: tuple[int, int],
                      codec: str = "auto") -> VideoWriter:
    """A :class:`VideoWriter` (H.264 when PyAV or imageio-ffmpeg is installed, else mp4v)."""
    return VideoWriter(path, fps, size, codec)
