"""`glsmamba infer`'s default torch threads: the usable cores, at most 4; the CLI makes
idle OpenMP threads sleep."""
from __future__ import annotations

import argparse

import pytest

from glsmamba.commands import infer as infer_command


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (3, 3), (8, 4), (64, 4)])
def test_default_threads_leave_cores_to_other_processes(monkeypatch, cores, expected):
    monkeypatch.setattr(infer_command.os, "sched_getaffinity", lambda pid: set(range(cores)),
                        raising=False)
    assert infer_command.default_threads() == expected


def test_threads_option_defaults_to_none_and_zero_means_torch_default():
    parser = argparse.ArgumentParser()
    infer_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["infer", "video.mp4", "--checkpoint", "run"])
    assert args.threads is None                      # -> default_threads() at run time
    assert parser.parse_args(["infer", "v.mp4", "--checkpoint", "r", "--threads", "0"]).threads == 0
    assert parser.parse_args(["infer", "v.mp4", "--checkpoint", "r", "--threads", "3"]).threads == 3


def test_the_cli_makes_idle_openmp_threads_sleep_unless_the_user_chose():
    import os
    import subprocess
    import sys
    code = "import os, glsmamba.cli; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr
