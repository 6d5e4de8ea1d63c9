"""Multi-task pretext: rotation prediction, jigsaw and context restoration on one shared backbone with
one head each, trained jointly on the weighted sum of their losses

    L = w_rot * CE_rotation + w_jig * CE_jigsaw + w_res * L2_restoration

(joint pretext heads as in Doersch & Zisserman 2017's multi-task self-supervision; the weights are
options, 1 each by default). Each task sees its own corruption of the same view: the four rotations,
one tile permutation, one set of patch swaps."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import embedding_std, rotation_loss
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod
from genssl_hf.training.ssl.methods.context_restoration import (
    RESTORATION_HPARAMS,
    RestorationHead,
    check_restoration_hparams,
)
from genssl_hf.training.ssl.methods.jigsaw import JIGSAW_HPARAMS, JigsawHead, check_jigsaw_hparams
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe
from genssl_hf.training.ssl.transforms import rotate_batch_4way

__all__ = ["MultiTaskPretext"]

TASK_WEIGHTS = ("rotation_weight", "jigsaw_weight", "restoration_weight")


class MultiTaskPretext(SSLMethod):
    name = "multitask"
    title = "Multi-task pretext"
    num_views = 1
    view_overrides = {"rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0, "blur_p": 0.0, "crop_scale_min": 0.5}
    hparams_spec = {
        "rotation_weight": HParam(1.0, 1.0, float, "multi-task: weight of the rotation loss (0: off)"),
        "jigsaw_weight": HParam(1.0, 1.0, float, "multi-task: weight of the jigsaw loss (0: off)"),
        "restoration_weight": HParam(1.0, 1.0, float, "multi-task: weight of the context-restoration loss (0: off)"),
        **JIGSAW_HPARAMS,
        **RESTORATION_HPARAMS,
        "proj_hidden_dim": HParam(None, None, int, "projector hidden width (default: backbone width)"),
    }
    recipes = {
        "cnn": cnn_recipe(
            optimizer="adamw", base_learning_rate=1e-3, weight_decay=0.05, num_train_epochs=100, warmup_epochs=5
        ),
        "vit": VIT,
        "tiny": TINY,
    }

    @classmethod
    def check_hparams(cls, h: dict[str, Any]) -> None:
        super().check_hparams(h)
        weights = [float(h[k]) for k in TASK_WEIGHTS]
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(
                f"--rotation_weight / --jigsaw_weight / --restoration_weight must be >= 0 and not all 0, got {weights}"
            )
        check_jigsaw_hparams(h)
        check_restoration_hparams(h)

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        hidden = h["proj_hidden_dim"] or self.dim
        self.rotation = MLPHead(self.dim, hidden, 4, 2, bn=True)
        self.jigsaw = JigsawHead(self.dim, hidden, h["jigsaw_grid"], h["jigsaw_permutations"])
        convert_to_global_bn(self.rotation)  # the heads' BN, as in the single-task methods
        convert_to_global_bn(self.jigsaw)
        self.restoration = RestorationHead(backbone, self.dim, h)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.hparams
        x = views[0]
        metrics: dict[str, torch.Tensor] = {}
        loss = x.new_zeros((), dtype=torch.float32)
        if h["rotation_weight"] > 0:
            rotated, labels = rotate_batch_4way(x)
            feats = self.features(rotated)
            logits = self.rotation(feats)
            loss = loss + h["rotation_weight"] * rotation_loss(logits, labels)
            metrics["rotation_accuracy"] = (logits.detach().argmax(dim=1) == labels).float().mean()
            metrics["feature_std"] = embedding_std(feats[: x.shape[0]])
        if h["jigsaw_weight"] > 0:
            jig, metrics["jigsaw_accuracy"], feats = self.jigsaw.loss(self.features, x)
            loss = loss + h["jigsaw_weight"] * jig
            metrics.setdefault("feature_std", embedding_std(feats))
        if h["restoration_weight"] > 0:
            res, m = self.restoration.loss(self.backbone, x)
            loss = loss + h["restoration_weight"] * res
            pooled = m.pop("pooled")
            metrics.update(m)
            metrics.setdefault("feature_std", embedding_std(pooled))
        metrics["embedding_std"] = metrics["feature_std"]
        return loss, metrics
