"""Training a dense decoder on a frozen encoder's precomputed feature maps.

The encoder is frozen, so its feature maps are computed once per image
(:func:`~genssl_hf.models.dense_heads.backbone_feature_maps`) and only the decoder trains: each step
draws a seeded mini-batch of cached maps. Segmentation minimises MONAI's ``DiceCELoss`` (sigmoid:
findings overlap, so each is its own binary map; Dice pooled over the batch, so a batch without a
finding does not reward an empty map by chance); detection minimises the CenterNet loss
(:func:`~genssl_hf.models.centernet.centernet_loss`). AdamW with a cosine schedule and a short
linear warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from genssl_hf.models.centernet import centernet_loss

__all__ = ["DenseFitConfig", "fit_dense_decoder", "predict_dense", "segmentation_loss", "detection_loss"]


@dataclass(frozen=True)
class DenseFitConfig:
    max_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    seed: int = 0

    def __post_init__(self):
        for name in ("max_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0; got {self.learning_rate}")


def segmentation_loss() -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    from monai.losses import DiceCELoss

    dice_ce = DiceCELoss(sigmoid=True, batch=True)
    return lambda pred, target: dice_ce(pred, target["masks"])


def detection_loss() -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    return centernet_loss


def fit_dense_decoder(
    decoder: nn.Module,
    feature_maps: Sequence[torch.Tensor],
    targets: dict[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
    config: DenseFitConfig = DenseFitConfig(),
) -> list[float]:
    """Train ``decoder`` in place on cached ``feature_maps`` (each ``(N, ...)``) and per-image
    ``targets`` (each ``(N, ...)``); returns the loss of every step."""
    n = int(feature_maps[0].shape[0])
    if n == 0:
        raise ValueError("no training images for the dense decoder")
    if any(int(t.shape[0]) != n for t in [*feature_maps, *targets.values()]):
        raise ValueError("feature maps and targets must hold the same number of images")
    torch.manual_seed(config.seed)  # the decoder's initial weights are drawn by the caller; this seeds dropout etc.
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, min(config.warmup_steps, config.max_steps // 5))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, config.max_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    decoder.train()
    losses = []
    batch = min(config.batch_size, n)
    for _ in range(config.max_steps):
        index = torch.randperm(n, generator=generator)[:batch]
        pred = decoder([m[index] for m in feature_maps])
        loss = loss_fn(pred, {k: v[index] for k, v in targets.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    decoder.eval()
    return losses


@torch.no_grad()
def predict_dense(decoder: nn.Module, feature_maps: Sequence[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """The decoder's raw output maps for every cached image, in eval mode."""
    decoder.eval()
    n = int(feature_maps[0].shape[0])
    return torch.cat([decoder([m[i : i + batch_size] for m in feature_maps]) for i in range(0, n, batch_size)])
