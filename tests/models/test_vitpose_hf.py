"""HuggingFace VitPose checkpoints: loaded by load_vitpose, converted both ways, checked
against transformers' own VitPoseForPoseEstimation (a test dependency)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glsmamba.errors import CheckpointError
from glsmamba.models.vitpose import ViTPoseEncoder, load_vitpose
from glsmamba.models.vitpose_hf import hf_to_official, official_to_hf

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

IMG = (64, 48)          # (H, W): a 4 x 3 token grid


def hf_model(simple: bool = False):
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation
    backbone = VitPoseBackboneConfig(image_size=list(IMG), hidden_size=128, num_hidden_layers=4,
                                     num_attention_heads=4, layer_norm_eps=1e-6,
                                     out_indices=[4])
    config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=simple, num_labels=17)
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(config).eval()
    with torch.no_grad():     # non-trivial weights and BN statistics everywhere
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.uniform_(0.5, 2.0)
                else:
                    tensor.normal_(0, 0.05)
    return model


def ours(state_path, **kwargs) -> ViTPoseEncoder:
    encoder = ViTPoseEncoder("vit-tiny", img_size=IMG, deconv_channels=256).eval()
    load_vitpose(encoder, state_path, **kwargs)
    return encoder


def heatmaps_of(encoder: ViTPoseEncoder, hf_state: dict, images: torch.Tensor) -> torch.Tensor:
    features = encoder(images)                                  # (N, 256, H/4, W/4)
    return F.conv2d(features, hf_state["head.conv.weight"], hf_state["head.conv.bias"])


def test_save_pretrained_folder_and_safetensors_match_transformers(tmp_path):
    from safetensors.torch import save_file
    model = hf_model()
    model.save_pretrained(tmp_path / "hf")
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "hf.safetensors"))
    images = torch.randn(2, 3, *IMG)
    with torch.no_grad():
        expected = model(images).heatmaps
        for source in (tmp_path / "hf", tmp_path / "hf.safetensors"):
            got = heatmaps_of(ours(source), state, images)
            assert got.shape == expected.shape == (2, 17, 16, 12)
            assert torch.allclose(got, expected, atol=1e-5), (source, (got - expected).abs().max())


def test_key_mapping_round_trip_and_qkv_join():
    state = hf_model().state_dict()
    official = hf_to_official(state)
    assert official["backbone.blocks.0.attn.qkv.weight"].shape == (384, 128)
    assert torch.equal(official["backbone.blocks.2.attn.qkv.bias"][128:256],
                       state["backbone.encoder.layer.2.attention.attention.key.bias"])
    assert "keypoint_head.deconv_layers.4.running_var" in official
    back = official_to_hf(official)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_convert_vitpose_both_ways(tmp_path, capsys):
    from glsmamba.cli import main
    from transformers import VitPoseForPoseEstimation
    model = hf_model()
    model.save_pretrained(tmp_path / "hf")
    assert main(["convert-vitpose", str(tmp_path / "hf"), str(tmp_path / "official.pth")]) == 0
    assert "hf->official" in capsys.readouterr().out
    saved = torch.load(tmp_path / "official.pth", weights_only=True)["state_dict"]
    assert "backbone.blocks.3.attn.qkv.weight" in saved and "keypoint_head.final_layer.weight" in saved
    images = torch.randn(1, 3, *IMG)
    with torch.no_grad():
        expected = model(images).heatmaps
        got = heatmaps_of(ours(tmp_path / "official.pth"), model.state_dict(), images)
        assert torch.allclose(got, expected, atol=1e-5)
        assert main(["convert-vitpose", str(tmp_path / "official.pth"), str(tmp_path / "hf2")]) == 0
        again = VitPoseForPoseEstimation.from_pretrained(str(tmp_path / "hf2")).eval()
        assert torch.allclose(again(images).heatmaps, expected, atol=1e-5)


def test_simple_decoder_refused_clearly(tmp_path):
    model = hf_model(simple=True)
    model.save_pretrained(tmp_path / "simple")
    with pytest.raises(CheckpointError, match="simple decoder") as err:
        ours(tmp_path / "simple")
    assert str(tmp_path / "simple") in str(err.value)
    encoder = ViTPoseEncoder("vit-tiny", img_size=IMG, deconv_channels=256)
    report = load_vitpose(encoder, tmp_path / "simple", strict=False)
    assert "backbone.blocks.0.attn.qkv.weight" in report.loaded
    assert any(k.startswith("keypoint_head.deconv_layers") for k in report.missing)
    assert torch.equal(encoder.backbone.last_norm.weight,
                       model.state_dict()["backbone.layernorm.weight"])


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a save_pretrained folder"):
        ours(tmp_path / "empty")
