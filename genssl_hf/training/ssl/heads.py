"""Projection / prediction heads and a batch norm whose statistics span every process.

* :class:`GlobalBatchNorm` (1-d and 2-d): batch statistics over the *global* batch with an
  autograd-aware all-reduce, so BN layers see what a one-process run on the whole batch sees.
  SimCLR calls this "global BN" and SimSiam "SyncBN"; ``torch.nn.SyncBatchNorm`` does the same on
  GPUs only, this one also runs on CPU processes (gloo) and is plain BN with one process.
* :class:`MLPHead`: ``Linear -> [BN] -> ReLU`` blocks and a last ``Linear [-> BN]``: the SimCLR
  projector (2-3 layers, BN), the MoCo v2 MLP head (2 layers, no BN), SimSiam's projector
  (3 layers, BN, BN on the output) and predictor (2 layers, bottleneck, BN on the hidden layer).
"""

from __future__ import annotations

import torch
from torch import nn

from genssl_hf.training.gather import world_size

__all__ = ["GlobalBatchNorm", "GlobalBatchNorm1d", "GlobalBatchNorm2d", "convert_to_global_bn", "MLPHead"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; backward: every process's statistics feed every process's loss, so the
    gradient of the local statistics is the sum of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm with statistics over all processes (see the module doc); running stats as usual."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"GlobalBatchNorm expects (B, C[, ...]) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0] + list(range(2, x.ndim))
        xf = x if x.dtype == torch.float64 else x.float()  # fp32 statistics, or fp64 kept
        c = x.shape[1]
        count = torch.tensor([float(x.numel() // c)], device=x.device)
        # two passes, as one process's batch norm: the one-pass E[x^2] - mean^2 loses digits where a
        # channel's mean is large against its spread (fp32 relative error up to 2e-5 measured at ViT-B)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dim=dims), count]))  # gradients reach every process
        total = sums[-1]
        mean = sums[:c] / total
        centred = xf - mean.view([1, c] + [1] * (x.ndim - 2))
        var = _AllReduceSum.apply((centred * centred).sum(dim=dims)) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * total / (total - 1).clamp_min(1))
        shape = [1, c] + [1] * (x.ndim - 2)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class GlobalBatchNorm1d(GlobalBatchNorm):
    pass


class GlobalBatchNorm2d(GlobalBatchNorm):
    pass


def convert_to_global_bn(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm1d`` / ``BatchNorm2d`` in ``module`` by the global version (same
    parameters and buffers, same state-dict keys: an exported backbone reloads into stock classes)."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(child, GlobalBatchNorm):
            cls = GlobalBatchNorm1d if isinstance(child, nn.BatchNorm1d) else GlobalBatchNorm2d
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_to_global_bn(child)
    return module


class MLPHead(nn.Module):
    """``num_layers`` linear layers; hidden ones are ``Linear(bias=not bn) -> [BN] -> ReLU``; the last
    is ``Linear`` followed by a BN when ``last_bn`` (affine unless ``last_bn_affine=False``)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        *,
        bn: bool = True,
        last_bn: bool = False,
        last_bn_affine: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a head needs >= 1 layer, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not bn))
            if bn:
                layers.append(GlobalBatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(GlobalBatchNorm1d(out_dim, affine=last_bn_affine))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
