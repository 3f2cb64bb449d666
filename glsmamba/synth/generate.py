"""Write the synthetic benchmark to disk in the PoseTrack18 layout.

::

    ROOT/images/{train,val}/{video}/%06d.jpg
    ROOT/annotations/{train,val}/{video}.json
    ROOT/detections/{train,val}.json
    ROOT/meta.json

Every video is generated from ``numpy.random.default_rng([seed, video number])`` alone,
so the output is byte-identical for a seed whatever the number of workers.
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from glsmamba.errors import ConfigError, DataError
from glsmamba.fileio import atomic_write_bytes
from glsmamba.synth import mocap
from glsmamba.synth.annotate import PersonLabel, frame_degradations, label_people
from glsmamba.synth.body import KEYPOINT_NAMES, SKELETON
from glsmamba.synth.detections import DetectorOptions, simulate_detections
from glsmamba.synth.render import render_frame
from glsmamba.synth.scene import SceneOptions, sample_scene

GENERATOR_VERSION = "1.0"
SPLITS = ("train", "val")
OUTPUTS = ("images", "annotations", "detections", "meta.json", "preview.png")
CATEGORIES = [{
    "supercategory": "person", "id": 1, "name": "person",
    "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(pair) for pair in SKELETON],
}]


@dataclass
class SynthOptions:
    """Everything that defines a generated benchmark (stored in meta.json)."""

    videos: int = 24
    frames: int = 40
    seed: int = 0
    width: int = 320
    height: int = 240
    min_people: int = 1
    max_people: int = 3
    hard_rate: float = 0.3
    severity: float = 1.0
    val_fraction: float = 0.25
    fps: float = 20.0
    label_stride: int = 1
    jpeg_quality: int = 90
    det_jitter: float = 0.05
    det_miss: float = 0.1
    det_false_positives: float = 0.1
    motions: dict[str, float] = field(default_factory=lambda: dict(mocap.DEFAULT_MOTIONS))

    def check(self) -> None:
        problems = []
        if self.videos < 1 or self.frames < 1:
            problems.append("videos and frames must be >= 1")
        if self.frames > 9999:
            problems.append("frames must be <= 9999 (image ids encode the frame in 4 digits)")
        if self.width < 32 or self.height < 32:
            problems.append("size must be at least 32x32")
        if not 1 <= self.min_people <= self.max_people:
            problems.append("people must be a range like 1-3 with 1 <= min <= max")
        if not 0.0 <= self.hard_rate <= 1.0:
            problems.append("hard-rate must be in [0, 1]")
        if not 0.0 < self.severity <= 10.0:
            problems.append("severity must be in (0, 10]")
        if not 0.0 <= self.val_fraction <= 1.0:
            problems.append("val-fraction must be in [0, 1]")
        if self.label_stride < 1 or self.fps <= 0:
            problems.append("label-stride must be >= 1 and fps > 0")
        if not 0 <= self.jpeg_quality <= 100:
            problems.append("jpeg-quality must be in [0, 100]")
        if not (0 <= self.det_miss <= 1 and self.det_jitter >= 0 and self.det_false_positives >= 0):
            problems.append("detector rates must be non-negative (miss rate <= 1)")
        unknown = sorted(set(self.motions) - set(mocap.available_motions()))
        if unknown or not self.motions:
            problems.append(f"unknown motions {unknown}; known: {mocap.available_motions()}")
        if problems:
            raise ConfigError("; ".join(problems))

    def scene_options(self) -> SceneOptions:
        return SceneOptions(width=self.width, height=self.height, fps=self.fps,
                            min_people=self.min_people, max_people=self.max_people,
                            hard_rate=self.hard_rate, severity=self.severity, motions=dict(self.motions))

    def detector_options(self) -> DetectorOptions:
        return DetectorOptions(self.det_jitter, self.det_miss, self.det_false_positives)


@dataclass(frozen=True)
class VideoJob:
    split: str
    number: int          # 1-based, unique over both splits

    @property
    def name(self) -> str:
        return f"{self.number:06d}_synth_{self.split}"


def image_id(number: int, frame: int) -> int:
    """PoseTrack18 style: 1, the 6-digit video number, the 4-digit frame index."""
    return 10_000_000_000 + number * 10_000 + frame


def plan_videos(options: SynthOptions) -> list[VideoJob]:
    """Train videos first, then the last ``round(videos * val_fraction)`` as val."""
    val = int(round(options.videos * options.val_fraction))
    if options.val_fraction > 0 and options.videos >= 2:
        val = max(val, 1)
    val = min(val, options.videos)
    return [VideoJob("train" if k < options.videos - val else "val", k + 1)
            for k in range(options.videos)]


# ---------------------------------------------------------------------------------------
# one video


def _round(values, digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def annotation_record(person: PersonLabel, image: int) -> dict:
    return {
        "id": image * 100 + person.track_id,
        "image_id": image,
        "track_id": person.track_id,
        "category_id": 1,
        "bbox": _round(person.bbox),
        "bbox_head": _round(person.bbox_head),
        "keypoints": [round(float(v), 2) if i % 3 < 2 else int(v)
                      for i, v in enumerate(person.keypoints.reshape(-1))],
        "num_keypoints": person.num_keypoints,
        "occluded": [int(v > 0) for v in person.occluded_by],
        "iscrowd": False,
        "scores": [],
    }


def image_record(job: VideoJob, frame: int, options: SynthOptions, degradations: list[str]) -> dict:
    identifier = image_id(job.number, frame)
    return {
        "file_name": f"images/{job.split}/{job.name}/{frame:06d}.jpg",
        "id": identifier,
        "frame_id": identifier,
        "vid_id": f"{job.number:06d}",
        "nframes": options.frames,
        "is_labeled": frame % options.label_stride == 0,
        "width": options.width,
        "height": options.height,
        "ignore_regions_x": [],
        "ignore_regions_y": [],
        "degradations": degradations,
    }


def generate_video(root: Path, job: VideoJob, options: SynthOptions) -> dict:
    """Render, label and write one video; returns its detections and a summary."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)       # small images: threads cost more than they give
    try:
        return _generate_video(root, job, options)
    finally:
        cv2.setNumThreads(threads)


