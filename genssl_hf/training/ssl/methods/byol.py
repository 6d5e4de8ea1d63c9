"""BYOL (Grill et al. 2020): an online network (backbone, projector, predictor) predicts the
projection that a target network, an EMA of the online backbone and projector, gives the other
view; no negatives. Projector and predictor are Linear-BN-ReLU-Linear (4096 hidden, 256 out at full
scale), the target momentum rises from ``target_momentum`` (0.996) to 1 on a half cosine, the loss
is the symmetrised normalised MSE (:func:`~genssl_hf.training.ssl.losses.byol_loss`). The target's
BN runs in train mode, as in the paper. Recipe on ResNets: LARS, base lr 0.2, wd 1.5e-6, 10 warm-up
epochs of 300 (the paper's 300-epoch setting)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genssl_hf.models import pooled_features
from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import byol_loss, embedding_std
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe
from genssl_hf.training.ssl.momentum import cosine_momentum, ema_update, frozen_copy

__all__ = ["BYOL"]


class BYOL(SSLMethod):
    name = "byol"
    title = "BYOL"
    hparams_spec = {
        "proj_dim": HParam(256, 64, int, "projector output width"),
        "proj_hidden_dim": HParam(4096, None, int, "projector hidden width (default: backbone width)"),
        "pred_hidden_dim": HParam(
            4096,
            None,
            int,
            "predictor hidden width (SimSiam: its bottleneck; BYOL default: the projector's hidden width)",
        ),
        # tiny: 0.9, as runs of a few hundred steps need a target that keeps up (0.99 stayed below
        # random-init features after 150 steps on phantoms; BENCHMARKS.md, BYOL)
        "target_momentum": HParam(0.996, 0.9, float, "BYOL target-network momentum at step 0 (cosine to 1)"),
    }
    # tiny: base lr 5e-3 (2e-3, the others' tiny recipe, left BYOL below random-init features in 150 steps)
    recipes = {
        "cnn": cnn_recipe(
            optimizer="lars", base_learning_rate=0.2, weight_decay=1.5e-6, num_train_epochs=300, warmup_epochs=10
        ),
        "vit": VIT,
        "tiny": {**TINY, "base_learning_rate": 5e-3},
    }

    @classmethod
    def check_hparams(cls, h: dict[str, Any]) -> None:
        super().check_hparams(h)
        if not 0.0 <= float(h["target_momentum"]) < 1.0:
            raise ValueError(f"--target_momentum must lie in [0, 1), got {h['target_momentum']}")

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        hidden = h["proj_hidden_dim"] or self.dim
        self.projector = MLPHead(self.dim, hidden, h["proj_dim"], 2, bn=True)
        self.predictor = MLPHead(h["proj_dim"], h["pred_hidden_dim"] or hidden, h["proj_dim"], 2, bn=True)
        convert_to_global_bn(self)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)
        self.register_buffer("momentum", torch.tensor(float(h["target_momentum"])))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = views[0].shape[0]
        x = torch.cat(views)
        h = self.features(x)
        z = self.projector(h)
        p = self.predictor(z)
        with torch.no_grad():
            self.target_backbone.train(self.training)
            self.target_projector.train(self.training)
            t = self.target_projector(pooled_features(self.target_backbone, x))
        loss = byol_loss(p[:b], p[b:], t[:b], t[b:])
        return loss, {
            "embedding_std": embedding_std(z[:b]),
            "feature_std": embedding_std(h[:b]),
            "target_momentum": self.momentum.clone(),
        }

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(float(self.hparams["target_momentum"]), step, total_steps)
        self.momentum.fill_(m)
        ema_update(((self.backbone, self.target_backbone), (self.projector, self.target_projector)), m)
