"""Optimiser parameter groups: no weight decay on norms, biases, embeddings, A_log, D."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from glsmamba.engine.optim import no_weight_decay_reason, param_groups, split_decay
from glsmamba.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return create_model("glsmamba-tiny")


def test_glsmamba_groups(tiny):
    decay, exempt = split_decay(tiny)
    decayed = {n for n, _ in decay}
    exempt_names = {n: r for n, _, r in exempt}
    trainable = {n for n, p in tiny.named_parameters() if p.requires_grad}
    assert decayed | set(exempt_names) == trainable and not decayed & set(exempt_names)
    for name in trainable:
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("A_log", "D"):
            assert exempt_names[name] == "_no_weight_decay flag"           # the flags are live
        if leaf.endswith("bias") or ".norm" in name or "embed.temporal" in name:
            assert name in exempt_names, name
        if leaf in ("x_proj_weight", "dt_proj_weight") or ".in_proj.weight" in name:
            assert name in decayed, name
    assert any(n.endswith("A_log") for n in exempt_names)
    assert any("dt_proj_bias" in n for n in exempt_names)                 # 2-D, still a bias
    assert "embed.temporal" in exempt_names                               # 2-D embedding
    conv_kernels = [n for n in decayed if n.endswith("dcn.weight") or n.endswith("conv.weight")]
    assert conv_kernels                                                   # kernels do decay
    frozen = {n for n, p in tiny.named_parameters() if not p.requires_grad}
    assert frozen and not frozen & (decayed | set(exempt_names))        # the frozen encoder


def test_rules_on_plain_layers():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.gain = nn.Parameter(torch.zeros(8, 8))

        def no_weight_decay(self):
            return {"pos_embed"}

    holder = Holder()
    table = nn.Embedding(10, 4)
    norm = nn.LayerNorm(8)
    linear = nn.Linear(8, 8)
    # names alone exempt nothing: the module has to list the embedding
    assert no_weight_decay_reason("pos_embed", holder.pos_embed, holder) is None
    assert no_weight_decay_reason("pos_embed", holder.pos_embed, holder, {"pos_embed"}) is not None
    assert no_weight_decay_reason("gain", holder.gain, holder) is None
    assert no_weight_decay_reason("table.weight", table.weight, table) == "embedding"
    assert no_weight_decay_reason("norm.weight", norm.weight, norm) is not None
    assert no_weight_decay_reason("fc.weight", linear.weight, linear) is None
    assert no_weight_decay_reason("fc.bias", linear.bias, linear) is not None
    assert no_weight_decay_reason("gain", holder.gain, holder, {"gain"}) is not None
    # a model without no_weight_decay(): what its submodules list, with their prefix
    tree = nn.Sequential(linear, holder)
    _, exempt = split_decay(tree)
    assert {n for n, _, _ in exempt} == {"0.bias", "1.pos_embed"}


_OLD_NAME_RULES_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding, nn.LayerNorm,
                          nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)


def _old_exempt(model: nn.Module) -> set[str]:
    """The rules optim.py applied before models declared no_weight_decay() (names guessed:
    ``bias`` endings, ``embed`` / ``token`` in module paths): the behaviour to keep."""
    names = set()
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{leaf}" if module_name else leaf
            if (getattr(param, "_no_weight_decay", False) or param.ndim <= 1
                    or leaf.endswith("bias") or isinstance(module, _OLD_NAME_RULES_LAYERS[3:])
                    or isinstance(module, nn.Embedding)
                    or (not isinstance(module, _OLD_NAME_RULES_LAYERS)
                        and any(key in name for key in ("embed", "token")))):
                names.add(name)
    return names


@pytest.mark.parametrize("name, overrides", [
    ("glsmamba-tiny", {}),
    ("vitpose-tiny", {}),
    ("glsmamba-b", dict(encoder_arch="vit-tiny", input_size=(96, 128), dim=32)),
    ("glsmamba-b-shared-s6", dict(encoder_arch="vit-tiny", input_size=(96, 128), dim=32)),
    ("trans-b-lr", dict(encoder_arch="vit-tiny", input_size=(96, 128), dim=32, depth=1,
                        num_heads=2)),
])
def test_model_declared_exemptions_match_the_old_name_rules(name, overrides):
    """Which parameters decay is unchanged, frozen encoder trainable or not."""
    model = create_model(name, **overrides)
    for param in model.parameters():
        param.requires_grad_(True)                    # the encoder's pos_embed included
    _, exempt = split_decay(model)
    assert {n for n, _, _ in exempt} == _old_exempt(model)
    assert "encoder.backbone.pos_embed" in model.no_weight_decay()


def test_trainer_optimizer_uses_the_groups(tiny, tmp_path):
    """AdamW in the trainer: a decayed weight shrinks with zero gradient, A_log does not."""
    from glsmamba.config import DEFAULTS
    from glsmamba.engine.trainer import Trainer
    config = copy.deepcopy(DEFAULTS)
    config["train"].update(weight_decay=0.5, lr=0.1, amp="off")
    config["data"]["batch_size"] = 1               # one sample: a split the trainer accepts
    model = copy.deepcopy(tiny)
    trainer = Trainer(model, [None], config, tmp_path / "run", progress=False,
                      log=lambda *_: None)
    groups = trainer.optimizer.param_groups
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.5]
    a_log = model.blocks[0].mixer.s6.A_log
    weight = model.blocks[0].mixer.s6.x_proj_weight
    before_a, before_w = a_log.detach().clone(), weight.detach().clone()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    assert torch.equal(a_log, before_a)                                   # no decay
    torch.testing.assert_close(weight, before_w * (1 - 0.1 * 0.5))        # decoupled decay


def test_param_groups_cover_each_parameter_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.LayerNorm(4))
    groups = param_groups(model, 1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
