"""Batched tensor transforms for the training loop (no torchvision): AdaIN on tensors and the MAE
augmentation (random resized crop + horizontal flip, via kornia).

Two AdaIN placements, recorded in every run config as ``adain_mode``:

* ``"after_crop"`` (the paper's code): augment first, then align each *crop* to mu(Y), sigma(Y), so the
  network input and reconstruction target always have exactly the reference statistics;
* ``"before_crop"`` (what :class:`AdaINImageProcessor` does): align the whole image, then crop, so crops
  keep their natural variation of brightness and contrast around the reference.
"""

from __future__ import annotations

from typing import Sequence

import torch

from genssl_hf.processing.image_processor import PAPER_ADAIN_MEAN, PAPER_ADAIN_STD

ADAIN_MODES = ("after_crop", "before_crop")


def adain_batch(
    x: torch.Tensor, mean: float | torch.Tensor, std: float | torch.Tensor, eps: float = 1e-3
) -> torch.Tensor:
    """AdaIN per sample of a (B, C, H, W) batch on the [0, 1] scale: statistics over (C, H, W) of each sample
    (grayscale replicated to C channels has identical channels), sigma(x) floored at ``eps``."""
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"adain_batch expects a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}")
    # NaN pixels are not checked here (that would sync the device every step): the data loaders
    # refuse them (genssl_hf.processing.collate.ImageCollator), and the loss guard catches the rest.
    xf = x.float()
    var, mu = torch.var_mean(xf, dim=(1, 2, 3), keepdim=True, correction=0)
    scale = torch.as_tensor(std, dtype=xf.dtype, device=xf.device) / var.sqrt().clamp_min(eps)
    return (xf - mu) * scale + torch.as_tensor(mean, dtype=xf.dtype, device=xf.device)


def check_view_settings(crop_scale: Sequence[float], adain_mode: str) -> None:
    """Clear errors for a random-resized-crop scale or an AdaIN placement that cannot work."""
    if adain_mode not in ADAIN_MODES:
        raise ValueError(f"adain_mode must be one of {ADAIN_MODES}, got {adain_mode!r}")
    if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(crop_scale)}")


class MAEAugment(torch.nn.Module):
    """The MAE pre-training augmentation on uint8 or [0, 1] batches: random resized crop to ``size`` with
    ``scale`` (default (0.5, 1.0), the GEN-SSL recipe) and ratio (3/4, 4/3), plus horizontal flip, then
    optional AdaIN (``adain_mode``) and normalisation, and replication to ``out_channels``.

    Input (B, 1 or 3, H, W); output (B, out_channels, size, size) float32. Randomness comes from the global
    torch RNG (seed it per step for exact resumes, see ``genssl_hf.training.common.seed_step``).
    """

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = (0.5, 1.0),
        hflip: bool = True,
        *,
        adain: bool = True,
        adain_mode: str = "after_crop",
        adain_mean: float = PAPER_ADAIN_MEAN,
        adain_std: float = PAPER_ADAIN_STD,
        adain_eps: float = 1e-3,
        image_mean: float = 0.5,
        image_std: float = 0.5,
        out_channels: int = 3,
    ):
        super().__init__()
        import kornia.augmentation as K

        check_view_settings(scale, adain_mode)
        self.size = int(size)
        self.adain, self.adain_mode = adain, adain_mode
        self.adain_mean, self.adain_std, self.adain_eps = float(adain_mean), float(adain_std), float(adain_eps)
        self.image_mean, self.image_std = float(image_mean), float(image_std)
        self.out_channels = int(out_channels)
        ops = [
            K.RandomResizedCrop((self.size, self.size), scale=tuple(scale), ratio=(3 / 4, 4 / 3), resample="bilinear")
        ]
        if hflip:
            ops.append(K.RandomHorizontalFlip())
        self.ops = K.AugmentationSequential(*ops)

    def config(self) -> dict:
        return {
            "size": self.size,
            "adain": self.adain,
            "adain_mode": self.adain_mode,
            "adain_mean": self.adain_mean,
            "adain_std": self.adain_std,
            "adain_eps": self.adain_eps,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "out_channels": self.out_channels,
        }

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 3:  # grayscale X-rays stored as RGB: keep one channel until the end (3x less work)
            x = x[:, :1]
        if self.adain and self.adain_mode == "before_crop":
            x = adain_batch(x, self.adain_mean, self.adain_std, self.adain_eps)
        x = self.ops(x)
        if self.adain and self.adain_mode == "after_crop":
            x = adain_batch(x, self.adain_mean, self.adain_std, self.adain_eps)
        x = (x - self.image_mean) / self.image_std
        if self.out_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous()