def _generate_video(root: Path, job: VideoJob, options: SynthOptions) -> dict:
    rng = np.random.default_rng([options.seed, job.number])
    scene = sample_scene(rng, options.scene_options(), options.frames)
    detection_rng = np.random.default_rng([options.seed, job.number, 1])
    folder = root / "images" / job.split / job.name
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations, detections = [], [], []
    for frame in range(options.frames):
        pixels, labels = render_frame(scene, frame)
        people = label_people(scene, frame, labels)
        record = image_record(job, frame, options, frame_degradations(scene, frame, people))
        images.append(record)
        if record["is_labeled"]:
            annotations += [annotation_record(person, record["id"]) for person in people]
        detections += simulate_detections(detection_rng, record["id"], [p.bbox for p in people],
                                          options.width, options.height, options.detector_options())
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality])
        if not ok:
            raise DataError("JPEG encoding failed", str(folder / f"{frame:06d}.jpg"))
        atomic_write_bytes(folder / f"{frame:06d}.jpg", encoded.tobytes())
    document = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    write_json(root / "annotations" / job.split / f"{job.name}.json", document)
    return {
        "detections": detections,
        "summary": {
            "name": job.name, "split": job.split,
            "motions": [person.motion for person in scene.people],
            "degraded_frames": sum(bool(record["degradations"]) for record in images),
        },
    }


def write_json(path: Path, document) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(document, separators=(",", ":")).encode())


