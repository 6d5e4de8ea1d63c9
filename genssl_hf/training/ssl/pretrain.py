"""Contrastive, Siamese and pretext pre-training (SimCLR, MoCo v2, SimSiam, rotation) on ViT or
ResNet backbones, on the shared engine (:mod:`genssl_hf.training.engine`).

``accelerate launch scripts/pretrain.py --method simclr --model resnet-18 --dataset DIR --output_dir OUT``
(``--method mae`` runs the MAE trainer). The data path is MAE's (same dataset opener, collate,
seeded sampler and AdaIN reference resolution); each batch becomes ``num_views`` kornia views
(:class:`~genssl_hf.training.ssl.transforms.SSLViews`), the method turns them into a loss, and the
engine does the rest: the family is one :class:`~genssl_hf.training.recipe.Method`
(:class:`SSLPretraining`) on the shared recipe :func:`~genssl_hf.training.recipe.train`. At the end
the backbone alone is exported method-neutrally (:func:`genssl_hf.models.save_encoder`: ``AutoModel``
/ ``*ForImageClassification`` + ``AdaINImageProcessor`` + card + ``encoder_info.json``), with a
figure of the views and the training curves (loss, embedding std, kNN).

Each method (:mod:`genssl_hf.training.ssl.methods`, one file per method plus a registry line)
declares its hyper-parameters, views and optimisation recipes; this module adapts any of them to the
recipe and never names a method. Recipes per backbone family (lr = base lr x total batch / 256) are
in each method's file and :mod:`genssl_hf.training.ssl.methods.recipes`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from genssl_hf.models import backbone_family, build_backbone, build_backbone_config, save_encoder
from genssl_hf.training.args import (
    args_to_dict,
)
from genssl_hf.training.common import no_trace_on_early_failure, run_training_command
from genssl_hf.training.pretraining_data import build_dataloader, open_pretraining_images
from genssl_hf.training.recipe import Method, adain_record, device_normalisation, reference_processor, train
from genssl_hf.training.ssl.methods import METHODS, SSLMethod, method_hparams
from genssl_hf.training.ssl.optim import build_ssl_optimizer
from genssl_hf.training.ssl.pretrain_args import build_parser, method_options  # noqa: F401 (the command line)
from genssl_hf.training.ssl.transforms import SSLViews
from genssl_hf.utils import write_train_summary

__all__ = [
    "TINY_BACKBONES",
    "build_parser",
    "method_options",
    "pretrain_ssl",
    "recipe_for",
    "SSLPretraining",
    "SSLTask",
    "main",
]

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


# ----------------------------------------------------------------------------------------- method
class SSLPretraining(Method):
    """The contrastive / Siamese / pretext family on :func:`~genssl_hf.training.recipe.train`: the
    registered :class:`SSLMethod` named by ``--method`` on a backbone preset; the encoder alone is exported."""

    def __init__(self, method: str):
        self.method_cls = METHODS[method]
        self.name = method

    def check(self, args: argparse.Namespace) -> dict[str, Any]:
        """Before any data or model work: the resolved options, the method's hyper-parameters and the
        backbone's shape."""
        resolve_args(args)
        scale = "tiny" if args.model in TINY_BACKBONES else "full"
        # the checked hyper-parameters: bad values fail here, before data or model work
        hparams = method_hparams(args.method, scale, **_method_overrides(args, self.method_cls))
        backbone_config = build_backbone_config(args.model, image_size=args.image_size, patch_size=args.patch_size)
        image_size = int(backbone_config.image_size)  # shape errors surface here, before data or model work
        return {"hparams": hparams, "backbone_config": backbone_config, "image_size": image_size}

    def load_data(self, args: argparse.Namespace, data: Any, run: dict[str, Any]) -> Any:
        return open_pretraining_images(args, data)

    def build_model(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> torch.nn.Module:
        backbone = build_backbone(run["backbone_config"], attn_implementation=args.attn_implementation)
        return self.method_cls(backbone, run["hparams"])

    def build_loader(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        """The prepared loader; the global micro batch checked against the method (MoCo's queue)."""
        bs = args.per_device_train_batch_size
        loader = build_dataloader(
            run["data"],
            accelerator,
            batch_size=bs,
            image_column=args.image_column,
            load_size=args.load_size or run["image_size"],
            seed=args.seed,
            num_workers=args.num_workers,
        )
        run["model"].check_global_batch(bs * accelerator.num_processes)
        return loader

    def build_optimizer(self, args: argparse.Namespace, run: dict[str, Any], lr: float):
        return build_ssl_optimizer(
            run["model"],
            args.optimizer,
            lr,
            args.weight_decay,
            momentum=args.sgd_momentum,
            fixed_lr_prefixes=self.method_cls.fixed_lr_prefixes,
        )

    def engine_options(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        return {"eval_steps": args.eval_steps, "desc": f"{args.method} {args.model}"}

    def after_prepare(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> None:
        """The device view pipeline, the saved processor and (``--knn_dataset``) the k-NN monitor."""
        image_size = run["image_size"]
        reference = run["reference"]
        run["views"] = SSLViews(
            **_view_settings(args, self.method_cls, image_size),
            **device_normalisation(args, reference),
        ).to(accelerator.device)
        run["processor"] = reference_processor(args, image_size, reference)
        run["knn"], run["knn_info"] = None, None
        if args.knn_dataset:
            from genssl_hf.training.finetune_data import InputNormalizer
            from genssl_hf.training.ssl.monitor import build_knn_monitor

            normalizer = InputNormalizer.from_processor(run["processor"], image_size, 3)
            run["knn"], run["knn_info"] = build_knn_monitor(
                args.knn_dataset,
                image_size,
                normalizer,
                num_train=args.knn_train,
                num_test=args.knn_test,
                seed=args.seed,
            )

    def run_config(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        """``run_config.json``: options, method, backbone, derived schedule, views, AdaIN, k-NN monitor."""
        ds, unwrapped, schedule = run["data"], run["unwrapped"], run["schedule"]
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
                **schedule,
                "num_train_images": len(ds) if hasattr(ds, "__len__") else None,
                "recipe": _recipe_key(args.model),
            },
            "views": run["views"].config(),
            "adain": adain_record(args, run["reference"]),
            "knn_monitor": run["knn_info"],
        }

    def build_task(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> SSLTask:
        return SSLTask(run["views"], self.method_cls.num_views, accelerator.device, run["knn"])

    def summarise(self, args: argparse.Namespace, run: dict[str, Any], result) -> dict[str, Any]:
        summary = {
            **result.summary,
            "method": args.method,
            "backbone": args.model,
            "output_dir": str(run["output_dir"]),
        }
        summary["last_logged"] = {k: v for entry in result.history for k, v in entry.items() if k != "step"}
        return summary

    def export(self, args, run, run_config, summary, result) -> None:
        """The encoder folder (backbone, processor, ``ssl_info``, card), the figure and ``train_summary.json``."""
        out, unwrapped = run["output_dir"], run["unwrapped"]
        info = {
            "method": args.method,
            "backbone": args.model,
            "method_hparams": unwrapped.hparams,
            "derived": run_config["derived"],
            "views": run_config["views"],
            "adain": run_config["adain"],
            "dataset": str(args.dataset) if args.dataset else "in-memory datasets object",
            "final_loss": summary["final_loss"],
            "last_logged": summary["last_logged"],
        }
        save_encoder(unwrapped.backbone, run["processor"], out, info=info, card=_render_card(args, run_config, summary))
        if args.figure == "on":
            from genssl_hf.training.ssl.figure import ssl_figure

            summary["figure"] = str(
                ssl_figure(
                    out / "pretraining.png",
                    run["views"],
                    run["data"],
                    args.image_column,
                    run["image_size"],
                    result.history,
                    args.method,
                    args.model,
                    self.method_cls.num_views,
                    seed=args.seed,
                )
            )
        write_train_summary(out, summary)  # per-step arrays: train_steps.json


@no_trace_on_early_failure
def pretrain_ssl(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Run one method as configured by ``args`` (see :func:`build_parser`); ``dataset`` may be a
    ``datasets`` object instead of ``--dataset``. Returns a summary (steps, loss, images/s, paths)."""
    return train(SSLPretraining(args.method), args, dataset, accelerator)


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
