"""Optimisers of the contrastive recipes: SGD with momentum (MoCo v2, SimSiam, rotation), LARS
(SimCLR) and AdamW (every method on a ViT, as in MoCo v3), over the package's parameter groups (no
weight decay on biases, norms, tokens; those also skip the LARS trust ratio, as in SimCLR)."""

from __future__ import annotations

from typing import Any

import torch

from genssl_hf.training.optim import param_groups

__all__ = ["LARS", "OPTIMIZERS", "build_ssl_optimizer"]

OPTIMIZERS = ("sgd", "lars", "adamw")


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as used by SimCLR: SGD with momentum where
    each weight tensor's update is scaled by ``trust_coefficient * ||w|| / ||g + wd * w||``. Groups with
    ``weight_decay == 0`` (biases, norms) take plain momentum SGD steps."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ):
        super().__init__(
            params,
            dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, eps=eps),
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            wd, mom = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if wd:
                    d = d.add(p, alpha=wd)
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0),
                        group["trust_coefficient"] * w_norm / (d_norm + group["eps"]),
                        torch.ones_like(w_norm),
                    )
                    d = d.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(mom).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_ssl_optimizer(
    model: torch.nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    *,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    fixed_lr_prefixes: tuple[str, ...] = (),
) -> torch.optim.Optimizer:
    """The optimiser ``name`` over :func:`param_groups`; parameters whose name starts with one of
    ``fixed_lr_prefixes`` go in groups flagged ``fixed_lr`` (SimSiam's predictor keeps its lr)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    groups: list[dict[str, Any]] = []
    for g in param_groups(model, weight_decay, lr=lr):
        fixed = [any(n.startswith(p) for p in fixed_lr_prefixes) for n in g["param_names"]]
        for flag in (False, True):
            params = [p for p, f in zip(g["params"], fixed) if f == flag]
            if params:
                groups.append({"params": params, "weight_decay": g["weight_decay"], "lr": lr, "fixed_lr": flag})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)
