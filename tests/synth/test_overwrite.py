"""``synth --overwrite`` removes only what the manifest (meta.json) says it wrote."""
from __future__ import annotations

import json

import pytest

from glsmamba.errors import DataError
from glsmamba.synth.generate import generate_dataset, owned_files, record_outputs

SMALL = dict(videos=1, frames=2, size=(64, 48))


def test_overwrite_refuses_to_delete_a_user_annotation_file(tmp_path):
    out = tmp_path / "out"
    (out / "annotations").mkdir(parents=True)
    mine = out / "annotations" / "my_labels.json"
    mine.write_text('{"mine": true}')
    with pytest.raises(DataError, match=r"--overwrite refused: 1 file\(s\) here were not written "
                                        r"by glsmamba synth \(annotations/my_labels.json\)"):
        generate_dataset(out, overwrite=True, **SMALL)
    assert mine.read_text() == '{"mine": true}'


def test_overwrite_of_a_generated_folder_with_a_user_file_added_deletes_nothing(tmp_path):
    out = generate_dataset(tmp_path / "out", **SMALL)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    mine = out / "annotations" / "train" / "extra_video.json"
    mine.write_text("{}")
    with pytest.raises(DataError, match="extra_video.json"):
        generate_dataset(out, overwrite=True, **SMALL)
    after = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert after == sorted(before + ["annotations/train/extra_video.json"])


def test_foreign_meta_json_is_not_ours(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "meta.json").write_text('{"project": "someone else"}')
    with pytest.raises(DataError, match=r"meta.json"):
        generate_dataset(out, overwrite=True, **SMALL)
    assert json.loads((out / "meta.json").read_text()) == {"project": "someone else"}


def test_overwrite_replaces_exactly_the_listed_files(tmp_path):
    out = generate_dataset(tmp_path / "out", videos=2, frames=3, size=(64, 48))
    meta = json.loads((out / "meta.json").read_text())
    listed = set(meta["files"])
    assert listed == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    extra = out / "annotations" / "clean"
    extra.mkdir()
    (extra / "a.json").write_text("{}")
    record_outputs(out, ["annotations/clean/a.json"])          # a caller's derived file
    assert "annotations/clean/a.json" in owned_files(out)
    (out / "notes.txt").write_text("outside the outputs")
    generate_dataset(out, overwrite=True, **SMALL)               # fewer videos now
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == set(json.loads((out / "meta.json").read_text())["files"]) | {"notes.txt"}
    assert not extra.exists()


def test_legacy_manifest_without_file_list(tmp_path):
    out = generate_dataset(tmp_path / "out", **SMALL)
    meta = json.loads((out / "meta.json").read_text())
    files = set(meta.pop("files"))
    meta.pop("complete")
    (out / "meta.json").write_text(json.dumps(meta))             # as version 1.0 wrote it
    assert owned_files(out) == files | {"preview.png"}
    generate_dataset(out, overwrite=True, **SMALL)
