"""Attention maps (DINO style): the last layer's CLS-token attention over the patches, upsampled
to the image and saved as PNG overlays (matplotlib), with optional boxes; Grad-CAM on the last
stage for CNN classifiers (:func:`saliency_maps` picks the right one).

SDPA / flash attention kernels do not return attention weights, so the model is switched to the
``eager`` implementation for the forward pass and switched back afterwards.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["cls_attention_maps", "save_attention_overlays", "gradcam_maps", "saliency_maps"]


def _encoder(model: torch.nn.Module) -> torch.nn.Module:
    # a ViTModel, or a model holding one as ``.vit`` (ViTForImageClassification, genssl_hf classifier)
    # or ``.beit`` (a mean-pooled classifier exported for plain transformers)
    for name in ("vit", "beit"):
        if hasattr(model, name):
            return getattr(model, name)
    if hasattr(model, "embeddings") and hasattr(model, "layers"):
        return model
    raise TypeError(f"{type(model).__name__} is not a ViT encoder or a model holding one as .vit")


@contextlib.contextmanager
def _eager(model: torch.nn.Module):
    current = getattr(model.config, "_attn_implementation", None)
    if current not in (None, "eager"):
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if current not in (None, "eager"):
            model.set_attn_implementation(current)


@torch.no_grad()
def cls_attention_maps(
    model: torch.nn.Module, pixel_values: torch.Tensor, *, head_fusion: str = "mean", upsample: bool = True
) -> torch.Tensor:
    """CLS -> patch attention of the last layer.

    Returns ``(B, H, W)`` maps (``upsample=True``: at the input resolution, bilinear) or the
    ``(B, h, w)`` patch grid; each map is rescaled to [0, 1]. ``head_fusion``: ``"mean"``, ``"max"``
    or ``"none"`` (then ``(B, heads, ...)``).
    """
    if head_fusion not in ("mean", "max", "none"):
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'none'; got {head_fusion!r}")
    vit = _encoder(model)
    was_training = vit.training
    vit.eval()
    try:
        with _eager(vit):
            out = vit(pixel_values=pixel_values, output_attentions=True, interpolate_pos_encoding=True)
    finally:
        vit.train(was_training)
    if not out.attentions:
        raise RuntimeError("the model returned no attention weights")
    att = out.attentions[-1][:, :, 0, 1:].float()  # (B, heads, num_patches)
    patch = vit.config.patch_size
    gh, gw = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    att = att.reshape(att.shape[0], att.shape[1], gh, gw)
    if head_fusion == "mean":
        att = att.mean(dim=1, keepdim=True)
    elif head_fusion == "max":
        att = att.amax(dim=1, keepdim=True)
    if upsample:
        att = torch.nn.functional.interpolate(att, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    lo = att.amin(dim=(-2, -1), keepdim=True)
    hi = att.amax(dim=(-2, -1), keepdim=True)
    att = (att - lo) / (hi - lo).clamp_min(1e-12)
    return att[:, 0] if head_fusion != "none" else att


def save_attention_overlays(
    images: Any,
    maps: Any,
    out_dir: str | os.PathLike,
    *,
    boxes: Sequence[Sequence[Sequence[float]] | None] | None = None,
    titles: Sequence[str] | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    prefix: str = "attention",
) -> list[Path]:
    """One PNG per image: the grayscale image, the attention map on top, optional boxes.

    ``images``: ``(B, H, W)`` / ``(B, 1|3, H, W)`` in [0, 1] (tensor or array); ``maps``: ``(B, H, W)``
    in [0, 1] at the same size; ``boxes[i]``: a list of ``(x0, y0, x1, y1)`` pixel boxes or None.
    Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    from genssl_hf.utils import atomic_write_bytes

    imgs = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    mps = maps.detach().cpu().float().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, np.float32)
    if imgs.ndim == 4:
        imgs = imgs.mean(axis=1)
    if imgs.shape != mps.shape:
        raise ValueError(f"images {imgs.shape} and maps {mps.shape} must have the same (B, H, W) shape")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(imgs.shape[0]):
        fig, ax = plt.subplots(figsize=(3.2, 3.4), dpi=100)
        ax.imshow(imgs[i], cmap="gray", vmin=0.0, vmax=1.0)
        ax.imshow(mps[i], cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
        for box in boxes[i] if boxes is not None and boxes[i] is not None else []:
            x0, y0, x1, y1 = box
            ax.add_patch(mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        ax.axis("off")
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        path = out / f"{prefix}_{i:03d}.png"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def gradcam_maps(
    model: torch.nn.Module, pixel_values: torch.Tensor, *, target: Sequence[int] | None = None, upsample: bool = True
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) on the last stage of a CNN classifier
    (``ResNetForImageClassification``): the last stage's activations weighted by the spatially
    averaged gradient of the target logit (default: each image's highest logit), ReLU, rescaled to
    [0, 1] per image (an image with no positive evidence keeps the signed map, rescaled). Returns ``(B, H, W)``
    (``upsample``) or the ``(B, h, w)`` feature grid."""
    body = getattr(model, "resnet", None)
    if body is None:
        raise TypeError(f"{type(model).__name__} is not a CNN classifier with a .resnet body (Grad-CAM needs one)")
    was_training = model.training
    model.eval()
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["act"] = output

    handle = body.encoder.stages[-1].register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = pixel_values.detach().requires_grad_(False)
            logits = model(pixel_values=x).logits.float()
            idx = logits.argmax(dim=1) if target is None else torch.as_tensor(list(target), device=logits.device)
            logits.gather(1, idx.view(-1, 1)).sum().backward()
        act, grad = store["act"].detach().float(), store["act"].grad.float()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    signed = (grad.mean(dim=(-2, -1), keepdim=True) * act).sum(dim=1, keepdim=True)
    cam = torch.relu(signed)
    # no positive evidence anywhere (e.g. a barely trained head): show the least negative regions
    # instead of a blank map
    blank = cam.amax(dim=(-2, -1), keepdim=True) <= 0
    cam = torch.where(blank, signed, cam)
    if upsample:
        cam = torch.nn.functional.interpolate(cam, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    lo = cam.amin(dim=(-2, -1), keepdim=True)
    hi = cam.amax(dim=(-2, -1), keepdim=True)
    return ((cam - lo) / (hi - lo).clamp_min(1e-12))[:, 0]


def saliency_maps(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """What the classifier looks at: CLS attention for a ViT, Grad-CAM for a ResNet; ``(B, H, W)`` in [0, 1]."""
    if hasattr(model, "resnet"):
        return gradcam_maps(model, pixel_values)
    return cls_attention_maps(model, pixel_values)
