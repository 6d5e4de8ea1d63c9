"""Image-report contrastive pre-training (ConVIRT / CLIP / GLoRIA) as a transformers
``VisionTextDualEncoderModel``: the trainer and its command line.

The model is the stock ``VisionTextDualEncoderModel`` (so the output folder loads with
``VisionTextDualEncoderModel.from_pretrained`` and works in the ``zero-shot-image-classification``
pipeline), built in :mod:`genssl_hf.training.dual_encoder` from an image tower (the package's ViT
presets or any ViT / ViTMAE folder, or a ConvNeXt CNN) and a text tower (by default the packaged
offline all-MiniLM-L6-v2; any local BERT-style folder).

Loss (:func:`genssl_hf.training.vlp_loss.image_text_infonce`): bidirectional InfoNCE over the *global*
batch, with negatives gathered from every process:

    L = lambda * CE(image -> all texts) + (1 - lambda) * CE(text -> all images)

- ``convirt``: temperature 0.1, fixed; lambda = 0.75 (Zhang et al., 2020).
- ``clip``: learnable temperature (initialised at 0.07, logit scale clamped at 100); lambda = 0.5.

Identical reports in a batch (frequent: "No acute cardiopulmonary abnormality.") are not negatives of
each other: with ``dedupe_targets`` the target spreads uniformly over every column with the same
text (by a hash, so it works across processes); without duplicates this is the plain InfoNCE.

Reports longer than the text tower's limit are truncated when tokenised; the run config and the card
record how many were. The engine task is :class:`genssl_hf.training.vlp_task.VLPTask`; ``gloria`` adds
word-to-region attention and a local loss (:mod:`genssl_hf.training.gloria`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genssl_hf.processing.augment import MAEAugment
from genssl_hf.processing.image_processor import AdaINImageProcessor
from genssl_hf.training.common import (
    EpochShuffleSampler,
    args_to_dict,
    build_optimizer,
    check_hub_args,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    no_trace_on_early_failure,
    run_training_command,
    write_run_config,
)
from genssl_hf.training.dual_encoder import (
    FrozenTextFeatures,
    PairCollator,
    build_dual_encoder,
    embed_images,
    embed_texts,
    export_image_tower,
    save_dual_encoder,
    text_max_length,
    text_tower_fully_frozen,
    truncation_stats,
)
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.training.gloria import attach_local_heads, gloria_task, save_local_heads
from genssl_hf.training.pretraining_data import resolve_reference
from genssl_hf.training.vlp_loss import LOSS_PRESETS
from genssl_hf.training.vlp_args import build_parser
from genssl_hf.training.vlp_task import VLPTask
from genssl_hf.utils import atomic_write_text, write_train_summary

logger = logging.getLogger(__name__)

# ``export_image_tower`` (training.dual_encoder) stays importable here: scripts and the CLI import it from this module.
__all__ = ["pretrain_vlp", "export_image_tower", "similarity_figure", "write_dual_encoder_card", "build_parser", "main"]


def _loss_settings(args) -> dict[str, Any]:
    s = dict(LOSS_PRESETS[args.loss])
    if args.temperature is not None:
        s["temperature"] = float(args.temperature)
    if args.image_to_text_weight is not None:
        if not 0.0 <= args.image_to_text_weight <= 1.0:
            raise ValueError(f"--image_to_text_weight must lie in [0, 1], got {args.image_to_text_weight}")
        s["image_to_text_weight"] = float(args.image_to_text_weight)
    s["dedupe_targets"] = args.dedupe_targets == "on"
    s["name"] = args.loss
    return s


def _check_args_and_load_pairs(args: argparse.Namespace, pairs: Any) -> dict[str, Any]:
    """Before any compute: the loss settings, the options, the pairs (``pairs`` or ``--pairs``, capped
    at ``--max_train_samples``) and the AdaIN reference statistics."""
    from genssl_hf.data.pairs import load_pairs

    loss_cfg = _loss_settings(args)
    if args.per_device_train_batch_size < 2:
        raise ValueError("--per_device_train_batch_size must be >= 2 (InfoNCE needs negatives)")
    check_hub_args(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    phantom_config = json.loads(args.phantom_config) if isinstance(args.phantom_config, str) else args.phantom_config
    pairs = load_pairs(
        pairs if pairs is not None else args.pairs,
        section=args.section,
        corpus=args.reports,
        image_size=args.image_size or 64,
        seed=args.seed,
        phantom_config=phantom_config,
    )
    if args.max_train_samples is not None:
        pairs = pairs.select(range(min(len(pairs), int(args.max_train_samples))))
    adain_mean, adain_std, provenance = resolve_reference(args)
    return {
        "loss_cfg": loss_cfg,
        "pairs": pairs,
        "adain_mean": adain_mean,
        "adain_std": adain_std,
        "provenance": provenance,
    }


def _build_model_and_data(args: argparse.Namespace, run: dict[str, Any], accelerator) -> dict[str, Any]:
    """Seed, then the dual encoder, its tokenisation limits, the frozen-text cache (single process
    only) and the prepared pair loader."""
    pairs, loss_cfg = run["pairs"], run["loss_cfg"]
    torch.manual_seed(args.seed)
    model, tokenizer, init_record = build_dual_encoder(
        args.model,
        args.text_tower,
        projection_dim=args.projection_dim,
        image_size=args.image_size,
        temperature=loss_cfg["temperature"],
        learnable_temperature=loss_cfg["learnable_temperature"],
        freeze_text_layers=args.freeze_text_layers,
    )
    if loss_cfg["name"] == "gloria":
        attach_local_heads(model, accelerator.num_processes, loss_cfg)
    image_size = int(model.config.vision_config.image_size)
    max_length = text_max_length(tokenizer, model, args.max_text_length)
    truncation = truncation_stats(tokenizer, pairs.texts, max_length)
    bs = args.per_device_train_batch_size
    if len(pairs) < bs * accelerator.num_processes:
        raise ValueError(
            f"{len(pairs)} pairs are fewer than one global batch ({bs} x {accelerator.num_processes} processes)"
        )
    fully_frozen = text_tower_fully_frozen(model)
    # cache only in a single process: in DDP the forward must go through the wrapped model to sync gradients
    text_features = (
        FrozenTextFeatures(model.text_model, tokenizer, pairs.texts, max_length)
        if fully_frozen and accelerator.num_processes == 1
        else None
    )
    loader = torch.utils.data.DataLoader(
        pairs,
        batch_size=bs,
        sampler=EpochShuffleSampler(len(pairs), seed=args.seed),
        drop_last=True,
        collate_fn=PairCollator(tokenizer, image_size, max_length),
        num_workers=args.num_workers,
    )
    loader = accelerator.prepare(loader)
    return {
        "model": model,
        "tokenizer": tokenizer,
        "init_record": init_record,
        "image_size": image_size,
        "max_length": max_length,
        "truncation": truncation,
        "fully_frozen": fully_frozen,
        "text_features": text_features,
        "loader": loader,
    }


def _engine_and_optimiser(args: argparse.Namespace, run: dict[str, Any], accelerator, out: Path) -> dict[str, Any]:
    """The schedule's length, AdamW, the engine and its cosine schedule; model and optimiser prepared."""
    bs = args.per_device_train_batch_size
    accum = accelerator.gradient_accumulation_steps
    total_batch = bs * accum * accelerator.num_processes
    steps_per_epoch = math.ceil(len(run["loader"]) / accum)
    total_steps = int(args.max_steps) if args.max_steps else max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    warmup = int(round(args.warmup_ratio * total_steps))
    optimizer = build_optimizer(run["model"], args.learning_rate, args.weight_decay, betas=(0.9, 0.98))
    engine = Engine(
        accelerator,
        EngineConfig(
            output_dir=out,
            total_steps=total_steps,
            images_per_micro_batch=bs,
            seed=args.seed,
            max_grad_norm=args.max_grad_norm,
            logging_steps=args.logging_steps,
            checkpointing_steps=args.checkpointing_steps,
            checkpoints_total_limit=args.checkpoints_total_limit,
            desc=f"VLP {args.loss}",
            progress_keys=("train/loss", "train/temperature"),
        ),
    )
    scheduler = cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = engine.prepare(run["model"], optimizer, scheduler)
    return {
        "engine": engine,
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "total_batch": total_batch,
        "total_steps": total_steps,
        "warmup": warmup,
    }


