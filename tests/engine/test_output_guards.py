"""Outputs never touch inputs or foreign files; complete or not at all (issue 18, classes 1
and 4) at the level of `glsmamba eval` / `train`: every user file stays byte-identical."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from glsmamba.cli import main
from glsmamba.errors import ConfigError, DataError, GlsmambaError


def snapshot(folder) -> dict:
    """Relative path -> SHA-256 of every file under ``folder`` (links not followed)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture()
def data_copy(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


@pytest.fixture()
def run_config(tiny_config, data_copy, tmp_path):
    """(config file, config, checkpoint folder) on a private copy of the synthetic data."""
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    from glsmamba.config import dump_config
    config = copy.deepcopy(tiny_config)
    config["data"]["root"] = str(data_copy)
    path = tmp_path / "config.toml"
    path.write_text(dump_config(config))
    save_checkpoint(tmp_path / "run", "last", build_model(config, log=lambda *_: None),
                    {"config": config})
    return path, config, tmp_path / "run"


def test_eval_never_writes_over_its_inputs(run_config, data_copy, tmp_path, capsys):
    """--out naming the GT folder, the data root or the run: refused in one line, even with
    --overwrite; a foreign folder only with --overwrite; nothing changes on disk."""
    config_file, _, run = run_config
    gt = data_copy / "annotations" / "val"
    before, run_before = snapshot(data_copy), snapshot(run)
    cases = [(gt, []), (gt, ["--overwrite"]), (run, []), (run, ["--overwrite"]),
             (data_copy, [])]
    for out, extra in cases:
        rc = main(["eval", str(config_file), "--checkpoint", str(run), "--out", str(out),
                   "--no-progress", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert ("input of the command" in err or "was not written by glsmamba" in err), err
    assert snapshot(data_copy) == before and snapshot(run) == run_before


def test_eval_default_folder_is_inside_the_run_and_replaced_as_a_set(run_config, tmp_path):
    from glsmamba.engine import api
    from glsmamba.evaluation.writer import MARKER, read_manifest
    _, config, run = run_config
    other = tmp_path / "other"
    shutil.copytree(run, other)
    for checkpoint in (run, other):
        api.evaluate(config, checkpoint, progress=False, log=lambda *_: None)
    first, second = run / "predictions_gt", other / "predictions_gt"
    assert (first / MARKER).is_file() and (second / MARKER).is_file()   # one per run
    listed = read_manifest(first)
    assert set(listed) == {p.name for p in first.iterdir()} - {MARKER}
    assert "eval_meta.toml" in listed
    api.evaluate(config, run, progress=False, log=lambda *_: None)       # its own set: replaced
    assert not [p for p in tmp_path.rglob(".*partial*")]


def test_eval_into_a_foreign_folder_needs_overwrite(run_config, tmp_path, capsys):
    config_file, _, run = run_config
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    args = ["eval", str(config_file), "--checkpoint", str(run), "--out", str(foreign),
            "--no-progress"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    assert (foreign / "notes.txt").read_text() == "keep me"           # never deleted
    from glsmamba.evaluation.poseval_io import load_json_dir
    assert load_json_dir(foreign, prediction=True)                     # manifest verified


def test_gt_with_empty_scores_is_not_taken_for_predictions(run_config, data_copy, capsys):
    """The guard reads a marker, not content: GT carrying "scores": [] stays untouched."""
    config_file, _, run = run_config
    gt = data_copy / "annotations" / "val"
    for path in gt.glob("*.json"):
        data = json.loads(path.read_text())
        for ann in data["annotations"]:
            ann["scores"] = []
        path.write_text(json.dumps(data))
    before = snapshot(gt)
    assert main(["eval", str(config_file), "--checkpoint", str(run), "--out", str(gt),
                 "--overwrite", "--no-progress"]) == 2
    assert "input of the command" in capsys.readouterr().err
    assert snapshot(gt) == before


def test_incomplete_synthetic_benchmark_is_refused(run_config, data_copy):
    from glsmamba.engine import api
    _, config, run = run_config
    meta = json.loads((data_copy / "meta.json").read_text())
    (data_copy / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(DataError, match="incomplete"):
        api.evaluate(config, run, progress=False, log=lambda *_: None)
    with pytest.raises(DataError, match="incomplete"):
        api.train(config, run.parent / "new_run", progress=False, log=lambda *_: None)


def test_empty_gt_split_blames_the_annotations(run_config, data_copy):
    from glsmamba.engine import api
    _, config, run = run_config
    for path in (data_copy / "annotations" / "val").glob("*.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "annotations": []}))
    with pytest.raises(GlsmambaError) as err:
        api.evaluate(config, run, progress=False, log=lambda *_: None)
    assert "ground-truth split" in str(err.value) and "predictions" not in str(err.value)


def test_second_process_on_one_work_dir_gets_a_clear_error(tmp_path):
    """A live lock holder (another process) is named; its lock dies with it."""
    from glsmamba.engine.trainer import prepare_work_dir
    from glsmamba.outputs import unlock_folder
    work = tmp_path / "run"
    work.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from glsmamba.outputs import lock_folder
            lock_folder({str(work)!r}, "training", "--work-dir")
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"another process \(pid {holder.pid}\) is "
                                              "training into this work dir"):
            prepare_work_dir(work, resume=False, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    prepare_work_dir(work, resume=False, overwrite=False)     # a dead holder's lock is free
    unlock_folder(work)


def test_train_overwrite_never_removes_the_config_it_reads(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("[train]\nepochs = 1\n")
    (run / "log.jsonl").write_text("")
    rc = main(["train", str(run / "config.toml"), "--work-dir", str(run), "--overwrite",
               "--no-check", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "input of the command" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.toml").read_text() == "[train]\nepochs = 1\n"
    assert (run / "log.jsonl").exists()


def test_a_work_dir_among_the_annotations_is_refused(run_config, data_copy):
    from glsmamba.engine import api
    from glsmamba.outputs import OutputRefused
    _, config, _ = run_config
    gt = data_copy / "annotations" / "val"
    before = snapshot(data_copy)
    for overwrite in (False, True):
        with pytest.raises(OutputRefused, match="input of the command"):
            api.train(config, gt, overwrite=overwrite, progress=False, log=lambda *_: None)
    assert snapshot(data_copy) == before
