"""SimSiam (Chen & He 2021): projector 3 x (Linear-BN) with ReLU between, BN on the output; predictor
Linear-BN-ReLU-Linear with a 4x bottleneck; symmetric negative cosine with stop-gradient on the
target branch; the predictor keeps a fixed lr."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import embedding_std, simsiam_loss
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod, on_off
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe

__all__ = ["SimSiam"]


class SimSiam(SSLMethod):
    name = "simsiam"
    title = "SimSiam"
    fixed_lr_prefixes = ("predictor.",)
    # Paper: 2048 wide, predictor bottleneck 512
    hparams_spec = {
        "proj_dim": HParam(2048, 128, int, "projector output width"),
        "proj_hidden_dim": HParam(2048, 128, int, "projector hidden width (default: backbone width)"),
        "pred_hidden_dim": HParam(512, 32, int, "predictor bottleneck width (SimSiam, BYOL)"),
        "stop_gradient": HParam(
            True,
            True,
            help="SimSiam stop-gradient (off only to demonstrate collapse)",
            choices=("on", "off"),
            convert=on_off,
        ),
    }
    # SGD 0.05, wd 1e-4, 100 epochs, predictor at a fixed lr
    recipes = {
        "cnn": cnn_recipe(optimizer="sgd", base_learning_rate=0.05, weight_decay=1e-4, num_train_epochs=100),
        "vit": VIT,
        "tiny": TINY,
    }

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        out = h["proj_dim"]
        self.projector = MLPHead(
            self.dim, h["proj_hidden_dim"] or out, out, 3, bn=True, last_bn=True, last_bn_affine=False
        )
        self.predictor = MLPHead(out, h["pred_hidden_dim"] or max(1, out // 4), out, 2, bn=True)
        convert_to_global_bn(self)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = views[0].shape[0]
        h = self.features(torch.cat(views))
        z = self.projector(h)
        p = self.predictor(z)
        loss = simsiam_loss(p[:b], p[b:], z[:b], z[b:], stop_gradient=self.hparams["stop_gradient"])
        return loss, {"embedding_std": embedding_std(z[:b]), "feature_std": embedding_std(h[:b])}
