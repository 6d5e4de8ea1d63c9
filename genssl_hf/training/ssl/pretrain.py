"""Contrastive, Siamese and pretext pre-training (SimCLR, MoCo v2, SimSiam, rotation) on ViT or
ResNet backbones, on the shared engine (:mod:`genssl_hf.training.engine`).

``accelerate launch scripts/pretrain.py --method simclr --backbone resnet-18 --dataset DIR --output_dir OUT``
(``--method mae`` runs the MAE trainer). The data path is MAE's (same dataset opener, collate,
seeded sampler and AdaIN reference resolution); each batch becomes ``num_views`` kornia views
(:class:`~genssl_hf.training.ssl.transforms.SSLViews`), the method turns them into a loss, and the
engine does the rest. At the end the backbone alone is exported method-neutrally
(:func:`genssl_hf.models.save_encoder`: ``AutoModel`` / ``*ForImageClassification`` +
``AdaINImageProcessor`` + card + ``encoder_info.json``), with a figure of the views and the
training curves (loss, embedding std, kNN).

Optimisation recipes (:data:`RECIPES`, lr = base lr x total batch / 256):

* ResNet, full scale: each paper's. SimCLR: LARS, base lr 0.3, weight decay 1e-6, 10 warm-up epochs of
  100; MoCo v2: SGD 0.03, momentum 0.9, wd 1e-4, 200 epochs, no warm-up; SimSiam: SGD 0.05, wd 1e-4,
  100 epochs, predictor at a fixed lr; rotation: SGD 0.1, wd 5e-4, 100 epochs.
* ViT, full scale: the papers are ResNet papers; ViTs get the MoCo v3 recipe (Chen, Xie & He 2021):
  AdamW, base lr 1.5e-4, wd 0.1, 300 epochs with 40 warm-up. MoCo v2 on a ViT also takes MoCo v3's BN
  projection head (``--moco_head_bn auto``): with MoCo v2's BN-free head the tiny ViT collapsed
  (issue 16; diagnosis in :mod:`genssl_hf.training.ssl.methods`).
* ``tiny`` / ``resnet-tiny`` (CPU, phantom world): AdamW, base lr 2e-3, wd 0.05, batch 64,
  20 epochs, 2 warm-up; our choice, tuned to move in a few hundred steps.
* Where the papers use a step schedule (rotation) we use the package's half-cycle cosine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from genssl_hf.models import BACKBONE_PRESETS, backbone_family, build_backbone, build_backbone_config, save_encoder
from genssl_hf.processing import AdaINImageProcessor
from genssl_hf.training.common import (
    add_common_args,
    args_to_dict,
    check_hub_args,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    run_training_command,
    write_run_config,
)
from genssl_hf.training.args import add_adain_args, add_image_data_args, add_optimisation_args
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.training.optim import plan_steps
from genssl_hf.training.mae import build_dataloader, open_pretraining_images, resolve_reference
from genssl_hf.training.ssl.methods import METHOD_DEFAULTS, METHODS, SSLMethod, build_method
from genssl_hf.training.ssl.optim import OPTIMIZERS, build_ssl_optimizer
from genssl_hf.training.ssl.transforms import SSLViews
from genssl_hf.utils import write_json

__all__ = ["RECIPES", "TINY_BACKBONES", "build_parser", "pretrain_ssl", "SSLTask", "main"]

TINY_BACKBONES = ("tiny", "resnet-tiny")
_TINY = dict(optimizer="adamw", base_learning_rate=2e-3, weight_decay=0.05, per_device_train_batch_size=64,
             num_train_epochs=20, warmup_epochs=2)
_VIT = dict(optimizer="adamw", base_learning_rate=1.5e-4, weight_decay=0.1, per_device_train_batch_size=256,
            num_train_epochs=300, warmup_epochs=40)
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "simclr": {"cnn": dict(optimizer="lars", base_learning_rate=0.3, weight_decay=1e-6, per_device_train_batch_size=256,
                           num_train_epochs=100, warmup_epochs=10), "vit": _VIT, "tiny": _TINY},
    "moco_v2": {"cnn": dict(optimizer="sgd", base_learning_rate=0.03, weight_decay=1e-4, per_device_train_batch_size=256,
                            num_train_epochs=200, warmup_epochs=0), "vit": _VIT, "tiny": _TINY},
    "simsiam": {"cnn": dict(optimizer="sgd", base_learning_rate=0.05, weight_decay=1e-4, per_device_train_batch_size=256,
                            num_train_epochs=100, warmup_epochs=0), "vit": _VIT, "tiny": _TINY},
    "rotation": {"cnn": dict(optimizer="sgd", base_learning_rate=0.1, weight_decay=5e-4, per_device_train_batch_size=128,
                             num_train_epochs=100, warmup_epochs=0), "vit": _VIT, "tiny": _TINY},
}
MODEL_CARD_TEMPLATE = "ssl_encoder"


# ----------------------------------------------------------------------------------------- args
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Contrastive / Siamese / pretext pre-training (SimCLR, MoCo v2, SimSiam, "
                                            "rotation) of a ViT or ResNet with accelerate")
    add_common_args(p)
    g = p.add_argument_group("method and backbone")
    g.add_argument("--method", choices=sorted(METHODS), required=True)
    g.add_argument("--backbone", choices=sorted(BACKBONE_PRESETS), default="resnet-18",
                   help="ViT (tiny, vit-s16, vit-b16) or ResNet (resnet-tiny, resnet-18, resnet-50) preset")
    g.add_argument("--image_size", type=int, default=None, help="override the preset's input size")
    g.add_argument("--patch_size", type=int, default=None, help="override the ViT preset's patch size")
    g.add_argument("--temperature", type=float, default=None, help="SimCLR / MoCo softmax temperature")
    g.add_argument("--proj_dim", type=int, default=None, help="projector output width")
    g.add_argument("--proj_hidden_dim", type=int, default=None, help="projector hidden width (default: backbone width)")
    g.add_argument("--proj_layers", type=int, default=None, help="SimCLR projector depth: 2 (v1) or 3 (v2)")
    g.add_argument("--queue_size", type=int, default=None, help="MoCo queue length (a multiple of the global batch)")
    g.add_argument("--moco_momentum", type=float, default=None, help="MoCo key-encoder momentum at step 0 (cosine to 1)")
    g.add_argument("--moco_head_bn", choices=["auto", "on", "off"], default="auto",
                   help="MoCo head with BN (MoCo v3) or without (MoCo v2); auto: BN on ViTs, none on ResNets")
    g.add_argument("--pred_hidden_dim", type=int, default=None, help="SimSiam predictor bottleneck width")
    g.add_argument("--stop_gradient", choices=["on", "off"], default="on",
                   help="SimSiam stop-gradient (off only to demonstrate collapse)")
    g.add_argument("--attn_implementation", default="sdpa", help="ViT attention kernel")
    add_image_data_args(p)
    g = p.add_argument_group("views (kornia, grayscale)")
    g.add_argument("--crop_scale_min", type=float, default=None, help="random resized crop minimum area (default 0.2; rotation 0.5)")
    g.add_argument("--rotation_degrees", type=float, default=None, help="random rotation range (default 10)")
    g.add_argument("--brightness", type=float, default=None, help="brightness jitter strength (default 0.4)")
    g.add_argument("--contrast", type=float, default=None, help="contrast jitter strength (default 0.4)")
    g.add_argument("--blur_p", type=float, default=None, help="Gaussian blur probability (default 0.5)")
    g.add_argument("--no_hflip", action="store_true", help="no horizontal flip")
    add_adain_args(p)
    g = add_optimisation_args(p, "optimisation (defaults: the method's recipe for the backbone, see RECIPES)",
                              base_learning_rate=True, stop_after_steps=True)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    g.add_argument("--warmup_epochs", type=float, default=None)
    g.add_argument("--sgd_momentum", type=float, default=0.9)
    g = p.add_argument_group("monitoring")
    g.add_argument("--knn_dataset", default=None, help="labelled dataset spec for kNN monitoring (e.g. phantom)")
    g.add_argument("--knn_train", type=int, default=500)
    g.add_argument("--knn_test", type=int, default=200)
    g.add_argument("--eval_steps", type=int, default=0, help="kNN evaluation every K optimiser steps (0: off)")
    g.add_argument("--figure", choices=["on", "off"], default="on")
    return p


def _recipe_key(backbone: str) -> str:
    return "tiny" if backbone in TINY_BACKBONES else backbone_family(backbone)


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the recipe; validate before any data or model work."""
    for k, v in RECIPES[args.method][_recipe_key(args.backbone)].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.per_device_train_batch_size < 2:
        raise ValueError(f"--per_device_train_batch_size must be >= 2 (contrastive losses need negatives), got "
                         f"{args.per_device_train_batch_size}")
    if args.num_train_epochs is not None and args.num_train_epochs <= 0 and args.max_steps is None:
        raise ValueError(f"--num_train_epochs must be > 0, got {args.num_train_epochs}")
    if args.eval_steps and not args.knn_dataset:
        raise ValueError("--eval_steps needs --knn_dataset (a labelled split for the kNN monitor)")
    return args