def _run_config(args: argparse.Namespace, run: dict[str, Any], augment: MAEAugment, unwrapped) -> dict[str, Any]:
    """``run_config.json``: options, loss, initialisation, pair provenance, truncation, views, AdaIN, derived sizes."""
    text_features = run["text_features"]
    return {
        "args": args_to_dict(args),
        "loss": run["loss_cfg"],
        "init": run["init_record"],
        "pairs": run["pairs"].provenance,
        "truncation": run["truncation"],
        "augmentation": {**augment.config(), "crop_scale": [args.crop_scale_min, 1.0], "hflip": False},
        "adain": {
            "enabled": args.adain == "on",
            "mode": args.adain_mode,
            "mean": run["adain_mean"],
            "std": run["adain_std"],
            "reference_stats": run["provenance"],
        },
        "derived": {
            "cached_text_features": len(text_features) if text_features is not None else None,
            "total_batch_size": run["total_batch"],
            "total_steps": run["total_steps"],
            "warmup_steps": run["warmup"],
            "num_pairs": len(run["pairs"]),
            "image_size": run["image_size"],
            "max_text_length": run["max_length"],
            "projection_dim": int(unwrapped.config.projection_dim),
            "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
            "num_trainable_parameters": sum(p.numel() for p in unwrapped.parameters() if p.requires_grad),
        },
    }


