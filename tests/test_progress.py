"""glsmamba.progress: bars on a terminal, one line per interval in a log, or nothing."""
from __future__ import annotations

import io

import pytest

from glsmamba import progress as prog


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _reset_mode():
    prog.set_mode(None)
    yield
    prog.set_mode(None)


def test_auto_is_log_when_not_a_terminal():
    stream = io.StringIO()
    bar = prog.progress(total=4, desc="epoch 1/2", unit="step", stream=stream, interval=0)
    assert bar.mode == "log"
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss="1.0e-03")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 5                                   # 4 intervals + the closing line
    assert lines[1].startswith("epoch 1/2: 2/4 step (50%), ") and "ETA" in lines[1]
    assert lines[1].endswith("loss=1.0e-03")
    assert lines[-1].startswith("epoch 1/2: 4/4 step, ") and lines[-1].endswith("(done)")


def test_log_lines_only_once_per_interval():
    stream = io.StringIO()
    for _ in prog.progress(range(1000), desc="predict", stream=stream, interval=3600):
        pass
    assert stream.getvalue().count("\n") == 1 and "1000/1000" in stream.getvalue()


def test_bar_on_a_terminal_and_modes():
    tty = Tty()
    bar = prog.progress(total=3, desc="x", stream=tty)
    assert bar.mode == "bar"
    bar.update(3)
    bar.close()
    assert "\r" in tty.getvalue()
    quiet = io.StringIO()
    prog.progress(range(3), stream=quiet, enabled=False).close()
    prog.set_mode("none")
    for _ in prog.progress(range(3), stream=quiet):
        pass
    assert quiet.getvalue() == ""
    prog.set_mode("log")
    assert prog.progress(total=1, stream=Tty()).mode == "log"
    with pytest.raises(ValueError, match="progress mode"):
        prog.set_mode("fancy")


def test_environment_and_cli_flag(monkeypatch, capsys):
    monkeypatch.setenv("GLSMAMBA_PROGRESS", "none")
    assert prog.resolve_mode(stream=Tty()) == "none"
    monkeypatch.delenv("GLSMAMBA_PROGRESS")
    from glsmamba.cli import build_parser, main
    assert build_parser().parse_args(["--progress", "log", "models"]).progress == "log"
    assert build_parser().parse_args(["models", "--progress", "bar"]).progress == "bar"
    seen = []
    monkeypatch.setattr("glsmamba.commands.models.run",
                        lambda args: seen.append(prog.get_mode()) or 0, raising=False)
    assert main(["models", "--progress", "bar"]) == 0
    assert seen == ["bar"]                    # in force while the command runs
    assert prog.get_mode() == "auto"          # restored after it
    with pytest.raises(SystemExit):
        main(["--progress", "fancy", "models"])
    assert "invalid choice" in capsys.readouterr().err


def test_slow_steps_do_not_stretch_the_gaps_past_the_interval(monkeypatch):
    """Steps of 9 s with a 30 s interval: lines at most 30 s apart (not 36)."""
    clock = [0.0]
    monkeypatch.setattr(prog.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    bar = prog.progress(total=40, desc="epoch 1/1", unit="step", stream=stream, interval=30)
    written = []
    for _ in range(40):
        clock[0] += 9.0
        before = stream.getvalue().count("\n")
        bar.update(1)
        bar.set_postfix(loss="1e-3")
        if stream.getvalue().count("\n") > before:
            written.append(clock[0])
    gaps = [b - a for a, b in zip([0.0, *written], written)]
    assert len(written) >= 11 and max(gaps) <= 30.0, gaps
