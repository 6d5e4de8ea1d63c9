"""SimCLR (Chen et al. 2020): two views, projector Linear-BN-ReLU-Linear (``proj_layers`` 2; 3 as in
SimCLR v2), NT-Xent with temperature over the global batch (negatives gathered with gradient),
global BN (heads and, with >1 process, the ResNet body)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import embedding_std, nt_xent_loss
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe

__all__ = ["SimCLR"]


class SimCLR(SSLMethod):
    name = "simclr"
    title = "SimCLR"
    hparams_spec = {
        "temperature": HParam(0.1, 0.2, float, "softmax temperature of the contrastive loss"),
        "proj_dim": HParam(128, 64, int, "projector output width"),
        "proj_hidden_dim": HParam(None, None, int, "projector hidden width (default: backbone width)"),
        "proj_layers": HParam(2, 2, int, "SimCLR projector depth: 2 (v1) or 3 (v2)"),
    }
    # LARS, base lr 0.3, weight decay 1e-6, 10 warm-up epochs of 100
    recipes = {
        "cnn": cnn_recipe(
            optimizer="lars", base_learning_rate=0.3, weight_decay=1e-6, num_train_epochs=100, warmup_epochs=10
        ),
        "vit": VIT,
        "tiny": TINY,
    }

    @classmethod
    def check_hparams(cls, h: dict[str, Any]) -> None:
        super().check_hparams(h)
        if h["proj_layers"] not in (2, 3):
            raise ValueError(f"--proj_layers must be 2 or 3 (SimCLR v1 / v2), got {h['proj_layers']}")

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        self.projector = MLPHead(self.dim, h["proj_hidden_dim"] or self.dim, h["proj_dim"], h["proj_layers"], bn=True)
        convert_to_global_bn(self)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = views[0].shape[0]
        h = self.features(torch.cat(views))
        z = self.projector(h)
        loss = nt_xent_loss(z[:b], z[b:], self.hparams["temperature"])
        return loss, {"embedding_std": embedding_std(z[:b]), "feature_std": embedding_std(h[:b])}
