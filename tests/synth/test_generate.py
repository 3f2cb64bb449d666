"""The generated benchmark on disk: layout, schema, reader, determinism, detections, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from glsmamba.errors import ConfigError, DataError
from glsmamba.synth import generate_dataset, image_id, make_preview
from glsmamba.synth.body import KEYPOINT_NAMES
from glsmamba.synth.detections import DetectorOptions, simulate_detections

IMAGE_KEYS = {"file_name", "id", "frame_id", "vid_id", "nframes", "is_labeled",
              "ignore_regions_x", "ignore_regions_y", "degradations", "width", "height"}
ANNOTATION_KEYS = {"id", "image_id", "track_id", "category_id", "bbox", "bbox_head", "keypoints",
                   "num_keypoints", "occluded"}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _documents(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(root.glob("annotations/*/*.json"))}


def test_layout_and_schema(tiny_benchmark):
    root = tiny_benchmark
    assert sorted(p.name for p in (root / "annotations").iterdir()) == ["train", "val"]
    assert len(list((root / "annotations" / "train").glob("*.json"))) == 2
    assert len(list((root / "annotations" / "val").glob("*.json"))) == 1
    ids = set()
    for name, document in _documents(root).items():
        assert document["categories"][0]["keypoints"] == list(KEYPOINT_NAMES)
        assert len(document["images"]) == 8
        for frame, image in enumerate(document["images"]):
            assert IMAGE_KEYS <= set(image)
            assert image["file_name"] == f"images/{name.split('_')[-1]}/{name}/{frame:06d}.jpg"
            assert image["id"] == image["frame_id"] == image_id(int(image["vid_id"]), frame)
            pixels = cv2.imread(str(root / image["file_name"]))
            assert pixels.shape == (120, 160, 3)
            assert set(image["degradations"]) <= {"occluded", "blur", "defocus", "crossing"}
            ids.add(image["id"])
        for annotation in document["annotations"]:
            assert ANNOTATION_KEYS <= set(annotation)
            keypoints = np.asarray(annotation["keypoints"], float).reshape(17, 3)
            assert set(keypoints[:, 2]) <= {0, 1, 2}
            assert (keypoints[3:5] == 0).all()                                 # ears
            assert annotation["num_keypoints"] == int((keypoints[:, 2] > 0).sum()) > 0
            assert annotation["occluded"] == [int(v == 1) for v in keypoints[:, 2]]
            x, y, w, h = annotation["bbox"]
            visible = keypoints[keypoints[:, 2] > 0, :2]
            assert (visible[:, 0] >= x - 1).all() and (visible[:, 0] <= x + w + 1).all()
            assert (visible[:, 1] >= y - 1).all() and (visible[:, 1] <= y + h + 1).all()
            assert annotation["bbox_head"][2] > 0
    assert len(ids) == 24                                                      # unique over videos
    meta = json.loads((root / "meta.json").read_text())
    assert meta["options"]["seed"] == 5 and meta["version"]
    assert str(root) not in (root / "meta.json").read_text()                   # no machine paths


def test_records_have_the_keys_of_real_posetrack18_files(tiny_benchmark, fixtures_dir):
    real = json.loads((fixtures_dir / "posetrack18" / "annotations" / "val" / "003418_mpii_test.json").read_text())
    ours = next(iter(_documents(tiny_benchmark).values()))
    assert ours["categories"] == real["categories"]
    optional = {"has_no_densepose", "mask_file"}
    assert set(real["images"][0]) - optional <= set(ours["images"][0])
    assert set(real["annotations"][0]) <= set(ours["annotations"][0])
    real_detection = json.loads((fixtures_dir / "posetrack18" / "annotations" /
                                 "test_posetrack18_human_detections.json").read_text())[0]
    ours_detection = json.loads((tiny_benchmark / "detections" / "train.json").read_text())[0]
    assert set(ours_detection) == set(real_detection)


def test_posetrack18_reader_loads_it(tiny_benchmark):
    posetrack18 = pytest.importorskip("glsmamba.data.datasets.posetrack18")
    root = tiny_benchmark
    for split in ("train", "val"):
        dataset = posetrack18.PoseTrack18Dataset(root / "annotations" / split, root, delta=2)
        expected = {a["id"]: a for d in _documents(root).values() for a in d["annotations"]}
        samples = dataset.samples
        assert len(samples) == sum(1 for d in root.glob(f"annotations/{split}/*.json")
                                   for _ in json.loads(d.read_text())["annotations"])
        for sample in samples:
            raw = np.asarray(expected[sample.ann_id]["keypoints"], float).reshape(17, 3)
            np.testing.assert_allclose(sample.visible, raw[:, 2] > 0)
            np.testing.assert_allclose(sample.keypoints, raw[:, :2] * (raw[:, 2:] > 0), atol=1e-4)
            assert len(sample.frame_paths) == 5 and all(Path(p).is_file() for p in sample.frame_paths)
            assert "degradations" in sample.extra
        detected = posetrack18.PoseTrack18Dataset(root / "annotations" / split, root, delta=1,
                                                  detections=root / "detections" / f"{split}.json",
                                                  mode="test")
        assert len(detected.samples) == len(json.loads((root / "detections" / f"{split}.json").read_text()))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    options = dict(videos=2, frames=3, size=(96, 72), people=(1, 2), hard_rate=0.5)
    first = _files(generate_dataset(tmp_path / "a", seed=11, **options))
    second = _files(generate_dataset(tmp_path / "b", seed=11, workers=2, **options))
    assert first.keys() == second.keys() and len(first) == 2 * 3 + 2 + 2 + 1
    for name in first:
        assert first[name] == second[name], name
    other = _files(generate_dataset(tmp_path / "c", seed=12, **options))
    assert other.keys() == first.keys()
    differing = [name for name in first if first[name] != other[name]]
    assert any(name.endswith(".jpg") for name in differing)
    assert any(name.endswith(".json") and name.startswith("annotations") for name in differing)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_dataset(out, videos=1, frames=2, size=(64, 48))
    generate_dataset(out, videos=1, frames=2, size=(64, 48), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"          # only our outputs are replaced
    assert (out / "meta.json").is_file()
    with pytest.raises(ConfigError, match="hard-rate"):
        generate_dataset(tmp_path / "bad", hard_rate=2.0)
    with pytest.raises(ConfigError, match="unknown motions"):
        generate_dataset(tmp_path / "bad", motions=["moonwalk"])


def test_detector_simulation_rates():
    rng = np.random.default_rng(0)
    options = DetectorOptions(jitter=0.05, miss_rate=0.2, false_positive_rate=0.5)
    box = np.array([100.0, 50.0, 40.0, 120.0])
    frames = 3000
    hits, false, shifts = 0, 0, []
    for frame in range(frames):
        detections = simulate_detections(rng, frame, [box], 640, 480, options)
        for det in detections:
            x, y, w, h = det["bbox"]
            centre_shift = (x + w / 2 - 120.0) / 40.0
            if abs(centre_shift) < 0.5 and abs(y + h / 2 - 110.0) < 30 and det["score"] >= 0.3 and \
                    abs(w - 40) < 20:
                hits += 1
                shifts.append(centre_shift)
            else:
                false += 1
            assert det["category_id"] == 1 and det["image_id"] == frame
    assert abs(1 - hits / frames - 0.2) < 0.03                       # misses
    assert abs(false / frames - 0.5) < 0.06                          # false positives per frame
    assert abs(np.std(shifts) - 0.05) < 0.01 and abs(np.mean(shifts)) < 0.01   # jitter


def test_dataset_detections_have_misses_and_false_positives(tmp_path):
    root = generate_dataset(tmp_path / "d", videos=2, frames=10, size=(96, 72), det_miss=0.3,
                            det_false_positives=0.5, val_fraction=0.0)
    detections = json.loads((root / "detections" / "train.json").read_text())
    annotations = [a for d in _documents(root).values() for a in d["annotations"]]
    assert not json.loads((root / "detections" / "val.json").read_text())
    gt_per_image = {image["id"]: 0 for d in _documents(root).values() for image in d["images"]}
    for a in annotations:
        gt_per_image[a["image_id"]] += 1
    assert {d["image_id"] for d in detections} <= set(gt_per_image)
    confident = {i: 0 for i in gt_per_image}
    for d in detections:
        confident[d["image_id"]] += d["score"] >= 0.3
    assert any(d["score"] < 0.3 for d in detections)                  # false positives (score < 0.3 only them)
    assert any(confident[i] < gt_per_image[i] for i in gt_per_image)  # missed people
    for d in detections:
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 96 and y + h <= 72


def test_cli_generates_and_previews(tmp_path, capsys):
    from glsmamba.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--videos", "2", "--frames", "4", "--size", "96x72",
                 "--people", "1-2", "--seed", "3", "--quiet", "--preview"]) == 0
    assert (out / "preview.png").is_file() and (out / "detections" / "val.json").is_file()
    assert main(["synth", "--out", str(out), "--videos", "1", "--frames", "2", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    (out / "preview.png").unlink()
    assert main(["synth", "--out", str(out), "--preview-only"]) == 0
    sheet = cv2.imread(str(out / "preview.png"))
    assert sheet.shape[1] == 4 * 96 and sheet.shape[0] % 72 == 0
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(out), "--size", "big"])


def test_preview_of_a_folder_without_annotations_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no annotation files"):
        make_preview(tmp_path)
