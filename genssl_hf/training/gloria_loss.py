"""GLoRIA's losses (Huang et al. 2021, "GLoRIA: a multimodal global-local representation learning
framework for label-efficient medical image recognition"): word-to-region attention and the local and
global image-report contrastive losses.

**Attention** (their eq. 2-3). For a report's words ``t_1..t_M`` and an image's regions ``v_1..v_R``
(both projected to one space), word ``i`` attends over the regions with

    a_ij = softmax_j(tau1 * <t_i, v_j>),        c_i = sum_j a_ij v_j

**Local similarity** (eq. 4, in the official code's form, which drops the 1 / tau2 of the paper's
formula): ``Z(image, report) = log sum_i exp(tau2 * cos(c_i, t_i))`` over the report's words.

**Local loss** (eq. 5-6): bidirectional InfoNCE on ``tau3 * Z`` over the batch, image -> reports plus
report -> images. **Global loss**: the same on the cosine of the pooled image and report embeddings
(``tau3`` again, i.e. temperature 0.1). GLoRIA's total is ``local_weight * (l_i2t + l_t2i) +
global_weight * (g_i2t + g_t2i)`` with tau1 = 4, tau2 = 5, tau3 = 10 and both weights 1.

Choices of ours, documented: words and regions are L2-normalised before the attention (the official
code takes raw dot products of unnormalised 768-d features, whose scale then depends on the
projection's initialisation); the attention is the paper's single softmax over regions (the code
first applies an extra softmax over words, inherited from AttnGAN); a "word" is a word-piece token
of the report (the code merges word pieces back into words); identical reports in a batch are not
negatives of each other (``groups``, as for ConVIRT here). The local loss compares every report with
every image of this process's batch (no cross-process gather).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "GLORIA_LOSS",
    "word_region_attention",
    "local_similarity",
    "contrastive_both_ways",
    "gloria_loss",
]

GLORIA_LOSS: dict[str, Any] = {
    "attention_temperature": 4.0,  # tau1
    "word_temperature": 5.0,  # tau2
    "match_temperature": 10.0,  # tau3 (local and global)
    "local_weight": 1.0,
    "global_weight": 1.0,
}


def word_region_attention(words: torch.Tensor, regions: torch.Tensor, tau1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Words ``(T, L, D)`` of T reports attend over the regions ``(I, R, D)`` of I images: the
    region contexts ``(T, I, L, D)`` and attention maps ``(T, I, L, R)`` (softmax over regions)."""
    attn = (tau1 * torch.einsum("tld,ird->tilr", words, regions)).softmax(dim=-1)
    return torch.einsum("tilr,ird->tild", attn, regions), attn


def local_similarity(
    regions: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    tau1: float,
    tau2: float,
) -> torch.Tensor:
    """``Z`` (I images, T reports) = log sum over each report's words (``word_mask`` (T, L)) of
    exp(tau2 * cos(c, word)); inputs are L2-normalised here.

    The contexts are never formed: with unit words, <c, t> = sum_j a_j <v_j, t> reuses the attention
    scores and |c|^2 = a^T G a with G the regions' Gram matrix, so the cost is that of the scores
    (T x I x L x R) rather than of (T, I, L, D) contexts (the same values as
    :func:`word_region_attention`; tested)."""
    regions = F.normalize(regions.float(), dim=-1)
    words = F.normalize(words.float(), dim=-1)
    sim = torch.einsum("tld,ird->tilr", words, regions)  # (T, I, L, R) cosines
    attn = (tau1 * sim).softmax(dim=-1)
    dot = (attn * sim).sum(dim=-1)  # <c, t>
    gram = regions @ regions.transpose(1, 2)  # (I, R, R)
    norm2 = (torch.einsum("tilr,irk->tilk", attn, gram) * attn).sum(dim=-1)  # |c|^2
    cos = dot / norm2.clamp_min(1e-16).sqrt()
    logits = (tau2 * cos).masked_fill(~word_mask.bool()[:, None, :], float("-inf"))
    return torch.logsumexp(logits, dim=-1).t()


def contrastive_both_ways(
    logits: torch.Tensor, groups: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image -> report, report -> image) cross-entropies of square logits (I, T) whose diagonal holds
    the pairs; with ``groups`` every column (row) of the same report is a positive, with equal mass."""
    n = logits.shape[0]
    if groups is None:
        target = torch.arange(n, device=logits.device)
        return F.cross_entropy(logits, target), F.cross_entropy(logits.t(), target)
    g = groups.to(logits.device)
    same = (g[:, None] == g[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    i2t = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    t2i = -(target * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return i2t, t2i


def gloria_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    regions: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    settings: dict[str, Any] | None = None,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GLoRIA's total loss for a batch of B pairs: pooled embeddings (B, D), regions (B, R, D), words
    (B, L, D) with their mask (B, L). Returns (loss, {"local_loss", "global_loss"})."""
    s = {**GLORIA_LOSS, **(settings or {})}
    b = image_embeds.shape[0]
    if not (text_embeds.shape[0] == regions.shape[0] == words.shape[0] == word_mask.shape[0] == b):
        raise ValueError("gloria_loss: images, reports, regions, words and word masks must have one row per pair")
    if not bool(word_mask.bool().any(dim=1).all()):
        raise ValueError("gloria_loss: every report needs at least one word in word_mask")
    tau3 = float(s["match_temperature"])
    z = local_similarity(regions, words, word_mask, float(s["attention_temperature"]), float(s["word_temperature"]))
    l_i2t, l_t2i = contrastive_both_ways(tau3 * z, groups)
    g = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).t()
    g_i2t, g_t2i = contrastive_both_ways(tau3 * g, groups)
    local, global_ = l_i2t + l_t2i, g_i2t + g_t2i
    loss = float(s["local_weight"]) * local + float(s["global_weight"]) * global_
    return loss, {"local_loss": local.detach(), "global_loss": global_.detach()}
