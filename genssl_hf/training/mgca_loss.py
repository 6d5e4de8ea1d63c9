"""MGCA's losses (Wang et al., NeurIPS 2022, "Multi-Granularity Cross-modal Alignment for Generalized
Medical Visual Representation Learning"): instance-, token- and disease-level image-report alignment.

**ITA** (instance-wise): the symmetric image-report InfoNCE of the pooled embeddings,
``CE(image -> reports) + CE(report -> images)`` at temperature 0.07 (the ConVIRT / CLIP loss of
:func:`genssl_hf.training.vlp_loss.image_text_infonce` with lambda 0.5, times 2: the official code sums
the two directions).

**CTA** (token-wise, :func:`token_alignment_loss`). Within one pair, each word ``w_i`` attends over the
image's patches ``p_j`` (both L2-normalised): ``c_i = normalise(sum_j softmax_j(<w_i, p_j> / tau) p_j)``,
the word's cross-modal embedding. With ``s_ik = <w_i, c_k> / tau`` over the pair's words, the loss is
a token-level InfoNCE whose positive is the word's own counterpart, both ways (rows: word ``i`` against
every ``c_k``; columns: ``c_i`` against every word), averaged, each token weighted by its importance
(weights sum to 1 per pair), summed over tokens and averaged over pairs. The same with patches
attending over words; CTA is the word part plus the patch part. tau = 0.1.

**Token importance** (:func:`token_importance`): the last layer's [CLS] attention to each token, mean
over heads, clipped to its 10th-90th percentile within the pair and renormalised (the official code);
uniform where a tower has no [CLS] attention (ConvNeXt image towers, unknown text towers).

**CPA** (disease-level, :func:`prototype_alignment_loss`): K learnable prototypes (unit rows, K = 500 in
the paper). The image's and report's pooled embeddings score ``z = <e, prototype>``; Sinkhorn-Knopp
(:func:`sinkhorn`, 3 iterations, epsilon 0.05, SwAV's) turns each modality's scores over the batch
into soft cluster codes ``q`` with equal prototype mass; swapped prediction: the image's code is
predicted from the report's ``softmax(z / 0.2)`` and vice versa, ``-(sum q_img log p_rep + sum q_rep
log p_img) / 2`` averaged over the batch.

Total: ``ita_weight * ITA + cta_weight * CTA + cpa_weight * CPA`` (paper: 1, 1, 1); CPA joins at a
start step (the paper warms up for an epoch without it).

Choices of ours, documented: a "word" is a word-piece token of the report without [CLS] / [SEP]
(the code merges pieces into words); padding and special tokens are neither queries nor negatives
of the token loss (the code keeps pad counterparts among the negatives with zero weight as queries);
the prototypes are normalised inside the forward (the code renormalises the weights in place before
each step: the same values, a gradient projected on the sphere).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from genssl_hf.training.vlp_loss import image_text_infonce

__all__ = [
    "MGCA_LOSS",
    "sinkhorn",
    "prototype_alignment_loss",
    "cross_attend",
    "token_alignment_loss",
    "token_importance",
    "mgca_loss",
]

MGCA_LOSS: dict[str, Any] = {
    "ita_weight": 1.0,  # lambda_1
    "cta_weight": 1.0,  # lambda_2
    "cpa_weight": 1.0,  # lambda_3
    "num_prototypes": 64,  # the paper's 500 is for MIMIC-CXR's 217k reports; the phantom world is small
    "local_temperature": 0.1,
    "prototype_temperature": 0.2,
    "sinkhorn_epsilon": 0.05,
    "sinkhorn_iterations": 3,
    "cpa_start_step": None,  # None: one epoch of warm-up, as the paper
    "token_weights": "attention",  # or "uniform"
}


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp codes of prototype scores ``(B, K)``: Q = exp(scores / epsilon) with unit
    total mass, then ``iterations`` rounds of rescaling the rows of Q^T (prototypes) to mass 1/K and its
    columns (samples) to 1/B; returned per sample, each row summing to 1 ``(B, K)``. Computed on log Q
    (the same rescalings as log-sum-exp shifts), so a small epsilon cannot underflow a row to 0 / 0."""
    log_q = scores.detach().float().t() / float(epsilon)  # (K, B)
    k, b = log_q.shape
    log_q = log_q - torch.logsumexp(log_q.flatten(), dim=0)
    for _ in range(int(iterations)):
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(b)
    return (log_q - torch.logsumexp(log_q, dim=0, keepdim=True)).exp().t()


def prototype_alignment_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    prototypes: torch.Tensor,
    *,
    temperature: float = 0.2,
    epsilon: float = 0.05,
    iterations: int = 3,
) -> torch.Tensor:
    """CPA: swapped prediction of Sinkhorn codes over ``prototypes`` (K, D) (rows normalised here) from
    the (B, D) image and report embeddings (normalised here)."""
    protos = F.normalize(prototypes.float(), dim=-1)
    z_img = F.normalize(image_embeds.float(), dim=-1) @ protos.t()
    z_txt = F.normalize(text_embeds.float(), dim=-1) @ protos.t()
    q_img, q_txt = sinkhorn(z_img, epsilon, iterations), sinkhorn(z_txt, epsilon, iterations)
    log_p_img = F.log_softmax(z_img / temperature, dim=1)
    log_p_txt = F.log_softmax(z_txt / temperature, dim=1)
    i2t = -(q_img * log_p_txt).sum(dim=1).mean()
    t2i = -(q_txt * log_p_img).sum(dim=1).mean()
    return (i2t + t2i) / 2