def check_complete(root: str | Path) -> None:
    """DataError when ``root`` is a benchmark glsmamba synth started but did not finish
    (its meta.json says ``"complete": false``: the generation was killed or failed)."""
    meta = read_meta(Path(root))
    if meta is not None and meta.get("complete") is False:
        raise DataError("this synthetic benchmark is incomplete (meta.json says \"complete\": "
                        "false: its generation was interrupted); generate it again with "
                        "glsmamba synth --overwrite", str(root))


# ---------------------------------------------------------------------------------------
# whole dataset


def read_meta(root: Path) -> dict | None:
    """meta.json of a benchmark this generator wrote, else None."""
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == "glsmamba.synth" else None


def planned_files(options: "SynthOptions", jobs: list["VideoJob"], preview: bool) -> list[str]:
    """Every file (relative to the root) a generation writes."""
    files = [f"images/{job.split}/{job.name}/{frame:06d}.jpg"
             for job in jobs for frame in range(options.frames)]
    files += [f"annotations/{job.split}/{job.name}.json" for job in jobs]
    files += [f"detections/{split}.json" for split in SPLITS] + ["meta.json"]
    return files + (["preview.png"] if preview else [])


def owned_files(root: Path) -> set[str] | None:
    """Files (relative paths) the manifest ``meta.json`` says the generator (or a caller
    through :func:`record_outputs`) wrote; None when the folder holds no such manifest.
    meta.json of version 1.0 lists none: they are derived from its videos and options."""
    meta = read_meta(root)
    if meta is None:
        return None
    if isinstance(meta.get("files"), list):
        files = {str(f) for f in meta["files"]}
    else:
        frames = int(meta.get("options", {}).get("frames", 0))
        files = {"meta.json"} | {f"detections/{split}.json" for split in SPLITS}
        for video in meta.get("videos", []):
            split, name = video.get("split"), video.get("name")
            files.add(f"annotations/{split}/{name}.json")
            files.update(f"images/{split}/{name}/{frame:06d}.jpg" for frame in range(frames))
    return files | {"preview.png"} | {str(f) for f in meta.get("extra_files", [])}


def record_outputs(root: str | Path, relative_paths: list[str]) -> None:
    """Add files a caller wrote inside a generated benchmark (e.g. the demo's filtered
    annotations) to its manifest, so that ``--overwrite`` may remove them later."""
    root = Path(root)
    meta = read_meta(root)
    if meta is None:
        raise DataError("not a folder written by glsmamba synth (no meta.json)", str(root))
    extra = sorted(set(meta.get("extra_files", [])) | {str(p) for p in relative_paths})
    _write_meta(root, {**meta, "extra_files": extra})


def _write_meta(root: Path, meta: dict) -> None:
    atomic_write_bytes(root / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())


