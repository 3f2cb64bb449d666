"""ViTPose encoder: official parameter names, forward vs a functional re-implementation of
the official code, loading, freezing, shapes, position-embedding resize, FLOPs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from glsmamba.errors import CheckpointError, ConfigError
from glsmamba.models.vitpose import (
    VIT_ARCHS, ViTPoseEncoder, encoder_flops, interpolate_pos_embed, load_vitpose)
from glsmamba.models.weights_io import checkpoint_grid


pytestmark = pytest.mark.usefixtures("one_thread")


def official_vit_b_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an official ViTPose-B (256x192) checkpoint's encoder part, from
    the official ViT (embed 768, depth 12, qkv_bias, mlp_ratio 4, patch 16) and
    TopdownHeatmapSimpleHead (2 deconvs of 256, kernel 4, no bias; BN; ReLU)."""
    dim, hidden = 768, 3072
    shapes = {
        "backbone.pos_embed": (1, 16 * 12 + 1, dim),
        "backbone.patch_embed.proj.weight": (dim, 3, 16, 16),
        "backbone.patch_embed.proj.bias": (dim,),
        "backbone.last_norm.weight": (dim,),
        "backbone.last_norm.bias": (dim,),
        "keypoint_head.deconv_layers.0.weight": (dim, 256, 4, 4),
        "keypoint_head.deconv_layers.3.weight": (256, 256, 4, 4),
    }
    for i in range(12):
        block = f"backbone.blocks.{i}."
        shapes.update({
            block + "norm1.weight": (dim,), block + "norm1.bias": (dim,),
            block + "attn.qkv.weight": (3 * dim, dim), block + "attn.qkv.bias": (3 * dim,),
            block + "attn.proj.weight": (dim, dim), block + "attn.proj.bias": (dim,),
            block + "norm2.weight": (dim,), block + "norm2.bias": (dim,),
            block + "mlp.fc1.weight": (hidden, dim), block + "mlp.fc1.bias": (hidden,),
            block + "mlp.fc2.weight": (dim, hidden), block + "mlp.fc2.bias": (dim,),
        })
    for bn in (1, 4):
        prefix = f"keypoint_head.deconv_layers.{bn}."
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[prefix + name] = (256,)
        shapes[prefix + "num_batches_tracked"] = ()
    return shapes


