"""model.pretrained resolution (glsmamba/models/pretrained.py): official .pth, safetensors,
save_pretrained folders and hf:// repos from a Hugging Face cache built here (offline),
the SHA-256 in the run's metadata, and the refusal of a frozen encoder without weights."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil

import pytest
import torch

from glsmamba.errors import CheckpointError, ConfigError
from glsmamba.models.pretrained import (require_encoder_weights, resolve_pretrained,
                                        sha256_file)
from glsmamba.models.vitpose import ViTPoseEncoder, load_vitpose

pytestmark = pytest.mark.usefixtures("one_thread")
IMG = (64, 48)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def official_state() -> dict:
    torch.manual_seed(1)
    return ViTPoseEncoder("vit-tiny", img_size=IMG, deconv_channels=64).state_dict()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pth_and_safetensors_resolve_to_themselves_with_their_sha256(tmp_path):
    from safetensors.torch import save_file
    state = official_state()
    torch.save({"state_dict": state}, tmp_path / "vitpose.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "vitpose.safetensors"))
    for name in ("vitpose.pth", "vitpose.safetensors"):
        resolved = resolve_pretrained(str(tmp_path / name))
        assert resolved.path == tmp_path / name and resolved.sha256 == sha(tmp_path / name)
    assert resolve_pretrained("") is None
    with pytest.raises(CheckpointError, match="not found"):
        resolve_pretrained(str(tmp_path / "absent.pth"))


def hf_folder(folder):
    """A transformers save_pretrained folder (VitPoseForPoseEstimation, classic decoder)."""
    transformers = pytest.importorskip("transformers")
    backbone = transformers.VitPoseBackboneConfig(
        image_size=list(IMG), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        layer_norm_eps=1e-6, out_indices=[4])
    config = transformers.VitPoseConfig(backbone_config=backbone, use_simple_decoder=False,
                                        num_labels=17)
    torch.manual_seed(2)
    model = transformers.VitPoseForPoseEstimation(config).eval()
    model.save_pretrained(folder)
    return model


def test_save_pretrained_folder_hashes_its_weights_file(tmp_path):
    hf_folder(tmp_path / "hf")
    resolved = resolve_pretrained(str(tmp_path / "hf"))
    assert [f.name for f in resolved.files] == ["model.safetensors"]
    assert resolved.sha256 == sha(tmp_path / "hf" / "model.safetensors")


def hub_cache(cache, repo: str, source) -> None:
    """huggingface_hub's cache layout: models--OWNER--NAME/{refs/main, snapshots/COMMIT/}."""
    base = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, base / "snapshots" / COMMIT)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)


def test_hub_repo_resolves_offline_from_the_cache_and_loads(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    model = hf_folder(tmp_path / "hf")
    hub_cache(tmp_path / "cache", "usyd-community/vitpose-tiny-test", tmp_path / "hf")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_pretrained("hf://usyd-community/vitpose-tiny-test")
    assert resolved.path == tmp_path / "cache" / "models--usyd-community--vitpose-tiny-test" \
        / "snapshots" / COMMIT
    assert resolved.sha256 == sha(tmp_path / "hf" / "model.safetensors")
    encoder = ViTPoseEncoder("vit-tiny", img_size=IMG, deconv_channels=256).eval()
    load_vitpose(encoder, resolved.path)
    state = model.state_dict()
    images = torch.randn(1, 3, *IMG)
    with torch.no_grad():
        ours = torch.nn.functional.conv2d(encoder(images), state["head.conv.weight"],
                                          state["head.conv.bias"])
        assert torch.allclose(ours, model(images).heatmaps, atol=1e-5)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        resolve_pretrained("hf://usyd-community/not-in-the-cache")
    with pytest.raises(ConfigError, match="hf://OWNER/NAME"):
        resolve_pretrained("hf://just-a-name")


def tiny_config(**model) -> dict:
    from glsmamba.config import DEFAULTS
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(name="glsmamba-tiny", overrides={"input_size": [48, 64], "dim": 16,
                           "d_state": 1, "gsm_depth": 1, "lrm_depth": 1, "mlp_ratio": 1.0},
                           **model)
    return config


def test_frozen_encoder_without_weights_is_an_error_unless_allowed():
    from glsmamba.engine.builder import build_model
    with pytest.raises(ConfigError, match=r"model\.pretrained.*VITPOSE_TINY_CKPT.*random_encoder_ok"):
        build_model(tiny_config(), log=lambda *_: None)
    model = build_model(tiny_config(random_encoder_ok=True), log=lambda *_: None)
    require_encoder_weights(tiny_config(random_encoder_ok=True), model)
    build_model(tiny_config(), log=lambda *_: None, for_training=False)   # eval: a checkpoint follows


def test_the_run_metadata_records_the_resolved_sha256(tmp_path):
    from glsmamba.engine.builder import build_model
    from glsmamba.engine.trainer import Trainer
    torch.save({"state_dict": official_state()}, tmp_path / "enc.pth")
    config = tiny_config(pretrained=str(tmp_path / "enc.pth"))
    config["train"].update(epochs=1, val_interval=0, amp="off")
    model = build_model(config, log=lambda *_: None)
    assert model.pretrained_weights["sha256"] == sha256_file(tmp_path / "enc.pth")
    clip = {"clip": torch.zeros(5, 3, 64, 48), "heatmaps": torch.zeros(17, 16, 12),
            "target_weight": torch.ones(17), "index": 0}
    config["data"].update(batch_size=1, workers=0)
    trainer = Trainer(model, [clip], config, tmp_path / "run", progress=False, log=lambda *_: None)
    trainer.fit()
    meta = json.loads((tmp_path / "run" / "last.json").read_text())
    assert meta["pretrained_weights"]["sha256"] == sha(tmp_path / "enc.pth")
    assert meta["pretrained_weights"]["spec"] == str(tmp_path / "enc.pth")
