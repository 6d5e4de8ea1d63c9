"""Self-supervised losses (lightly-style: one function per method, plain tensors in, a scalar out).

All of them are distribution-aware: with several processes they give the loss of the *global* batch
(the mean over every process's anchors), so averaging the per-process losses (as DDP does with the
gradients) equals the one-process loss on the concatenated batch, value and gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genssl_hf.training.gather import all_gather_with_grad, rank

__all__ = [
    "at_least_fp32",
    "nt_xent_loss",
    "moco_infonce_loss",
    "negative_cosine_similarity",
    "simsiam_loss",
    "rotation_loss",
    "byol_loss",
    "embedding_std",
]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1) on two views ``(B, D)`` of the same images.

    Each of the 2B local anchors has one positive (its other view) and 2N - 2 negatives: every other
    view of the *global* batch of N images, gathered from all processes with a gradient-carrying
    all-gather (:func:`~genssl_hf.training.gather.all_gather_with_grad`). Mean over local anchors.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"nt_xent_loss expects two (B, D) tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    b = z1.shape[0]
    g1, g2 = all_gather_with_grad(z1), all_gather_with_grad(z2)
    n = g1.shape[0]
    candidates = torch.cat([g1, g2], dim=0)  # (2N, D): view 1 of every image, then view 2
    anchors = torch.cat([z1, z2], dim=0)  # (2B, D)
    logits = anchors @ candidates.T / temperature
    offset = rank() * b
    local = torch.arange(b, device=z1.device) + offset
    self_idx = torch.cat([local, local + n])
    pos_idx = torch.cat([local + n, local])
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * n).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_idx)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or kept in float64 (half precisions are upcast; float64 is not rounded down,
    so a float64 run, e.g. the two-rank precision check, stays float64 throughout)."""
    return t if t.dtype == torch.float64 else t.float()


def moco_infonce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, eq. 1): query ``q`` (B, D) against its key ``k`` (B, D, no
    gradient) and the ``queue`` of K negative keys (K, D, already normalised). Mean over the batch."""
    if q.shape != k.shape or q.ndim != 2 or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"moco_infonce_loss: q {tuple(q.shape)}, k {tuple(k.shape)}, queue {tuple(queue.shape)} do not match"
        )
    q = F.normalize(at_least_fp32(q), dim=1)
    k = F.normalize(at_least_fp32(k), dim=1).detach()
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ at_least_fp32(queue.detach()).T
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def negative_cosine_similarity(p: torch.Tensor, z: torch.Tensor, stop_gradient: bool = True) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), mean over the batch."""
    if stop_gradient:
        z = z.detach()
    return -F.cosine_similarity(p.float(), z.float(), dim=1).mean()


def simsiam_loss(
    p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, stop_gradient: bool = True
) -> torch.Tensor:
    """SimSiam's symmetrised loss (Chen & He 2021, eq. 3): D(p1, z2) / 2 + D(p2, z1) / 2."""
    return 0.5 * negative_cosine_similarity(p1, z2, stop_gradient) + 0.5 * negative_cosine_similarity(
        p2, z1, stop_gradient
    )


def rotation_loss(logits: torch.Tensor, rotation_labels: torch.Tensor) -> torch.Tensor:
    """Rotation prediction (Gidaris et al. 2018): cross-entropy over the 4 rotations."""
    if logits.ndim != 2 or logits.shape[1] != 4:
        raise ValueError(f"rotation logits must be (B, 4), got {tuple(logits.shape)}")
    return F.cross_entropy(logits.float(), rotation_labels.long())


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse monitor (SimSiam paper, Fig. 2): per-dimension std over the batch of the L2-normalised
    embeddings, averaged over dimensions. About 1/sqrt(D) for well spread embeddings, 0 when collapsed."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """BYOL's symmetrised loss (Grill et al. 2020, eq. 2 and L + L~): the online prediction of each
    view against the target projection of the other, ``||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t)``,
    mean over the batch, summed over the two directions. Targets carry no gradient."""
    if p1.shape != t2.shape or p2.shape != t1.shape or p1.ndim != 2:
        raise ValueError(
            f"byol_loss expects (B, D) predictions and targets of one shape, got {tuple(p1.shape)}, "
            f"{tuple(p2.shape)}, {tuple(t1.shape)}, {tuple(t2.shape)}"
        )

    def term(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (2.0 - 2.0 * F.cosine_similarity(p.float(), t.detach().float(), dim=1)).mean()

    return term(p1, t2) + term(p2, t1)