def official_forward(state: dict[str, torch.Tensor], images: torch.Tensor, depth: int,
                     num_heads: int) -> torch.Tensor:
    """The official ViT.forward_features + deconv layers written out with functionals."""
    s = {k.replace("backbone.", "").replace("keypoint_head.deconv_layers.", "deconv."): v
         for k, v in state.items()}
    x = F.conv2d(images, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"],
                 stride=16, padding=2)
    batch, dim, hp, wp = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = x + s["pos_embed"][:, 1:] + s["pos_embed"][:, :1]
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"])
        qkv = qkv.reshape(batch, hp * wp, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * (dim // num_heads) ** -0.5
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(batch, hp * wp, -1)
        x = x + F.linear(h, s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        h = F.layer_norm(x, (dim,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"])),
                     s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
        x = x + h
    x = F.layer_norm(x, (dim,), s["last_norm.weight"], s["last_norm.bias"], eps=1e-6)
    x = x.permute(0, 2, 1).reshape(batch, -1, hp, wp)
    for conv, bn in ((0, 1), (3, 4)):
        x = F.conv_transpose2d(x, s[f"deconv.{conv}.weight"], stride=2, padding=1)
        x = F.batch_norm(x, s[f"deconv.{bn}.running_mean"], s[f"deconv.{bn}.running_var"],
                         s[f"deconv.{bn}.weight"], s[f"deconv.{bn}.bias"], False, 0.0, 1e-5)
        x = F.relu(x)
    return x


def _randomise(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and weights, so loading mistakes show in outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in encoder.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator) * 0.05
                if name.endswith("running_var"):
                    tensor.copy_(1.0 + noise.abs())
                elif name.endswith(("deconv_layers.0.weight", "deconv_layers.3.weight")):
                    tensor.copy_(noise)
                else:
                    tensor.add_(noise)
    return encoder


def _official_checkpoint(encoder: ViTPoseEncoder, num_joints: int = 17) -> dict:
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    deconv = encoder.out_channels
    state["keypoint_head.final_layer.weight"] = torch.randn(num_joints, deconv, 1, 1)
    state["keypoint_head.final_layer.bias"] = torch.randn(num_joints)
    state["backbone.cls_token"] = torch.randn(1, 1, encoder.backbone.embed_dim)
    meta = {"epoch": np.int64(210), "hook_msgs": {"best_score": np.float64(0.75)},
            "mmcv_version": "1.3.9"}
    return {"meta": meta, "state_dict": state}


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    return _randomise(ViTPoseEncoder("vit-tiny", (256, 192))).eval()


# ----------------------------------------------------------------- names and shapes
def test_vit_b_parameter_names_and_shapes_match_official():
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        encoder = ViTPoseEncoder("vit-b", (256, 192))
    ours = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    expected = official_vit_b_shapes()
    assert set(ours) - set(expected) == set(), "keys not in the official checkpoint"
    assert set(expected) - set(ours) == set(), "official keys we lack"
    assert ours == expected
    assert "backbone.blocks.11.mlp.fc2.bias" in ours
    assert encoder.out_channels == 256 and encoder.stride == 4
    backbone_params = sum(p.numel() for p in encoder.backbone.parameters())
    assert abs(backbone_params / 1e6 - 85.8) < 0.2  # ViTPose-B backbone: 86 M


@pytest.mark.parametrize("arch", sorted(VIT_ARCHS))
def test_arch_table(arch):
    spec = VIT_ARCHS[arch]
    assert spec["embed_dim"] % spec["num_heads"] == 0
    official = {"vit-s": (384, 12, 12), "vit-b": (768, 12, 12), "vit-l": (1024, 24, 16),
                "vit-h": (1280, 32, 16)}
    if arch in official:
        assert (spec["embed_dim"], spec["depth"], spec["num_heads"]) == official[arch]


# ----------------------------------------------------------------- forward
def test_forward_matches_official_formula(tiny_pair):
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        ours = tiny_pair(images)
        reference = official_forward(tiny_pair.state_dict(), images, depth=4, num_heads=4)
    assert ours.shape == (2, 64, 64, 48)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(256, 192), (128, 96), (64, 48), (96, 160)])
def test_output_shapes(size):
    encoder = ViTPoseEncoder("vit-tiny", img_size=(128, 96)).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, *size))
    assert out.shape == (2, encoder.out_channels, size[0] // 4, size[1] // 4)
    assert torch.isfinite(out).all()


def test_sizes_not_multiple_of_16_are_refused():
    encoder = ViTPoseEncoder("vit-tiny", img_size=(128, 96))
    with pytest.raises(ValueError, match="multiples of 16"):
        encoder(torch.randn(1, 3, 130, 96))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        encoder(torch.randn(1, 1, 128, 96))
    with pytest.raises(ConfigError, match="multiples of 16"):
        ViTPoseEncoder("vit-tiny", img_size=(100, 96))
    with pytest.raises(ConfigError, match="unknown ViT arch"):
        ViTPoseEncoder("vit-q")


def test_custom_deconv_channels():
    encoder = ViTPoseEncoder("vit-tiny", img_size=(64, 48), deconv_channels=32)
    assert encoder.out_channels == 32
    assert encoder(torch.randn(1, 3, 64, 48)).shape == (1, 32, 16, 12)


# ----------------------------------------------------------------- pos_embed resize
def test_pos_embed_interpolated_for_other_input_size(tiny_pair):
    """An encoder built for 256x192 run on 128x96 equals one built for 128x96 whose
    pos_embed was resized bicubically (class entry kept)."""
    small = ViTPoseEncoder("vit-tiny", (128, 96)).eval()
    state = dict(tiny_pair.state_dict())
    patches = state["backbone.pos_embed"][:, 1:].reshape(1, 16, 12, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(patches, size=(8, 6), mode="bicubic", align_corners=False)
    state["backbone.pos_embed"] = torch.cat(
        (state["backbone.pos_embed"][:, :1], resized.flatten(2).transpose(1, 2)), dim=1)
    small.load_state_dict(state)
    images = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(tiny_pair(images), small(images), rtol=1e-5, atol=1e-5)
    same = interpolate_pos_embed(state["backbone.pos_embed"], (8, 6), (8, 6))
    assert same is state["backbone.pos_embed"]


def test_checkpoint_grid_guess():
    assert checkpoint_grid(192, (8, 6)) == (16, 12)
    assert checkpoint_grid(196, (14, 14)) == (14, 14)
    assert checkpoint_grid(192, (12, 16)) == (12, 16)


def test_load_interpolates_pos_embed(tiny_pair, tmp_path):
    path = tmp_path / "vitpose_tiny_256x192.pth"
    torch.save(_official_checkpoint(tiny_pair), path)
    small = ViTPoseEncoder("vit-tiny", (128, 96)).eval()
    report = load_vitpose(small, path)
    assert report.interpolated == ["backbone.pos_embed"]
    images = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(small(images), tiny_pair(images), rtol=1e-5, atol=1e-5)
    # a wrong explicit source grid is a clear error
    with pytest.raises(CheckpointError, match="pos_embed has 192 patch entries"):
        load_vitpose(small, path, src_grid=(10, 10))


# ----------------------------------------------------------------- loading
def test_round_trip_official_format(tiny_pair, tmp_path):
    path = tmp_path / "official.pth"
    torch.save(_official_checkpoint(tiny_pair), path)
    fresh = ViTPoseEncoder("vit-tiny", (256, 192)).eval()
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        assert not torch.allclose(fresh(images), tiny_pair(images))
    report = load_vitpose(fresh, path)
    assert sorted(report.ignored) == [
        "backbone.cls_token", "keypoint_head.final_layer.bias", "keypoint_head.final_layer.weight"]
    assert report.missing == [] and report.unexpected == [] and report.interpolated == []
    assert set(report.loaded) == set(tiny_pair.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), tiny_pair(images), rtol=0, atol=0)


def test_load_module_prefix_model_wrapper_and_safetensors(tiny_pair, tmp_path):
    from safetensors.torch import save_file

    state = _official_checkpoint(tiny_pair)["state_dict"]
    prefixed = tmp_path / "ddp.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}}, prefixed)
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    safe = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    images = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        expected = tiny_pair(images)
    for path in (prefixed, bare, safe):
        fresh = ViTPoseEncoder("vit-tiny", (256, 192)).eval()
        load_vitpose(fresh, path)
        with torch.no_grad():
            torch.testing.assert_close(fresh(images), expected, rtol=0, atol=0)


def test_missing_unexpected_and_mismatched_keys(tiny_pair, tmp_path):
    checkpoint = _official_checkpoint(tiny_pair)
    state = checkpoint["state_dict"]
    del state["backbone.blocks.3.mlp.fc2.bias"]
    state["backbone.blocks.9.attn.qkv.weight"] = torch.zeros(3, 3)
    state["keypoint_head.deconv_layers.1.weight"] = torch.zeros(7)
    path = tmp_path / "broken.pth"
    torch.save(checkpoint, path)
    fresh = ViTPoseEncoder("vit-tiny", (256, 192))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_vitpose(fresh, path)
    message = str(info.value)
    assert str(path) in message
    assert "missing key(s): backbone.blocks.3.mlp.fc2.bias" in message
    assert "unexpected key(s): backbone.blocks.9.attn.qkv.weight" in message
    assert "keypoint_head.deconv_layers.1.weight: checkpoint (7,) vs model (64,)" in message
    # nothing was loaded by the failed call
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, before[key]), key
    # non-strict still refuses shape mismatches, tolerates the rest
    del state["keypoint_head.deconv_layers.1.weight"]
    torch.save(checkpoint, path)
    report = load_vitpose(fresh, path, strict=False)
    assert report.missing == ["backbone.blocks.3.mlp.fc2.bias",
                              "keypoint_head.deconv_layers.1.weight"]
    assert report.unexpected == ["backbone.blocks.9.attn.qkv.weight"]
    report = load_vitpose(fresh, path, strict=False, ignore=["backbone.blocks.9.*"])
    assert report.unexpected == [] and "backbone.blocks.9.attn.qkv.weight" in report.ignored


def test_many_missing_keys_are_summarised(tmp_path):
    path = tmp_path / "other_model.pth"
    torch.save({"state_dict": {f"head.layer{i}.weight": torch.zeros(1) for i in range(30)}},
               path)
    with pytest.raises(CheckpointError, match=r"30 unexpected key\(s\).*and 22 more"):
        load_vitpose(ViTPoseEncoder("vit-tiny", (64, 48)), path)


def test_unreadable_files(tmp_path):
    encoder = ViTPoseEncoder("vit-tiny", (64, 48))
    with pytest.raises(CheckpointError, match="not found"):
        load_vitpose(encoder, tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth: cannot read"):
        load_vitpose(encoder, garbage)
    not_tensors = tmp_path / "strings.pth"
    torch.save({"state_dict": {"backbone.pos_embed": "oops"}}, not_tensors)
    with pytest.raises(CheckpointError, match="'backbone.pos_embed' is a str"):
        load_vitpose(encoder, not_tensors)


# ----------------------------------------------------------------- freezing
def test_freeze_keeps_eval_mode_and_no_grad():
    encoder = ViTPoseEncoder("vit-tiny", (64, 48), drop_path_rate=0.5)
    parent = nn.Sequential(encoder, nn.Conv2d(64, 4, 1))
    assert not encoder.frozen
    encoder.freeze()
    assert encoder.frozen
    assert all(not p.requires_grad for p in encoder.parameters())
    parent.train()
    assert parent[1].training
    assert not any(m.training for m in encoder.modules())
    bn = encoder.keypoint_head.deconv_layers[1]
    stats = bn.running_mean.clone()
    images = torch.randn(2, 3, 64, 48)
    first, second = parent(images), parent(images)
    torch.testing.assert_close(first, second)  # no drop path, BN uses running stats
    assert torch.equal(bn.running_mean, stats)
    first.sum().backward()
    assert parent[1].weight.grad is not None
    assert all(p.grad is None for p in encoder.parameters())
    encoder.unfreeze()
    parent.train()
    assert bn.training and all(p.requires_grad for p in encoder.parameters())


# ----------------------------------------------------------------- FLOPs
def test_encoder_flops_convention():
    # ViTPose-B, 256x192: 17.1 G multiply-adds for the backbone (the paper's figure)
    assert abs(encoder_flops("vit-b", (256, 192), include_decoder=False) / 1e9 - 17.1) < 0.05
    assert encoder_flops("vit-b") > encoder_flops("vit-b", include_decoder=False)


@pytest.mark.parametrize("size", [(128, 96), (64, 48)])
def test_encoder_flops_match_flop_counter(size):
    """torch's FlopCounterMode counts 2 per multiply-add; on CPU it does not see the fused
    attention kernel, whose 2*N^2*C multiply-adds per block we add back."""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = ViTPoseEncoder("vit-tiny", size).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(torch.randn(1, 3, *size))
    spec = VIT_ARCHS["vit-tiny"]
    tokens = (size[0] // 16) * (size[1] // 16)
    attention_macs = spec["depth"] * 2 * tokens * tokens * spec["embed_dim"]
    counted = counter.get_total_flops()
    if counted != 2 * encoder_flops("vit-tiny", size):  # attention not seen by the counter
        counted += 2 * attention_macs
    assert counted == 2 * encoder_flops("vit-tiny", size)


def test_drop_path_only_while_training():
    encoder = ViTPoseEncoder("vit-tiny", (64, 48), drop_path_rate=0.5)
    rates = [block.drop_path.drop_prob for block in encoder.backbone.blocks[1:]]
    assert rates == pytest.approx([0.5 / 3, 1.0 / 3, 0.5])  # linear decay, block 0 none
    images = torch.randn(2, 3, 64, 48)
    encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), encoder(images))
    encoder.train()
    torch.manual_seed(3)
    with torch.no_grad():
        assert not torch.allclose(encoder(images), encoder(images))
