"""Image-report contrastive pre-training (ConVIRT / CLIP / GLoRIA / MGCA) as a transformers
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
word-to-region attention and a local loss (:mod:`genssl_hf.training.gloria`); ``mgca`` token-wise
cross-attention and prototype losses (:mod:`genssl_hf.training.mgca`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genssl_hf.processing.augment import MAEAugment
from genssl_hf.training.args import args_to_dict
from genssl_hf.training.common import EpochShuffleSampler, no_trace_on_early_failure, run_training_command
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
from genssl_hf.training.gloria import attach_local_heads, gloria_task, save_local_heads
from genssl_hf.training.mgca import attach_mgca_heads, mgca_settings, mgca_task, save_mgca_heads, token_weight_sources
from genssl_hf.training.optim import build_optimizer
from genssl_hf.training.recipe import Method, adain_record, device_normalisation, reference_processor, train
from genssl_hf.training.vlp_args import build_parser
from genssl_hf.training.vlp_loss import LOSS_PRESETS
from genssl_hf.training.vlp_task import VLPTask
from genssl_hf.utils import atomic_write_text, write_train_summary

logger = logging.getLogger(__name__)

# ``export_image_tower`` (training.dual_encoder) stays importable here: scripts and the CLI import it from this module.
__all__ = [
    "VLPMethod",
    "pretrain_vlp",
    "export_image_tower",
    "similarity_figure",
    "write_dual_encoder_card",
    "build_parser",
    "main",
]


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
    s.update(mgca_settings(args, args.loss))
    return s


class VLPMethod(Method):
    """Image-report contrastive pre-training on :func:`~genssl_hf.training.recipe.train`: a
    ``VisionTextDualEncoderModel`` on image-report pairs, AdaIN-aligned crops, the ConVIRT / CLIP loss;
    exported whole with its processor, tokenizer, similarity figure and card."""

    name = "vlp"

    def check(self, args: argparse.Namespace) -> dict[str, Any]:
        loss_cfg = _loss_settings(args)
        if args.per_device_train_batch_size < 2:
            raise ValueError("--per_device_train_batch_size must be >= 2 (InfoNCE needs negatives)")
        return {"loss_cfg": loss_cfg}

    def load_data(self, args: argparse.Namespace, data: Any, run: dict[str, Any]) -> Any:
        """The pairs (``data`` or ``--pairs``), capped at ``--max_train_samples``."""
        from genssl_hf.data.pairs import load_pairs

        phantom_config = args.phantom_config
        if isinstance(phantom_config, str):
            phantom_config = json.loads(phantom_config)
        pairs = load_pairs(
            data if data is not None else args.pairs,
            section=args.section,
            corpus=args.reports,
            image_size=args.image_size or 64,
            seed=args.seed,
            phantom_config=phantom_config,
        )
        if args.max_train_samples is not None:
            pairs = pairs.select(range(min(len(pairs), int(args.max_train_samples))))
        if args.num_threads:
            torch.set_num_threads(int(args.num_threads))
        return pairs

    def build_model(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        """The dual encoder, its tokenizer and tokenisation limits."""
        loss_cfg = run["loss_cfg"]
        model, run["tokenizer"], run["init_record"] = build_dual_encoder(
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
        if loss_cfg["name"] == "mgca":
            attach_mgca_heads(model, accelerator.num_processes, loss_cfg)
            loss_cfg["token_weight_sources"] = token_weight_sources(model, loss_cfg)
        run["image_size"] = int(model.config.vision_config.image_size)
        run["max_length"] = text_max_length(run["tokenizer"], model, args.max_text_length)
        run["truncation"] = truncation_stats(run["tokenizer"], run["data"].texts, run["max_length"])
        return model

    def build_loader(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        """The frozen-text cache (single process only) and the prepared pair loader."""
        pairs, model, bs = run["data"], run["model"], args.per_device_train_batch_size
        if len(pairs) < bs * accelerator.num_processes:
            raise ValueError(
                f"{len(pairs)} pairs are fewer than one global batch ({bs} x {accelerator.num_processes} processes)"
            )
        run["fully_frozen"] = text_tower_fully_frozen(model)
        # cache only in a single process: in DDP the forward must go through the wrapped model to sync gradients
        run["text_features"] = (
            FrozenTextFeatures(model.text_model, run["tokenizer"], pairs.texts, run["max_length"])
            if run["fully_frozen"] and accelerator.num_processes == 1
            else None
        )
        loader = torch.utils.data.DataLoader(
            pairs,
            batch_size=bs,
            sampler=EpochShuffleSampler(len(pairs), seed=args.seed),
            drop_last=True,
            collate_fn=PairCollator(run["tokenizer"], run["image_size"], run["max_length"]),
            num_workers=args.num_workers,
        )
        loader = accelerator.prepare(loader)
        return loader, len(loader)

    def build_optimizer(self, args: argparse.Namespace, run: dict[str, Any], lr: float):
        return build_optimizer(run["model"], lr, args.weight_decay, betas=(0.9, 0.98))

    def engine_options(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        return {"desc": f"VLP {args.loss}", "progress_keys": ("train/loss", "train/temperature")}

    def after_prepare(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> None:
        reference, loss_cfg = run["reference"], run["loss_cfg"]
        if loss_cfg["name"] == "mgca" and loss_cfg["cpa_start_step"] is None:  # one epoch of warm-up, as the paper
            loss_cfg["cpa_start_step"] = max(1, run["batches_per_epoch"] // accelerator.gradient_accumulation_steps)
        run["augment"] = MAEAugment(
            run["image_size"],
            scale=(args.crop_scale_min, 1.0),
            hflip=False,  # a flip would swap left / right in the report
            **device_normalisation(args, reference),
            out_channels=3,
        ).to(accelerator.device)

    def run_config(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        """``run_config.json``: options, loss, initialisation, pair provenance, truncation, views, AdaIN,
        derived sizes."""
        text_features, unwrapped, schedule = run["text_features"], run["unwrapped"], run["schedule"]
        return {
            "args": args_to_dict(args),
            "loss": run["loss_cfg"],
            "init": run["init_record"],
            "pairs": run["data"].provenance,
            "truncation": run["truncation"],
            "augmentation": {**run["augment"].config(), "crop_scale": [args.crop_scale_min, 1.0], "hflip": False},
            "adain": adain_record(args, run["reference"]),
            "derived": {
                "cached_text_features": len(text_features) if text_features is not None else None,
                "total_batch_size": schedule["total_batch_size"],
                "total_steps": schedule["total_steps"],
                "warmup_steps": schedule["warmup_steps"],
                "num_pairs": len(run["data"]),
                "image_size": run["image_size"],
                "max_text_length": run["max_length"],
                "projection_dim": int(unwrapped.config.projection_dim),
                "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
                "num_trainable_parameters": sum(p.numel() for p in unwrapped.parameters() if p.requires_grad),
            },
        }

    def build_task(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        if run["loss_cfg"]["name"] == "gloria":
            return gloria_task(run["augment"], accelerator.device, run, run["unwrapped"])
        if run["loss_cfg"]["name"] == "mgca":
            return mgca_task(run["augment"], accelerator.device, run, run["unwrapped"])
        return VLPTask(
            run["augment"],
            accelerator.device,
            run["loss_cfg"],
            run["text_features"],
            run["fully_frozen"],
            run["unwrapped"],
        )

    def summarise(self, args: argparse.Namespace, run: dict[str, Any], result) -> dict[str, Any]:
        state = run["state"]
        return {
            "global_step": state.global_step,
            "total_steps": run["schedule"]["total_steps"],
            "final_loss": state.last_loss,
            "loss_curve": [(h["step"], h["train/loss"]) for h in result.history if "train/loss" in h],
            "loss_parts": {  # GLoRIA's local / global, MGCA's ita / cta / cpa
                k[len("train/") :]: [(h["step"], h[k]) for h in result.history if k in h]
                for k in sorted(
                    {k for h in result.history for k in h if k.startswith("train/") and k.endswith("_loss")}
                )
            },
            "temperature": float(1.0 / run["unwrapped"].logit_scale.detach().exp()),
            "pairs_per_second": result.summary["images_per_second"],
            "train_seconds": result.summary["train_seconds"],
            "output_dir": str(run["output_dir"]),
            "truncation": run["truncation"],
        }

    def export(self, args, run, run_config, summary, result) -> None:
        """Dual encoder, AdaIN processor, tokenizer, ``vlp_config.json``, similarity figure, card, summary."""
        out, unwrapped, tokenizer, max_length = run["output_dir"], run["unwrapped"], run["tokenizer"], run["max_length"]
        processor = reference_processor(args, run["image_size"], run["reference"])
        vlp_config = {
            "loss": run["loss_cfg"],
            "pairs": run["data"].provenance,
            "truncation": run["truncation"],
            "init": run["init_record"],
            "max_text_length": max_length,
            "section": args.section,
        }
        save_local_heads(unwrapped, out)  # GLoRIA's, beside the stock dual encoder
        save_mgca_heads(unwrapped, out)  # MGCA's local heads and prototypes, likewise
        save_dual_encoder(unwrapped, processor, tokenizer, out, vlp_config)
        if args.figure == "on":
            path = out / "similarity.png"
            summary["figure"] = str(similarity_figure(unwrapped, processor, tokenizer, run["data"], path, max_length))
        write_dual_encoder_card(out, run_config, summary)
        write_train_summary(out, summary)  # per-step arrays: train_steps.json


@no_trace_on_early_failure
def pretrain_vlp(args: argparse.Namespace, pairs: Any = None, accelerator=None) -> dict[str, Any]:
    """Train the dual encoder on image-report pairs (``pairs``: an ``ImageReportPairs``, else
    ``--pairs``). Writes the model folder (model, AdaINImageProcessor, tokenizer, card,
    ``vlp_config.json``) to ``--output_dir``; returns a summary."""
    return train(VLPMethod(), args, pairs, accelerator)


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
