"""Jigsaw (Noroozi & Favaro 2016): the view's ``grid x grid`` tiles are rearranged by one of a fixed,
Hamming-distance-maximal set of permutations (:func:`~genssl_hf.training.ssl.pretext.hamming_permutations`)
and an MLP head on the pooled features names the permutation, cross-entropy. The whole shuffled view
goes through the backbone (see :mod:`~genssl_hf.training.ssl.pretext` for why not tile by tile)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import embedding_std
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe
from genssl_hf.training.ssl.pretext import hamming_permutations, shuffle_tiles

__all__ = ["Jigsaw", "JIGSAW_HPARAMS", "JigsawHead", "check_jigsaw_hparams"]

# Noroozi & Favaro: 3 x 3 tiles, 100 permutations (their Table 3: 100 to 1000 transfer about
# equally); tiny: 2 x 2 tiles and all 24 permutations, a task a few hundred CPU steps can learn.
JIGSAW_HPARAMS = {
    "jigsaw_grid": HParam(3, 2, int, "jigsaw: tiles per side"),
    "jigsaw_permutations": HParam(100, 24, int, "jigsaw: size of the Hamming-maximal permutation set"),
}


def check_jigsaw_hparams(h: dict[str, Any]) -> None:
    if not 2 <= int(h["jigsaw_grid"]) <= 4:
        raise ValueError(f"--jigsaw_grid must lie in [2, 4], got {h['jigsaw_grid']}")
    hamming_permutations(int(h["jigsaw_grid"]) ** 2, int(h["jigsaw_permutations"]))  # raises on a bad size


class JigsawHead(nn.Module):
    """The permutation set (a buffer, saved with checkpoints) and the permutation classifier."""

    def __init__(self, dim: int, hidden_dim: int, grid: int, num_permutations: int):
        super().__init__()
        self.grid = int(grid)
        perms = hamming_permutations(self.grid**2, int(num_permutations))
        self.register_buffer("permutations", torch.tensor(perms, dtype=torch.long))
        self.classifier = MLPHead(dim, hidden_dim, len(perms), 2, bn=True)

    def loss(self, features, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cross-entropy, accuracy, pooled features) for views ``x`` shuffled by random members of the set."""
        labels = torch.randint(0, len(self.permutations), (x.shape[0],)).to(x.device)
        h = features(shuffle_tiles(x, self.grid, self.permutations, labels))
        logits = self.classifier(h)
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return F.cross_entropy(logits.float(), labels), acc, h


class Jigsaw(SSLMethod):
    name = "jigsaw"
    title = "Jigsaw"
    num_views = 1
    # crop + flip, as for rotation: intensity jitter does not make tile order harder to read
    view_overrides = {"rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0, "blur_p": 0.0, "crop_scale_min": 0.5}
    hparams_spec = {
        **JIGSAW_HPARAMS,
        "proj_hidden_dim": HParam(None, None, int, "projector hidden width (default: backbone width)"),
    }
    # SGD 0.01 (Noroozi & Favaro, batch 256, 350k iterations ~ 70 ImageNet epochs; our cosine). tiny:
    # base lr 5e-4, as at 2e-3 the tiny ViT collapsed in 150 steps on phantoms (jigsaw accuracy at
    # chance, probe 65.8 vs 79.2 mAUC for its random-init features; 5e-4: 84.6); BENCHMARKS.md
    recipes = {
        "cnn": cnn_recipe(optimizer="sgd", base_learning_rate=0.01, weight_decay=5e-4, num_train_epochs=70),
        "vit": VIT,
        "tiny": {**TINY, "base_learning_rate": 5e-4},
    }

    @classmethod
    def check_hparams(cls, h: dict[str, Any]) -> None:
        super().check_hparams(h)
        check_jigsaw_hparams(h)

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        self.jigsaw = JigsawHead(self.dim, h["proj_hidden_dim"] or self.dim, h["jigsaw_grid"], h["jigsaw_permutations"])
        convert_to_global_bn(self.jigsaw)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, acc, h = self.jigsaw.loss(self.features, views[0])
        return loss, {"jigsaw_accuracy": acc, "feature_std": embedding_std(h), "embedding_std": embedding_std(h)}