def _view_settings(args: argparse.Namespace, method_cls: type[SSLMethod], image_size: int) -> dict[str, Any]:
    defaults = dict(crop_scale_min=0.2, rotation_degrees=10.0, brightness=0.4, contrast=0.4, blur_p=0.5)
    defaults.update(method_cls.view_overrides)
    chosen = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in defaults.items()}
    return dict(size=image_size, crop_scale=(chosen["crop_scale_min"], 1.0), hflip=not args.no_hflip,
                rotation_degrees=chosen["rotation_degrees"], brightness=chosen["brightness"],
                contrast=chosen["contrast"], blur_p=chosen["blur_p"])


class SSLTask:
    """Engine task: uint8 batch -> ``num_views`` views -> the method's loss and metrics."""

    def __init__(self, views: SSLViews, num_views: int, device, knn=None):
        self.views, self.num_views, self.device, self.knn = views, num_views, device, knn

    def training_step(self, model, batch):
        x = batch.to(self.device, non_blocking=True)
        return model([self.views(x) for _ in range(self.num_views)])

    def after_optimizer_step(self, model, state, total_steps: int) -> None:
        model.after_optimizer_step(state.global_step, total_steps)

    def periodic(self, model, state) -> dict[str, float]:
        return self.knn.evaluate(model.backbone) if self.knn is not None else {}


