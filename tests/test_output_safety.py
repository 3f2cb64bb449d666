"""No writes through links; one atomic writer; outputs never replace inputs (issue 18,
classes 1, 2 and 4 at the level of glsmamba.fileio / glsmamba.outputs and the writers)."""
from __future__ import annotations

import json
import os

import pytest

from glsmamba import fileio
from glsmamba.errors import CheckpointError, DataError
from glsmamba.outputs import OutputRefused, default_prediction_dir, refuse_inputs


@pytest.fixture()
def victim(tmp_path):
    """A user file a hostile link points at; it must never change."""
    path = tmp_path / "precious.txt"
    path.write_text("user data")
    return path


def test_writers_replace_a_planted_link_never_its_target(tmp_path, victim):
    target = tmp_path / "out.json"
    target.symlink_to(victim)
    fileio.write_json_atomic(target, {"a": 1})
    assert victim.read_text() == "user data"
    assert not target.is_symlink() and json.loads(target.read_text()) == {"a": 1}
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.json").symlink_to(victim)
    fileio.atomic_write_files({folder / "a.json": b"x", folder / "b.json": b"y"})
    assert victim.read_text() == "user data" and (folder / "a.json").read_bytes() == b"x"


def test_temporary_names_are_unpredictable_and_exclusive(tmp_path, victim):
    names = {fileio.temp_sibling(tmp_path / "f").name for _ in range(50)}
    assert len(names) == 50
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(FileExistsError):
        fileio.create_exclusive(tmp_path / "link")
    handle = fileio.reset_fixed_partial(tmp_path / "link")    # a fixed name: link removed
    handle.write(b"new")
    handle.close()
    assert victim.read_text() == "user data" and (tmp_path / "link").read_bytes() == b"new"


def test_publish_folder_is_all_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "preds"
    fileio.publish_folder({"a.json": b"1", "b.json": b"2"}, out)
    real = fileio.create_exclusive
    calls = []

    def full_disk(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, *args)

    monkeypatch.setattr(fileio, "create_exclusive", full_disk)
    with pytest.raises(OSError):
        fileio.publish_folder({"a.json": b"3", "b.json": b"4"}, out, replace_existing=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"a.json": b"1", "b.json": b"2"}
    assert [p.name for p in tmp_path.iterdir()] == ["preds"]     # no partial folder left
    with pytest.raises(FileExistsError):
        fileio.publish_folder({"a.json": b"5"}, out)             # not without replace_existing


def test_work_dir_log_through_a_link_is_refused(tmp_path, victim):
    from glsmamba.engine.trainer import JsonLogger
    from glsmamba.errors import ConfigError
    (tmp_path / "log.jsonl").symlink_to(victim)
    with pytest.raises(ConfigError, match="log.jsonl: cannot write the training log: it is a link"):
        JsonLogger(tmp_path / "log.jsonl")
    assert victim.read_text() == "user data"
    logger = JsonLogger(tmp_path / "fresh.jsonl")
    logger.log({"type": "train", "step": 1})
    logger.close()
    assert json.loads((tmp_path / "fresh.jsonl").read_text())["step"] == 1


def test_outputs_never_replace_inputs_even_through_links(tmp_path, victim):
    (tmp_path / "alias").symlink_to(victim)
    os.link(victim, tmp_path / "hard")
    for target in (victim, tmp_path / "alias", tmp_path / "hard"):
        with pytest.raises(OutputRefused, match="input of the command"):
            refuse_inputs([target], [victim])
    refuse_inputs([tmp_path / "new.json"], [victim])


def test_default_prediction_folder_is_inside_the_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"")
    assert default_prediction_dir(run, "gt") == run.resolve() / "predictions_gt"
    assert default_prediction_dir(run / "last.safetensors", "gt") == run.resolve() / "predictions_gt"
    assert default_prediction_dir(run / "best.safetensors", "dcpose") == \
        run.resolve() / "predictions_best_dcpose"


def _videos():
    return {"v1": {"images": [{"id": 1, "file_name": "images/val/v1/000000.jpg"}]}}


def test_prediction_folder_is_known_by_its_marker_not_its_content(tmp_path):
    from glsmamba.evaluation.writer import write_posetrack_predictions
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "v1.json").write_text(json.dumps({"images": _videos()["v1"]["images"],
                                            "annotations": [{"image_id": 1, "scores": []}]}))
    before = (gt / "v1.json").read_bytes()
    for options in ({}, {"overwrite": True}, {"overwrite": True, "replace_foreign": True}):
        with pytest.raises((OutputRefused, DataError)):
            write_posetrack_predictions(gt, _videos(), [], inputs=[gt], **options)
    assert (gt / "v1.json").read_bytes() == before and len(list(gt.iterdir())) == 1
    with pytest.raises(DataError, match="v1.json: refusing to replace this file: it is not a "
                                        "prediction file glsmamba wrote"):   # foreign, not input
        write_posetrack_predictions(gt, _videos(), [], overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(OutputRefused, match="--overwrite"):       # foreign, no file collides
        write_posetrack_predictions(tmp_path / "mine", _videos(), [], overwrite=True)


def test_a_modified_prediction_set_is_refused_by_its_readers(tmp_path):
    from glsmamba.evaluation.poseval_io import load_json_dir
    from glsmamba.evaluation.writer import write_posetrack_predictions
    out = tmp_path / "pred"
    write_posetrack_predictions(out, _videos(), [])
    assert set(load_json_dir(out, prediction=True)) == {"v1"}     # the manifest is not a video
    (out / "v1.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(DataError, match="incomplete or was modified"):
        load_json_dir(out, prediction=True)


def test_convert_vitpose_refuses_an_existing_destination(tmp_path):
    from glsmamba.cli import main
    src = tmp_path / "model.pth"
    src.write_bytes(b"not read")
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"user file")
    assert main(["convert-vitpose", str(src), str(src)]) == 2
    assert main(["convert-vitpose", str(src), str(taken)]) == 2
    assert src.read_bytes() == b"not read" and taken.read_bytes() == b"user file"
    from glsmamba.models.vitpose_hf import convert_vitpose
    with pytest.raises(CheckpointError, match="destination exists"):
        convert_vitpose(src, taken)


def test_a_set_replaced_file_by_file_is_refused_until_complete(tmp_path, monkeypatch):
    """--overwrite into a folder of the user's: files go in one by one under a manifest
    saying "incomplete"; a writer killed half-way leaves a set its readers refuse."""
    from glsmamba.evaluation import writer
    from glsmamba.evaluation.poseval_io import load_json_dir
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    videos = {**_videos(), "v2": {"images": [{"id": 2, "file_name": "images/val/v2/000000.jpg"}]}}
    original = fileio.atomic_write_bytes                  # _publish imports it when called
    written = []

    def killed_after_one_file(path, data):
        written.append(path.name)
        if len(written) == 3:                             # manifest, v1.json, then v2.json
            raise KeyboardInterrupt
        return original(path, data)

    monkeypatch.setattr(fileio, "atomic_write_bytes", killed_after_one_file)
    with pytest.raises(KeyboardInterrupt):
        writer.write_posetrack_predictions(out, videos, [], replace_foreign=True)
    monkeypatch.undo()
    with pytest.raises(DataError, match="the prediction set is incomplete"):
        load_json_dir(out, prediction=True)
    writer.write_posetrack_predictions(out, videos, [], replace_foreign=True)
    assert set(load_json_dir(out, prediction=True)) == {"v1", "v2"}
    assert (out / "notes.txt").read_text() == "keep"
