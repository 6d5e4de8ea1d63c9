"""Stochastic depth (drop path) for transformers' ViT, which has none.

In ``ViTLayer`` both residual branches (attention and MLP) pass through ``layer.dropout`` right
before they are added to the residual stream. :func:`set_drop_path` swaps that parameter-free
``nn.Dropout`` for :class:`BranchDropout` (the same dropout, then per-sample drop path), so the
state dict, ``save_pretrained`` and ``from_pretrained`` are untouched and each branch is dropped
independently, exactly as timm's ``Block`` does with its two ``DropPath`` calls.

Rates grow linearly with depth from 0 to ``rate`` (the MAE / DeiT rule). Drop path acts only in
``model.training``; in eval mode it is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["drop_path", "BranchDropout", "set_drop_path", "drop_path_rates"]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero the whole branch of a sample with probability ``p``; survivors are scaled by 1/(1-p)."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask / keep


class BranchDropout(nn.Module):
    """``nn.Dropout(dropout)`` followed by drop path ``drop_prob``; no parameters."""

    def __init__(self, dropout: float = 0.0, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path probability must lie in [0, 1); got {drop_prob}")
        self.dropout = nn.Dropout(dropout)
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(self.dropout(x), self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}"


def drop_path_rates(rate: float, num_layers: int) -> list[float]:
    """Linearly increasing rates ``[0, ..., rate]`` over ``num_layers`` blocks."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop path rate must lie in [0, 1); got {rate}")
    if num_layers == 1:
        return [float(rate)]
    return [float(rate) * i / (num_layers - 1) for i in range(num_layers)]


def _layers(model: nn.Module) -> nn.ModuleList:
    for candidate in (model, getattr(model, "vit", None)):
        if candidate is not None and isinstance(getattr(candidate, "layers", None), nn.ModuleList):
            return candidate.layers
    raise TypeError(f"{type(model).__name__} has no ViT layers (.layers or .vit.layers)")


def set_drop_path(model: nn.Module, rate: float) -> list[float]:
    """Install (or update, or with ``rate=0`` keep as plain dropout) drop path in every ViT layer
    of ``model`` (a ``ViTModel`` or a model holding one as ``.vit``). Returns the per-layer rates."""
    layers = _layers(model)
    rates = drop_path_rates(rate, len(layers))
    for layer, r in zip(layers, rates):
        old = layer.dropout
        p = old.dropout.p if isinstance(old, BranchDropout) else float(getattr(old, "p", 0.0))
        layer.dropout = BranchDropout(p, r)
        layer.dropout.train(layer.training)
    return rates
