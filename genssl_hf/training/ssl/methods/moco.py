"""MoCo v2 (Chen et al. 2020b): query encoder + momentum key encoder (EMA of backbone and head,
momentum raised from ``moco_momentum`` to 1 on a half cosine over training, as in BYOL / MoCo v3),
MLP head, InfoNCE against a queue of ``queue_size`` keys filled with the keys gathered from every
process (rank order), Shuffle BN for ResNet keys across processes. Head: on ResNets MoCo v2's
Linear-ReLU-Linear (no BN); on ViTs (``head_bn`` auto) MoCo v3's Linear-BN-ReLU-Linear-BN (output BN
not affine, global BN): see the note below.

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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genssl_hf.models import is_cnn, pooled_features
from genssl_hf.training.gather import all_gather_no_grad, rank, world_size
from genssl_hf.training.ssl.heads import MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import at_least_fp32, embedding_std, moco_infonce_loss
from genssl_hf.training.ssl.methods.base import HParam, SSLMethod
from genssl_hf.training.ssl.methods.recipes import TINY, VIT, cnn_recipe
from genssl_hf.training.ssl.momentum import cosine_momentum, ema_update, frozen_copy

__all__ = ["MoCoV2"]


class MoCoV2(SSLMethod):
    name = "moco_v2"
    title = "MoCo v2"
    # Paper values at full scale: tau 0.2, K 65536, m 0.999, head 2048-128; tiny shrinks the queue.
    hparams_spec = {
        "temperature": HParam(0.2, 0.2, float, "softmax temperature of the contrastive loss"),
        "proj_dim": HParam(128, 64, int, "projector output width"),
        "proj_hidden_dim": HParam(2048, None, int, "projector hidden width (default: backbone width)"),
        "queue_size": HParam(65536, 1024, int, "MoCo queue length (a multiple of the global batch)"),
        "moco_momentum": HParam(0.999, 0.99, float, "MoCo key-encoder momentum at step 0 (cosine to 1)"),
        "head_bn": HParam(
            None,
            None,
            help="MoCo head with BN (MoCo v3) or without (MoCo v2); auto: BN on ViTs, none on ResNets",
            choices=("auto", "on", "off"),
            flag="--moco_head_bn",
            convert=lambda v: {None: None, "auto": None, "on": True, "off": False}[v],
        ),
    }
    # SGD 0.03, momentum 0.9, wd 1e-4, 200 epochs, no warm-up
    recipes = {
        "cnn": cnn_recipe(optimizer="sgd", base_learning_rate=0.03, weight_decay=1e-4, num_train_epochs=200),
        "vit": VIT,
        "tiny": TINY,
    }

    @classmethod
    def check_hparams(cls, h: dict[str, Any]) -> None:
        super().check_hparams(h)
        if not 0.0 <= float(h["moco_momentum"]) < 1.0:
            raise ValueError(f"--moco_momentum must lie in [0, 1), got {h['moco_momentum']}")
        if int(h["queue_size"]) < 1:
            raise ValueError(f"--queue_size must be >= 1, got {h['queue_size']}")

    def check_global_batch(self, global_micro_batch: int) -> None:
        if self.queue.shape[0] % global_micro_batch:
            raise ValueError(
                f"--queue_size {self.queue.shape[0]} must be a multiple of the global micro batch {global_micro_batch}"
            )

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__(backbone, hparams)
        h = self.hparams
        if h.get("head_bn") is None:  # auto: the MoCo v3 BN head on ViTs, MoCo v2's plain MLP on ResNets
            h["head_bn"] = not is_cnn(backbone)
        self.hparams["head_bn"] = bool(h["head_bn"])
        # MoCo v3 head: BN on the hidden layer and a non-affine BN on the output
        bn = self.hparams["head_bn"]
        self.projector = MLPHead(
            self.dim, h["proj_hidden_dim"] or self.dim, h["proj_dim"], 2, bn=bn, last_bn=bn, last_bn_affine=False
        )
        if bn:
            convert_to_global_bn(self.projector)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
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
        mine = perm[rank() * b : (rank() + 1) * b]
        k = self.key_projector(pooled_features(self.key_backbone, gathered[mine]))
        k_all = all_gather_no_grad(k)
        unshuffled = torch.empty_like(k_all)
        unshuffled[perm] = k_all
        return unshuffled[rank() * b : (rank() + 1) * b]

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.features(views[0])
        q = self.projector(h)
        with torch.no_grad():
            self.key_backbone.train(self.training)
            k = nn.functional.normalize(at_least_fp32(self._keys(views[1])), dim=1)
        loss = moco_infonce_loss(q, k, self.queue.clone(), self.hparams["temperature"])  # the queue changes below
        if self.training:
            self._enqueue(k)
        return loss, {
            "embedding_std": embedding_std(q),
            "feature_std": embedding_std(h),
            "moco_momentum": self.momentum.clone(),
        }

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        keys = all_gather_no_grad(k)  # every process's keys, rank order: one queue on all processes
        n, size = keys.shape[0], self.queue.shape[0]
        if size % n:
            raise ValueError(f"queue_size {size} must be a multiple of the global batch {n}")
        ptr = int(self.queue_ptr)
        self.queue[ptr : ptr + n] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(float(self.hparams["moco_momentum"]), step, total_steps)
        self.momentum.fill_(m)
        ema_update(((self.backbone, self.key_backbone), (self.projector, self.key_projector)), m)
