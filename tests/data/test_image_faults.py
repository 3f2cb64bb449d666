"""Images that cannot be trusted: truncated JPEG / PNG, a size other than the annotation's,
frames of different sizes in one clip -> a DataError naming the file and the sample."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from torch.utils.data import DataLoader

from glsmamba.data.clip_dataset import ClipDataset, build_pipeline
from glsmamba.data.sample import PoseSample
from glsmamba.data.transforms import image_problem, read_image
from glsmamba.errors import DataError


def _jpeg(path, width=64, height=48, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def _sample(paths, size=None) -> PoseSample:
    extra = {"image_size": size} if size else {}
    return PoseSample(image_path=str(paths[len(paths) // 2]), frame_paths=[str(p) for p in paths],
                      bbox_xywh=np.array([10, 10, 20, 20], np.float32),
                      keypoints=np.zeros((17, 2), np.float32), visible=np.zeros(17, np.float32),
                      extra=extra)


def _clips(samples):
    return ClipDataset(samples, build_pipeline("test", input_size=(32, 32), heatmap_size=(8, 8)))


def test_truncated_jpeg_is_an_error_naming_it(tmp_path):
    good = _jpeg(tmp_path / "a.jpg")
    cut = tmp_path / "b.jpg"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(cut)) is not None            # OpenCV alone accepts it (a warning)
    assert image_problem(cut.read_bytes()) and image_problem(data) is None
    with pytest.raises(DataError, match=r"b.jpg \[sample 0\]: truncated JPEG"):
        _clips([_sample([good, cut, good])])[0]


def test_jpeg_with_trailing_bytes_is_fine(tmp_path):
    path = _jpeg(tmp_path / "a.jpg")
    path.write_bytes(path.read_bytes() + b"\0\0 trailing junk")
    assert read_image(str(path)).shape == (48, 64, 3)


def test_named_format_must_match_the_content(tmp_path):
    png = tmp_path / "p.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    renamed = tmp_path / "really_png.jpg"                # the content decides: fine
    renamed.write_bytes(png.read_bytes())
    assert read_image(str(renamed)).shape == (8, 8, 3)
    (tmp_path / "text.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"text.jpg: not a JPEG file"):
        read_image(str(tmp_path / "text.jpg"))
    cut = tmp_path / "cut.png"                           # cut inside its only IDAT chunk
    cut.write_bytes(png.read_bytes()[:-16])
    assert image_problem(cut.read_bytes(), "cut.png").startswith("truncated PNG")


def test_truncated_png_is_an_error(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"a.png: truncated PNG"):
        read_image(str(path))


def test_image_of_another_size_than_its_record(tmp_path):
    path = _jpeg(tmp_path / "a.jpg", 64, 48)
    with pytest.raises(DataError, match=r"a.jpg \[sample 0\]: image is 64x48 but its annotation "
                                        r"says 128x96"):
        _clips([_sample([path, path, path], size=(128, 96))])[0]
    assert _clips([_sample([path, path, path], size=(64, 48))])[0]["clip"].shape == (3, 3, 32, 32)


def test_frames_of_different_sizes_in_one_clip(tmp_path):
    centre = _jpeg(tmp_path / "c.jpg", 64, 48)
    other = _jpeg(tmp_path / "o.jpg", 80, 48)
    with pytest.raises(DataError, match=r"o.jpg \[sample 0\]: frame is 80x48 but the clip's centre "
                                        r"frame is 64x48"):
        _clips([_sample([other, centre, centre])])[0]


def test_error_in_a_loader_worker_stays_one_line(tmp_path, capsys):
    from glsmamba.cli import _one_line
    good = _jpeg(tmp_path / "a.jpg")
    cut = tmp_path / "b.jpg"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    loader = DataLoader(_clips([_sample([cut, cut, cut])]), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as err:
        next(iter(loader))
    line = _one_line(err.value)
    assert "\n" not in line and line.endswith("b.jpg [sample 0]: truncated JPEG (no end-of-image "
                                              "marker after the last scan)")
