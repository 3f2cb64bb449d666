"""``glsmamba infer``: :class:`PoseEstimator` over a video -> PoseTrack JSON + annotated MP4.

Outputs are written incrementally, under temporary names beside the final ones
(``.NAME.partial.mp4``, ``.NAME.partial.jsonl``): each frame's records are appended (and
flushed) as it is processed, and the MP4 grows frame by frame. When the run ends, or is
stopped with Ctrl-C (or ``q`` / Esc in the ``--show`` window), the MP4 is closed, the JSON
is assembled from the records, and both are renamed over ``NAME.json`` and ``NAME.mp4``.
A run that fails (or is killed) leaves the previous outputs untouched; its partial files
are removed on failure (a kill -9 leaves them, hidden, for the next run to replace).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import cv2

from glsmamba.errors import ConfigError, DataError
from glsmamba.inference.drawing import open_video_writer
from glsmamba.inference.estimator import PoseEstimator

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"}]


def infer(source, checkpoint: str | os.PathLike, config: str | None = None,
          overrides: list[str] | None = None, detections: str | None = None,
          detector: str = "auto", detector_weights: str | None = None, det_thr: float = 0.3,
          det_upscale: float = 1.0, out_dir: str | os.PathLike = "glsmamba_infer",
          max_frames: int | None = None, flip: bool = False, batch_size: int = 16,
          progress: bool = True, show: bool = False, detector_options: dict | None = None,
          log: Callable = print, warn: Callable[[str], None] | None = None,
          overwrite: bool = False, runtime: str = "torch") -> dict:
    """Poses on a video, frame folder, camera or stream; returns paths, counts, frames/s
    and ``interrupted`` (True when stopped by Ctrl-C or the ``--show`` window)."""
    from glsmamba.inference.sources import check_max_frames
    max_frames = check_max_frames(max_frames)
    if show:
        check_display()
    estimator = PoseEstimator.from_checkpoint(
        checkpoint, detector=None if detections else detector, config=config,
        overrides=overrides, detector_weights=detector_weights, det_thr=det_thr,
        det_upscale=det_upscale, flip=flip, batch_size=batch_size,
        detector_options=detector_options, warn=warn, runtime=runtime)
    inputs = [checkpoint, config, detector_weights]
    try:
        from glsmamba.checkpoint import resolve_checkpoint
        weights = resolve_checkpoint(checkpoint)
        inputs += [weights, weights.with_suffix(".json")]
    except Exception:  # noqa: BLE001 - from_checkpoint above already read it
        pass
    return write_outputs(estimator, source, Path(out_dir), detections, max_frames, progress,
                         show, inputs=inputs, overwrite=overwrite)


def check_display() -> None:
    """A ConfigError saying why no ``--show`` window can open, if it cannot."""
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is None or gui.group(1).upper() == "NONE":
        raise ConfigError("--show: this OpenCV build has no GUI support (opencv-python-headless "
                          "is installed); `pip install opencv-python` for a live window, or "
                          "run without --show (the MP4 is written either way)")
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("--show: no display (DISPLAY and WAYLAND_DISPLAY are not set); run "
                          "without --show (the MP4 is written either way)")


def _owned_pair(json_path: Path, mp4_path: Path) -> tuple[bool, bool]:
    """(JSON written by glsmamba infer, MP4 written with it): the JSON carries a
    ``glsmamba`` record naming the MP4's SHA-256 (a marker, not a guess from content)."""
    from glsmamba.fileio import file_sha256
    try:
        record = json.loads(json_path.read_text(encoding="utf-8")).get("glsmamba")
    except (OSError, ValueError, AttributeError):
        return False, False
    if not isinstance(record, dict) or record.get("command") != "infer":
        return False, False
    try:
        same = not mp4_path.is_symlink() and file_sha256(mp4_path) == record.get("mp4_sha256")
    except OSError:
        same = False
    return True, same


def check_targets(out_dir: Path, name: str, inputs, overwrite: bool) -> tuple[Path, Path]:
    """The (JSON, MP4) outputs; OutputRefused when one is an input (always) or exists and
    was not written by ``glsmamba infer`` (unless ``overwrite``)."""
    from glsmamba.outputs import refuse_foreign, refuse_inputs
    json_path, mp4_path = out_dir / f"{name}.json", out_dir / f"{name}.mp4"
    refuse_inputs([json_path, mp4_path], inputs)
    own_json, own_mp4 = _owned_pair(json_path, mp4_path)
    refuse_foreign(json_path, own_json, overwrite, "glsmamba infer")
    refuse_foreign(mp4_path, own_mp4, overwrite, "glsmamba infer")
    return json_path, mp4_path


