import pytest

from glsmamba.errors import ConfigError
from glsmamba.models import create_model, list_models, register_model
from glsmamba.models.flops import meta_construction
from glsmamba.models.glsmamba import GLSMamba

PRESETS = [
    "glsmamba-b", "glsmamba-h", "glsmamba-b-lr", "glsmamba-tiny", "glsmamba-demo",
    "glsmamba-b-unified",
    "glsmamba-b-unified-spatial", "glsmamba-b-no-stmm", "glsmamba-b-no-lrm", "vitpose-b",
    "vitpose-tiny", "trans-b-lr", "trans-b-nr", "trans-b-hr",
]


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_list_models_has_every_preset_with_a_description():
    listed = dict(list_models())
    assert set(PRESETS) <= set(listed)
    assert all(listed[name].strip() for name in PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_constructs_on_meta(name):
    with meta_construction():
        model = create_model(name)
    assert next(model.parameters()).is_meta
    assert model.input_size in ((192, 256), (96, 128))
    assert _trainable(model) > 0


def test_glsmamba_b_trainable_parameters_match_the_paper():
    with meta_construction():
        model = create_model("glsmamba-b")
    assert abs(_trainable(model) - 9.8e6) / 9.8e6 < 0.05
    assert all(not p.requires_grad for p in model.encoder.parameters())


def test_overrides_apply_and_unknown_ones_fail():
    with meta_construction():
        model = create_model("glsmamba-b", num_joints=15, dim=64, gsm_depth=1, lrm_depth=1,
                             d_state=4, scan_types=("unified",), use_stmm=False,
                             freeze_encoder=False, encoder_arch="vit-s", input_size=(96, 128),
                             num_frames=3, scan_backend="reference")
    assert model.head.final_layer.out_channels == 15 and len(model.blocks) == 2
    assert model.input_size == (96, 128) and model.num_frames == 3
    assert any(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(ConfigError, match="unknown override.*bogus"):
        create_model("glsmamba-tiny", bogus=1)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("glsmamba-zz")
    with pytest.raises(ConfigError):
        create_model("glsmamba-tiny", num_frames=4)


def test_register_model_adds_a_preset():
    register_model("test-small", GLSMamba, "for tests", encoder_arch="vit-tiny",
                   input_size=(48, 64), dim=16, gsm_depth=1, lrm_depth=0, num_frames=1)
    assert ("test-small", "for tests") in list_models()
    assert create_model("test-small").dim == 16
    with pytest.raises(ConfigError):
        register_model("test-bad", GLSMamba, "bad", not_an_argument=3)


def test_cli_models_and_info(capsys):
    from glsmamba.cli import main

    assert main(["models", "--params"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS)
    assert "10.077 M" in out  # glsmamba-b trainable parameters
    assert main(["info", "glsmamba-tiny", "--frames", "3", "--size", "64x48"]) == 0
    out = capsys.readouterr().out
    assert "clip 3 x 64 x 48" in out
    for part in ("encoder", "embedding", "gsm", "lrm", "head", "total"):
        assert part in out
    assert main(["info", "glsmamba-tiny", "--size", "64by48"]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["info", "no-such-model"]) == 2
