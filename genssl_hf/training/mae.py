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

from genssl_hf.processing import AdaINImageProcessor, MAEAugment
from genssl_hf.training.args import (
    args_to_dict,
)
from genssl_hf.training.attention import resolve_attn_implementation
from genssl_hf.training.common import no_trace_on_early_failure, run_training_command, save_model_and_processor
from genssl_hf.training.mae_init import check_position_tables
from genssl_hf.training.mae_model import PRESETS, build_mae_config, build_model, check_mae_shape, model_folder
from genssl_hf.training.optim import build_optimizer
from genssl_hf.training.pretraining_data import build_dataloader, open_pretraining_images
from genssl_hf.training.recipe import Method, adain_record, device_normalisation, reference_processor, train
from genssl_hf.training.mae_args import PAPER_TOTAL_BATCH, RECIPES, RENAMED_OPTIONS, build_parser  # noqa: F401
from genssl_hf.utils import read_json, write_train_summary
from genssl_hf.validation import check_namespace, check_weight_files


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


class MAEMethod(Method):
    """MAE pre-training on :func:`~genssl_hf.training.recipe.train`: a ``ViTMAEForPreTraining`` (fresh
    from a preset or continued from a folder) on AdaIN-aligned random crops; exported whole with its
    processor, a reconstruction figure and a card."""

    name = "mae"

    def check(self, args: argparse.Namespace) -> dict[str, Any]:
        """Every option error before data or model work: the recipe's defaults, the shape, the batch."""
        _resolve(args)
        check_namespace(build_parser(), args)  # the ranges argparse applies, for namespaces built in code
        image_size = args.image_size or PRESETS[_arch_preset(args)]["image_size"]
        patch_size = args.patch_size or PRESETS[_arch_preset(args)]["patch_size"]
        check_mae_shape(image_size, patch_size, args.mask_ratio)
        if args.per_device_train_batch_size < 1:
            raise ValueError(f"--per_device_train_batch_size must be >= 1, got {args.per_device_train_batch_size}")
        return {"image_size": image_size, "patch_size": patch_size, "skipped": []}

    def load_data(self, args: argparse.Namespace, data: Any, run: dict[str, Any]) -> Any:
        return open_pretraining_images(args, data, run["skipped"])

    def build_model(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        config = build_mae_config(
            _arch_preset(args),
            mask_ratio=args.mask_ratio,
            norm_pix_loss=args.norm_pix_loss,
            image_size=run["image_size"],
            patch_size=run["patch_size"],
        )
        run["attn_implementation"] = resolve_attn_implementation(
            args.attn_implementation, accelerator.device, accelerator.mixed_precision
        )
        init_from = args.model if model_folder(args.model) is not None else None
        model, run["init_record"] = build_model(config, init_from, run["attn_implementation"])
        check_position_tables(model, f"--model {init_from}" if init_from else "the freshly built MAE")
        return model

    def build_loader(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        return build_dataloader(
            run["data"],
            accelerator,
            batch_size=args.per_device_train_batch_size,
            image_column=args.image_column,
            load_size=args.load_size or run["image_size"],
            seed=args.seed,
            num_workers=args.num_workers,
        )

    def build_optimizer(self, args: argparse.Namespace, run: dict[str, Any], lr: float):
        return build_optimizer(run["model"], lr, args.weight_decay, betas=(0.9, args.adam_beta2))

    def engine_options(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        return {"desc": f"MAE {_arch_preset(args)}"}

    def after_prepare(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> None:
        if args.torch_compile:
            run["model"] = torch.compile(run["model"])
        run["augment"] = _augment(args, run["image_size"], run["reference"]).to(accelerator.device)

    def after_resume(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> None:
        if run["state"].global_step:
            check_position_tables(
                accelerator.unwrap_model(run["model"]), f"the checkpoint resumed in {args.output_dir}"
            )

    def run_config(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        """``run_config.json``: arguments, model, init, derived schedule, augmentation, AdaIN."""
        ds, schedule = run["data"], run["schedule"]
        derived = {k: v for k, v in schedule.items() if k != "epochs"}
        return {
            "args": args_to_dict(args),
            "model": run["unwrapped"].config.to_dict(),
            "init": run["init_record"],
            "attn_implementation": run["attn_implementation"],
            "derived": {**derived, "num_train_images": len(ds) if hasattr(ds, "__len__") else None},
            "augmentation": {**run["augment"].config(), "crop_scale": [args.crop_scale_min, 1.0], "hflip": True},
            "adain": adain_record(args, run["reference"]),
            "skipped_images": [str(s) for s in run["skipped"]],
        }

    def build_task(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> MAETask:
        return MAETask(run["augment"], accelerator.device)

    def export(self, args, run, run_config, summary, result) -> None:
        """Model + processor, reconstruction figure, card, summary."""
        out, model = run["output_dir"], run["unwrapped"]
        processor = reference_processor(args, run["image_size"], run["reference"])
        save_model_and_processor(model, processor, out)
        if args.figure == "on":
            figure = reconstruction_figure(
                model,
                run["data"],
                args.image_column,
                processor,
                out / "reconstruction.png",
                args.figure_samples,
                args.seed,
            )
            summary["figure"] = str(figure)
        write_model_card(out, args, run_config, summary)
        write_train_summary(out, summary)  # per-step arrays: train_steps.json


def _augment(args: argparse.Namespace, image_size: int, reference: dict[str, Any]) -> MAEAugment:
    """The on-device MAE augmentation (random resized crop, flip, AdaIN, normalisation)."""
    return MAEAugment(
        image_size,
        scale=(args.crop_scale_min, 1.0),
        **device_normalisation(args, reference),
        out_channels=3,
    )


@no_trace_on_early_failure
def pretrain_mae(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Run MAE pre-training as configured by ``args`` (see :func:`build_parser`); ``dataset`` may be a
    ``datasets`` object instead of ``--dataset``. Returns a summary dict (steps, final loss, images/s,
    output paths, ``interrupted``). Raises ``NonFiniteLossError`` on a NaN loss (last good checkpoint kept)."""
    return train(MAEMethod(), args, dataset, accelerator)


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