def _export(
    args: argparse.Namespace,
    run: dict[str, Any],
    accelerator,
    unwrapped,
    out: Path,
    run_config: dict[str, Any],
    summary: dict[str, Any],
) -> None:
    """The model folder (main process): dual encoder, AdaIN processor, tokenizer, ``vlp_config.json``,
    the similarity figure, the card and ``train_summary.json``."""
    image_size, tokenizer, max_length = run["image_size"], run["tokenizer"], run["max_length"]
    processor = AdaINImageProcessor(
        size={"height": image_size, "width": image_size},
        do_adain=args.adain == "on",
        adain_mean=run["adain_mean"],
        adain_std=run["adain_std"],
        reference_stats=run["provenance"],
        image_mean=[args.image_mean],
        image_std=[args.image_std],
        num_channels=3,
    )
    if accelerator.is_main_process:
        save_local_heads(unwrapped, out)  # GLoRIA's, beside the stock dual encoder
        save_dual_encoder(
            unwrapped,
            processor,
            tokenizer,
            out,
            {
                "loss": run["loss_cfg"],
                "pairs": run["pairs"].provenance,
                "truncation": run["truncation"],
                "init": run["init_record"],
                "max_text_length": max_length,
                "section": args.section,
            },
        )
        if args.figure == "on":
            summary["figure"] = str(
                similarity_figure(unwrapped, processor, tokenizer, run["pairs"], out / "similarity.png", max_length)
            )
        write_dual_encoder_card(out, run_config, summary)
        write_train_summary(out, summary)  # per-step arrays: train_steps.json


