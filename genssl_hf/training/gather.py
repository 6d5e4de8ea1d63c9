"""Cross-process gathering for losses whose negatives span the global batch (SimCLR, MoCo's queue,
image-report InfoNCE).

``torch.distributed.all_gather`` returns tensors that carry no gradient, so a contrastive loss built on
it would train each process only through its own rows. :func:`all_gather_with_grad` routes the gradient
of every gathered slice back to the process that produced it (the backward is a sum-reduce of the
incoming gradients followed by taking this process's slice), which makes an N-process loss on a global
batch equal, value and gradient, to the 1-process loss on the same batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_with_grad", "all_gather_no_grad", "world_size", "rank"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every process holds d(loss_p)/d(all rows); the total gradient of this process's rows is the
        # sum over processes of their slice. Equal local batch sizes are required (checked in forward
        # by all_gather's shape contract).
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.batch
        return grad[start : start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) from every process along dim 0, in rank order, keeping the
    gradient path to each process's own rows. Identity when not distributed."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0 (rank order), detached: for queues and
    monitoring. Identity when not distributed."""
    if world_size() == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)
