"""Contrastive, Siamese and pretext pre-training (SimCLR, MoCo v2, SimSiam, rotation) on ViT or
ResNet backbones, on the shared engine (:mod:`genssl_hf.training.engine`).

``accelerate launch scripts/pretrain.py --method simclr --model resnet-18 --dataset DIR --output_dir OUT``
(``--method mae`` runs the MAE trainer). The data path is MAE's (same dataset opener, collate,
seeded sampler and AdaIN reference resolution); each batch becomes ``num_views`` kornia views
(:class:`~genssl_hf.training.ssl.transforms.SSLViews`), the method turns them into a loss, and the
engine does the rest. At the end the backbone alone is exported method-neutrally
(:func:`genssl_hf.models.save_encoder`: ``AutoModel`` / ``*ForImageClassification`` +
``AdaINImageProcessor`` + card + ``encoder_info.json``), with a figure of the views and the
training curves (loss, embedding std, kNN).

Each method (:mod:`genssl_hf.training.ssl.methods`, one file per method plus a registry line)
declares its hyper-parameters, views and optimisation recipes; this module is the one recipe that
runs any of them and never names a method. Recipes per backbone family (lr = base lr x total batch /
256) are in each method's file and :mod:`genssl_hf.training.ssl.methods.recipes`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from genssl_hf.models import backbone_family, build_backbone, build_backbone_config, save_encoder
from genssl_hf.processing import AdaINImageProcessor
from genssl_hf.training.common import (
    args_to_dict,
    check_hub_args,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    no_trace_on_early_failure,
    run_training_command,
    write_run_config,
)
from genssl_hf.training.ssl.pretrain_args import build_parser, method_options  # noqa: F401 (the command line)
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.training.optim import plan_steps
from genssl_hf.training.pretraining_data import build_dataloader, open_pretraining_images, resolve_reference
from genssl_hf.training.ssl.methods import METHODS, SSLMethod, method_hparams
from genssl_hf.training.ssl.optim import build_ssl_optimizer
from genssl_hf.training.ssl.transforms import SSLViews
from genssl_hf.utils import write_train_summary

__all__ = ["TINY_BACKBONES", "build_parser", "method_options", "pretrain_ssl", "recipe_for", "SSLTask", "main"]

TINY_BACKBONES = ("tiny", "resnet-tiny")
MODEL_CARD_TEMPLATE = "ssl_encoder"


# ----------------------------------------------------------------------------------------- args
def _method_overrides(args: argparse.Namespace, method_cls: type[SSLMethod]) -> dict[str, Any]:
    """The hyper-parameters set on the command line, converted for the method; an option the method
    does not take is an error (it would otherwise be ignored silently)."""
    options = method_options()
    for flag, (_spec, names) in options.items():
        if method_cls.name not in names and getattr(args, flag[2:], None) is not None:
            raise ValueError(
                f"{flag} does not apply to --method {method_cls.name} (it is an option of {', '.join(names)})"
            )
    overrides = {}
    for hparam, spec in method_cls.hparams_spec.items():
        value = getattr(args, (spec.flag or f"--{hparam}")[2:], None)
        overrides[hparam] = spec.convert(value) if spec.convert else value
    return overrides


def _recipe_key(model: str) -> str:
    return "tiny" if model in TINY_BACKBONES else backbone_family(model)


def recipe_for(method: str, model: str) -> dict[str, Any]:
    """The optimisation recipe of ``method`` on architecture preset ``model``."""
    return dict(METHODS[method].recipes[_recipe_key(model)])


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the recipe; validate before any data or model work."""
    for k, v in recipe_for(args.method, args.model).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.per_device_train_batch_size < 2:
        raise ValueError(
            f"--per_device_train_batch_size must be >= 2 (contrastive losses need negatives), got "
            f"{args.per_device_train_batch_size}"
        )
    if args.num_train_epochs is not None and args.num_train_epochs <= 0 and args.max_steps is None:
        raise ValueError(f"--num_train_epochs must be > 0, got {args.num_train_epochs}")
    if args.eval_steps and not args.knn_dataset:
        raise ValueError("--eval_steps needs --knn_dataset (a labelled split for the kNN monitor)")
    return args


