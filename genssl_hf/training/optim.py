"""Optimiser and lr schedule shared by the training loops: AdamW over parameter groups without
weight decay on biases / norms / tokens / position embeddings (optionally with a per-parameter lr
scale: layer-wise decay), and the per-step half-cycle cosine with linear warm-up."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable

import torch

__all__ = ["param_groups", "build_optimizer", "cosine_schedule_with_warmup", "plan_steps"]

_NO_DECAY_NAME = re.compile(r"(^|\.)(bias|cls_token|mask_token|position_embeddings|pos_embed)$")


def param_groups(
    model: torch.nn.Module,
    weight_decay: float,
    *,
    lr: float | None = None,
    lr_scale: Callable[[str], float] | None = None,
    skip_names: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Parameter groups with no weight decay on biases, norm weights (any 1-d tensor), tokens and
    position embeddings (the MAE / BEiT convention).

    ``lr_scale(name) -> float`` optionally gives each parameter an lr multiplier (layer-wise decay);
    parameters with the same (decay, scale) share a group, and each group carries ``lr_scale`` so a
    scheduler can honour it. Frozen parameters (``requires_grad=False``) are left out.
    """
    skip = set(skip_names)
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or name in skip:
            continue
        no_decay = p.ndim <= 1 or bool(_NO_DECAY_NAME.search(name))
        scale = float(lr_scale(name)) if lr_scale is not None else 1.0
        key = (no_decay, scale)
        if key not in groups:
            g: dict[str, Any] = {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": scale,
            }
            if lr is not None:
                g["lr"] = lr * scale
            groups[key] = g
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return list(groups.values())


def build_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    lr_scale: Callable[[str], float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, with the fastest implementation available here
    (``fused`` on CPU/CUDA for torch >= 2.4; falls back to ``foreach``)."""
    groups = param_groups(model, weight_decay, lr=lr, lr_scale=lr_scale)
    for g in groups:
        g.pop("param_names", None)  # AdamW keeps unknown keys, but names bloat the saved state
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)


def cosine_schedule_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup_steps`` then half-cycle cosine to ``min_lr_ratio`` at ``total_steps``,
    stepped once per optimiser step. Multiplies each group's initial lr (so layer-wise scales survive).

    Do not pass it to ``accelerator.prepare`` (that steps it once per process); register it with
    ``accelerator.register_for_checkpointing`` and call ``step()`` after each optimiser step.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    warmup_steps = max(0, min(int(warmup_steps), int(total_steps)))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        t = min(1.0, t)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def plan_steps(
    max_steps: int | None, num_train_epochs: float | None, batches_per_epoch: int | None, accumulation: int
) -> tuple[int | None, int]:
    """(optimiser steps per epoch or None when the epoch length is unknown, total optimiser steps):
    ``max_steps`` when given, else ``num_train_epochs`` x steps per epoch (at least 1)."""
    steps_per_epoch = math.ceil(batches_per_epoch / accumulation) if batches_per_epoch else None
    if max_steps is not None:
        return steps_per_epoch, int(max_steps)
    if steps_per_epoch is None:
        raise ValueError("--streaming needs --max_steps (the epoch length is unknown)")
    return steps_per_epoch, max(1, math.ceil(num_train_epochs * steps_per_epoch))
