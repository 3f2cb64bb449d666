"""Training and checkpoint faults of issue 18: complete-or-nothing `last` on a second Ctrl-C,
data that would train wrongly, and wrong values as one line (classes 4, 5 and 6)."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_standins import TinyClipSet, TinyPoseModel, make_trainer, tiny_config  # noqa: E402

from glsmamba.cli import main  # noqa: E402
from glsmamba import checkpoint as ckpt  # noqa: E402
from glsmamba.engine.trainer import Trainer  # noqa: E402
from glsmamba.errors import CheckpointError, ConfigError  # noqa: E402


def test_second_ctrl_c_aborts_and_last_keeps_the_step_it_names(tmp_path):
    """Ctrl-C twice: no `last` is written; the previous one names step 4 and holds the
    weights the model had after step 4."""
    after_step_4 = {}

    def callback(trainer):
        if trainer.step == 4:
            after_step_4.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        if trainer.step == 6:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    logs = []
    trainer = make_trainer(tmp_path, tiny_config(), logs=logs, step_callback=callback)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    tensors, meta, _ = ckpt.load_checkpoint(tmp_path / "last.safetensors")
    assert meta["step"] == 4 and trainer.step == 6
    for key, value in after_step_4.items():
        assert torch.equal(tensors[key], value), key
    assert any("aborted at epoch 1, step 6" in line and "is unchanged" in line for line in logs)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_in_a_forked_loader_worker_prints_nothing(tmp_path):
    """Loader workers (forked) receive a terminal's Ctrl-C too: only the main process
    reports it, so the message is printed once."""
    logs = []
    trainer = make_trainer(tmp_path, tiny_config(), logs=logs)
    previous = trainer._install_sigint()
    try:
        pid = os.fork()
        if pid == 0:                                 # the "worker"
            os.kill(os.getpid(), signal.SIGINT)
            os._exit(3 if trainer._stop_requested or logs else 0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        os.kill(os.getpid(), signal.SIGINT)           # the main process: one message
        assert trainer._stop_requested and len(logs) == 1 and "Ctrl-C" in logs[0]
    finally:
        trainer._restore_sigint(previous)


def test_batch_larger_than_the_split_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"data.batch_size = 32 is larger than the training "
                                          r"split \(16 samples\): not one optimiser step"):
        Trainer(TinyPoseModel(), TinyClipSet(count=16), tiny_config() | {
            "data": {**tiny_config()["data"], "batch_size": 32}}, tmp_path, progress=False,
            log=lambda *_: None)
    assert not (tmp_path / "config.toml").exists()


def test_fp16_on_the_cpu_says_what_runs_instead(tmp_path):
    logs = []
    make_trainer(tmp_path, tiny_config(amp="fp16"), logs=logs)
    assert any('train.amp = "fp16" needs CUDA' in line and "float32" in line for line in logs)


def test_progress_total_honours_max_steps(tmp_path, monkeypatch):
    import glsmamba.progress as progress_module
    totals = []
    real = progress_module.progress

    def spy(*args, **kwargs):
        totals.append(kwargs.get("total"))
        return real(*args, **kwargs)

    monkeypatch.setattr(progress_module, "progress", spy)
    trainer = Trainer(TinyPoseModel(), TinyClipSet(), tiny_config(max_steps=6), tmp_path,
                      progress=True, log=lambda *_: None)
    monkeypatch.setenv("GLSMAMBA_PROGRESS", "none")
    trainer.fit()
    assert totals == [4, 2]                   # 4 steps per epoch, then the 2 max_steps leaves


def test_float_weights_stored_as_integers_are_refused(tmp_path):
    model = TinyPoseModel()
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["head.weight"] = tensors["head.weight"].round().to(torch.int64)
    with pytest.raises(CheckpointError, match=r"float tensor\(s\) stored as integers \(e.g. "
                                              r"head.weight: int64 in the checkpoint"):
        ckpt.load_model_weights(model, tensors, "ck.safetensors")


@pytest.mark.parametrize("key, value, message", [
    ("step", "12", "'step' must be int"),
    ("epoch", [1], "'epoch' must be int"),
    ("config", "posetrack", "'config' must be object"),
    ("omitted_keys", 3, "'omitted_keys' must be list"),
    ("world_size", True, "'world_size' must be int"),
    ("metrics", {"mAP": "high"}, "'metrics' must map names to numbers"),
])
def test_wrong_types_in_checkpoint_metadata(tmp_path, key, value, message):
    ckpt.save_checkpoint(tmp_path, "last", TinyPoseModel(), {"step": 1, "config": {}})
    meta = json.loads((tmp_path / "last.json").read_text())
    meta[key] = value
    (tmp_path / "last.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message) as err:
        ckpt.load_checkpoint(tmp_path)
    assert "last.json" in str(err.value)


def _cli_error(capsys, argv) -> str:
    try:
        rc = main(argv)
    except SystemExit as exit_:                   # argparse: usage line + one error line
        rc = exit_.code
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    return err


def test_wrong_values_on_the_command_line_are_one_line(tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("[train]\nseed = 9300000000000000000\n")
    assert "train.seed" in _cli_error(capsys, ["train", str(config), "--work-dir", str(tmp_path / "r")])
    config.write_bytes("[train]\n# caf\u00e9\n".encode("latin-1"))
    assert "not UTF-8" in _cli_error(capsys, ["train", str(config), "--work-dir", str(tmp_path / "r")])
    assert "must be >= 0" in _cli_error(capsys, ["infer", "x.mp4", "--checkpoint", "c",
                                                  "--threads", "-1"])
    monkeypatch.setenv("GLSMAMBA_PROGRESS", "fancy")
    err = _cli_error(capsys, ["models"])
    assert "GLSMAMBA_PROGRESS must be one of" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_crop_size_that_cannot_be_allocated_is_one_line(tmp_path):
    """An allocation the machine cannot make is one line saying so, not a traceback."""
    import resource
    import subprocess

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))

    done = subprocess.run([sys.executable, "-m", "glsmamba", "info", "glsmamba-tiny",
                           "--size", "200000x200000", "--progress", "none"],
                          capture_output=True, text=True, preexec_fn=limit_memory, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot allocate memory" in lines[0], done.stderr[-2000:]
