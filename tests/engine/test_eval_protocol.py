"""Choosing the evaluation protocol: config, --protocol, the legacy --boxes, training."""
from __future__ import annotations

import copy

import pytest

from glsmamba.engine.builder import resolve_protocol
from glsmamba.errors import ConfigError


def test_resolve_protocol(tiny_config):
    config = copy.deepcopy(tiny_config)
    assert resolve_protocol(config).name == "gt"
    config["eval"]["protocol"] = "dcpose"
    assert resolve_protocol(config).name == "dcpose"
    assert resolve_protocol(config, "mmpose").name == "mmpose"
    assert resolve_protocol(config, boxes="gt").name == "gt"           # legacy --boxes gt
    assert resolve_protocol(config, boxes="detections").name == "dcpose"
    config["eval"].update(protocol="gt", boxes="detections")           # legacy config key
    with pytest.raises(ConfigError, match="eval.protocol"):
        resolve_protocol(config)
    config["data"]["type"] = "jhmdb"
    assert resolve_protocol(config).name == "gt"


def test_dcpose_without_detections_file(tiny_config, tmp_path):
    """`glsmamba eval` refuses; training validates on GT boxes and says so."""
    from glsmamba.engine import api
    from glsmamba.engine.builder import build_model
    from glsmamba.checkpoint import save_checkpoint
    config = copy.deepcopy(tiny_config)
    config["eval"]["protocol"] = "dcpose"
    save_checkpoint(tmp_path / "ck", "last", build_model(config, log=lambda *_: None),
                    {"config": config})
    with pytest.raises(ConfigError, match="val_detections"):
        api.evaluate(config, tmp_path / "ck", progress=False, log=lambda *_: None)
    config["train"].update(max_steps=1, val_interval=1)
    lines = []
    result = api.train(config, tmp_path / "run", progress=False, log=lines.append)
    assert result["evaluator"].protocol.name == "gt"
    assert any("validating during training on GT boxes" in line for line in lines)
    meta = (tmp_path / "run" / "val_predictions" / "eval_meta.toml").read_text()
    assert 'protocol = "gt"' in meta
