"""Momentum (EMA) target networks, shared by MoCo's key encoder and BYOL's target network: the
momentum schedule and the in-place update."""

from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["cosine_momentum", "ema_update", "frozen_copy"]


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """Momentum raised from ``base`` at step 0 to 1 at ``total_steps`` on a half cosine (BYOL, MoCo v3)."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0) / 2.0


@torch.no_grad()
def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online`` for each ``(online, target)`` pair."""
    for online, target in pairs:
        for po, pt in zip(online.parameters(), target.parameters()):
            pt.mul_(momentum).add_(po.detach(), alpha=1.0 - momentum)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that no optimiser updates: the starting point of a momentum target."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad = False
    return target