# ----------------------------------------------------------------------------------------- loop
def pretrain_ssl(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Run one method as configured by ``args`` (see :func:`build_parser`); ``dataset`` may be a
    ``datasets`` object instead of ``--dataset``. Returns a summary (steps, loss, images/s, paths)."""
    args = resolve_args(args)
    method_cls = METHODS[args.method]
    scale = "tiny" if args.backbone in TINY_BACKBONES else "full"
    check_hub_args(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    backbone_config = build_backbone_config(args.backbone, image_size=args.image_size, patch_size=args.patch_size)
    image_size = int(backbone_config.image_size)  # shape errors surface here, before data or model work
    ds = open_pretraining_images(args, dataset)
    adain_mean, adain_std, provenance = resolve_reference(args)

    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # model init: identical on every process
    backbone = build_backbone(backbone_config, attn_implementation=args.attn_implementation)
    method_kw = {k: getattr(args, k) for k in ("temperature", "proj_dim", "proj_hidden_dim", "proj_layers",
                                               "queue_size", "moco_momentum", "pred_hidden_dim")}
    method_kw["stop_gradient"] = args.stop_gradient == "on"
    method_kw["head_bn"] = {"auto": None, "on": True, "off": False}[args.moco_head_bn]
    model = build_method(args.method, backbone, scale, **method_kw)
    bs = args.per_device_train_batch_size
    loader, batches_per_epoch = build_dataloader(ds, accelerator, batch_size=bs, image_column=args.image_column,
                                                 load_size=args.load_size or image_size, seed=args.seed,
                                                 num_workers=args.num_workers)
    accum = accelerator.gradient_accumulation_steps
    total_batch = bs * accum * accelerator.num_processes
    if args.method == "moco_v2" and model.queue.shape[0] % (bs * accelerator.num_processes):
        raise ValueError(f"--queue_size {model.queue.shape[0]} must be a multiple of the global micro batch "
                         f"{bs * accelerator.num_processes}")
    steps_per_epoch, total_steps = plan_steps(args.max_steps, args.num_train_epochs, batches_per_epoch, accum)
    epochs = args.num_train_epochs if args.max_steps is None or not steps_per_epoch else total_steps / steps_per_epoch
    warmup = int(round(args.warmup_epochs / max(epochs, 1e-9) * total_steps)) if args.warmup_epochs else 0
    lr = args.learning_rate if args.learning_rate is not None else args.base_learning_rate * total_batch / 256
    optimizer = build_ssl_optimizer(model, args.optimizer, lr, args.weight_decay, momentum=args.sgd_momentum,
                                    fixed_lr_prefixes=method_cls.fixed_lr_prefixes)

    engine = Engine(accelerator, EngineConfig(
        output_dir=out, total_steps=total_steps, images_per_micro_batch=bs, seed=args.seed,
        max_grad_norm=args.max_grad_norm, logging_steps=args.logging_steps,
        checkpointing_steps=args.checkpointing_steps, checkpoints_total_limit=args.checkpoints_total_limit,
        stop_after_steps=args.stop_after_steps, eval_steps=args.eval_steps, desc=f"{args.method} {args.backbone}"))
    scheduler = cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    constant = lambda step: 1.0  # noqa: E731  (SimSiam's predictor: fixed lr)
    scheduler.lr_lambdas = [constant if g.get("fixed_lr") else scheduler.lr_lambdas[0] for g in optimizer.param_groups]
    model, optimizer = engine.prepare(model, optimizer, scheduler)
    state = engine.resume(args.resume_from_checkpoint)

    view_kw = _view_settings(args, method_cls, image_size)
    views = SSLViews(**view_kw, adain=args.adain == "on", adain_mode=args.adain_mode, adain_mean=adain_mean,
                     adain_std=adain_std, image_mean=args.image_mean, image_std=args.image_std).to(accelerator.device)
    processor = AdaINImageProcessor(
        size={"height": image_size, "width": image_size}, do_adain=args.adain == "on", adain_mean=adain_mean,
        adain_std=adain_std, reference_stats=provenance, image_mean=[args.image_mean], image_std=[args.image_std],
        num_channels=3)
    knn, knn_info = None, None
    if args.knn_dataset:
        from genssl_hf.training.finetune_data import InputNormalizer
        from genssl_hf.training.ssl.monitor import build_knn_monitor

        normalizer = InputNormalizer.from_processor(processor, image_size, 3)
        knn, knn_info = build_knn_monitor(args.knn_dataset, image_size, normalizer, num_train=args.knn_train,
                                          num_test=args.knn_test, seed=args.seed)
    unwrapped = accelerator.unwrap_model(model)
    run_config = {
        "args": args_to_dict(args), "method": args.method, "method_hparams": unwrapped.hparams,
        "backbone": {"preset": args.backbone, "family": backbone_family(args.backbone),
                     "config": unwrapped.backbone.config.to_dict()},
        "derived": {"total_batch_size": total_batch, "learning_rate": lr, "total_steps": total_steps,
                    "warmup_steps": warmup, "batches_per_epoch": batches_per_epoch, "epochs": epochs,
                    "num_train_images": len(ds) if hasattr(ds, "__len__") else None,
                    "recipe": _recipe_key(args.backbone)},
        "views": views.config(),
        "adain": {"enabled": args.adain == "on", "mode": args.adain_mode, "mean": adain_mean, "std": adain_std,
                  "reference_stats": provenance},
        "knn_monitor": knn_info,
    }
    write_run_config(accelerator, out, run_config)
    init_trackers(accelerator, f"genssl_{args.method}", {**args_to_dict(args), "learning_rate": lr, "total_steps": total_steps})

    task = SSLTask(views, method_cls.num_views, accelerator.device, knn)
    result = engine.run(task, model, optimizer, scheduler, loader, state)
    summary: dict[str, Any] = {**result.summary, "method": args.method, "backbone": args.backbone, "output_dir": str(out)}
    last = {k: v for entry in result.history for k, v in entry.items() if k != "step"}
    summary["last_logged"] = last
    if result.interrupted:
        accelerator.end_training()
        return summary

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        backbone_out = unwrapped.backbone
        info = {"method": args.method, "backbone": args.backbone, "method_hparams": unwrapped.hparams,
                "derived": run_config["derived"], "views": run_config["views"], "adain": run_config["adain"],
                "dataset": str(args.dataset) if args.dataset else "in-memory datasets object",
                "final_loss": summary["final_loss"], "last_logged": last}
        card = _render_card(args, run_config, summary)
        save_encoder(backbone_out, processor, out, info=info, card=card)
        if args.figure == "on":
            from genssl_hf.training.ssl.figure import ssl_figure

            summary["figure"] = str(ssl_figure(out / "pretraining.png", views, ds, args.image_column, image_size,
                                               result.history, args.method, args.backbone, method_cls.num_views,
                                               seed=args.seed))
        write_json(out / "train_summary.json", summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _render_card(args: argparse.Namespace, run_config: dict[str, Any], summary: dict[str, Any]) -> str:
    from genssl_hf.core.cards import render_model_card

    family = run_config["backbone"]["family"]
    card_data = {"license": "apache-2.0", "library_name": "transformers", "pipeline_tag": "image-feature-extraction",
                 "tags": ["genssl", args.method.replace("_", "-"), "vit" if family == "vit" else "resnet", "chest-x-ray",
                          "medical-imaging", "self-supervised"]}
    card = render_model_card(MODEL_CARD_TEMPLATE, card_data, method=args.method, backbone=run_config["backbone"],
                             hparams=run_config["method_hparams"], derived=run_config["derived"],
                             views=run_config["views"], adain=run_config["adain"], summary=summary,
                             optimizer=args.optimizer, weight_decay=args.weight_decay,
                             classifier_class="ResNetForImageClassification" if family == "cnn" else "ViTForImageClassification",
                             dataset=str(args.dataset) if args.dataset else "in-memory datasets object")
    return str(card)


def main(argv: list[str] | None = None, publish=None) -> int:
    """Command line: train, then (scripts only) publish; ``publish(kind, folder, repo_id) -> url`` is
    handed in by ``scripts/pretrain.py``, as training never imports ``hub``."""
    return run_training_command(pretrain_ssl, build_parser().parse_args(argv), publish, "encoder", ("method", "backbone", "global_step", "final_loss", "images_per_second", "interrupted"))


if __name__ == "__main__":
    sys.exit(main())
