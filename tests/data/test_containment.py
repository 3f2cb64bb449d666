"""Reads stay inside the data root (issue 18, class 3): a path a data file names that
resolves outside ``data.root`` (``..``, absolute, a link out) is an error naming the file
and the record, unless ``data.allow_outside_root``; no folder listing follows it."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from glsmamba.data.datasets import PoseTrack18Dataset
from glsmamba.data.datasets.base import outside_root_allowed
from glsmamba.errors import DataError


@pytest.fixture()
def layout(tmp_path, posetrack_builder):
    """(data root, video name, its annotation dict, a folder outside the root)."""
    root = tmp_path / "root"
    videos = posetrack_builder["build"](root)
    name = sorted(videos)[0]
    outside = tmp_path / "outside"
    shutil.copytree(root / "images" / "val" / name, outside / name)
    return root, name, videos[name], outside


def _write(root, name, data):
    (root / "annotations" / "val" / f"{name}.json").write_text(json.dumps(data))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "link"])
def test_paths_leaving_the_data_root_are_refused(layout, how):
    root, name, data, outside = layout
    first = data["images"][0]
    frame = os.path.basename(first["file_name"])
    if how == "dotdot":
        first["file_name"] = f"../outside/{name}/{frame}"
    elif how == "absolute":
        first["file_name"] = str(outside / name / frame)
    else:
        (root / "images" / "val" / name / frame).unlink()
        (root / "images" / "val" / name / frame).symlink_to(outside / name / frame)
    _write(root, name, data)
    with pytest.raises(DataError) as err:
        PoseTrack18Dataset(root / "annotations" / "val", root)
    message = str(err.value)
    assert f"{name}.json [image id={first['id']}]" in message
    assert "outside the data root" in message and "data.allow_outside_root" in message
    with outside_root_allowed(True):                      # the user's explicit opt-in
        parsed = PoseTrack18Dataset(root / "annotations" / "val", root)
    assert len(parsed.samples) > 0


def test_no_folder_listing_follows_an_outside_path(layout, monkeypatch):
    """A video listing only some frames falls back to listing its folder: not outside."""
    root, name, data, outside = layout
    labelled = [im for im in data["images"] if im["is_labeled"]]
    for image in labelled:
        image["file_name"] = f"../outside/{name}/{os.path.basename(image['file_name'])}"
    _write(root, name, {**data, "images": labelled})
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or real_listdir(path))
    with pytest.raises(DataError, match="outside the data root"):
        PoseTrack18Dataset(root / "annotations" / "val", root)
    assert not any(str(outside) in os.path.realpath(p) for p in listed)


def test_the_opt_in_is_a_config_key():
    """data.allow_outside_root is a config key (default false)."""
    from glsmamba.config import DEFAULTS, merge_config
    assert DEFAULTS["data"]["allow_outside_root"] is False
    config = merge_config({"data": {"allow_outside_root": True}})
    assert config["data"]["allow_outside_root"] is True


def test_a_listed_frame_linking_out_of_the_root_is_refused(layout):
    """Frames found by listing a video's folder (the annotation names only some) are
    checked too: one that is a link out of the root is an error naming the video."""
    root, name, data, outside = layout
    labelled = [im for im in data["images"] if im["is_labeled"]]
    unlisted = [im for im in data["images"] if not im["is_labeled"]][0]
    frame = root / unlisted["file_name"]
    frame.unlink()
    frame.symlink_to(outside / name / frame.name)
    _write(root, name, {**data, "images": labelled})
    with pytest.raises(DataError, match=rf"{name}.json \[video {name}\]: .* outside the data root"):
        PoseTrack18Dataset(root / "annotations" / "val", root)
