"""The fine-tuning command line: its recipes (``--recipe``), the parser, recipe resolution and the
``--image_processor`` choice. Training is :mod:`genssl_hf.training.finetune`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from genssl_hf.models.classifier import is_cnn_init
from genssl_hf.models.presets import RESNET_PRESETS
from genssl_hf.training.args import add_common_args
from genssl_hf.training.attention import ATTN_CHOICES
from genssl_hf.training.classifier import VIT_PRESETS, encoder_config
from genssl_hf.training.thresholds import THRESHOLD_RULES
from genssl_hf.validation import checked_parser, renamed_options

__all__ = [
    "FINETUNE_RECIPES",
    "FINETUNE_PRESETS",
    "LINEAR_PROBE_OVERRIDES",
    "RENAMED_OPTIONS",
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
FINETUNE_PRESETS = FINETUNE_RECIPES  # the name before --preset became --recipe
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


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """model: the start, the recipe, the mode, pooling, input normalisation and size."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        required=True,
        help="MAE / ViT / ResNet checkpoint or encoder folder, or an architecture preset for random init: "
        + ", ".join([*VIT_PRESETS, *RESNET_PRESETS]),
    )
    g.add_argument(
        "--recipe",
        choices=list(FINETUNE_RECIPES),
        default=None,
        help="the optimisation / augmentation defaults of every unset option (FINETUNE_RECIPES; default: "
        "the --model preset's, else by the encoder's width: vit-b16 / vit-s16, tiny below; "
        "resnet / resnet-tiny for a ResNet)",
    )
    g.add_argument("--mode", choices=["finetune", "linear_probe"], default="finetune")
    g.add_argument(
        "--pooling",
        choices=["mean", "cls"],
        default=None,
        help="head input: mean of patch tokens + fc_norm (MAE fine-tuning default) or the CLS token "
        "(default: mean for finetune, cls for linear_probe)",
    )
    g.add_argument("--drop_path", type=float, default=None, help="stochastic depth rate of the last block")
    g.add_argument(
        "--image_processor",
        default="init",
        help="input normalisation: 'init' (the --model folder's AdaIN processor when it has one, else mean / "
        "std 0.5), 'none' (mean / std 0.5, no AdaIN, even for an AdaIN encoder), or a folder holding a "
        "preprocessor_config.json to use instead (e.g. a random-init control with the same per-image "
        "AdaIN standardisation as a GEN-SSL encoder)",
    )
    g.add_argument("--image_size", type=int, default=None, help="input size (default: the preset's / checkpoint's)")
    g.add_argument(
        "--attn_implementation",
        default="auto",
        choices=ATTN_CHOICES,
        help="auto: genssl_matmul for bf16 on a CPU (faster backward than SDPA's flash kernel there), else sdpa",
    )


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """data: dataset, splits, label fraction, phantom sizes, loading."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        required=True,
        help="'phantom', kermany:ROOT, nih-subset:ROOT, chexpert:ROOT, nih14:ROOT, covidx:ROOT, mimic:ROOT, "
        "imagefolder:ROOT (genssl_hf.data.registry), a save_to_disk folder, or a local folder / Hub id "
        "for load_dataset",
    )
    g.add_argument("--dataset_config", default=None, help="configuration name for load_dataset")
    g.add_argument("--train_split", default="train")
    g.add_argument(
        "--validation_split",
        default="validation",
        help="used for model selection; carved from train (--val_fraction) when the dataset has none",
    )
    g.add_argument("--test_split", default="test", help="evaluated once with the selected model ('none' to skip)")
    g.add_argument(
        "--test_dataset",
        default=None,
        help="score the selected model on this dataset's --test_split instead (e.g. imagefolder:ROOT, "
        "a folder of class sub-folders); its classes must be the training classes",
    )
    g.add_argument("--val_fraction", type=float, default=0.1)
    g.add_argument("--image_column", default="image")
    g.add_argument(
        "--label_fraction", type=_fraction, default=1.0, help="fraction of training labels: 0.01, 0.1, 1 (or 1%%)"
    )
    g.add_argument(
        "--max_train_samples",
        type=int,
        default=None,
        help="debug: cap the training rows (stratified, after the fraction)",
    )
    g.add_argument(
        "--phantom_sizes",
        type=int,
        nargs=3,
        default=[2000, 300, 500],
        metavar=("TRAIN", "VAL", "TEST"),
        help="rows per split for --dataset phantom",
    )
    g.add_argument("--phantom_resolution", type=int, default=64, help="phantom image side for --dataset phantom")
    g.add_argument(
        "--load_size",
        type=int,
        default=None,
        help="side at which training images are decoded before the random resized crop (default: --image_size)",
    )
    g.add_argument("--num_workers", type=int, default=None)


def _add_optimisation_args(p: argparse.ArgumentParser) -> None:
    """optimisation (defaults from ``--recipe``): schedule, batch, learning rate, regularisation, augmentation."""
    g = p.add_argument_group("optimisation (defaults from --recipe)")
    g.add_argument("--num_train_epochs", type=float, default=None)
    g.add_argument("--warmup_epochs", type=float, default=None)
    g.add_argument(
        "--min_steps",
        type=int,
        default=0,
        help="few-shot schedule: stretch epochs, warm-up and evaluation cadence alike so the run has at "
        "least this many optimiser steps (small label fractions otherwise get a handful of steps)",
    )
    g.add_argument("--per_device_train_batch_size", type=int, default=None, help="per-process micro batch")
    g.add_argument(
        "--total_batch_size",
        type=int,
        default=None,
        help="effective batch; sets gradient accumulation = total / (per_device_train_batch_size x processes)",
    )
    g.add_argument("--base_learning_rate", type=float, default=None, help="lr = base_learning_rate x total batch / 256")
    g.add_argument("--learning_rate", type=float, default=None, help="absolute lr (overrides --base_learning_rate)")
    g.add_argument("--min_lr_ratio", type=float, default=0.0)
    g.add_argument("--weight_decay", type=float, default=None)
    g.add_argument("--layer_decay", type=float, default=None)
    g.add_argument("--label_smoothing", type=float, default=0.0, help="multi-class only")
    g.add_argument("--crop_scale", type=float, nargs=2, default=[0.5, 1.0])
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--rotation", type=float, default=None, help="max rotation in degrees (default 10)")
    g.add_argument("--randaug_n", type=int, default=None)
    g.add_argument("--randaug_m", type=float, default=None)


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    """selection / evaluation: the validation metric, cadence, bootstrap and decision thresholds."""
    g = p.add_argument_group("selection / evaluation")
    g.add_argument(
        "--selection_metric",
        default="auto",
        help="validation metric for the best model: mean_auc, accuracy, loss "
        "(auto: mean_auc multi-label, accuracy multi-class)",
    )
    g.add_argument("--eval_every_epochs", type=float, default=1.0)
    g.add_argument(
        "--per_device_eval_batch_size",
        type=int,
        default=None,
        help="validation / test batch (default: twice --per_device_train_batch_size)",
    )
    g.add_argument("--n_bootstrap", type=int, default=0, help="bootstrap replicates for the test-set CIs")
    g.add_argument(
        "--threshold_rule",
        choices=list(THRESHOLD_RULES),
        default="youden",
        help="decision thresholds chosen on the validation predictions of the selected model "
        "(saved as best/thresholds.json; every rule is recorded there)",
    )
    g.add_argument(
        "--target_sensitivity", type=float, default=0.9, help="validation sensitivity of the 'sensitivity' rule"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune.py",
        description="Fine-tune or linear-probe a ViT (genssl_hf MAE, any ViT folder, or random init) on chest X-rays.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_model_args(p)
    _add_data_args(p)
    _add_optimisation_args(p)
    _add_selection_args(p)
    add_common_args(p)
    p.set_defaults(mixed_precision="no", checkpointing_steps=0)
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