@no_trace_on_early_failure
def pretrain_vlp(args: argparse.Namespace, pairs: Any = None, accelerator=None) -> dict[str, Any]:
    """Train the dual encoder on image-report pairs (``pairs``: an ``ImageReportPairs``, else
    ``--pairs``). Writes the model folder (model, AdaINImageProcessor, tokenizer, card,
    ``vlp_config.json``) to ``--output_dir``; returns a summary."""
    run = _check_args_and_load_pairs(args, pairs)
    if args.num_threads:
        torch.set_num_threads(int(args.num_threads))
    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    run.update(_build_model_and_data(args, run, accelerator))
    run.update(_engine_and_optimiser(args, run, accelerator, out))
    augment = MAEAugment(
        run["image_size"],
        scale=(args.crop_scale_min, 1.0),
        hflip=False,  # a flip would swap left / right in the report
        adain=args.adain == "on",
        adain_mode=args.adain_mode,
        adain_mean=run["adain_mean"],
        adain_std=run["adain_std"],
        image_mean=args.image_mean,
        image_std=args.image_std,
        out_channels=3,
    ).to(accelerator.device)
    engine = run["engine"]
    state = engine.resume(args.resume_from_checkpoint)
    unwrapped = accelerator.unwrap_model(run["model"])
    run_config = _run_config(args, run, augment, unwrapped)
    write_run_config(accelerator, out, run_config)
    init_trackers(accelerator, "genssl_vlp", {**args_to_dict(args), "total_steps": run["total_steps"]})

    if run["loss_cfg"]["name"] == "gloria":
        task = gloria_task(augment, accelerator.device, run, unwrapped)
    else:
        task = VLPTask(
            augment, accelerator.device, run["loss_cfg"], run["text_features"], run["fully_frozen"], unwrapped
        )
    result = engine.run(task, run["model"], run["optimizer"], run["scheduler"], run["loader"], state)
    summary: dict[str, Any] = {
        "global_step": state.global_step,
        "total_steps": run["total_steps"],
        "final_loss": state.last_loss,
        "loss_curve": [(h["step"], h["train/loss"]) for h in result.history if "train/loss" in h],
        "temperature": float(1.0 / unwrapped.logit_scale.exp()),
        "pairs_per_second": result.summary["images_per_second"],
        "train_seconds": result.summary["train_seconds"],
        "output_dir": str(out),
        "truncation": run["truncation"],
    }
    accelerator.wait_for_everyone()
    _export(args, run, accelerator, unwrapped, out, run_config, summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


@torch.no_grad()
def similarity_figure(model, processor, tokenizer, pairs, path: Path, max_length: int, n: int = 16) -> Path:
    """Cosine similarity of ``n`` images against their ``n`` reports (the diagonal should stand out),
    labelled by pair index only: no report text in the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    n = min(n, len(pairs))
    idx = np.linspace(0, len(pairs) - 1, n).astype(int)
    images = [pairs[int(i)]["image"] for i in idx]
    pix = processor(images, return_tensors="pt")["pixel_values"]
    sim = (
        embed_images(model, pix) @ embed_texts(model, tokenizer, [pairs.texts[int(i)] for i in idx], max_length).t()
    ).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(sim, cmap="viridis")
    ax.set_xlabel("report (pair index)")
    ax.set_ylabel("image (pair index)")
    ax.set_xticks(range(n), [str(i) for i in idx], rotation=90, fontsize=6)
    ax.set_yticks(range(n), [str(i) for i in idx], fontsize=6)
    ax.set_title("image-report cosine similarity (training pairs)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_dual_encoder_card(out: Path, run_config: dict[str, Any], summary: dict[str, Any]) -> None:
    from genssl_hf.core.cards import render_model_card

    pairs = run_config["pairs"]
    card_data: dict[str, Any] = {
        "license": "apache-2.0",
        "library_name": "transformers",
        "pipeline_tag": "zero-shot-image-classification",
        "tags": [
            "genssl",
            "vision-text-dual-encoder",
            run_config["loss"]["name"],
            "contrastive",
            "chest-x-ray",
            "medical-imaging",
            "zero-shot",
        ],
    }
    card = render_model_card(
        "dual_encoder",
        card_data,
        loss=run_config["loss"],
        init=run_config["init"],
        pairs=pairs,
        truncation=run_config["truncation"],
        derived=run_config["derived"],
        adain=run_config["adain"],
        augmentation=run_config["augmentation"],
        summary=summary,
    )
    atomic_write_text(out / "README.md", str(card))


def main(argv: list[str] | None = None, publish=None) -> int:
    """Command line: train, then (scripts only) publish; ``publish(kind, folder, repo_id) -> url`` is
    handed in by ``scripts/pretrain_vlp.py``, as training never imports ``hub``."""
    return run_training_command(
        pretrain_vlp,
        build_parser().parse_args(argv),
        publish,
        "dual_encoder",
        ("global_step", "final_loss", "temperature", "pairs_per_second"),
    )


if __name__ == "__main__":
    sys.exit(main())