def cross_attend(queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per pair, unit queries (B, Lq, D) attend over unit keys (B, Lk, D) of the other modality
    (``key_mask`` (B, Lk)): the normalised cross-modal embeddings (B, Lq, D)."""
    scores = (queries @ keys.transpose(1, 2)) / temperature
    scores = scores.masked_fill(~key_mask.bool()[:, None, :], float("-inf"))
    return F.normalize(scores.softmax(dim=-1) @ keys, dim=-1)


def _one_side(tokens, others, mask, other_mask, weights, temperature) -> torch.Tensor:
    """The token InfoNCE of one modality's tokens against their cross-attended counterparts."""
    counterparts = cross_attend(tokens, others, other_mask, temperature)
    sim = (tokens @ counterparts.transpose(1, 2)) / temperature  # (B, L, L): token i vs counterpart k
    valid = mask.bool()
    pair = valid[:, :, None] & valid[:, None, :]
    sim = sim.masked_fill(~pair, -1e9)  # finite: a padding row stays a (discarded) finite row, no NaN gradient
    eye = torch.eye(sim.shape[1], dtype=torch.bool, device=sim.device)
    rows = -(sim.log_softmax(dim=2).masked_select(eye)).view(sim.shape[0], -1)  # token -> counterparts
    cols = -(sim.log_softmax(dim=1).masked_select(eye)).view(sim.shape[0], -1)  # counterpart -> tokens
    w = weights * valid
    per_pair = ((rows.masked_fill(~valid, 0.0) + cols.masked_fill(~valid, 0.0)) / 2 * w).sum(dim=1)
    return per_pair.mean()


def token_alignment_loss(
    words: torch.Tensor,
    patches: torch.Tensor,
    word_mask: torch.Tensor,
    word_weights: torch.Tensor,
    patch_weights: torch.Tensor,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CTA of B pairs: words (B, L, D) with ``word_mask`` (B, L), patches (B, R, D); importance
    weights (B, L) and (B, R), each summing to 1 over the valid tokens. Returns (word part, patch part)."""
    words = F.normalize(words.float(), dim=-1)
    patches = F.normalize(patches.float(), dim=-1)
    patch_mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
    word_part = _one_side(words, patches, word_mask, patch_mask, word_weights.float(), temperature)
    patch_part = _one_side(patches, words, patch_mask, word_mask, patch_weights.float(), temperature)
    return word_part, patch_part


@torch.no_grad()
def token_importance(attention: torch.Tensor | None, mask: torch.Tensor, clip: tuple[float, float] = (0.1, 0.9)):
    """Per-pair token weights (B, L) summing to 1 over ``mask``: the [CLS] attention ``attention``
    (B, L) clipped to its ``clip`` quantiles among the pair's tokens, or uniform when ``attention`` is None."""
    valid = mask.bool()
    if attention is None:
        w = valid.float()
    else:
        a = attention.detach().float().masked_fill(~valid, float("nan"))
        low = torch.nanquantile(a, clip[0], dim=1, keepdim=True)
        high = torch.nanquantile(a, clip[1], dim=1, keepdim=True)
        w = torch.minimum(torch.maximum(a, low), high).nan_to_num(0.0) * valid
        w = torch.where(w.sum(dim=1, keepdim=True) > 0, w, valid.float())  # all-zero attention: uniform
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)


def mgca_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    tokens: dict[str, torch.Tensor],
    prototypes: torch.Tensor,
    settings: dict[str, Any] | None = None,
    *,
    groups: torch.Tensor | None = None,
    use_cpa: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MGCA's total for a batch of B pairs. ``tokens``: ``words`` (B, L, D), ``word_mask`` (B, L),
    ``patches`` (B, R, D), ``word_weights`` (B, L), ``patch_weights`` (B, R). CPA is computed (and
    logged) always, added only when ``use_cpa``. Returns (loss, {"ita_loss", "cta_loss", "cpa_loss"})."""
    s = {**MGCA_LOSS, **(settings or {})}
    b = image_embeds.shape[0]
    if not (text_embeds.shape[0] == tokens["words"].shape[0] == tokens["patches"].shape[0] == b):
        raise ValueError("mgca_loss: images, reports, words and patches must have one row per pair")
    if not bool(tokens["word_mask"].bool().any(dim=1).all()):
        raise ValueError("mgca_loss: every report needs at least one word in word_mask")
    ita = 2.0 * image_text_infonce(
        image_embeds, text_embeds, logit_scale, image_to_text_weight=0.5, groups=groups, gather=False
    )
    word_part, patch_part = token_alignment_loss(
        tokens["words"],
        tokens["patches"],
        tokens["word_mask"],
        tokens["word_weights"],
        tokens["patch_weights"],
        float(s["local_temperature"]),
    )
    cta = word_part + patch_part
    cpa = prototype_alignment_loss(
        image_embeds,
        text_embeds,
        prototypes,
        temperature=float(s["prototype_temperature"]),
        epsilon=float(s["sinkhorn_epsilon"]),
        iterations=int(s["sinkhorn_iterations"]),
    )
    loss = float(s["ita_weight"]) * ita + float(s["cta_weight"]) * cta
    if use_cpa:
        loss = loss + float(s["cpa_weight"]) * cpa
    return loss, {"ita_loss": ita.detach(), "cta_loss": cta.detach(), "cpa_loss": cpa.detach()}
