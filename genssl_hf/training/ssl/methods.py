"""The pre-training methods, each a small ``nn.Module`` on a backbone from :mod:`genssl_hf.models`:
heads, views, ``views -> (loss, metrics)`` and, where the method has one, a step hook.

=============  ==================================================================================
method         paper recipe implemented (defaults in :data:`METHOD_DEFAULTS`)
=============  ==================================================================================
``simclr``     Chen et al. 2020: two views, projector Linear-BN-ReLU-Linear (``proj_layers`` 2; 3 as
               in SimCLR v2), NT-Xent with temperature over the global batch (negatives gathered
               with gradient), global BN (heads and, with >1 process, the ResNet body).
``moco_v2``    Chen et al. 2020b: query encoder + momentum key encoder (EMA of backbone and head,
               momentum raised from ``moco_momentum`` to 1 on a half cosine over training, as in
               BYOL / MoCo v3), MLP head, InfoNCE against a queue of ``queue_size`` keys filled
               with the keys gathered from every process (rank order), Shuffle BN for ResNet keys
               across processes. Head: on ResNets MoCo v2's Linear-ReLU-Linear (no BN); on ViTs
               (``head_bn`` auto) MoCo v3's Linear-BN-ReLU-Linear-BN (output BN not affine, global
               BN): see the note below.
``simsiam``    Chen & He 2021: projector 3 x (Linear-BN) with ReLU between, BN on the output;
               predictor Linear-BN-ReLU-Linear with a 4x bottleneck; symmetric negative cosine
               with stop-gradient on the target branch; the predictor keeps a fixed lr.
``rotation``   Gidaris et al. 2018: all four rotations of every image in the batch, a 4-way
               classifier (MLP head) on the pooled features, cross-entropy.
=============  ==================================================================================

**MoCo on ViTs (issue 16).** With MoCo v2's BN-free head the tiny ViT collapsed within ~100 steps,
on real data (embedding std 0.05 -> 0.005, loss up to ln(1 + K)) and on 32-px phantoms (0.075 ->
0.004-0.008). No bug was found (keys come from the momentum encoder without gradient, the queue is
filled after the loss, the EMA is applied every step). The collapse survived a 10x lower lr (5e-5),
momentum 0.999, a 64-key queue, a frozen random patch projection (MoCo v3's ViT trick: worse here),
weaker views, temperature 0.5 and in-batch keys without a queue. The cause: at initialisation two
views of one image are no closer than two images (positive cosine 0.55 vs negatives 0.58, top-1 1.6 %
in a batch of 64), so the InfoNCE loss starts *above* chance and its cheapest descent is to shrink the
logit spread, i.e. collapse to a constant. MoCo v3 (Chen, Xie & He 2021) trains ViTs with BN in the
heads; the output BN keeps every projected dimension spread over the batch, so a constant output is
impossible and the embedding std stays at ~1/sqrt(D) (0.11-0.125 at D = 64 on phantoms). We take that
head for ViTs only; ResNets keep MoCo v2's head and recipe. MoCo v3 also drops the queue and adds a
predictor; we keep MoCo v2's queue (the method is MoCo v2) and note that the BN head alone stops the
collapse but does not make the tiny ViT beat chance on the loss within a few hundred CPU steps.

Every method logs ``embedding_std`` (the SimSiam collapse monitor on the normalised projector
output; ~1/sqrt(D) when healthy, 0 when collapsed) and ``feature_std`` (the same on the backbone's
pooled features, which is what gets exported).
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
from torch import nn

from genssl_hf.models import feature_dim, is_cnn, pooled_features
from genssl_hf.training.gather import all_gather_no_grad, rank, world_size
from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import (
    embedding_std,
    moco_infonce_loss,
    nt_xent_loss,
    rotation_loss,
    simsiam_loss,
)
from genssl_hf.training.ssl.transforms import rotate_batch_4way

__all__ = ["SSLMethod", "SimCLR", "MoCoV2", "SimSiam", "RotationPrediction", "METHODS", "METHOD_DEFAULTS",
           "build_method"]


class SSLMethod(nn.Module):
    """Base: a backbone, ``num_views`` augmented views per image, a loss. Subclasses set ``name``,
    ``num_views``, ``view_overrides`` (changes to the default :class:`SSLViews`) and implement
    ``forward(views) -> (loss, metrics)``."""

    name: ClassVar[str] = ""
    num_views: ClassVar[int] = 2
    view_overrides: ClassVar[dict[str, Any]] = {}
    fixed_lr_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__()
        self.backbone = backbone
        self.hparams = dict(hparams)
        self.dim = feature_dim(backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.backbone, x)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called on the unwrapped module after each optimiser step (momentum updates)."""


