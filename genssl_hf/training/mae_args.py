"""The options of MAE pre-training (``genssl pretrain --method mae``) as typed dataclasses, its
optimisation recipes (``--recipe``) and its parser (:class:`~genssl_hf.typed_args.TypedArgumentParser`).
Training is :mod:`genssl_hf.training.mae`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from genssl_hf.training.args import (
    AdainArguments,
    BaseLearningRateArguments,
    ImageDataArguments,
    OptimisationArguments,
    RunArguments,
    TimeBoxArguments,
    WarmupRatioArguments,
)
from genssl_hf.training.attention import ATTN_CHOICES
from genssl_hf.training.mae_model import PRESETS
from genssl_hf.typed_args import TypedArgumentParser, add_dataclass_arguments
from genssl_hf.validation import checked_parser, renamed_options

__all__ = [
    "RECIPES",
    "PAPER_TOTAL_BATCH",
    "RENAMED_OPTIONS",
    "MaeModelArguments",
    "MaeDataArguments",
    "MaeTrainingArguments",
    "MaeOutputArguments",
    "build_parser",
]

# Optimisation recipe per preset (paper: 800 epochs, 40 warm-up, base lr 1.5e-4 x batch/256, batch 2048).
RECIPES: dict[str, dict[str, Any]] = {
    # Small CPU batches need a larger base lr to move in a few hundred steps.
    "tiny": dict(num_train_epochs=20, warmup_ratio=0.05, base_learning_rate=1.5e-3, per_device_train_batch_size=64),
    "vit-s16": dict(
        num_train_epochs=800, warmup_ratio=40 / 800, base_learning_rate=1.5e-4, per_device_train_batch_size=256
    ),
    "vit-b16": dict(
        num_train_epochs=800, warmup_ratio=40 / 800, base_learning_rate=1.5e-4, per_device_train_batch_size=256
    ),
}
RECIPES["tiny-d8"] = RECIPES["tiny"]  # only the depth differs: tiny's optimisation
PAPER_TOTAL_BATCH = 2048
# The options of this script before it spoke transformers' vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {"--preset": "--model", "--init_from": "--model"}


@dataclass(kw_only=True)
class MaeModelArguments:
    _argument_group_name = "model"
    model: str = field(
        default="vit-s16",
        metadata={
            "help": f"an architecture preset ({', '.join(sorted(PRESETS))}) for a fresh MAE, or a ViTMAE model "
            "folder (encoder and decoder) or ViT folder (encoder; the decoder starts fresh) to continue from"
        },
    )
    recipe: str | None = field(
        default=None,
        metadata={
            "choices": sorted(RECIPES),
            "help": "optimisation defaults (RECIPES) and, with a --model folder, the preset its size defaults and "
            "a fresh decoder come from (default: the --model preset; for a folder, by its encoder width: "
            "vit-b16 from 768, vit-s16 from 384, tiny below)",
        },
    )
    image_size: int | None = field(default=None, metadata={"help": "override the preset's input size"})
    patch_size: int | None = field(default=None, metadata={"help": "override the preset's patch size"})
    mask_ratio: float = field(default=0.9, metadata={"help": "fraction of patches masked"})
    norm_pix_loss: bool = field(
        default=False, metadata={"help": "per-patch normalised target (off in the GEN-SSL recipe)"}
    )
    attn_implementation: str = field(
        default="auto",
        metadata={
            "choices": list(ATTN_CHOICES),
            "help": "auto: genssl_matmul for bf16 on a CPU (faster backward than SDPA's flash kernel there), else sdpa",
        },
    )


@dataclass(kw_only=True)
class MaeDataArguments:
    _argument_group_name = "data"
    crop_scale_min: float = field(default=0.5, metadata={"help": "random resized crop minimum area"})


@dataclass(kw_only=True)
class MaeTrainingArguments:
    _argument_group_name = "optimisation"
    warmup_steps: int | None = field(default=None, metadata={"help": "warm-up steps (overrides --warmup_ratio)"})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    torch_compile: bool = field(default=False, metadata={"help": "compile the model with torch.compile"})


@dataclass(kw_only=True)
class MaeOutputArguments:
    _argument_group_name = "outputs"
    figure: Literal["on", "off"] = field(
        default="on", metadata={"help": "reconstruction figure (shows training images)"}
    )
    figure_samples: int = field(default=4, metadata={"help": "images in the reconstruction figure"})


def build_parser() -> TypedArgumentParser:
    """Run, model, data, AdaIN, optimisation and output options (dataclasses; recipe defaults ``None``)."""
    p = TypedArgumentParser(
        [RunArguments, MaeModelArguments],
        description="GEN-SSL MAE pre-training (ViTMAEForPreTraining) with accelerate",
    )
    g = add_dataclass_arguments(p, ImageDataArguments)
    add_dataclass_arguments(p, MaeDataArguments, group=g)
    add_dataclass_arguments(p, AdainArguments)
    g = add_dataclass_arguments(p, OptimisationArguments)
    for dtype in (BaseLearningRateArguments, WarmupRatioArguments, TimeBoxArguments, MaeTrainingArguments):
        add_dataclass_arguments(p, dtype, group=g)
    add_dataclass_arguments(p, MaeOutputArguments)
    p.set_defaults(weight_decay=0.05)
    renamed_options(p, {**RENAMED_OPTIONS, "--max_train_steps": "--max_steps"})
    return checked_parser(p)
