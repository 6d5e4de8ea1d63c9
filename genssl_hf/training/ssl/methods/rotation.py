"""Rotation prediction (Gidaris et al. 2018): all four rotations of every image in the batch, a 4-way
classifier (MLP head) on the pooled features, cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import embedding_std, rotation_loss
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe
from genssl_hf.training.ssl.transforms import rotate_batch_4way

__all__ = ["RotationPrediction"]


class RotationPrediction(SSLMethod):
    name = "rotation"
    title = "Rotation"
    num_views = 1
    # Gidaris et al. train with crop + flip only: a small random rotation or intensity jitter adds
    # nothing to a 4-way rotation task
    view_overrides = {"rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0, "blur_p": 0.0, "crop_scale_min": 0.5}
    hparams_spec = {"proj_hidden_dim": HParam(None, None, int, "projector hidden width (default: backbone width)")}
    # SGD 0.1, wd 5e-4, batch 128, 100 epochs (their step schedule: our half-cycle cosine)
    recipes = {
        "cnn": cnn_recipe(
            optimizer="sgd",
            base_learning_rate=0.1,
            weight_decay=5e-4,
            num_train_epochs=100,
            per_device_train_batch_size=128,
        ),
        "vit": VIT,
        "tiny": TINY,
    }

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        self.classifier = MLPHead(self.dim, self.hparams["proj_hidden_dim"] or self.dim, 4, 2, bn=True)
        convert_to_global_bn(self.classifier)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, labels = rotate_batch_4way(views[0])
        h = self.features(x)
        logits = self.classifier(h)
        loss = rotation_loss(logits, labels)
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return loss, {"rotation_accuracy": acc, "feature_std": embedding_std(h), "embedding_std": embedding_std(h)}
