"""Batched views for contrastive / Siamese / pretext pre-training on grayscale chest X-rays, with
kornia on tensors (no torchvision), on the training device, one call per batch.

Choices for chest X-rays (documented because natural-image recipes do not transfer as is):

* **random resized crop**, scale (0.2, 1.0) by default (MoCo v2 / SimSiam; SimCLR uses 0.08). A
  crop can cut a small lesion out of one view, the failure the GEN-SSL paper attributes to
  contrastive methods on CXR; raise ``crop_scale_min`` to test that claim;
* **horizontal flip** and a **small rotation** (+-10 degrees), as in MoCo-CXR (Sowrirajan et al.
  2021), which found these two the safe geometric changes for radiographs;
* **brightness / contrast** jitter (0.4 / 0.4 with probability 0.8, the MoCo v2 / SimCLR strength)
  and **Gaussian blur** (probability 0.5, sigma 0.1-2.0, kernel ~10 % of the side, SimCLR);
* **no hue or saturation** (grayscale images), no solarisation, no colour drop.

AdaIN runs **per view** as in MAE pre-training (``adain_mode="after_crop"``: after the geometric
changes, so each view carries exactly the reference statistics), and *before* the intensity jitter:
AdaIN is invariant to affine intensity changes, so jitter applied before it would be erased.
``adain_mode="before_crop"`` aligns the whole image first (what :class:`AdaINImageProcessor` does).
Randomness comes from the global torch RNG, seeded per step by the engine (exact resumes).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from genssl_hf.processing.augment import adain_batch, check_view_settings
from genssl_hf.processing.image_processor import PAPER_ADAIN_MEAN, PAPER_ADAIN_STD

__all__ = ["SSLViews", "rotate_batch_4way"]


class SSLViews(nn.Module):
    """uint8 or [0, 1] ``(B, 1|3, H, W)`` -> one augmented view ``(B, out_channels, size, size)`` per call."""

    def __init__(
        self,
        size: int,
        *,
        crop_scale: Sequence[float] = (0.2, 1.0),
        hflip: bool = True,
        rotation_degrees: float = 10.0,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        blur_p: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
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

        check_view_settings(crop_scale, adain_mode)
        for name, v in (("brightness", brightness), ("contrast", contrast), ("rotation_degrees", rotation_degrees)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        for name, v in (("jitter_p", jitter_p), ("blur_p", blur_p)):
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        self.settings = dict(
            size=int(size),
            crop_scale=[float(crop_scale[0]), float(crop_scale[1])],
            hflip=bool(hflip),
            rotation_degrees=float(rotation_degrees),
            brightness=float(brightness),
            contrast=float(contrast),
            jitter_p=float(jitter_p),
            blur_p=float(blur_p),
            blur_sigma=[float(blur_sigma[0]), float(blur_sigma[1])],
            adain=bool(adain),
            adain_mode=adain_mode,
            adain_mean=float(adain_mean),
            adain_std=float(adain_std),
            adain_eps=float(adain_eps),
            image_mean=float(image_mean),
            image_std=float(image_std),
            out_channels=int(out_channels),
        )
        self.size = int(size)
        geometric = [
            K.RandomResizedCrop(
                (self.size, self.size), scale=tuple(crop_scale), ratio=(3 / 4, 4 / 3), resample="bilinear"
            )
        ]
        if hflip:
            geometric.append(K.RandomHorizontalFlip())
        if rotation_degrees > 0:
            geometric.append(K.RandomRotation(degrees=float(rotation_degrees), p=1.0))
        self.geometric = K.AugmentationSequential(*geometric)
        intensity = []
        if brightness > 0:
            intensity.append(K.RandomBrightness((1 - brightness, 1 + brightness), clip_output=False, p=jitter_p))
        if contrast > 0:
            intensity.append(K.RandomContrast((1 - contrast, 1 + contrast), clip_output=False, p=jitter_p))
        if blur_p > 0:
            k = max(3, int(0.1 * self.size) // 2 * 2 + 1)  # odd kernel, ~10 % of the side (SimCLR)
            intensity.append(K.RandomGaussianBlur((k, k), tuple(blur_sigma), p=blur_p))
        self.intensity = K.AugmentationSequential(*intensity) if intensity else None

    def config(self) -> dict:
        return dict(self.settings)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.settings
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 3:  # grayscale stored as RGB: one channel until the end
            x = x[:, :1]
        if s["adain"] and s["adain_mode"] == "before_crop":
            x = adain_batch(x, s["adain_mean"], s["adain_std"], s["adain_eps"])
        x = self.geometric(x)
        if s["adain"] and s["adain_mode"] == "after_crop":
            x = adain_batch(x, s["adain_mean"], s["adain_std"], s["adain_eps"])
        if self.intensity is not None:
            x = self.intensity(x)
        x = (x - s["image_mean"]) / s["image_std"]
        if s["out_channels"] == 3:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous()


def rotate_batch_4way(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations (0, 90, 180, 270 degrees) of every image, stacked ``(4B, C, H, W)``, with
    labels 0..3 (Gidaris et al. 2018 found feeding all four rotations of an image in the same batch
    better than one random rotation). Square inputs keep their shape."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation prediction needs square images, got {tuple(x.shape[-2:])}")
    rotated = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)], dim=0)
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels
