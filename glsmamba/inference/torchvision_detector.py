"""Optional person detector: torchvision's Faster R-CNN with user-supplied weights.

Only used with ``glsmamba infer --detector torchvision --detector-weights PATH`` and only
when torchvision is installed; nothing is downloaded.
"""
from __future__ import annotations

import numpy as np
import torch

from glsmamba.errors import ConfigError


class TorchvisionDetector:
    def __init__(self, weights: str | None, score_thr: float = 0.5):
        try:
            from torchvision.models.detection import fasterrcnn_resnet50_fpn
        except ImportError:
            raise ConfigError("--detector torchvision needs torchvision installed") from None
        if not weights:
            raise ConfigError("--detector torchvision needs --detector-weights (a local file)")
        self.model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval()
        self.score_thr = score_thr

    @torch.no_grad()
    def __call__(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = torch.from_numpy(frame_bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
        out = self.model([image])[0]
        keep = (out["labels"] == 1) & (out["scores"] >= self.score_thr)   # COCO person
        boxes = out["boxes"][keep].numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        return xywh.astype(np.float32), out["scores"][keep].numpy().astype(np.float32)
