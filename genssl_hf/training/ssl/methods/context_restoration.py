"""Context restoration (Chen et al. 2019): random pairs of small patches of the view swap places
(:func:`~genssl_hf.training.ssl.pretext.swap_patches`) and a decoder on the backbone's spatial
features (:class:`~genssl_hf.training.ssl.pretext.PixelDecoder`) restores the original view, L2 loss
over the whole image. Logged beside the loss: the error of the batch's mean image (the trivial
reconstruction the restoration must beat) and of the corrupted input itself."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genssl_hf.training.ssl.losses import embedding_std
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe
from genssl_hf.training.ssl.pretext import PixelDecoder, feature_grid_scale, spatial_features, swap_patches

__all__ = ["ContextRestoration", "RESTORATION_HPARAMS", "RestorationHead", "check_restoration_hparams"]

# Patch side as a fraction of the view's side and swaps per image: our choice for 32-224 px views
# (Chen et al. tune both per data set); 10 swaps move up to ~30 % of the image. tiny: 4 swaps, as
# 10 left resnet-tiny's probe at its random-init level after 150 steps on phantoms (84.59 vs 84.63
# mAUC; 4 swaps: 85.44; the procedure of tests/test_ssl_beats_baseline.py, BENCHMARKS.md).
RESTORATION_HPARAMS = {
    "restoration_patch_fraction": HParam(0.125, 0.125, float, "context restoration: patch side / view side"),
    "restoration_swaps": HParam(10, 4, int, "context restoration: patch pairs swapped per image"),
    "decoder_hidden_dim": HParam(512, 128, int, "context restoration: decoder hidden width"),
}


def check_restoration_hparams(h: dict[str, Any]) -> None:
    if not 0.0 < float(h["restoration_patch_fraction"]) <= 0.5:
        raise ValueError(f"--restoration_patch_fraction must lie in (0, 0.5], got {h['restoration_patch_fraction']}")
    if int(h["restoration_swaps"]) < 1:
        raise ValueError(f"--restoration_swaps must be >= 1, got {h['restoration_swaps']}")
    if int(h["decoder_hidden_dim"]) < 1:
        raise ValueError(f"--decoder_hidden_dim must be >= 1, got {h['decoder_hidden_dim']}")


class RestorationHead(nn.Module):
    """The decoder and the corruption settings; :meth:`loss` runs corruption -> backbone -> decoder."""

    def __init__(self, backbone: nn.Module, dim: int, hparams: dict[str, Any]):
        super().__init__()
        self.image_size = int(backbone.config.image_size)
        self.patch_size = max(1, round(float(hparams["restoration_patch_fraction"]) * self.image_size))
        self.num_swaps = int(hparams["restoration_swaps"])
        self.decoder = PixelDecoder(
            dim, int(hparams["decoder_hidden_dim"]), feature_grid_scale(backbone, self.image_size)
        )

    def loss(self, backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"context restoration views must be {self.image_size} px, got {tuple(x.shape[-2:])}")
        target = x[:, :1]  # grayscale: every channel is the same
        corrupted = swap_patches(x, self.patch_size, self.num_swaps)
        grid = spatial_features(backbone, corrupted)
        restored = self.decoder(grid)
        loss = F.mse_loss(restored.float(), target.float())
        with torch.no_grad():
            mean_image = F.mse_loss(target.mean(dim=0, keepdim=True).expand_as(target), target)
            identity = F.mse_loss(corrupted[:, :1], target)
        return loss, {
            "restoration_mse": loss.detach(),
            "mean_image_mse": mean_image,
            "corrupted_mse": identity,
            "pooled": grid.detach().flatten(2).mean(dim=2),
        }


class ContextRestoration(SSLMethod):
    name = "context_restoration"
    title = "Context restoration"
    num_views = 1
    # crop + flip only; intensity jitter would make the L2 target itself noisy
    view_overrides = {"rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0, "blur_p": 0.0, "crop_scale_min": 0.5}
    hparams_spec = dict(RESTORATION_HPARAMS)
    # Chen et al. train their encoder-decoder with Adam; ResNets get the tiny AdamW recipe at batch 256
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
        check_restoration_hparams(h)

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        self.restoration = RestorationHead(backbone, self.dim, self.hparams)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, m = self.restoration.loss(self.backbone, views[0])
        pooled = m.pop("pooled")
        return loss, {**m, "feature_std": embedding_std(pooled), "embedding_std": embedding_std(pooled)}
