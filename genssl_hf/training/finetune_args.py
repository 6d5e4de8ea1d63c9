"""The fine-tuning command line: its recipes (``--recipe``), its options as typed dataclasses and
their parser (:class:`~genssl_hf.typed_args.TypedArgumentParser`), recipe resolution and the
``--image_processor`` choice. Training is :mod:`genssl_hf.training.finetune`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genssl_hf.models.classifier import is_cnn_init
from genssl_hf.models.presets import RESNET_PRESETS
from genssl_hf.training.attention import ATTN_CHOICES
from genssl_hf.models.presets import VIT_PRESETS
from genssl_hf.training.classifier import encoder_config
from genssl_hf.training.args import RunArguments
from genssl_hf.training.thresholds import THRESHOLD_RULES
from genssl_hf.typed_args import TypedArgumentParser
from genssl_hf.validation import checked_parser, renamed_options

__all__ = [
    "FINETUNE_RECIPES",
    "LINEAR_PROBE_OVERRIDES",
    "RENAMED_OPTIONS",
    "FinetuneModelArguments",
    "FinetuneDataArguments",
    "FinetuneOptimisationArguments",
    "FinetuneSelectionArguments",
    "FINETUNE_ARGUMENTS",
    "build_parser",
    "resolve_args",
    "image_processor_of",
    "check_image_processor_choice",
    "processor_folder",
]

# Recipe defaults (``--recipe``), keyed by option name. ``total_batch_size`` is the effective batch
# (all processes x accumulation); ``per_device_train_batch_size`` the per-process micro batch.
# vit-b16: GEN-SSL paper; vit-s16: MED-MAE (drop path 0.2, layer decay 0.55). ``tiny``: a CPU-sized
# run for tests and the demo. ``arch``: the architecture the recipe was written for (informative).
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        arch="tiny",
        image_size=64,
        per_device_train_batch_size=32,
        total_batch_size=None,
        base_learning_rate=1e-3,
        num_train_epochs=10,
        warmup_epochs=1,
        drop_path=0.1,
        layer_decay=0.75,
        weight_decay=0.05,
        randaug_n=2,
        randaug_m=8.0,
        num_workers=0,
    ),
    "vit-s16": dict(
        arch="vit-s16",
        image_size=224,
        per_device_train_batch_size=256,
        total_batch_size=1024,
        base_learning_rate=2.5e-4,
        num_train_epochs=75,
        warmup_epochs=5,
        drop_path=0.2,
        layer_decay=0.55,
        weight_decay=0.05,
        randaug_n=2,
        randaug_m=8.0,
        num_workers=8,
    ),
    "vit-b16": dict(
        arch="vit-b16",
        image_size=224,
        per_device_train_batch_size=128,
        total_batch_size=1024,
        base_learning_rate=2.5e-4,
        num_train_epochs=75,
        warmup_epochs=5,
        drop_path=0.3,
        layer_decay=0.65,
        weight_decay=0.05,
        randaug_n=2,
        randaug_m=8.0,
        num_workers=8,
    ),
    # the CNN slot (ResNetForImageClassification): no layer decay or drop path in a ResNet
    "resnet-tiny": dict(
        arch="resnet-tiny",
        image_size=64,
        per_device_train_batch_size=32,
        total_batch_size=None,
        base_learning_rate=1e-3,
        num_train_epochs=10,
        warmup_epochs=1,
        drop_path=0.0,
        layer_decay=1.0,
        weight_decay=0.05,
        randaug_n=2,
        randaug_m=8.0,
        num_workers=0,
    ),
    "resnet": dict(
        arch="resnet",
        image_size=224,
        per_device_train_batch_size=256,
        total_batch_size=1024,
        base_learning_rate=1e-3,
        num_train_epochs=75,
        warmup_epochs=5,
        drop_path=0.0,
        layer_decay=1.0,
        weight_decay=0.05,
        randaug_n=2,
        randaug_m=8.0,
        num_workers=8,
    ),
}
# Linear probing (MAE protocol, with AdamW instead of LARS): frozen encoder, no drop path, no
# layer decay, no weight decay, crop + flip only.
LINEAR_PROBE_OVERRIDES = dict(
    drop_path=0.0, layer_decay=1.0, weight_decay=0.0, randaug_n=0, rotation=0.0, base_learning_rate=1e-3
)
# The options this script had before it spoke transformers' vocabulary: each is an argparse error
# naming its new name.
RENAMED_OPTIONS = {
    "--init": "--model",
    "--preset": "--recipe",
    "--epochs": "--num_train_epochs",
    "--batch_size": "--per_device_train_batch_size",
    "--blr": "--base_learning_rate",
    "--lr": "--learning_rate",
    "--eval_batch_size": "--per_device_eval_batch_size",
}


# ------------------------------------------------------------------------------------------ args
def _fraction(text: str) -> float:
    t = str(text).strip()
    value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    if value > 1.0 and value <= 100.0 and not t.endswith("%"):
        raise argparse.ArgumentTypeError(f"label fraction {text!r}: give 0.01 / 0.1 / 1 or 1% / 10% / 100%")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"label fraction {text!r} must lie in (0, 1]")
    return value


@dataclass(kw_only=True)
class FinetuneModelArguments:
    """model: the start, the recipe, the mode, pooling, input normalisation and size."""

    _argument_group_name = "model"
    model: str = field(
        metadata={
            "help": "MAE / ViT / ResNet checkpoint or encoder folder, or an architecture preset for random init: "
            + ", ".join([*VIT_PRESETS, *RESNET_PRESETS])
        }
    )
    recipe: str | None = field(
        default=None,
        metadata={
            "choices": list(FINETUNE_RECIPES),
            "help": "the optimisation / augmentation defaults of every unset option (FINETUNE_RECIPES; default: "
            "the --model preset's, else by the encoder's width: vit-b16 / vit-s16, tiny below; "
            "resnet / resnet-tiny for a ResNet)",
        },
    )
    mode: Literal["finetune", "linear_probe"] = field(default="finetune", metadata={"help": "what is trained"})
    pooling: str | None = field(
        default=None,
        metadata={
            "choices": ["mean", "cls"],
            "help": "head input: mean of patch tokens + fc_norm (MAE fine-tuning default) or the CLS token "
            "(default: mean for finetune, cls for linear_probe)",
        },
    )
    drop_path: float | None = field(default=None, metadata={"help": "stochastic depth rate of the last block"})
    image_processor: str = field(
        default="init",
        metadata={
            "help": "input normalisation: 'init' (the --model folder's AdaIN processor when it has one, else mean / "
            "std 0.5), 'none' (mean / std 0.5, no AdaIN, even for an AdaIN encoder), or a folder holding a "
            "preprocessor_config.json to use instead (e.g. a random-init control with the same per-image "
            "AdaIN standardisation as a GEN-SSL encoder)"
        },
    )
    image_size: int | None = field(default=None, metadata={"help": "input size (default: the preset's / checkpoint's)"})
    attn_implementation: str = field(
        default="auto",
        metadata={
            "choices": list(ATTN_CHOICES),
            "help": "auto: genssl_matmul for bf16 on a CPU (faster backward than SDPA's flash kernel there), else sdpa",
        },
    )


@dataclass(kw_only=True)
class FinetuneDataArguments:
    """data: dataset, splits, label fraction, phantom sizes, loading."""

    _argument_group_name = "data"
    dataset: str = field(
        metadata={
            "help": "'phantom', kermany:ROOT, nih-subset:ROOT, chexpert:ROOT, nih14:ROOT, covidx:ROOT, mimic:ROOT, "
            "imagefolder:ROOT (genssl_hf.data.registry), a save_to_disk folder, or a local folder / Hub id "
            "for load_dataset"
        }
    )
    dataset_config: str | None = field(default=None, metadata={"help": "configuration name for load_dataset"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    validation_split: str = field(
        default="validation",
        metadata={"help": "used for model selection; carved from train (--val_fraction) when the dataset has none"},
    )
    test_split: str = field(
        default="test", metadata={"help": "evaluated once with the selected model ('none' to skip)"}
    )
    test_dataset: str | None = field(
        default=None,
        metadata={
            "help": "score the selected model on this dataset's --test_split instead (e.g. imagefolder:ROOT, "
            "a folder of class sub-folders); its classes must be the training classes"
        },
    )
    val_fraction: float = field(default=0.1, metadata={"help": "validation share carved from train"})
    image_column: str = field(default="image", metadata={"help": "column holding the images"})
    label_fraction: float = field(
        default=1.0,
        metadata={"parse": _fraction, "help": "fraction of training labels: 0.01, 0.1, 1 (or 1%%)"},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "debug: cap the training rows (stratified, after the fraction)"}
    )
    phantom_sizes: list[int] = field(
        default_factory=lambda: [2000, 300, 500],
        metadata={"nargs": 3, "metavar": ("TRAIN", "VAL", "TEST"), "help": "rows per split for --dataset phantom"},
    )
    phantom_resolution: int = field(default=64, metadata={"help": "phantom image side for --dataset phantom"})
    load_size: int | None = field(
        default=None,
        metadata={
            "help": "side at which training images are decoded before the random resized crop (default: --image_size)"
        },
    )
    num_workers: int | None = field(default=None, metadata={"help": "data loader worker processes"})


@dataclass(kw_only=True)
class FinetuneOptimisationArguments:
    """optimisation (defaults from ``--recipe``): schedule, batch, learning rate, regularisation, augmentation."""

    _argument_group_name = "optimisation (defaults from --recipe)"
    num_train_epochs: float | None = field(default=None, metadata={"help": "passes over the training labels"})
    warmup_epochs: float | None = field(default=None, metadata={"help": "linear warm-up length in epochs"})
    min_steps: int = field(
        default=0,
        metadata={
            "help": "few-shot schedule: stretch epochs, warm-up and evaluation cadence alike so the run has at "
            "least this many optimiser steps (small label fractions otherwise get a handful of steps)"
        },
    )
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "per-process micro batch"})
    total_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "effective batch; sets gradient accumulation = total / (per_device_train_batch_size x processes)"
        },
    )
    base_learning_rate: float | None = field(
        default=None, metadata={"help": "lr = base_learning_rate x total batch / 256"}
    )
    learning_rate: float | None = field(default=None, metadata={"help": "absolute lr (overrides --base_learning_rate)"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr of the cosine, as a fraction of the peak"})
    weight_decay: float | None = field(default=None, metadata={"help": "AdamW weight decay"})
    layer_decay: float | None = field(default=None, metadata={"help": "layer-wise lr decay"})
    label_smoothing: float = field(default=0.0, metadata={"help": "multi-class only"})
    crop_scale: list[float] = field(
        default_factory=lambda: [0.5, 1.0], metadata={"nargs": 2, "help": "random resized crop area range"}
    )
    hflip: float = field(default=0.5, metadata={"help": "horizontal flip probability"})
    rotation: float | None = field(default=None, metadata={"help": "max rotation in degrees (default 10)"})
    randaug_n: int | None = field(default=None, metadata={"help": "RandAugment operations per image"})
    randaug_m: float | None = field(default=None, metadata={"help": "RandAugment magnitude"})


@dataclass(kw_only=True)
class FinetuneSelectionArguments:
    """selection / evaluation: the validation metric, cadence, bootstrap and decision thresholds."""

    _argument_group_name = "selection / evaluation"
    selection_metric: str = field(
        default="auto",
        metadata={
            "help": "validation metric for the best model: mean_auc, accuracy, loss "
            "(auto: mean_auc multi-label, accuracy multi-class)"
        },
    )
    eval_every_epochs: float = field(default=1.0, metadata={"help": "validation cadence in epochs"})
    per_device_eval_batch_size: int | None = field(
        default=None, metadata={"help": "validation / test batch (default: twice --per_device_train_batch_size)"}
    )
    n_bootstrap: int = field(default=0, metadata={"help": "bootstrap replicates for the test-set CIs"})
    threshold_rule: str = field(
        default="youden",
        metadata={
            "choices": list(THRESHOLD_RULES),
            "help": "decision thresholds chosen on the validation predictions of the selected model "
            "(saved as best/thresholds.json; every rule is recorded there)",
        },
    )
    target_sensitivity: float = field(
        default=0.9, metadata={"help": "validation sensitivity of the 'sensitivity' rule"}
    )


FINETUNE_ARGUMENTS = (
    FinetuneModelArguments,
    FinetuneDataArguments,
    FinetuneOptimisationArguments,
    FinetuneSelectionArguments,
    RunArguments,
)


def build_parser() -> TypedArgumentParser:
    p = TypedArgumentParser(
        FINETUNE_ARGUMENTS,
        defaults=dict(mixed_precision="no", checkpointing_steps=0),
        prog="genssl finetune",
        description="Fine-tune or linear-probe a ViT (genssl_hf MAE, any ViT folder, or random init) on chest X-rays.",
    )
    renamed_options(p, RENAMED_OPTIONS)
    return checked_parser(p)


def _auto_recipe(model: str) -> str:
    if model in FINETUNE_RECIPES:
        return model
    cfg, _ = encoder_config(model)
    if is_cnn_init(model):
        return "resnet-tiny" if cfg.hidden_sizes[-1] <= 128 else "resnet"
    if cfg.hidden_size >= 768:
        return "vit-b16"
    if cfg.hidden_size >= 384:
        return "vit-s16"
    return "tiny"


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the recipe (and the linear-probe overrides); validate early."""
    args.recipe = args.recipe or _auto_recipe(args.model)
    recipe = dict(FINETUNE_RECIPES[args.recipe])
    recipe.setdefault("rotation", 10.0)
    if args.mode == "linear_probe":
        recipe.update(LINEAR_PROBE_OVERRIDES)
    for key, value in recipe.items():
        if key == "arch":
            continue
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.pooling is None:
        args.pooling = "cls" if args.mode == "linear_probe" else "mean"
    if args.mode == "linear_probe" and args.drop_path:
        raise ValueError("--drop_path has no effect with a frozen encoder (--mode linear_probe); leave it unset")
    if args.per_device_eval_batch_size is None:
        args.per_device_eval_batch_size = args.per_device_train_batch_size * 2
    if args.min_steps < 0:
        raise ValueError(f"--min_steps must be >= 0; got {args.min_steps}")
    if args.num_train_epochs <= 0 or args.per_device_train_batch_size <= 0:
        raise ValueError(
            f"--num_train_epochs and --per_device_train_batch_size must be positive "
            f"(got {args.num_train_epochs}, {args.per_device_train_batch_size})"
        )
    if not 0.0 <= args.drop_path < 1.0:
        raise ValueError(f"--drop_path must lie in [0, 1); got {args.drop_path}")
    if not 0.0 < args.layer_decay <= 1.0:
        raise ValueError(f"--layer_decay must lie in (0, 1]; got {args.layer_decay}")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val_fraction must lie in (0, 1); got {args.val_fraction}")
    return args


# -------------------------------------------------------------------- --image_processor choice
def image_processor_of(folder: Path | None):
    """The ``AdaINImageProcessor`` (or any processor with mean / std) saved with a checkpoint."""
    if folder is None or not (folder / "preprocessor_config.json").is_file():
        return None
    import genssl_hf.processing  # noqa: F401  (registers AdaINImageProcessor with AutoImageProcessor)
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)


def check_image_processor_choice(choice: str, what: str = "--image_processor") -> None:
    """Before any compute: ``choice`` (``--image_processor``) is 'init', 'none' or a processor folder."""
    if choice not in ("init", "none") and not (Path(choice) / "preprocessor_config.json").is_file():
        raise FileNotFoundError(
            f"{what} {choice!r}: expected 'init', 'none' or a folder with a preprocessor_config.json"
        )


def processor_folder(choice: str, init_folder: Path | None) -> Path | None:
    """The folder whose processor normalises the inputs (``--image_processor``); None: mean / std 0.5."""
    if choice == "init":
        return init_folder
    if choice == "none":
        return None
    return Path(choice)
