"""Fine-tuning and linear probing of a ViT encoder on labelled chest X-rays (GEN-SSL / MAE recipe).

Run it as ``accelerate launch scripts/finetune.py ...``, ``python scripts/finetune.py ...`` or
``python -m genssl_hf.training.finetune ...``.

* start: ``--model`` a genssl_hf MAE checkpoint folder, any ViT / ViTMAE / ResNet folder, or a preset
  name (``tiny`` / ``vit-s16`` / ``vit-b16`` / ``resnet-tiny`` / ...) for random initialisation;
* model: :class:`~genssl_hf.training.classifier.GenSSLViTForImageClassification` with a CLS head or
  the MAE global-average-pool head with its own LayerNorm; BCE for multi-label datasets (``labels``),
  cross-entropy for multi-class ones (``label``), read from the dataset's features;
* recipe (``--recipe``, the defaults of every unset option): AdamW (no decay on biases / norms),
  layer-wise lr decay, drop path, half-cycle cosine with warm-up, lr = ``--base_learning_rate`` x
  total batch / 256 (or ``--learning_rate``); augmentation: random resized crop, flip, rotation and
  RandAugment on tensors (kornia);
* ``--label_fraction`` (1 %, 10 %, 100 %): stratified, seeded, indices written to
  ``label_fraction.json``; ``--mode linear_probe`` freezes the encoder;
* model selection on the validation split (carved from train, stratified and seeded, when the
  dataset has none) — never on the test split, which is evaluated once with the selected model;
* decision thresholds chosen on the validation predictions of the selected model (Youden's J by
  default, ``--threshold_rule``), saved as ``best/thresholds.json`` and used for the test metrics;
* outputs: ``best/`` and ``final/`` (``save_pretrained`` model + image processor + card),
  ``metrics.json``, ``run_config.json``, resumable checkpoints; ``--push_to_hub`` uploads ``best/``.

Input normalisation follows the ``AdaINImageProcessor`` in the ``--model`` folder when there is one
(AdaIN to its reference statistics, then its mean / std), so fine-tuning sees what pre-training
saw; otherwise mean 0.5 / std 0.5 without AdaIN. The processor saved with the model reproduces it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.validation import check_weight_files, checked_parser, renamed_options
from genssl_hf.training.attention import ATTN_CHOICES, resolve_attn_implementation
from genssl_hf.models.classifier import is_cnn_init
from genssl_hf.models.presets import RESNET_PRESETS
from genssl_hf.training.classifier import VIT_PRESETS, build_classifier, encoder_config
from genssl_hf.training.common import param_groups
from genssl_hf.training.common import (
    EpochShuffleSampler,
    add_common_args,
    args_to_dict,
    check_hub_args,
    check_publish_available,
    check_output_dir,
    cosine_schedule_with_warmup,
    make_accelerator,
    no_trace_on_early_failure,
    write_run_config,
    init_trackers,
    is_main_process_env,
)
from genssl_hf.training.finetune_data import (
    Collator,
    FinetuneAugment,
    InputNormalizer,
    load_splits,
    stratified_subset,
    targets_of,
)
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.training.finetune_task import (
    FinetuneTask,
    best_thresholds,
    predict_dataset,
    save_model_folder,
)
from genssl_hf.training.lr_decay import param_groups_lrd
from genssl_hf.training.thresholds import THRESHOLD_RULES, choose_thresholds
from genssl_hf.utils import sha256_strings, write_json

logger = logging.getLogger(__name__)

__all__ = ["image_processor_of", "processor_folder", "FINETUNE_RECIPES", "FINETUNE_PRESETS", "RENAMED_OPTIONS", "build_parser", "load_splits", "finetune", "main",
           "predict_dataset"]

# Recipe defaults (``--recipe``), keyed by option name. ``total_batch_size`` is the effective batch
# (all processes x accumulation); ``per_device_train_batch_size`` the per-process micro batch.
# vit-b16: GEN-SSL paper; vit-s16: MED-MAE (drop path 0.2, layer decay 0.55). ``tiny``: a CPU-sized
# run for tests and the demo. ``arch``: the architecture the recipe was written for (informative).
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    "tiny": dict(arch="tiny", image_size=64, per_device_train_batch_size=32, total_batch_size=None, base_learning_rate=1e-3, num_train_epochs=10,
                 warmup_epochs=1, drop_path=0.1, layer_decay=0.75, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                 num_workers=0),
    "vit-s16": dict(arch="vit-s16", image_size=224, per_device_train_batch_size=256, total_batch_size=1024, base_learning_rate=2.5e-4, num_train_epochs=75,
                    warmup_epochs=5, drop_path=0.2, layer_decay=0.55, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                    num_workers=8),
    "vit-b16": dict(arch="vit-b16", image_size=224, per_device_train_batch_size=128, total_batch_size=1024, base_learning_rate=2.5e-4, num_train_epochs=75,
                    warmup_epochs=5, drop_path=0.3, layer_decay=0.65, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                    num_workers=8),
    # the CNN slot (ResNetForImageClassification): no layer decay or drop path in a ResNet
    "resnet-tiny": dict(arch="resnet-tiny", image_size=64, per_device_train_batch_size=32, total_batch_size=None, base_learning_rate=1e-3, num_train_epochs=10,
                        warmup_epochs=1, drop_path=0.0, layer_decay=1.0, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                        num_workers=0),
    "resnet": dict(arch="resnet", image_size=224, per_device_train_batch_size=256, total_batch_size=1024, base_learning_rate=1e-3, num_train_epochs=75,
                   warmup_epochs=5, drop_path=0.0, layer_decay=1.0, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                   num_workers=8),
}
FINETUNE_PRESETS = FINETUNE_RECIPES  # the name before --preset became --recipe
# Linear probing (MAE protocol, with AdamW instead of LARS): frozen encoder, no drop path, no
# layer decay, no weight decay, crop + flip only.
LINEAR_PROBE_OVERRIDES = dict(drop_path=0.0, layer_decay=1.0, weight_decay=0.0, randaug_n=0, rotation=0.0,
                              base_learning_rate=1e-3)
# The options this script had before it spoke transformers' vocabulary: each is an argparse error
# naming its new name.
RENAMED_OPTIONS = {"--init": "--model", "--preset": "--recipe", "--epochs": "--num_train_epochs",
                   "--batch_size": "--per_device_train_batch_size", "--blr": "--base_learning_rate",
                   "--lr": "--learning_rate", "--eval_batch_size": "--per_device_eval_batch_size"}



# ------------------------------------------------------------------------------------------ args
def _fraction(text: str) -> float:
    t = str(text).strip()
    value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    if value > 1.0 and value <= 100.0 and not t.endswith("%"):
        raise argparse.ArgumentTypeError(f"label fraction {text!r}: give 0.01 / 0.1 / 1 or 1% / 10% / 100%")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"label fraction {text!r} must lie in (0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune.py",
        description="Fine-tune or linear-probe a ViT (genssl_hf MAE, any ViT folder, or random init) on chest X-rays.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True,
                   help="MAE / ViT / ResNet checkpoint or encoder folder, or an architecture preset for random init: "
                        + ", ".join([*VIT_PRESETS, *RESNET_PRESETS]))
    g.add_argument("--recipe", choices=list(FINETUNE_RECIPES), default=None,
                   help="the optimisation / augmentation defaults of every unset option (FINETUNE_RECIPES; default: "
                        "the --model preset's, else by the encoder's width: vit-b16 / vit-s16, tiny below; "
                        "resnet / resnet-tiny for a ResNet)")
    g.add_argument("--mode", choices=["finetune", "linear_probe"], default="finetune")
    g.add_argument("--pooling", choices=["mean", "cls"], default=None,
                   help="head input: mean of patch tokens + fc_norm (MAE fine-tuning default) or the CLS token "
                        "(default: mean for finetune, cls for linear_probe)")
    g.add_argument("--drop_path", type=float, default=None, help="stochastic depth rate of the last block")
    g.add_argument("--image_processor", default="init",
                   help="input normalisation: 'init' (the --model folder's AdaIN processor when it has one, else mean / "
                        "std 0.5), 'none' (mean / std 0.5, no AdaIN, even for an AdaIN encoder), or a folder holding a "
                        "preprocessor_config.json to use instead (e.g. a random-init control with the same per-image "
                        "AdaIN standardisation as a GEN-SSL encoder)")
    g.add_argument("--image_size", type=int, default=None, help="input size (default: the preset's / checkpoint's)")
    g.add_argument("--attn_implementation", default="auto", choices=ATTN_CHOICES,
                   help="auto: genssl_matmul for bf16 on a CPU (faster backward than SDPA's flash kernel there), else sdpa")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True,
                   help="'phantom', kermany:ROOT, nih-subset:ROOT, chexpert:ROOT, nih14:ROOT, covidx:ROOT, mimic:ROOT, "
                        "imagefolder:ROOT (genssl_hf.data.registry), a save_to_disk folder, or a local folder / Hub id "
                        "for load_dataset")
    g.add_argument("--dataset_config", default=None, help="configuration name for load_dataset")
    g.add_argument("--train_split", default="train")
    g.add_argument("--validation_split", default="validation",
                   help="used for model selection; carved from train (--val_fraction) when the dataset has none")
    g.add_argument("--test_split", default="test", help="evaluated once with the selected model ('none' to skip)")
    g.add_argument("--test_dataset", default=None,
                   help="score the selected model on this dataset's --test_split instead (e.g. imagefolder:ROOT, "
                        "a folder of class sub-folders); its classes must be the training classes")
    g.add_argument("--val_fraction", type=float, default=0.1)
    g.add_argument("--image_column", default="image")
    g.add_argument("--label_fraction", type=_fraction, default=1.0, help="fraction of training labels: 0.01, 0.1, 1 (or 1%%)")
    g.add_argument("--max_train_samples", type=int, default=None, help="debug: cap the training rows (stratified, after the fraction)")
    g.add_argument("--phantom_sizes", type=int, nargs=3, default=[2000, 300, 500], metavar=("TRAIN", "VAL", "TEST"),
                   help="rows per split for --dataset phantom")
    g.add_argument("--phantom_resolution", type=int, default=64, help="phantom image side for --dataset phantom")
    g.add_argument("--load_size", type=int, default=None,
                   help="side at which training images are decoded before the random resized crop (default: --image_size)")
    g.add_argument("--num_workers", type=int, default=None)
    g = p.add_argument_group("optimisation (defaults from --recipe)")
    g.add_argument("--num_train_epochs", type=float, default=None)
    g.add_argument("--warmup_epochs", type=float, default=None)
    g.add_argument("--min_steps", type=int, default=0,
                   help="few-shot schedule: stretch epochs, warm-up and evaluation cadence alike so the run has at "
                        "least this many optimiser steps (small label fractions otherwise get a handful of steps)")
    g.add_argument("--per_device_train_batch_size", type=int, default=None, help="per-process micro batch")
    g.add_argument("--total_batch_size", type=int, default=None,
                   help="effective batch; sets gradient accumulation = total / (per_device_train_batch_size x processes)")
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
    g = p.add_argument_group("selection / evaluation")
    g.add_argument("--selection_metric", default="auto",
                   help="validation metric for the best model: mean_auc, accuracy, loss (auto: mean_auc multi-label, accuracy multi-class)")
    g.add_argument("--eval_every_epochs", type=float, default=1.0)
    g.add_argument("--per_device_eval_batch_size", type=int, default=None,
                   help="validation / test batch (default: twice --per_device_train_batch_size)")
    g.add_argument("--n_bootstrap", type=int, default=0, help="bootstrap replicates for the test-set CIs")
    g.add_argument("--threshold_rule", choices=list(THRESHOLD_RULES), default="youden",
                   help="decision thresholds chosen on the validation predictions of the selected model "
                        "(saved as best/thresholds.json; every rule is recorded there)")
    g.add_argument("--target_sensitivity", type=float, default=0.9, help="validation sensitivity of the 'sensitivity' rule")
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
        raise ValueError(f"--num_train_epochs and --per_device_train_batch_size must be positive "
                         f"(got {args.num_train_epochs}, {args.per_device_train_batch_size})")
    if not 0.0 <= args.drop_path < 1.0:
        raise ValueError(f"--drop_path must lie in [0, 1); got {args.drop_path}")
    if not 0.0 < args.layer_decay <= 1.0:
        raise ValueError(f"--layer_decay must lie in (0, 1]; got {args.layer_decay}")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val_fraction must lie in (0, 1); got {args.val_fraction}")
    return args


# ------------------------------------------------------------------------------------------ data
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
        raise FileNotFoundError(f"{what} {choice!r}: expected 'init', 'none' or a folder with a preprocessor_config.json")


def processor_folder(choice: str, init_folder: Path | None) -> Path | None:
    """The folder whose processor normalises the inputs (``--image_processor``); None: mean / std 0.5."""
    if choice == "init":
        return init_folder
    if choice == "none":
        return None
    return Path(choice)


# ---------------------------------------------------------------------------------------- loop
def few_shot_schedule_scale(epochs: float, steps_per_epoch: int, min_steps: int) -> float:
    """Factor that stretches the schedule (epochs, warm-up, evaluation cadence) to ``min_steps``
    optimiser steps when ``epochs`` x ``steps_per_epoch`` falls short; 1.0 otherwise. At 1 % labels a
    10-epoch recipe is ~10 steps, too few to move a pre-trained encoder; a fixed step budget across
    label fractions is the usual few-shot protocol."""
    planned = epochs * steps_per_epoch
    return 1.0 if not min_steps or planned >= min_steps else float(min_steps) / planned


def _labelled_training_data(args: argparse.Namespace) -> dict[str, Any]:
    """The splits, the training rows kept by ``--label_fraction`` / ``--max_train_samples`` and the task
    (label names, multi-label or not). Every data error surfaces here, before any compute."""
    splits = load_splits(args)
    train_ds = splits["train"]
    targets, label_names, multi_label = targets_of(train_ds)
    fraction_idx = stratified_subset(targets, args.label_fraction, args.seed)
    if args.max_train_samples is not None and args.max_train_samples < len(fraction_idx):
        # a stratified cap too (a CSV sorted by class must not yield a one-class subset)
        keep = stratified_subset(targets[fraction_idx], args.max_train_samples / len(fraction_idx), args.seed + 1)
        fraction_idx = fraction_idx[keep]
    if args.selection_metric == "auto":
        args.selection_metric = "mean_auc" if multi_label else "accuracy"
    if args.selection_metric not in ("mean_auc", "accuracy", "loss"):
        raise ValueError(f"--selection_metric must be mean_auc, accuracy or loss; got {args.selection_metric!r}")
    return {"splits": splits, "train": train_ds.select(fraction_idx), "targets": targets, "label_names": label_names,
            "multi_label": multi_label, "fraction_idx": fraction_idx}


def _build_model(args: argparse.Namespace, label_names: list[str], multi_label: bool) -> dict[str, Any]:
    """The classifier (linear probe: only the head trains) and the input normaliser: the ``--model``
    folder's AdaIN processor when it has one, so fine-tuning sees what pre-training saw."""
    _, init_folder = encoder_config(args.model)
    # the head (or a random-init encoder): the same weights for the same --seed (torch's default
    # generator is seeded randomly at start-up, so an unseeded init differs run to run)
    torch.manual_seed(args.seed)
    model = build_classifier(
        args.model, label_names, multi_label=multi_label, pooling=args.pooling,
        drop_path_rate=args.drop_path if args.mode == "finetune" else 0.0,
        image_size=args.image_size, label_smoothing=args.label_smoothing,
    )
    if args.image_size is None:
        args.image_size = int(model.config.image_size)
    if args.image_size % getattr(model.config, "patch_size", 1):
        raise ValueError(f"--image_size {args.image_size} is not divisible by the patch size {model.config.patch_size}")
    source_folder = processor_folder(args.image_processor, init_folder)
    source_processor = image_processor_of(source_folder)
    if source_processor is not None:
        normalizer = InputNormalizer.from_processor(source_processor, args.image_size, model.config.num_channels)
    else:
        normalizer = InputNormalizer(image_size=args.image_size, num_channels=model.config.num_channels)
    if args.mode == "linear_probe":
        for name, prm in model.named_parameters():
            prm.requires_grad = name.startswith("classifier.")
    return {"model": model, "normalizer": normalizer, "processor": normalizer.to_processor(),
            "cnn": is_cnn_init(args.model), "normalizer_source": str(source_folder / "preprocessor_config.json")
            if source_processor is not None else "default"}


