"""ViT masked-autoencoder pre-training (GEN-SSL stage 4) with ``accelerate``.

``python -m genssl_hf.training.mae --model tiny --dataset DIR --output_dir OUT`` or
``accelerate launch scripts/pretrain_mae.py ...``. The loop: images (uint8, resized once in the data
workers) -> batched tensor augmentation (kornia random resized crop + flip) -> AdaIN to the reference
statistics (``--adain on``, per crop by default like the paper's code) -> ``ViTMAEForPreTraining``
(mask 0.9, bf16 autocast, SDPA attention, fused AdamW, no per-step host sync) with gradient
accumulation, half-cycle cosine lr per step, checkpoints every K steps and exact resume. At the end:
model + :class:`AdaINImageProcessor` via ``save_pretrained``, a reconstruction figure, a model card,
the resolved run config, and optionally ``--push_to_hub``.

``--model`` is an architecture preset (``tiny``, ``vit-s16``, ``vit-b16``: a fresh MAE) or a ViTMAE /
ViT model folder to continue from; ``--recipe`` the optimisation defaults (:data:`RECIPES`), by
default the preset's (for a folder: the preset of its encoder width).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import ViTMAEForPreTraining

from genssl_hf.validation import check_namespace, check_weight_files
from genssl_hf.processing import AdaINImageProcessor, MAEAugment
from genssl_hf.training.attention import resolve_attn_implementation
from genssl_hf.training.mae_init import check_position_tables
from genssl_hf.training.mae_model import PRESETS, build_mae_config, build_model, check_mae_shape, model_folder
from genssl_hf.training.mae_args import PAPER_TOTAL_BATCH, RECIPES, RENAMED_OPTIONS, build_parser  # noqa: F401
from genssl_hf.training.common import (
    args_to_dict,
    build_optimizer,
    check_hub_args,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    no_trace_on_early_failure,
    run_training_command,
    save_model_and_processor,
    write_run_config,
)
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.training.optim import plan_steps
from genssl_hf.training.pretraining_data import build_dataloader, open_pretraining_images, resolve_reference
from genssl_hf.utils import read_json, write_train_summary


# ---------------------------------------------------------------------------------------- stats
# ----------------------------------------------------------------------------------------- args
def _recipe_of_folder(path: Path) -> str:
    """The preset whose encoder width a ViTMAE / ViT folder has (the recipe it continues with)."""
    cfg = path / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"--model {path}: no config.json (expected a ViTMAE or ViT model folder)")
    width = int(read_json(cfg).get("hidden_size", 0))
    return "vit-b16" if width >= 768 else "vit-s16" if width >= 384 else "tiny"


def _arch_preset(args: argparse.Namespace) -> str:
    """The preset of the architecture defaults: ``--model`` when it is one, else ``--recipe``'s."""
    return args.model if str(args.model) in PRESETS else args.recipe


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Check ``--model`` (a preset, or a folder with readable weights); fill ``--recipe`` and every
    unset option from the recipe."""
    folder = model_folder(args.model)
    if folder is not None:
        check_weight_files(args.model, "--model")
    if args.recipe is None:
        args.recipe = args.model if folder is None else _recipe_of_folder(folder)
    recipe = RECIPES[args.recipe]
    for k, v in recipe.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


# ----------------------------------------------------------------------------------------- task
class MAETask:
    """Engine task: uint8 batch -> augmented, AdaIN-aligned crops (made outside autocast, after the
    step's seed) -> ``ViTMAEForPreTraining`` masked-reconstruction loss (its random mask drawn inside)."""

    def __init__(self, augment: MAEAugment, device):
        self.augment, self.device = augment, device

    def prepare_batch(self, batch: torch.Tensor) -> torch.Tensor:
        return self.augment(batch.to(self.device, non_blocking=True))

    def training_step(self, model, pixel_values: torch.Tensor):
        return model(pixel_values=pixel_values).loss, {}


def _check_mae_args(args: argparse.Namespace) -> tuple[int, int]:
    """Every argument error before data or model work; returns (image size, patch size)."""
    check_namespace(build_parser(), args)  # the ranges argparse applies, for namespaces built in code
    image_size = args.image_size or PRESETS[_arch_preset(args)]["image_size"]
    patch_size = args.patch_size or PRESETS[_arch_preset(args)]["patch_size"]
    check_mae_shape(image_size, patch_size, args.mask_ratio)
    if args.per_device_train_batch_size < 1:
        raise ValueError(f"--per_device_train_batch_size must be >= 1, got {args.per_device_train_batch_size}")
    check_hub_args(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    return image_size, patch_size


def _schedule(args: argparse.Namespace, batches_per_epoch: int | None, accelerator) -> dict[str, Any]:
    """Optimiser steps, warm-up and lr from the recipe and the batch arithmetic."""
    accum = accelerator.gradient_accumulation_steps
    total_batch = args.per_device_train_batch_size * accum * accelerator.num_processes
    _, total_steps = plan_steps(args.max_steps, args.num_train_epochs, batches_per_epoch, accum)
    warmup = args.warmup_steps if args.warmup_steps is not None else int(round(args.warmup_ratio * total_steps))
    lr = args.learning_rate if args.learning_rate is not None else args.base_learning_rate * total_batch / 256
    return {
        "total_batch_size": total_batch,
        "learning_rate": lr,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "batches_per_epoch": batches_per_epoch,
    }


def _engine_config(args: argparse.Namespace, out: Path, total_steps: int) -> EngineConfig:
    return EngineConfig(
        output_dir=out,
        total_steps=total_steps,
        images_per_micro_batch=args.per_device_train_batch_size,
        seed=args.seed,
        max_grad_norm=args.max_grad_norm,
        logging_steps=args.logging_steps,
        checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit,
        stop_after_steps=args.stop_after_steps,
        desc=f"MAE {_arch_preset(args)}",
    )


def _augment(args: argparse.Namespace, image_size: int, adain_mean, adain_std) -> MAEAugment:
    """The on-device MAE augmentation (random resized crop, flip, AdaIN, normalisation)."""
    return MAEAugment(
        image_size,
        scale=(args.crop_scale_min, 1.0),
        adain=args.adain == "on",
        adain_mode=args.adain_mode,
        adain_mean=adain_mean,
        adain_std=adain_std,
        image_mean=args.image_mean,
        image_std=args.image_std,
        out_channels=3,
    )


def _run_config(
    args: argparse.Namespace, config, init_record, attn_implementation, derived, ds, augment, adain, skipped
) -> dict[str, Any]:
    """The run's ``run_config.json``: arguments, model, init, derived schedule, augmentation, AdaIN."""
    return {
        "args": args_to_dict(args),
        "model": config.to_dict(),
        "init": init_record,
        "attn_implementation": attn_implementation,
        "derived": {**derived, "num_train_images": len(ds) if hasattr(ds, "__len__") else None},
        "augmentation": {**augment.config(), "crop_scale": [args.crop_scale_min, 1.0], "hflip": True},
        "adain": {
            "enabled": args.adain == "on",
            "mode": args.adain_mode,
            "mean": adain["mean"],
            "std": adain["std"],
            "reference_stats": adain["reference_stats"],
        },
        "skipped_images": [str(s) for s in skipped],
    }


def _processor(args: argparse.Namespace, image_size: int, adain: dict[str, Any]) -> AdaINImageProcessor:
    """The image processor exported with the model (the AdaIN reference of the run)."""
    return AdaINImageProcessor(
        size={"height": image_size, "width": image_size},
        do_adain=args.adain == "on",
        adain_mean=adain["mean"],
        adain_std=adain["std"],
        reference_stats=adain["reference_stats"],
        image_mean=[args.image_mean],
        image_std=[args.image_std],
        num_channels=3,
    )


@no_trace_on_early_failure
def pretrain_mae(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Run MAE pre-training as configured by ``args`` (see :func:`build_parser`); ``dataset`` may be a
    ``datasets`` object instead of ``--dataset``. Returns a summary dict (steps, final loss, images/s,
    output paths, ``interrupted``). Raises ``NonFiniteLossError`` on a NaN loss (last good checkpoint kept)."""
    args = _resolve(args)
    image_size, patch_size = _check_mae_args(args)
    skipped: list = []
    ds = open_pretraining_images(args, dataset, skipped)
    adain_mean, adain_std, provenance = resolve_reference(args)
    config = build_mae_config(
        _arch_preset(args),
        mask_ratio=args.mask_ratio,
        norm_pix_loss=args.norm_pix_loss,
        image_size=image_size,
        patch_size=patch_size,
    )

    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # model init
    attn_implementation = resolve_attn_implementation(
        args.attn_implementation, accelerator.device, accelerator.mixed_precision
    )
    init_from = args.model if model_folder(args.model) is not None else None
    model, init_record = build_model(config, init_from, attn_implementation)
    check_position_tables(model, f"--model {init_from}" if init_from else "the freshly built MAE")
    config = model.config
    loader, batches_per_epoch = build_dataloader(
        ds,
        accelerator,
        batch_size=args.per_device_train_batch_size,
        image_column=args.image_column,
        load_size=args.load_size or image_size,
        seed=args.seed,
        num_workers=args.num_workers,
    )
    derived = _schedule(args, batches_per_epoch, accelerator)
    lr, total_steps = derived["learning_rate"], derived["total_steps"]
    optimizer = build_optimizer(model, lr, args.weight_decay, betas=(0.9, args.adam_beta2))
    engine = Engine(accelerator, _engine_config(args, out, total_steps))
    scheduler = cosine_schedule_with_warmup(optimizer, derived["warmup_steps"], total_steps)
    model, optimizer = engine.prepare(model, optimizer, scheduler)
    if args.torch_compile:
        model = torch.compile(model)
    augment = _augment(args, image_size, adain_mean, adain_std).to(accelerator.device)
    state = engine.resume(args.resume_from_checkpoint)
    if state.global_step:
        check_position_tables(accelerator.unwrap_model(model), f"the checkpoint resumed in {out}")

    adain = {"mean": adain_mean, "std": adain_std, "reference_stats": provenance}
    run_config = _run_config(args, config, init_record, attn_implementation, derived, ds, augment, adain, skipped)
    write_run_config(accelerator, out, run_config)
    init_trackers(accelerator, "genssl_mae", {**args_to_dict(args), "learning_rate": lr, "total_steps": total_steps})

    result = engine.run(MAETask(augment, accelerator.device), model, optimizer, scheduler, loader, state)
    summary: dict[str, Any] = {**result.summary, "output_dir": str(out)}
    if not result.interrupted:
        processor = _processor(args, image_size, adain)
        export_mae(accelerator, model, processor, ds, args, run_config, summary)
    accelerator.end_training()
    return summary


def export_mae(
    accelerator,
    model,
    processor: AdaINImageProcessor,
    ds: Any,
    args: argparse.Namespace,
    run_config: dict[str, Any],
    summary: dict[str, Any],
) -> None:
    """The finished run's folder (main process): model + processor, reconstruction figure, card, summary."""
    out = Path(args.output_dir)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)
    if accelerator.is_main_process:
        save_model_and_processor(unwrapped, processor, out)
        if args.figure == "on":
            summary["figure"] = str(
                reconstruction_figure(
                    unwrapped,
                    ds,
                    args.image_column,
                    processor,
                    out / "reconstruction.png",
                    n=args.figure_samples,
                    seed=args.seed,
                )
            )
        write_model_card(out, args, run_config, summary)
        write_train_summary(out, summary)  # per-step arrays: train_steps.json
    accelerator.wait_for_everyone()


# -------------------------------------------------------------------------------------- outputs
@torch.no_grad()
def reconstruction_figure(
    model: ViTMAEForPreTraining,
    ds: Any,
    image_column: str,
    processor: AdaINImageProcessor,
    path: str | os.PathLike,
    n: int = 4,
    seed: int = 0,
) -> Path:
    """PNG with one row per image: original (processed), masked input, reconstruction, reconstruction with
    the visible patches pasted back. The first ``n`` images of the dataset, a fixed mask seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    for row in ds:
        images.append(row[image_column])
        if len(images) >= n:
            break
    pv = torch.as_tensor(processor(images, return_tensors="pt")["pixel_values"])
    model = model.float().eval()
    g = torch.Generator().manual_seed(seed)
    p = model.config.patch_size
    noise = torch.rand(pv.shape[0], (pv.shape[-1] // p) ** 2, generator=g)
    out = model(pixel_values=pv.to(model.device), noise=noise.to(model.device))
    rec = model.unpatchify(out.logits).cpu()
    mask = out.mask.cpu().unsqueeze(-1).expand(-1, -1, p * p * 3)
    mask = model.unpatchify(mask)
    m, s = float(processor.image_mean[0]), float(processor.image_std[0])

    def show(t: torch.Tensor) -> np.ndarray:
        return (t[0] * s + m).clamp(0, 1).numpy()

    cols = ["original", "masked", "reconstruction", "reconstruction + visible"]
    fig, axes = plt.subplots(len(pv), 4, figsize=(8, 2 * len(pv)), squeeze=False)
    for i in range(len(pv)):
        panels = [
            pv[i],
            pv[i] * (1 - mask[i]) + mask[i] * ((0.0 - m) / s),
            rec[i],
            pv[i] * (1 - mask[i]) + rec[i] * mask[i],
        ]
        for j, t in enumerate(panels):
            axes[i, j].imshow(show(t), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(cols[j], fontsize=8)
    fig.suptitle(f"MAE reconstruction (mask ratio {model.config.mask_ratio})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    model.train()
    return path


def write_model_card(out: Path, args: argparse.Namespace, run_config: dict[str, Any], summary: dict[str, Any]) -> None:
    from genssl_hf.core.cards import render_model_card
    from genssl_hf.utils import atomic_write_text

    card_data: dict[str, Any] = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "image-feature-extraction",
        "tags": ["genssl", "masked-autoencoder", "vit-mae", "chest-x-ray", "medical-imaging", "self-supervised"],
    }
    if run_config["init"].get("init_from"):
        card_data["base_model"] = run_config["init"]["init_from"]
    card = render_model_card(
        "mae_encoder",
        card_data,
        preset=_arch_preset(args),
        model=run_config["model"],
        derived=run_config["derived"],
        adain=run_config["adain"],
        augmentation=run_config["augmentation"],
        init=run_config["init"],
        summary=summary,
        dataset=str(args.dataset) if args.dataset else "in-memory datasets object",
    )
    atomic_write_text(out / "README.md", str(card))


def main(argv: list[str] | None = None, publish=None) -> int:
    """Command line: train, then (scripts only) publish; ``publish(kind, folder, repo_id) -> url`` is
    handed in by ``scripts/pretrain_mae.py``, as training never imports ``hub``."""
    return run_training_command(
        pretrain_mae,
        build_parser().parse_args(argv),
        publish,
        "encoder",
        ("global_step", "final_loss", "images_per_second", "interrupted"),
    )


if __name__ == "__main__":
    sys.exit(main())
