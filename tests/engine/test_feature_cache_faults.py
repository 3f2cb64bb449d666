"""The feature cache follows the images' content: an image corrected in place (or a
corrected label) is not served from a stale cache, and the log says why it was rebuilt."""
from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import torch


def _cache(split, model, folder, logs):
    from glsmamba.engine.feature_cache import FeatureCacheDataset
    return FeatureCacheDataset(split.clips, model, folder, batch_size=4, dtype="float32",
                               log=logs.append, progress=False)


def test_corrected_image_invalidates_the_cache(tiny_config, synth_root, tmp_path):
    from glsmamba.engine.builder import build_model, build_split
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    config = {**tiny_config, "data": {**tiny_config["data"], "root": str(root)}}
    model = build_model(config, log=lambda *_: None).eval()
    split = build_split(config, model, "train")
    logs: list[str] = []
    first = _cache(split, model, tmp_path / "cache", logs)
    index = 0
    centre = split.clips.samples[index].frame_paths[len(split.clips.samples[index].frame_paths) // 2]
    image = cv2.imread(centre)
    cv2.imwrite(centre, 255 - image)                  # the "corrected" image, same size
    stat = os.stat(centre)
    os.utime(centre, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    second = _cache(split, model, tmp_path / "cache", logs)
    assert second.key == first.key                    # same samples: same folder ...
    assert any("image(s) changed on disk" in line and os.path.basename(centre) in line
               and "invalidated" in line for line in logs)
    with torch.no_grad():
        fresh = model.encode(split.clips[index]["clip"][None])[0]
    torch.testing.assert_close(second[index]["feats"], fresh, rtol=1e-5, atol=1e-5)
    logs.clear()
    _cache(split, model, tmp_path / "cache", logs)
    assert any("using cached" in line for line in logs)


def test_corrected_label_changes_the_key(tiny_config):
    from glsmamba.engine.builder import build_model, build_split
    from glsmamba.engine.feature_cache import cache_key
    model = build_model(tiny_config, log=lambda *_: None).eval()
    split = build_split(tiny_config, model, "train")
    before = cache_key(model, split.clips, "float32")
    split.clips.samples[0].keypoints = np.asarray(split.clips.samples[0].keypoints) + 1.0
    assert cache_key(model, split.clips, "float32") != before


def test_another_feature_stride_changes_the_key(tiny_config):
    """The same encoder weights read at another stride give other features."""
    from glsmamba.engine.builder import build_model, build_split
    from glsmamba.engine.feature_cache import cache_key
    model = build_model(tiny_config, log=lambda *_: None).eval()
    split = build_split(tiny_config, model, "train")
    before = cache_key(model, split.clips, "float32")
    model.feature_stride = 8 if model.feature_stride != 8 else 4
    assert cache_key(model, split.clips, "float32") != before


def test_damaged_cache_file_is_a_clear_error(tiny_config, tmp_path):
    import pytest
    from glsmamba.engine.builder import build_model, build_split
    from glsmamba.errors import DataError
    model = build_model(tiny_config, log=lambda *_: None).eval()
    split = build_split(tiny_config, model, "train")
    cache = _cache(split, model, tmp_path / "cache", [])
    feats = cache.folder / "feats.npy"
    feats.write_bytes(feats.read_bytes()[:100])            # cut short (full disk, bad copy)
    with pytest.raises(DataError, match=r"feats.npy: feature cache file is unreadable"):
        _cache(split, model, tmp_path / "cache", [])[0]


def test_full_disk_while_building_the_cache_is_a_clear_error(tiny_config, tmp_path, monkeypatch):
    import errno

    import pytest
    from glsmamba.engine import feature_cache
    from glsmamba.engine.builder import build_model, build_split
    from glsmamba.errors import DataError
    model = build_model(tiny_config, log=lambda *_: None).eval()
    split = build_split(tiny_config, model, "train")

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_cache.os, "posix_fallocate", no_space)
    with pytest.raises(DataError, match=r"feats.npy: cannot reserve .* GiB for the feature cache: "
                                        r"No space left on device"):
        _cache(split, model, tmp_path / "cache", [])
    assert not list((tmp_path / "cache").rglob("manifest.json"))
