"""Config loading, merging, --set overrides and their errors."""
from __future__ import annotations

import pytest

from glsmamba import config as cfg
from glsmamba.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_load_merges_defaults_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_ROOT", "/data/pt18")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    path = write(tmp_path, """
[model]
name = "glsmamba-tiny"
[model.overrides]
dim = 32
[data]
root = "${MY_ROOT}"
val_ann = "${UNSET_VAR:-${MY_ROOT}/ann}"
[train]
lr = 1
""")
    config = cfg.load_config(path, ["train.lr=2e-4", "train.milestones=[3, 5]",
                                    "eval.flip_test=false", "model.overrides.dim=48",
                                    "data.root=plain/text"])
    assert config["train"]["lr"] == 2e-4 and isinstance(config["train"]["lr"], float)
    assert config["train"]["milestones"] == [3, 5]
    assert config["eval"]["flip_test"] is False
    assert config["model"]["overrides"]["dim"] == 48
    assert config["data"]["root"] == "plain/text"
    assert config["data"]["val_ann"] == "/data/pt18/ann"
    assert config["train"]["epochs"] == cfg.DEFAULTS["train"]["epochs"]


@pytest.mark.parametrize("item, message", [
    ("train.lrr=1", "unknown key train.lrr"),
    ("nope.lr=1", "unknown key 'nope.lr'"),
    ("train.epochs=1.5", "train.epochs must be int"),
    ("train.epochs=abc", "train.epochs must be int"),
    ("eval.flip_test=1", "eval.flip_test must be bool"),
    ("eval.decode=fancy", "not one of"),
    ("train.lr", "expected section.key=value"),
])
def test_override_errors(tmp_path, item, message):
    with pytest.raises(ConfigError, match=message):
        cfg.load_config(write(tmp_path, ""), [item])


def test_file_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown section \\[optim\\]"):
        cfg.load_config(write(tmp_path, "[optim]\nlr = 1\n"))
    with pytest.raises(ConfigError, match="invalid TOML"):
        cfg.load_config(write(tmp_path, "[train\n"))
    with pytest.raises(ConfigError, match="not found"):
        cfg.load_config(tmp_path / "missing.toml")
    monkeypatch.delenv("NOT_THERE_VAR", raising=False)
    with pytest.raises(ConfigError, match="NOT_THERE_VAR is not set"):
        cfg.load_config(write(tmp_path, '[data]\nroot = "${NOT_THERE_VAR}"\n'))


def test_bundled_configs_load():
    names = cfg.list_configs()
    assert {"synth_tiny", "synth_tiny_single_frame", "posetrack18_glsmamba_b",
            "posetrack17_glsmamba_b", "posetrack21_glsmamba_b", "jhmdb_glsmamba_b"} <= set(names)
    for name in names:
        config = cfg.load_config(name)
        assert config["model"]["name"]
    paper = cfg.load_config("posetrack18_glsmamba_b")["train"]
    assert (paper["lr"], paper["milestones"], paper["epochs"]) == (1e-4, [6, 12], 20)


def test_dump_round_trip(tmp_path):
    config = cfg.load_config(write(tmp_path, "[model.overrides]\ndim = 8\n"), ["train.lr=0.5"])
    again = cfg.load_config(write(tmp_path, cfg.dump_config(config)))
    assert again == config


def test_section_reads_keys_as_attributes_with_defaults():
    import copy as _copy

    from glsmamba.config import DEFAULTS, section
    config = _copy.deepcopy(DEFAULTS)
    config["data"]["delta"] = 3
    del config["data"]["sigma"]                   # a config written before the key existed
    data = section(config, "data")
    assert data.delta == 3 and data.sigma == DEFAULTS["data"]["sigma"]
    with pytest.raises(AttributeError, match="no key 'nope'"):
        data.nope
    with pytest.raises(AttributeError, match="read-only"):
        data.delta = 4


def test_choices_come_from_the_registries(tmp_path):
    from glsmamba.data.datasets import list_datasets
    from glsmamba.config import choices_for
    assert choices_for("data", "type") == set(list_datasets())
    assert "jhmdb_mat" in choices_for("data", "type")          # registered, so selectable
    assert "glsmamba-tiny" in choices_for("model", "name")
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "nope"\n')
    with pytest.raises(ConfigError, match="model.name = 'nope' is not one of"):
        cfg.load_config(path)
