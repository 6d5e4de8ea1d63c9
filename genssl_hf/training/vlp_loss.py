"""The image-report contrastive loss of VLP (ConVIRT / CLIP): bidirectional InfoNCE over the global batch.

    L = lambda * CE(image -> all texts) + (1 - lambda) * CE(text -> all images)

- ``convirt``: temperature 0.1, fixed; lambda = 0.75 (Zhang et al., 2020).
- ``clip``: learnable temperature (initialised at 0.07, logit scale clamped at 100); lambda = 0.5.

Negatives are gathered from every process (:func:`genssl_hf.training.gather.all_gather_with_grad`).
Identical reports in a batch are not negatives of each other: with ``groups``
(:func:`text_group_ids`) the target spreads uniformly over every column with the same text.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from genssl_hf.training.gloria_loss import GLORIA_LOSS
from genssl_hf.training.gather import all_gather_no_grad, all_gather_with_grad, rank

__all__ = ["LOSS_PRESETS", "MAX_LOGIT_SCALE", "text_group_ids", "image_text_infonce"]

LOSS_PRESETS: dict[str, dict[str, Any]] = {
    "convirt": {"temperature": 0.1, "learnable_temperature": False, "image_to_text_weight": 0.75},
    "clip": {"temperature": 0.07, "learnable_temperature": True, "image_to_text_weight": 0.5},
    # GLoRIA (Huang et al. 2021): the global part, tau3 = 10 fixed, both directions; its local loss and
    # the other temperatures in :mod:`genssl_hf.training.gloria_loss`
    "gloria": {"temperature": 0.1, "learnable_temperature": False, "image_to_text_weight": 0.5, **GLORIA_LOSS},
    # MGCA (Wang et al. 2022): ITA at temperature 0.07 fixed, both directions summed; its token and
    # prototype losses and their settings in :mod:`genssl_hf.training.mgca_loss`
    "mgca": {"temperature": 0.07, "learnable_temperature": False, "image_to_text_weight": 0.5},
}
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp on the learnable logit scale


def text_group_ids(texts: Sequence[str]) -> torch.Tensor:
    """A 63-bit id per text (first 8 bytes of its SHA-256): equal texts get equal ids on every process."""
    ids = [int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1) for t in texts]
    return torch.tensor(ids, dtype=torch.int64)


def image_text_infonce(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    image_to_text_weight: float = 0.5,
    groups: torch.Tensor | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """Bidirectional InfoNCE of this process's (B, D) image and text embeddings against the global
    batch. ``logit_scale`` is log(1 / temperature). ``groups`` (B,) int64 marks pairs with identical
    text (see :func:`text_group_ids`): their columns are all positives, with equal target mass.

    Each process scores its own rows against every process's columns; the mean over processes of
    these losses equals, value and gradient, the 1-process loss on the concatenated batch.
    """
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise ValueError(
            "image and text embeddings must both be (B, D), "
            f"got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    img = F.normalize(image_embeds.float(), dim=-1)
    txt = F.normalize(text_embeds.float(), dim=-1)
    all_img = all_gather_with_grad(img) if gather else img
    all_txt = all_gather_with_grad(txt) if gather else txt
    scale = logit_scale.float().exp()
    logits_i2t = scale * img @ all_txt.t()  # (B, N)
    logits_t2i = scale * txt @ all_img.t()
    b = img.shape[0]
    offset = rank() * b if gather else 0
    if groups is None:
        target = torch.arange(offset, offset + b, device=img.device)
        loss_i2t = F.cross_entropy(logits_i2t, target)
        loss_t2i = F.cross_entropy(logits_t2i, target)
    else:
        all_groups = all_gather_no_grad(groups.to(img.device)) if gather else groups.to(img.device)
        same = (groups.to(img.device)[:, None] == all_groups[None, :]).float()
        target = same / same.sum(dim=1, keepdim=True)
        loss_i2t = -(target * F.log_softmax(logits_i2t, dim=1)).sum(dim=1).mean()
        loss_t2i = -(target * F.log_softmax(logits_t2i, dim=1)).sum(dim=1).mean()
    w = float(image_to_text_weight)
    return w * loss_i2t + (1.0 - w) * loss_t2i