def prepare_output(root: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove exactly the files the
    folder's manifest (``meta.json``) says we wrote. A file under images/, annotations/,
    detections/ (or a meta.json) that the manifest does not list is never deleted: the
    overwrite is refused, naming it, before anything is removed. Other files of the folder
    are left alone."""
    if root.exists() and not root.is_dir():
        raise DataError("output path exists and is not a folder", str(root))
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise DataError("output folder is not empty (pass --overwrite / overwrite=True to "
                            "replace a generated benchmark)", str(root))
        owned = owned_files(root) or set()
        present = []
        for name in OUTPUTS:
            target = root / name
            if target.is_dir() and not target.is_symlink():
                present += [p for p in sorted(target.rglob("*")) if not p.is_dir() or p.is_symlink()]
            elif target.exists() or target.is_symlink():
                present.append(target)
        relative = [p.relative_to(root).as_posix() for p in present]
        foreign = [name for name in relative if name not in owned]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
            raise DataError(f"--overwrite refused: {len(foreign)} file(s) here were not written "
                            f"by glsmamba synth ({shown}); nothing was deleted. Move them away "
                            "or choose another --out", str(root))
        for path in present:
            path.unlink()
        for name in OUTPUTS:          # folders left empty, deepest first
            target = root / name
            if target.is_dir() and not target.is_symlink():
                for folder in sorted((d for d in target.rglob("*") if d.is_dir()),
                                     key=lambda d: len(d.parts), reverse=True):
                    if not any(folder.iterdir()):
                        folder.rmdir()
                if not any(target.iterdir()):
                    target.rmdir()
    root.mkdir(parents=True, exist_ok=True)


def _run_job(arguments: tuple[str, VideoJob, SynthOptions]) -> dict:
    root, job, options = arguments
    return generate_video(Path(root), job, options)


def generate_dataset(out_dir: str | Path, videos: int = 24, frames: int = 40, seed: int = 0,
                     size: tuple[int, int] = (320, 240), people: tuple[int, int] = (1, 3),
                     hard_rate: float = 0.3, severity: float = 1.0, val_fraction: float = 0.25,
                     fps: float = 20.0,
                     label_stride: int = 1, jpeg_quality: int = 90, det_jitter: float = 0.05,
                     det_miss: float = 0.1, det_false_positives: float = 0.1,
                     motions: dict[str, float] | list[str] | None = None, workers: int = 1,
                     overwrite: bool = False, preview: bool = False,
                     progress: bool = False) -> Path:
    """Generate the benchmark into ``out_dir`` and return its path.

    ``size`` is (width, height); ``people`` the (min, max) per video; ``motions`` a list of
    clip names or a name -> weight mapping (default: all clips, locomotion favoured);
    ``severity`` scales the hard cases (occluder size, blur length, defocus radius).
    """
    if motions is None:     # the bundled clips this pybullet version ships
        available = set(mocap.available_motions())
        motions = {name: w for name, w in mocap.DEFAULT_MOTIONS.items() if name in available}
    elif not isinstance(motions, dict):
        motions = {name: mocap.DEFAULT_MOTIONS.get(name, 1.0) for name in motions}
    options = SynthOptions(videos=videos, frames=frames, seed=seed, width=size[0], height=size[1],
                           min_people=people[0], max_people=people[1], hard_rate=hard_rate,
                           severity=severity,
                           val_fraction=val_fraction, fps=fps, label_stride=label_stride,
                           jpeg_quality=jpeg_quality, det_jitter=det_jitter, det_miss=det_miss,
                           det_false_positives=det_false_positives, motions=dict(motions))
    options.check()
    root = Path(out_dir)
    prepare_output(root, overwrite)
    jobs = plan_videos(options)
    files = planned_files(options, jobs, preview)
    # the manifest goes first: an interrupted generation can still be overwritten
    _write_meta(root, {"generator": "glsmamba.synth", "version": GENERATOR_VERSION,
                       "options": asdict(options), "complete": False, "files": files})
    results = _run_jobs(root, jobs, options, workers, progress)
    for split in SPLITS:
        detections = [d for job, result in zip(jobs, results) if job.split == split
                      for d in result["detections"]]
        write_json(root / "detections" / f"{split}.json", detections)
    meta = {
        "generator": "glsmamba.synth", "version": GENERATOR_VERSION,
        "options": asdict(options),
        "videos": [result["summary"] for result in results],
        "files": files, "complete": True,
    }
    _write_meta(root, meta)
    if preview:
        from glsmamba.synth.preview import make_preview
        make_preview(root)
    return root


def _run_jobs(root: Path, jobs: list[VideoJob], options: SynthOptions, workers: int,
              progress: bool) -> list[dict]:
    from glsmamba.progress import progress as progress_bar

    arguments = [(str(root), job, options) for job in jobs]
    bar = progress_bar(total=len(jobs), desc="synth videos", unit="video", enabled=progress)
    results = []
    if workers <= 1:
        for item in arguments:
            results.append(_run_job(item))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_run_job, arguments):
                results.append(result)
                bar.update()
    bar.close()
    return results
