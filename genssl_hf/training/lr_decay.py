"""Layer-wise learning-rate decay (BEiT / MAE fine-tuning) for transformers ViT models.

Layer ids: the embeddings (patch projection, CLS token, position embeddings) are layer 0, block
``i`` of ``vit.layers`` is layer ``i + 1``, and everything after the blocks (final norm, fc_norm,
classifier head) is layer ``L + 1``. A parameter of layer ``k`` gets the learning rate
``base_lr * decay ** (L + 1 - k)``, so the head trains at the full rate and the patch embedding at
``decay ** (L + 1)`` of it. Groups come from :func:`genssl_hf.training.optim.param_groups`
(no weight decay on biases, norms, tokens and position embeddings).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch

from genssl_hf.training.optim import param_groups

__all__ = ["vit_layer_id", "layer_decay_scale", "param_groups_lrd", "num_vit_layers"]

_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer)\.(\d+)\.")
_EMBED = re.compile(r"(?:^|\.)embeddings\.|(?:^|\.)(cls_token|pos_embed|patch_embed)")


def num_vit_layers(model: torch.nn.Module) -> int:
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "num_hidden_layers"):
        raise TypeError(f"{type(model).__name__} has no config.num_hidden_layers")
    return int(cfg.num_hidden_layers)


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a parameter name: 0 embeddings, 1..L blocks, L+1 the rest (norm, head)."""
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    if _EMBED.search(name):
        return 0
    return num_layers + 1


def layer_decay_scale(num_layers: int, decay: float) -> Callable[[str], float]:
    """``name -> decay ** (L + 1 - layer_id(name))``."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer decay must lie in (0, 1]; got {decay}")

    def scale(name: str) -> float:
        return float(decay ** (num_layers + 1 - vit_layer_id(name, num_layers)))

    return scale


def param_groups_lrd(
    model: torch.nn.Module, base_lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay; each group carries ``lr``, ``lr_scale``,
    ``weight_decay``, ``layer_ids`` and ``param_names``."""
    L = num_vit_layers(model)
    groups = param_groups(model, weight_decay, lr=base_lr, lr_scale=layer_decay_scale(L, layer_decay))
    for g in groups:
        # with decay < 1 a group holds one layer; with decay == 1 all layers share one scale
        g["layer_ids"] = sorted({vit_layer_id(n, L) for n in g["param_names"]})
    return groups
