"""glsmamba export: every preset as a standard ONNX graph that ONNX Runtime's CPU
provider runs (no custom op) with the heatmaps of PyTorch within 1e-4 (float32)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from glsmamba.errors import GlsmambaError
from glsmamba.export.onnx_export import (
    ExportSource,
    export_onnx,
    load_source,
    ort_session,
    preset_source,
    sha256_file,
    sidecar_path,
)
from glsmamba.export.tracing import scan_modules
from glsmamba.models.registry import get_spec, list_models

from .conftest import excite, tiny_config

TOLERANCE = 1e-4


def tiny_preset_source(name: str) -> ExportSource:
    """Preset ``name`` shrunk (vit-tiny encoder, 64 x 48 crops, one block of each kind,
    T = 3) but with its own structure: scan types, STMM, LRM, stride, attention ..."""
    from glsmamba.engine.builder import build_model
    spec = get_spec(name)
    accepted = set(spec.accepted())
    wanted = {"encoder_arch": "vit-tiny", "input_size": [48, 64], "dim": 16, "d_state": 2,
              "gsm_depth": 1, "lrm_depth": 1 if spec.defaults.get("lrm_depth", 2) else 0,
              "depth": 1, "num_heads": 2, "mlp_ratio": 1.0}
    config = tiny_config(delta=1)
    config["model"].update(name=name, overrides={k: v for k, v in wanted.items() if k in accepted})
    torch.manual_seed(0)
    return ExportSource(excite(build_model(config, log=lambda *_: None)).eval(), config, name)


def ort_vs_torch(path, model, batch: int = 3, seed: int = 7) -> float:
    """Max abs heatmap difference on a clip the export was not checked on."""
    width, height = model.input_size
    clip = torch.randn(batch, model.num_frames, 3, height, width,
                       generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(clip).numpy()
    got = ort_session(path).run(None, {"clip": clip.numpy()})[0]
    return float(np.abs(got - expected).max())


def graph_ops(path) -> tuple[list[str], set[str]]:
    proto = onnx.load(str(path))
    return [n.op_type for n in proto.graph.node], {n.domain for n in proto.graph.node}


def _check_preset(name: str, tmp_path) -> None:
    src = tiny_preset_source(name)
    out = tmp_path / f"{name}.onnx"
    meta = export_onnx(src, out)
    assert meta["check"]["max_abs_diff"] <= TOLERANCE
    diff = ort_vs_torch(out, src.model)
    assert diff <= TOLERANCE, f"{name}: max abs heatmap difference {diff}"
    ops, domains = graph_ops(out)
    assert domains <= {"", "ai.onnx"} and "Scan" not in ops
    assert ops.count("Loop") == len(scan_modules(src.model))      # one Loop per selective scan
    has_stmm = any(type(m).__name__ == "STMM" for m in src.model.modules())
    assert ("GridSample" in ops) == has_stmm


def test_tiny_glsmamba_exports_with_stmm(tmp_path):
    _check_preset("glsmamba-tiny", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, _ in list_models() if name != "glsmamba-tiny"])
def test_every_preset_exports(name, tmp_path):
    _check_preset(name, tmp_path)


def test_checkpoint_export_sidecar_and_refusals(tiny_checkpoint, tmp_path):
    src = load_source(tiny_checkpoint)
    out = tmp_path / "model.onnx"
    meta = export_onnx(src, out, batch=2, opset=18)
    side = json.loads(sidecar_path(out).read_text())
    weights = tiny_checkpoint / "last.safetensors"
    assert side["checkpoint"]["sha256"] == sha256_file(weights)
    assert side["input"]["shape"] == [2, 3, 3, 64, 48] and side["opset"] == 18 and side["batch"] == 2
    assert side["delta"] == 1 and side["window"] == "centered" and side["num_frames"] == 3
    assert len(side["joint_names"]) == 17 and [5, 6] in side["flip_pairs"]
    assert side["normalisation"]["mean"] == [123.675, 116.28, 103.53]
    embedded = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(embedded["glsmamba"])["checkpoint"] == side["checkpoint"]
    assert meta["check"]["max_abs_diff"] <= TOLERANCE
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2

    before = out.read_bytes()
    with pytest.raises(GlsmambaError, match="exists; pass --overwrite"):
        export_onnx(src, out)
    assert out.read_bytes() == before
    export_onnx(src, out, overwrite=True)            # dynamic batch now
    assert json.loads(sidecar_path(out).read_text())["batch"] == "dynamic"
    ckpt_bytes = weights.read_bytes()
    for target in (weights, tiny_checkpoint / "last.json"):
        with pytest.raises(GlsmambaError, match="file of the checkpoint"):
            export_onnx(src, target, overwrite=True)
    assert weights.read_bytes() == ckpt_bytes


def test_failed_check_writes_nothing(tmp_path):
    src = tiny_preset_source("glsmamba-tiny")
    out = tmp_path / "bad.onnx"
    with pytest.raises(GlsmambaError, match="disagree.*nothing written"):
        export_onnx(src, out, tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_features_only_and_window(tmp_path):
    from glsmamba.engine.builder import build_model
    config = tiny_config(delta=1)
    try:
        config["data"]["window"] = "causal"
        torch.manual_seed(0)
        model = excite(build_model(config, log=lambda *_: None)).eval()
    except (GlsmambaError, KeyError):   # a package without online windows
        config = tiny_config(delta=1)
        model = excite(build_model(config, log=lambda *_: None)).eval()
    src = ExportSource(model, config, "glsmamba-tiny")
    out = tmp_path / "features.onnx"
    meta = export_onnx(src, out, features_only=True)
    assert meta["window"] == config["data"].get("window", "centered")
    assert meta["input"]["name"] == "features" and meta["input"]["shape"][1:] == [3, 64, 8, 6]
    feats = torch.randn(2, 3, 64, 8, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.forward_features(feats).numpy()
    got = ort_session(out).run(None, {"features": feats.numpy()})[0]
    assert np.abs(got - expected).max() <= TOLERANCE


def test_large_models_use_one_external_data_file(tmp_path):
    src = tiny_preset_source("glsmamba-tiny")
    out = tmp_path / "ext.onnx"
    export_onnx(src, out, external_threshold=0)
    data = out.with_name("ext.onnx.data")
    assert data.is_file() and data.stat().st_size > out.stat().st_size
    assert ort_vs_torch(out, src.model) <= TOLERANCE


def _run_cli(argv: list[str]) -> int:
    """``glsmamba export ...`` through its own parser (the CLI maps GlsmambaError to exit 2)."""
    import argparse

    from glsmamba.cli import COMMANDS
    from glsmamba.commands import export as command
    assert COMMANDS["export"] == "export"
    parser = argparse.ArgumentParser(prog="glsmamba")
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_preset_source_and_cli(tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    args = ["export", "--preset", "glsmamba-tiny", "--out", str(out), "--batch", "1",
            "--set", "data.delta=1", *[f"--set=model.overrides.{k}={json.dumps(v)}"
                                       for k, v in (("dim", 16), ("gsm_depth", 1), ("input_size", [48, 64]))]]
    assert _run_cli(args) == 0
    assert "max abs diff" in capsys.readouterr().out
    assert json.loads(sidecar_path(out).read_text())["input"]["shape"] == [1, 3, 3, 64, 48]
    with pytest.raises(GlsmambaError, match="exists; pass --overwrite"):
        _run_cli(args)
    with pytest.raises(GlsmambaError, match="--batch"):
        _run_cli(["export", "--preset", "glsmamba-tiny", "--out", str(tmp_path / "b.onnx"), "--batch", "0"])
    with pytest.raises(GlsmambaError, match="either a run folder"):
        _run_cli(["export", "--out", str(out)])
    assert preset_source("glsmamba-tiny", ["data.delta=1"]).model.num_frames == 3