def _accelerator_and_batch(args: argparse.Namespace, num_train: int, built: dict[str, Any]):
    """The Accelerator with the accumulation ``--total_batch_size`` asks for; (accelerator, per-process
    batch, accumulation, total batch, lr)."""
    from accelerate.utils import set_seed

    # the launcher's WORLD_SIZE (creating accelerate's PartialState here, before the Accelerator,
    # would initialise it without the CPU/multi-process settings)
    nproc = int(os.environ.get("WORLD_SIZE", "1"))
    eff_batch = min(args.per_device_train_batch_size, max(1, num_train // nproc))
    accumulation = int(args.gradient_accumulation_steps)
    if args.total_batch_size:
        if args.total_batch_size % (eff_batch * nproc):
            raise ValueError(f"--total_batch_size {args.total_batch_size} is not a multiple of per_device_train_batch_size x processes "
                             f"({eff_batch} x {nproc})")
        accumulation = max(1, args.total_batch_size // (eff_batch * nproc))
    accelerator = make_accelerator(args, gradient_accumulation_steps=accumulation)
    if not built["cnn"]:  # ResNets have no attention kernel to choose
        built["model"].set_attn_implementation(
            resolve_attn_implementation(args.attn_implementation, accelerator.device, accelerator.mixed_precision))
    set_seed(args.seed)
    total_batch = eff_batch * accelerator.num_processes * accumulation
    lr = args.learning_rate if args.learning_rate is not None else args.base_learning_rate * total_batch / 256.0
    return accelerator, eff_batch, accumulation, total_batch, lr


def _optimizer(model, args: argparse.Namespace, lr: float, cnn: bool) -> torch.optim.AdamW:
    """AdamW with layer-wise lr decay (ViT) or one lr (ResNet), no decay on biases / norms."""
    if cnn and args.layer_decay != 1.0:
        raise ValueError(f"--layer_decay {args.layer_decay} needs a ViT; a ResNet trains all stages at one lr (use 1.0)")
    groups = (param_groups(model, args.weight_decay, lr=lr) if cnn
              else param_groups_lrd(model, lr, args.weight_decay, args.layer_decay))
    for g in groups:
        g.pop("param_names", None)
        g.pop("layer_ids", None)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)


def _schedule(args: argparse.Namespace, batches_per_epoch: int, accumulation: int) -> dict[str, Any]:
    steps_per_epoch = max(1, batches_per_epoch // accumulation)
    scale = few_shot_schedule_scale(args.num_train_epochs, steps_per_epoch, args.min_steps)
    return {"steps_per_epoch": steps_per_epoch, "schedule_scale": scale,
            "total_steps": max(1, int(math.ceil(args.num_train_epochs * scale * steps_per_epoch))),
            "warmup_steps": int(round(args.warmup_epochs * scale * steps_per_epoch)),
            "eval_every_steps": max(1, int(round(args.eval_every_epochs * scale * steps_per_epoch)))}


def _fraction_record(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """``label_fraction.json``: which training rows were used, how they were chosen, and their hash."""
    splits, fraction_idx = data["splits"], data["fraction_idx"]
    record = {
        "label_fraction": args.label_fraction,
        "seed": args.seed,
        "method": "stratified by class (multi-class) / label combination (multi-label), largest remainder, seeded",
        "num_selected": int(len(fraction_idx)),
        "num_available": int(len(data["targets"])),
        "indices_sha256": sha256_strings(str(i) for i in fraction_idx.tolist()),
        "indices": fraction_idx.tolist(),
        "validation": splits["validation_source"],
    }
    if "validation_indices" in splits:
        record["validation_indices_in_original_train"] = splits["validation_indices"]
    return record


def _card_vars(args: argparse.Namespace, data: dict[str, Any], built: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    return dict(
        init=str(args.model), mode=args.mode, pooling=args.pooling,
        task="multi-label" if data["multi_label"] else "multi-class", label_names=data["label_names"],
        dataset=str(args.dataset), label_fraction=args.label_fraction, num_train=len(data["train"]),
        validation_source=data["splits"]["validation_source"], image_size=args.image_size,
        epochs=resolved["epochs"], lr=resolved["lr"], total_batch=resolved["total_batch_size"], drop_path=args.drop_path,
        layer_decay=args.layer_decay, normalizer=dataclasses.asdict(built["normalizer"]),
        selection_metric=args.selection_metric, seed=args.seed, base_model_id=None,
    )


def _loaders(args: argparse.Namespace, data: dict[str, Any], eff_batch: int):
    """Training loader (seeded per-epoch permutation; images decoded at --load_size, default the input
    size, for the random resized crop), validation loader, and the evaluation collator."""
    multi_label, n_labels = data["multi_label"], len(data["label_names"])
    collate = Collator(args.load_size or args.image_size, multi_label, n_labels, args.image_column)
    train_loader = torch.utils.data.DataLoader(data["train"], batch_size=eff_batch, collate_fn=collate, drop_last=True,
                                               sampler=EpochShuffleSampler(len(data["train"]), seed=args.seed),
                                               num_workers=args.num_workers)
    eval_collate = Collator(args.image_size, multi_label, n_labels, args.image_column)
    val_loader = torch.utils.data.DataLoader(data["splits"]["validation"], batch_size=args.per_device_eval_batch_size,
                                             shuffle=False, collate_fn=eval_collate, num_workers=args.num_workers)
    return train_loader, val_loader, eval_collate


@no_trace_on_early_failure
def finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Run fine-tuning / linear probing as configured by :func:`build_parser` args; returns the
    final metrics dict (also written to ``<output_dir>/metrics.json``)."""
    args = resolve_args(args)
    out_dir = Path(args.output_dir)
    check_hub_args(args)
    check_output_dir(out_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    check_weight_files(args.model, "--model")
    check_image_processor_choice(args.image_processor)
    data = _labelled_training_data(args)
    train_ds, splits, label_names, multi_label = data["train"], data["splits"], data["label_names"], data["multi_label"]
    built = _build_model(args, label_names, multi_label)
    accelerator, eff_batch, accumulation, total_batch, lr = _accelerator_and_batch(args, len(train_ds), built)
    train_loader, val_loader, eval_collate = _loaders(args, data, eff_batch)
    optimizer = _optimizer(built["model"], args, lr, built["cnn"])
    train_loader, val_loader = accelerator.prepare(train_loader, val_loader)
    schedule = _schedule(args, len(train_loader), accumulation)
    total_steps, every = schedule["total_steps"], args.checkpointing_steps
    scheduler = cosine_schedule_with_warmup(optimizer, schedule["warmup_steps"], total_steps, args.min_lr_ratio)
    engine = Engine(accelerator, EngineConfig(
        output_dir=out_dir, total_steps=total_steps, images_per_micro_batch=eff_batch, seed=args.seed,
        logging_steps=args.logging_steps, checkpointing_steps=every, checkpoints_total_limit=args.checkpoints_total_limit,
        checkpoint_at_end=bool(every) and total_steps % every == 0, eval_steps=schedule["eval_every_steps"],
        desc=args.mode, history_key="train_log", progress_keys=("train/loss", "train/lr", "val/loss")))
    model, optimizer = engine.prepare(built["model"], optimizer, scheduler)
    state = engine.resume(args.resume_from_checkpoint)
    augment = FinetuneAugment(args.image_size, crop_scale=args.crop_scale, hflip=args.hflip, rotation=args.rotation,
                              randaug_n=args.randaug_n, randaug_m=args.randaug_m)
    resolved = {
        "lr": lr, "total_batch_size": total_batch, "per_process_batch": eff_batch,
        "gradient_accumulation_steps": accumulation, **schedule, "label_names": label_names,
        "epochs": args.num_train_epochs * schedule["schedule_scale"],
        "task": "multi_label" if multi_label else "multi_class", "num_train": len(train_ds),
        "num_validation": len(splits["validation"]), "num_test": len(splits["test"]) if "test" in splits else 0,
        "augment": augment.settings, "normalizer": dataclasses.asdict(built["normalizer"]),
        "normalizer_source": built["normalizer_source"], "validation_source": splits["validation_source"],
        "attn_implementation": None if built["cnn"] else built["model"].config._attn_implementation,
    }
    config = args_to_dict(args) | {"resolved": resolved}
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "label_fraction.json", _fraction_record(args, data))
    write_run_config(accelerator, out_dir, config)
    init_trackers(accelerator, "genssl_hf-finetune", config)

    task = FinetuneTask(
        model=model, unwrapped=accelerator.unwrap_model(model), augment=augment, normalizer=built["normalizer"],
        val_loader=val_loader, accelerator=accelerator, label_names=label_names, multi_label=multi_label,
        steps_per_epoch=schedule["steps_per_epoch"], linear_probe=args.mode == "linear_probe",
        selection_metric=args.selection_metric, threshold_rule=args.threshold_rule,
        target_sensitivity=args.target_sensitivity, out_dir=out_dir, processor=built["processor"],
        card_vars=_card_vars(args, data, built, resolved), choose_thresholds=choose_thresholds)
    run = engine.run(task, model, optimizer, scheduler, train_loader, state)
    if state.extra.get("best") is None:  # a resumed run that had already finished its steps
        accelerator.log(task.periodic(None, state), step=state.global_step)
    result = _final_and_test(args, task, state, data, eval_collate)
    result["train_seconds"] = run.summary["train_seconds"]
    result["images_per_second"] = run.summary["images_per_second"]
    if accelerator.is_main_process:
        write_json(out_dir / "metrics.json", result)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _final_and_test(args: argparse.Namespace, task: FinetuneTask, state, data: dict[str, Any], eval_collate) -> dict[str, Any]:
    """Save ``final/``; evaluate the selected (best) model once on the test split with its validation
    thresholds and re-save ``best/`` with the test metrics. Returns the metrics dict."""
    from genssl_hf.core.classification_metrics import classification_metrics

    accelerator, out_dir, label_names = task.accelerator, task.out_dir, data["label_names"]
    best, history = state.extra["best"], state.extra["history"]
    result: dict[str, Any] = {
        "task": "multi_label" if data["multi_label"] else "multi_class",
        "label_names": label_names,
        "selection_metric": args.selection_metric,
        "best": {"step": best["step"], "epoch": best["epoch"], "validation": best["metrics"]},
        "thresholds": best.get("thresholds"),
        "history": history,
    }
    if accelerator.is_main_process:
        save_model_folder(out_dir / "final", task.unwrapped, task.processor, task.card_vars | {"stage": "final"},
                          {"validation_last": history[-1]})
    accelerator.wait_for_everyone()
    if "test" in data["splits"]:
        best_model = type(task.unwrapped).from_pretrained(out_dir / "best").to(accelerator.device)
        test_loader = accelerator.prepare(torch.utils.data.DataLoader(
            data["splits"]["test"], batch_size=args.per_device_eval_batch_size, shuffle=False, collate_fn=eval_collate,
            num_workers=args.num_workers))
        probs, y = predict_dataset(best_model, test_loader, task.normalizer, accelerator)
        result["test"] = classification_metrics(y, probs, label_names=label_names, n_bootstrap=args.n_bootstrap,
                                                seed=args.seed, threshold=best_thresholds(best, label_names))
        if accelerator.is_main_process:
            np.savez_compressed(out_dir / "test_predictions.npz", probs=probs, targets=y)
            save_model_folder(out_dir / "best", best_model, task.processor, task.card_vars | {"stage": "best"},
                              {"validation": best["metrics"], "test": result["test"], "selected_at_step": best["step"]},
                              best.get("thresholds"))
    return result


def main(argv: Sequence[str] | None = None, publish=None) -> dict[str, Any]:
    """Command line: fine-tune, then (scripts only) publish ``best/``. ``publish(kind, folder, repo_id)``
    is handed in by ``scripts/finetune.py``; training itself never imports ``hub``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    check_publish_available(args, publish)
    result = finetune(args)
    if args.push_to_hub and is_main_process_env():
        result["hub_url"] = publish("classifier", Path(args.output_dir) / "best", args.hub_model_id)
    summary = {"best_step": result["best"]["step"], "selection_metric": result["selection_metric"],
               "validation": result["best"]["validation"].get(result["selection_metric"])}
    if "test" in result:
        summary["test_mean_auc"] = result["test"]["mean_auc"]
        summary["test_accuracy"] = result["test"]["accuracy"]
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, default=str))
    return result


if __name__ == "__main__":
    main()