class SimCLR(SSLMethod):
    name = "simclr"

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        self.projector = MLPHead(self.dim, h["proj_hidden_dim"] or self.dim, h["proj_dim"], h["proj_layers"], bn=True)
        convert_to_global_bn(self)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = views[0].shape[0]
        h = self.features(torch.cat(views))
        z = self.projector(h)
        loss = nt_xent_loss(z[:b], z[b:], self.hparams["temperature"])
        return loss, {"embedding_std": embedding_std(z[:b]), "feature_std": embedding_std(h[:b])}


class MoCoV2(SSLMethod):
    name = "moco_v2"

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        if h.get("head_bn") is None:  # auto: the MoCo v3 BN head on ViTs, MoCo v2's plain MLP on ResNets
            h["head_bn"] = not is_cnn(backbone)
        self.hparams["head_bn"] = bool(h["head_bn"])
        # MoCo v3 head: BN on the hidden layer and a non-affine BN on the output
        bn = self.hparams["head_bn"]
        self.projector = MLPHead(self.dim, h["proj_hidden_dim"] or self.dim, h["proj_dim"], 2, bn=bn, last_bn=bn,
                                 last_bn_affine=False)
        if bn:
            convert_to_global_bn(self.projector)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projector = copy.deepcopy(self.projector)
        for p in list(self.key_backbone.parameters()) + list(self.key_projector.parameters()):
            p.requires_grad = False
        queue = nn.functional.normalize(torch.randn(h["queue_size"], h["proj_dim"]), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("momentum", torch.tensor(float(h["moco_momentum"])))

    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Key projections; a ResNet key encoder runs on a batch shuffled across processes (Shuffle
        BN) so its BN statistics cannot identify the positive."""
        if not (world_size() > 1 and is_cnn(self.backbone)):
            return self.key_projector(pooled_features(self.key_backbone, x))
        import torch.distributed as dist

        b = x.shape[0]
        gathered = all_gather_no_grad(x)
        perm = torch.randperm(gathered.shape[0], device=x.device)
        dist.broadcast(perm, src=0)
        mine = perm[rank() * b:(rank() + 1) * b]
        k = self.key_projector(pooled_features(self.key_backbone, gathered[mine]))
        k_all = all_gather_no_grad(k)
        unshuffled = torch.empty_like(k_all)
        unshuffled[perm] = k_all
        return unshuffled[rank() * b:(rank() + 1) * b]

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.features(views[0])
        q = self.projector(h)
        with torch.no_grad():
            self.key_backbone.train(self.training)
            k = nn.functional.normalize(self._keys(views[1]).float(), dim=1)
        loss = moco_infonce_loss(q, k, self.queue.clone(), self.hparams["temperature"])  # the queue changes below
        if self.training:
            self._enqueue(k)
        return loss, {"embedding_std": embedding_std(q), "feature_std": embedding_std(h), "moco_momentum": self.momentum.clone()}

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        keys = all_gather_no_grad(k)  # every process's keys, rank order: one queue on all processes
        n, size = keys.shape[0], self.queue.shape[0]
        if size % n:
            raise ValueError(f"queue_size {size} must be a multiple of the global batch {n}")
        ptr = int(self.queue_ptr)
        self.queue[ptr:ptr + n] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        m0 = float(self.hparams["moco_momentum"])
        m = 1.0 - (1.0 - m0) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0) / 2.0
        self.momentum.fill_(m)
        for online, target in ((self.backbone, self.key_backbone), (self.projector, self.key_projector)):
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.mul_(m).add_(po.detach(), alpha=1.0 - m)


class SimSiam(SSLMethod):
    name = "simsiam"
    fixed_lr_prefixes = ("predictor.",)

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        out = h["proj_dim"]
        self.projector = MLPHead(self.dim, h["proj_hidden_dim"] or out, out, 3, bn=True, last_bn=True,
                                 last_bn_affine=False)
        self.predictor = MLPHead(out, h["pred_hidden_dim"] or max(1, out // 4), out, 2, bn=True)
        convert_to_global_bn(self)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = views[0].shape[0]
        h = self.features(torch.cat(views))
        z = self.projector(h)
        p = self.predictor(z)
        loss = simsiam_loss(p[:b], p[b:], z[:b], z[b:], stop_gradient=self.hparams["stop_gradient"])
        return loss, {"embedding_std": embedding_std(z[:b]), "feature_std": embedding_std(h[:b])}


class RotationPrediction(SSLMethod):
    name = "rotation"
    num_views = 1
    # Gidaris et al. train with crop + flip only: a small random rotation or intensity jitter adds
    # nothing to a 4-way rotation task
    view_overrides = {"rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0, "blur_p": 0.0, "crop_scale_min": 0.5}

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        self.classifier = MLPHead(self.dim, self.hparams["proj_hidden_dim"] or self.dim, 4, 2, bn=True)
        convert_to_global_bn(self.classifier)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, labels = rotate_batch_4way(views[0])
        h = self.features(x)
        logits = self.classifier(h)
        loss = rotation_loss(logits, labels)
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return loss, {"rotation_accuracy": acc, "feature_std": embedding_std(h), "embedding_std": embedding_std(h)}


METHODS: dict[str, type[SSLMethod]] = {m.name: m for m in (SimCLR, MoCoV2, SimSiam, RotationPrediction)}

# Method hyper-parameters; None = derived from the backbone width. Paper values at full scale
# (SimCLR: tau 0.1, out 128; MoCo v2: tau 0.2, K 65536, m 0.999, head 2048-128; SimSiam: 2048 wide,
# predictor bottleneck 512). ``tiny`` shrinks widths and the queue for CPU-sized runs.
METHOD_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "simclr": {"full": dict(temperature=0.1, proj_dim=128, proj_hidden_dim=None, proj_layers=2),
               "tiny": dict(temperature=0.2, proj_dim=64, proj_hidden_dim=None, proj_layers=2)},
    "moco_v2": {"full": dict(temperature=0.2, proj_dim=128, proj_hidden_dim=2048, queue_size=65536, moco_momentum=0.999,
                             head_bn=None),
                "tiny": dict(temperature=0.2, proj_dim=64, proj_hidden_dim=None, queue_size=1024, moco_momentum=0.99,
                             head_bn=None)},
    "simsiam": {"full": dict(proj_dim=2048, proj_hidden_dim=2048, pred_hidden_dim=512, stop_gradient=True),
                "tiny": dict(proj_dim=128, proj_hidden_dim=128, pred_hidden_dim=32, stop_gradient=True)},
    "rotation": {"full": dict(proj_hidden_dim=None), "tiny": dict(proj_hidden_dim=None)},
}


def build_method(name: str, backbone: nn.Module, scale: str = "full", **overrides: Any) -> SSLMethod:
    """A method module on ``backbone`` with its defaults at ``scale`` (``full`` / ``tiny``) and overrides."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    h = dict(METHOD_DEFAULTS[name][scale])
    h.update({k: v for k, v in overrides.items() if v is not None and k in h})
    if "temperature" in h and not h["temperature"] > 0:
        raise ValueError(f"--temperature must be > 0, got {h['temperature']}")
    if name == "moco_v2":
        if not 0.0 <= float(h["moco_momentum"]) < 1.0:
            raise ValueError(f"--moco_momentum must lie in [0, 1), got {h['moco_momentum']}")
        if int(h["queue_size"]) < 1:
            raise ValueError(f"--queue_size must be >= 1, got {h['queue_size']}")
    if name == "simclr" and h["proj_layers"] not in (2, 3):
        raise ValueError(f"--proj_layers must be 2 or 3 (SimCLR v1 / v2), got {h['proj_layers']}")
    return METHODS[name](backbone, h)
