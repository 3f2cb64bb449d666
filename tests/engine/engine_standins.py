"""Tiny stand-ins shared by the engine tests (a model with the glsmamba API, a dataset)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class TinyPoseModel(nn.Module):
    """encode: per-frame linear conv at 1/4; forward_features: temporal mean + 1x1 head."""

    def __init__(self, num_joints: int = 3, channels: int = 16, input_size=(16, 16),
                 dropout: float = 0.1):
        super().__init__()
        self.input_size = tuple(input_size)
        self.heatmap_size = (input_size[0] // 4, input_size[1] // 4)
        self.encoder = nn.Sequential(nn.Conv2d(3, channels, 4, stride=4))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Conv2d(channels, num_joints, 1)

    def encode(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        feats = self.encoder(clip.flatten(0, 1))          # (B*T, C, h, w)
        return feats.unflatten(0, (b, t))                 # (B, T, C, h, w)

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(feats.mean(dim=1)))  # (B, K, h, w)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.encode(clip))


class TinyClipSet(torch.utils.data.Dataset):
    """Fixed random clips whose targets are a fixed function of the pixels."""

    def __init__(self, count: int = 16, frames: int = 3, size: int = 16, joints: int = 3,
                 seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.clips = torch.randn(count, frames, 3, size, size, generator=gen)
        teacher = nn.Conv2d(3, joints, 4, stride=4)
        with torch.no_grad():
            teacher.weight.copy_(torch.randn(teacher.weight.shape, generator=gen) * 0.2)
            teacher.bias.zero_()
            self.heatmaps = teacher(self.clips.mean(dim=1))   # (N, K, h, w)
        self.weights = torch.ones(count, joints)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        return {"clip": self.clips[index], "heatmaps": self.heatmaps[index],
                "target_weight": self.weights[index], "index": index}


def tiny_config(epochs: int = 3, milestones=(2,), **train) -> dict:
    """The default config with a tiny batch and schedule; ``train`` overrides train keys."""
    from glsmamba.config import DEFAULTS
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(batch_size=4, workers=0)
    config["train"].update(epochs=epochs, lr=1e-2, milestones=list(milestones), log_interval=1,
                           val_interval=0)
    config["train"].update(train)
    return config


def make_trainer(work_dir, config, resume=False, logs=None, **kwargs):
    """A Trainer of TinyPoseModel on TinyClipSet, seeded; ``logs`` collects its log lines."""
    from glsmamba.engine.trainer import Trainer
    torch.manual_seed(0)
    log = logs.append if logs is not None else (lambda *_: None)
    return Trainer(TinyPoseModel(), TinyClipSet(), config, work_dir, resume=resume,
                   progress=False, log=log, **kwargs)