class _Outputs:
    """The partial MP4 + records of one run, finalised or discarded as one.

    The records go to ``.NAME.partial.jsonl``, created exclusively (whatever sat there, a
    stale partial or a planted link, is unlinked, never followed); the MP4 is encoded in a
    private folder created for this run (``.NAME.partial.PID.RANDOM/``, mode 0700). Both are
    renamed into place at the end."""

    def __init__(self, out_dir: Path, name: str, fps: float, size: tuple[int, int],
                 inputs=(), overwrite: bool = False):
        from glsmamba.fileio import make_private_dir, reset_fixed_partial
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if not out_dir.is_dir():
                raise NotADirectoryError(20, "not a folder")
        except OSError as err:
            raise DataError(f"cannot write the output folder: {err.strerror}", str(out_dir)) from None
        self.json, self.mp4 = check_targets(out_dir, name, inputs, overwrite)
        self.part_records = out_dir / f".{name}.partial.jsonl"
        try:
            self.records = reset_fixed_partial(self.part_records)
            self.private = make_private_dir(out_dir / name)
        except OSError as err:
            raise DataError(f"cannot write the output folder: {err.strerror}", str(out_dir)) from None
        self.part_mp4 = self.private / f"{name}.mp4"
        try:
            self.writer = open_video_writer(self.part_mp4, fps, size)
        except BaseException:
            self.records.close()
            self.part_records.unlink(missing_ok=True)
            shutil.rmtree(self.private, ignore_errors=True)
            raise
        self.frames = self.people = 0

    def add(self, frame_record: dict, canvas) -> None:
        self.writer.write(canvas)
        self.records.write((json.dumps(frame_record) + "\n").encode("utf-8"))
        self.records.flush()
        self.frames += 1
        self.people += len(frame_record["annotations"])

    def finish(self) -> bool:
        """Close, assemble the JSON, rename both into place; False when nothing was done."""
        from glsmamba.fileio import atomic_write_bytes, commit_file, file_sha256
        self.writer.release()
        self.records.close()
        if self.frames == 0:
            self.discard()
            return False
        images, annotations = [], []
        with open(self.part_records, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                images.append(record["image"])
                annotations += record["annotations"]
        for image in images:
            image["nframes"] = len(images)
        result = {"images": images, "annotations": annotations, "categories": CATEGORIES,
                  "glsmamba": {"command": "infer", "mp4": self.mp4.name,
                               "mp4_sha256": file_sha256(self.part_mp4)}}
        commit_file(self.part_mp4, self.mp4)
        atomic_write_bytes(self.json, json.dumps(result).encode())
        self.part_records.unlink(missing_ok=True)
        shutil.rmtree(self.private, ignore_errors=True)
        return True

    def discard(self) -> None:
        self.writer.release()
        if not self.records.closed:
            self.records.close()
        shutil.rmtree(self.private, ignore_errors=True)
        self.part_records.unlink(missing_ok=True)


def write_outputs(estimator: PoseEstimator, source, out_dir: Path, detections=None,
                  max_frames: int | None = None, progress: bool = True,
                  show: bool = False, inputs=(), overwrite: bool = False) -> dict:
    """Run ``estimator`` over ``source`` writing ``out_dir/NAME.{json,mp4}`` (see the module).

    ``inputs``: files the run reads (never replaced); an existing output glsmamba infer did
    not write is replaced only with ``overwrite``."""
    from glsmamba.progress import progress as progress_bar
    frames = estimator.open(source, max_frames)
    inputs = list(inputs) + [source if isinstance(source, (str, os.PathLike)) else None,
                             detections if isinstance(detections, (str, os.PathLike)) else None]
    try:
        outputs = _Outputs(out_dir, frames.name, frames.fps, frames.size, inputs, overwrite)
    except BaseException:
        frames.close()
        raise
    bar = progress_bar(total=frames.count or None, desc="infer", unit="frame", enabled=progress)
    interrupted = False
    try:
        try:
            for result in estimator.predict_video(frames, detections):
                canvas = estimator.draw(result)
                outputs.add(result.to_posetrack(first_ann_id=outputs.people), canvas)
                bar.update(1)
                bar.set_postfix(fps=f"{estimator.last_stats['fps']:.2f}")
                if show and _show(canvas, frames.name):
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
    except BaseException:
        outputs.discard()
        raise
    finally:
        bar.close()
        if show:
            cv2.destroyAllWindows()
    written = outputs.finish()
    stats = dict(estimator.last_stats)
    return {"json": outputs.json, "mp4": outputs.mp4, "frames": outputs.frames,
            "people": outputs.people, "seconds": stats.get("seconds", 0.0),
            "fps": stats.get("fps", 0.0), "interrupted": interrupted, "written": written}


def _show(canvas, title: str) -> bool:
    """Show one frame; True when the user asked to stop (q or Esc)."""
    cv2.imshow(f"glsmamba infer: {title} (q to stop)", canvas)
    return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)