def _view_settings(args: argparse.Namespace, method_cls: type[SSLMethod], image_size: int) -> dict[str, Any]:
    defaults = dict(crop_scale_min=0.2, rotation_degrees=10.0, brightness=0.4, contrast=0.4, blur_p=0.5)
    defaults.update(method_cls.view_overrides)
    chosen = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in defaults.items()}
    return dict(
        size=image_size,
        crop_scale=(chosen["crop_scale_min"], 1.0),
        hflip=not args.no_hflip,
        rotation_degrees=chosen["rotation_degrees"],
        brightness=chosen["brightness"],
        contrast=chosen["contrast"],
        blur_p=chosen["blur_p"],
    )


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
def _check_args(args: argparse.Namespace) -> dict[str, Any]:
    """Before any data or model work: the resolved options, the method's hyper-parameters, the output
    folder and the backbone's shape."""
    method_cls = METHODS[args.method]
    scale = "tiny" if args.model in TINY_BACKBONES else "full"
    # the checked hyper-parameters: bad values fail here, before data or model work
    hparams = method_hparams(args.method, scale, **_method_overrides(args, method_cls))
    check_hub_args(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    backbone_config = build_backbone_config(args.model, image_size=args.image_size, patch_size=args.patch_size)
    image_size = int(backbone_config.image_size)  # shape errors surface here, before data or model work
    return {
        "method_cls": method_cls,
        "hparams": hparams,
        "backbone_config": backbone_config,
        "image_size": image_size,
    }


def _loader_and_schedule(args: argparse.Namespace, run: dict[str, Any], model, accelerator) -> dict[str, Any]:
    """The prepared loader, the global batch (checked against the method) and the schedule: steps,
    epochs, warm-up and the learning rate (``--base_learning_rate`` x total batch / 256 unless set)."""
    bs = args.per_device_train_batch_size
    loader, batches_per_epoch = build_dataloader(
        run["ds"],
        accelerator,
        batch_size=bs,
        image_column=args.image_column,
        load_size=args.load_size or run["image_size"],
        seed=args.seed,
        num_workers=args.num_workers,
    )
    accum = accelerator.gradient_accumulation_steps
    total_batch = bs * accum * accelerator.num_processes
    model.check_global_batch(bs * accelerator.num_processes)
    steps_per_epoch, total_steps = plan_steps(args.max_steps, args.num_train_epochs, batches_per_epoch, accum)
    epochs = args.num_train_epochs if args.max_steps is None or not steps_per_epoch else total_steps / steps_per_epoch
    warmup = int(round(args.warmup_epochs / max(epochs, 1e-9) * total_steps)) if args.warmup_epochs else 0
    lr = args.learning_rate if args.learning_rate is not None else args.base_learning_rate * total_batch / 256
    return {
        "loader": loader,
        "batches_per_epoch": batches_per_epoch,
        "total_batch": total_batch,
        "total_steps": total_steps,
        "epochs": epochs,
        "warmup": warmup,
        "lr": lr,
    }


def _engine_and_optimiser(
    args: argparse.Namespace, run: dict[str, Any], model, accelerator, out: Path
) -> dict[str, Any]:
    """The method's optimiser, the engine and the cosine schedule (fixed-lr groups kept constant);
    model and optimiser prepared."""
    optimizer = build_ssl_optimizer(
        model,
        args.optimizer,
        run["lr"],
        args.weight_decay,
        momentum=args.sgd_momentum,
        fixed_lr_prefixes=run["method_cls"].fixed_lr_prefixes,
    )
    total_steps = run["total_steps"]
    engine = Engine(
        accelerator,
        EngineConfig(
            output_dir=out,
            total_steps=total_steps,
            images_per_micro_batch=args.per_device_train_batch_size,
            seed=args.seed,
            max_grad_norm=args.max_grad_norm,
            logging_steps=args.logging_steps,
            checkpointing_steps=args.checkpointing_steps,
            checkpoints_total_limit=args.checkpoints_total_limit,
            stop_after_steps=args.stop_after_steps,
            eval_steps=args.eval_steps,
            desc=f"{args.method} {args.model}",
        ),
    )
    scheduler = cosine_schedule_with_warmup(optimizer, run["warmup"], total_steps)
    constant = lambda step: 1.0  # noqa: E731  (SimSiam's predictor: fixed lr)
    scheduler.lr_lambdas = [constant if g.get("fixed_lr") else scheduler.lr_lambdas[0] for g in optimizer.param_groups]
    model, optimizer = engine.prepare(model, optimizer, scheduler)
    return {"engine": engine, "model": model, "optimizer": optimizer, "scheduler": scheduler}


def _views_processor_and_monitor(args: argparse.Namespace, run: dict[str, Any], accelerator) -> dict[str, Any]:
    """The GPU view pipeline, the saved ``AdaINImageProcessor`` and (``--knn_dataset``) the k-NN monitor."""
    image_size, adain_mean, adain_std = run["image_size"], run["adain_mean"], run["adain_std"]
    view_kw = _view_settings(args, run["method_cls"], image_size)
    views = SSLViews(
        **view_kw,
        adain=args.adain == "on",
        adain_mode=args.adain_mode,
        adain_mean=adain_mean,
        adain_std=adain_std,
        image_mean=args.image_mean,
        image_std=args.image_std,
    ).to(accelerator.device)
    processor = AdaINImageProcessor(
        size={"height": image_size, "width": image_size},
        do_adain=args.adain == "on",
        adain_mean=adain_mean,
        adain_std=adain_std,
        reference_stats=run["provenance"],
        image_mean=[args.image_mean],
        image_std=[args.image_std],
        num_channels=3,
    )
    knn, knn_info = None, None
    if args.knn_dataset:
        from genssl_hf.training.finetune_data import InputNormalizer
        from genssl_hf.training.ssl.monitor import build_knn_monitor

        normalizer = InputNormalizer.from_processor(processor, image_size, 3)
        knn, knn_info = build_knn_monitor(
            args.knn_dataset, image_size, normalizer, num_train=args.knn_train, num_test=args.knn_test, seed=args.seed
        )
    return {"views": views, "processor": processor, "knn": knn, "knn_info": knn_info}


def _run_config(args: argparse.Namespace, run: dict[str, Any], unwrapped) -> dict[str, Any]:
    """``run_config.json``: options, method, backbone, derived schedule, views, AdaIN, k-NN monitor."""
    ds = run["ds"]
    return {
        "args": args_to_dict(args),
        "method": args.method,
        "method_hparams": unwrapped.hparams,
        "backbone": {
            "preset": args.model,
            "family": backbone_family(args.model),
            "config": unwrapped.backbone.config.to_dict(),
        },
        "derived": {
            "total_batch_size": run["total_batch"],
            "learning_rate": run["lr"],
            "total_steps": run["total_steps"],
            "warmup_steps": run["warmup"],
            "batches_per_epoch": run["batches_per_epoch"],
            "epochs": run["epochs"],
            "num_train_images": len(ds) if hasattr(ds, "__len__") else None,
            "recipe": _recipe_key(args.model),
        },
        "views": run["views"].config(),
        "adain": {
            "enabled": args.adain == "on",
            "mode": args.adain_mode,
            "mean": run["adain_mean"],
            "std": run["adain_std"],
            "reference_stats": run["provenance"],
        },
        "knn_monitor": run["knn_info"],
    }


def _export(
    args: argparse.Namespace,
    run: dict[str, Any],
    unwrapped,
    out: Path,
    run_config: dict[str, Any],
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    last: dict[str, Any],
) -> None:
    """The encoder folder (backbone, processor, ``ssl_info``, card), the figure and ``train_summary.json``."""
    backbone_out = unwrapped.backbone
    info = {
        "method": args.method,
        "backbone": args.model,
        "method_hparams": unwrapped.hparams,
        "derived": run_config["derived"],
        "views": run_config["views"],
        "adain": run_config["adain"],
        "dataset": str(args.dataset) if args.dataset else "in-memory datasets object",
        "final_loss": summary["final_loss"],
        "last_logged": last,
    }
    card = _render_card(args, run_config, summary)
    save_encoder(backbone_out, run["processor"], out, info=info, card=card)
    if args.figure == "on":
        from genssl_hf.training.ssl.figure import ssl_figure

        summary["figure"] = str(
            ssl_figure(
                out / "pretraining.png",
                run["views"],
                run["ds"],
                args.image_column,
                run["image_size"],
                history,
                args.method,
                args.model,
                run["method_cls"].num_views,
                seed=args.seed,
            )
        )
    write_train_summary(out, summary)  # per-step arrays: train_steps.json


@no_trace_on_early_failure
def pretrain_ssl(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Run one method as configured by ``args`` (see :func:`build_parser`); ``dataset`` may be a
    ``datasets`` object instead of ``--dataset``. Returns a summary (steps, loss, images/s, paths)."""
    args = resolve_args(args)
    run = _check_args(args)
    run["ds"] = open_pretraining_images(args, dataset)
    run["adain_mean"], run["adain_std"], run["provenance"] = resolve_reference(args)

    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # model init: identical on every process
    backbone = build_backbone(run["backbone_config"], attn_implementation=args.attn_implementation)
    model = run["method_cls"](backbone, run["hparams"])
    run.update(_loader_and_schedule(args, run, model, accelerator))
    run.update(_engine_and_optimiser(args, run, model, accelerator, out))
    engine = run["engine"]
    state = engine.resume(args.resume_from_checkpoint)
    run.update(_views_processor_and_monitor(args, run, accelerator))
    unwrapped = accelerator.unwrap_model(run["model"])
    run_config = _run_config(args, run, unwrapped)
    write_run_config(accelerator, out, run_config)
    init_trackers(
        accelerator,
        f"genssl_{args.method}",
        {**args_to_dict(args), "learning_rate": run["lr"], "total_steps": run["total_steps"]},
    )

    task = SSLTask(run["views"], run["method_cls"].num_views, accelerator.device, run["knn"])
    result = engine.run(task, run["model"], run["optimizer"], run["scheduler"], run["loader"], state)
    summary: dict[str, Any] = {**result.summary, "method": args.method, "backbone": args.model, "output_dir": str(out)}
    last = {k: v for entry in result.history for k, v in entry.items() if k != "step"}
    summary["last_logged"] = last
    if result.interrupted:
        accelerator.end_training()
        return summary

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _export(args, run, unwrapped, out, run_config, summary, result.history, last)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _render_card(args: argparse.Namespace, run_config: dict[str, Any], summary: dict[str, Any]) -> str:
    from genssl_hf.core.cards import render_model_card

    family = run_config["backbone"]["family"]
    card_data = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "image-feature-extraction",
        "tags": [
            "genssl",
            args.method.replace("_", "-"),
            "vit" if family == "vit" else "resnet",
            "chest-x-ray",
            "medical-imaging",
            "self-supervised",
        ],
    }
    card = render_model_card(
        MODEL_CARD_TEMPLATE,
        card_data,
        method=args.method,
        backbone=run_config["backbone"],
        hparams=run_config["method_hparams"],
        derived=run_config["derived"],
        views=run_config["views"],
        adain=run_config["adain"],
        summary=summary,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        classifier_class="ResNetForImageClassification" if family == "cnn" else "ViTForImageClassification",
        dataset=str(args.dataset) if args.dataset else "in-memory datasets object",
    )
    return str(card)


def main(argv: list[str] | None = None, publish=None) -> int:
    """Command line: train, then (scripts only) publish; ``publish(kind, folder, repo_id) -> url`` is
    handed in by ``scripts/pretrain.py``, as training never imports ``hub``."""
    return run_training_command(
        pretrain_ssl,
        build_parser().parse_args(argv),
        publish,
        "encoder",
        ("method", "backbone", "global_step", "final_loss", "images_per_second", "interrupted"),
    )


if __name__ == "__main__":
    sys.exit(main())
