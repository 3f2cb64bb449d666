"""Data that would train wrongly is refused, and every wrong value in an annotation file is
one line naming the file and the record (issue 18, classes 5 and 6)."""
from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from glsmamba.data.datasets import PoseTrack18Dataset
from glsmamba.data.transforms import image_dimensions, read_image
from glsmamba.errors import DataError


@pytest.fixture()
def one_video(tmp_path, posetrack_builder):
    """(root, name, annotation dict) of the first video of a two-video set."""
    videos = posetrack_builder["build"](tmp_path)
    name = sorted(videos)[0]
    return tmp_path, name, videos[name]


def _parse(root):
    return PoseTrack18Dataset(root / "annotations" / "val", root)


def _write(root, name, data):
    (root / "annotations" / "val" / f"{name}.json").write_text(json.dumps(data))


def _image_field(field, value):
    def change(data):
        data["images"][0][field] = value
    return change


def _ann_field(field, value):
    def change(data):
        data["annotations"][0][field] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_image_field("id", [1, 2]), "image 'id' must be an integer or a string"),
    (_image_field("file_name", 12), "'file_name' must be a non-empty path string"),
    (_image_field("width", "wide"), "'width' must be a positive number"),
    (_image_field("width", float("nan")), "'width' must be a positive number"),
    (_image_field("height", -3), "'height' must be a positive number"),
    (_image_field("degradations", 3), "'degradations' must be a list of strings"),
    (_image_field("nframes", "many"), "'nframes' must be an integer"),
    (_image_field("is_labeled", "yes"), "'is_labeled' must be true or false"),
    (_ann_field("bbox", ["1", "2", "3", "4"]), "'bbox' must be a list of numbers"),
    (_ann_field("bbox", "10 10 20 20"), "'bbox' must be a list of numbers"),
    (_ann_field("track_id", [0]), "'track_id' must be a whole number"),
    (_ann_field("image_id", [10000010000]), "'image_id' must be an integer or a string"),
])
def test_wrong_types_are_one_line_naming_file_and_record(one_video, change, message):
    root, name, data = one_video
    change(data)
    _write(root, name, data)
    with pytest.raises(DataError, match=message) as err:
        _parse(root)
    text = str(err.value)
    assert f"{name}.json [" in text and "\n" not in text


def test_duplicate_image_ids_are_refused(one_video):
    root, name, data = one_video
    data["images"][1]["id"] = data["images"][0]["id"]
    _write(root, name, data)
    with pytest.raises(DataError, match=r"image id \d+ is used twice"):
        _parse(root)


def test_duplicate_ids_across_videos_are_refused(tmp_path, posetrack_builder):
    videos = posetrack_builder["build"](tmp_path)
    first, second = sorted(videos)
    data = videos[second]
    old = data["images"][0]["id"]
    data["images"][0]["id"] = videos[first]["images"][0]["id"]
    for ann in data["annotations"]:
        if ann["image_id"] == old:
            ann["image_id"] = data["images"][0]["id"]
    _write(tmp_path, second, data)
    with pytest.raises(DataError, match=rf"used twice \(also {first}.json"):
        _parse(tmp_path)


def test_file_named_unlike_its_image_folder_is_refused(one_video):
    root, name, data = one_video
    (root / "annotations" / "val" / f"{name}.json").rename(root / "annotations" / "val" / "x.json")
    with pytest.raises(DataError, match=rf"x.json \[.*\]: frame .* lies in folder '{name}' but "
                                        "this file is video 'x'"):
        _parse(root)


def test_two_videos_sharing_one_frame_folder_are_refused(tmp_path, posetrack_builder):
    """A merged file whose second video's frames sit in the first video's folder."""
    videos = posetrack_builder["build"](tmp_path)
    first, second = sorted(videos)
    moved = videos[second]
    for image in moved["images"]:
        image["file_name"] = image["file_name"].replace(second, first)
    merged = tmp_path / "merged.json"
    merged.write_text(json.dumps({
        "images": videos[first]["images"] + moved["images"],
        "annotations": videos[first]["annotations"] + moved["annotations"]}))
    with pytest.raises(DataError, match=rf"merged.json \[.*\]: frame folder '{first}' holds "
                                        "frames of two videos"):
        PoseTrack18Dataset(merged, tmp_path)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR is rewritten to declare ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("encode, suffix", [(_png_declaring, ".png"), (_jpeg_declaring, ".jpg")])
def test_huge_declared_image_is_refused_before_decoding(tmp_path, monkeypatch, encode, suffix):
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(encode(30000, 30000))
    assert image_dimensions(path.read_bytes()) == (30000, 30000)
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1))
    with pytest.raises(DataError, match="declares 30000x30000 pixels, more than the limit"):
        read_image(str(path), "sample 3")
    assert not decoded
    monkeypatch.setenv("GLSMAMBA_MAX_IMAGE_PIXELS", str(30000 * 30000))
    monkeypatch.undo()                                      # real decoder, higher limit
    small = tmp_path / f"ok{suffix}"
    small.write_bytes(encode(4 if suffix == ".png" else 8, 4 if suffix == ".png" else 8))
    assert read_image(str(small)).shape[:2] in ((4, 4), (8, 8))


def test_numbers_as_text_are_refused(one_video):
    root, name, data = one_video
    data["annotations"][0]["keypoints"] = [str(v) for v in data["annotations"][0]["keypoints"]]
    _write(root, name, data)
    with pytest.raises(DataError, match="'keypoints' must be numbers, not text"):
        _parse(root)


@pytest.mark.parametrize("detection, message", [
    ({"image_id": [10000010002], "bbox": [5, 5, 20, 20], "score": 0.9}, "names an image not in"),
    ({"image_id": 10000010002, "bbox": ["5", "5", "20", "20"], "score": 0.9},
     "'bbox' must be numbers, not text"),
])
def test_wrong_types_in_a_detections_file(tiny_posetrack, tmp_path, detection, message):
    root, _ = tiny_posetrack
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([detection]))
    with pytest.raises(DataError, match=rf"dets\.json \[detection #0\]: .*{message}"):
        PoseTrack18Dataset(root / "annotations" / "val", root, detections=path, mode="test")
