"""Fine-tuning and linear probing of a ViT encoder on labelled chest X-rays (GEN-SSL / MAE recipe).

Run it as ``accelerate launch scripts/finetune.py ...``, ``python scripts/finetune.py ...`` or
``python -m genssl_hf.training.finetune ...``.

* start: ``--init`` a genssl_hf MAE checkpoint folder, any ViT / ViTMAE folder, or a preset name
  (``tiny`` / ``vit-s16`` / ``vit-b16``) for random initialisation;
* model: :class:`~genssl_hf.training.classifier.GenSSLViTForImageClassification` with a CLS head or
  the MAE global-average-pool head with its own LayerNorm; BCE for multi-label datasets (``labels``),
  cross-entropy for multi-class ones (``label``), read from the dataset's features;
* recipe: AdamW (no decay on biases / norms), layer-wise lr decay, drop path, half-cycle cosine
  with warm-up, lr = base lr x total batch / 256; augmentation: random resized crop, flip,
  rotation and RandAugment on tensors (kornia);
* ``--label_fraction`` (1 %, 10 %, 100 %): stratified, seeded, indices written to
  ``label_fraction.json``; ``--mode linear_probe`` freezes the encoder;
* model selection on the validation split (carved from train, stratified and seeded, when the
  dataset has none) — never on the test split, which is evaluated once with the selected model;
* decision thresholds chosen on the validation predictions of the selected model (Youden's J by
  default, ``--threshold_rule``), saved as ``best/thresholds.json`` and used for the test metrics;
* outputs: ``best/`` and ``final/`` (``save_pretrained`` model + image processor + card),
  ``metrics.json``, ``run_config.json``, resumable checkpoints; ``--push_to_hub`` uploads ``best/``.

Input normalisation follows the ``AdaINImageProcessor`` in the ``--init`` folder when there is one
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
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.validation import check_weight_files, checked_parser
from genssl_hf.training.attention import ATTN_CHOICES, resolve_attn_implementation
from genssl_hf.models.classifier import is_cnn_init
from genssl_hf.models.presets import RESNET_PRESETS
from genssl_hf.training.classifier import VIT_PRESETS, GenSSLViTForImageClassification, build_classifier, encoder_config
from genssl_hf.training.common import param_groups
from genssl_hf.training.common import (
    EpochShuffleSampler,
    LossGuard,
    TrainProgress,
    add_common_args,
    args_to_dict,
    check_hub_args,
    check_publish_available,
    check_output_dir,
    cosine_schedule_with_warmup,
    make_accelerator,
    maybe_resume,
    no_trace_on_early_failure,
    resumable_batches,
    seed_step,
    write_run_config,
    init_trackers,
    is_main_process_env,
)
from genssl_hf.training.finetune_data import (
    Collator,
    FinetuneAugment,
    InputNormalizer,
    load_dataset_spec,
    split_train_validation,
    stratified_subset,
    targets_of,
)
from genssl_hf.training.lr_decay import param_groups_lrd
from genssl_hf.training.thresholds import THRESHOLD_RULES, choose_thresholds, save_thresholds, threshold_vector
from genssl_hf.utils import atomic_dir, sha256_strings, write_json

logger = logging.getLogger(__name__)

__all__ = ["FINETUNE_PRESETS", "build_parser", "load_splits", "finetune", "main", "predict_dataset"]

# Recipe defaults. ``total_batch_size`` is the effective batch (all processes x accumulation);
# ``batch_size`` the per-process micro batch. vit-b16: GEN-SSL paper; vit-s16: MED-MAE (drop path
# 0.2, layer decay 0.55). ``tiny``: a CPU-sized run for tests and the demo.
FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(arch="tiny", image_size=64, batch_size=32, total_batch_size=None, blr=1e-3, epochs=10,
                 warmup_epochs=1, drop_path=0.1, layer_decay=0.75, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                 num_workers=0),
    "vit-s16": dict(arch="vit-s16", image_size=224, batch_size=256, total_batch_size=1024, blr=2.5e-4, epochs=75,
                    warmup_epochs=5, drop_path=0.2, layer_decay=0.55, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                    num_workers=8),
    "vit-b16": dict(arch="vit-b16", image_size=224, batch_size=128, total_batch_size=1024, blr=2.5e-4, epochs=75,
                    warmup_epochs=5, drop_path=0.3, layer_decay=0.65, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                    num_workers=8),
    # the CNN slot (ResNetForImageClassification): no layer decay or drop path in a ResNet
    "resnet-tiny": dict(arch="resnet-tiny", image_size=64, batch_size=32, total_batch_size=None, blr=1e-3, epochs=10,
                        warmup_epochs=1, drop_path=0.0, layer_decay=1.0, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                        num_workers=0),
    "resnet": dict(arch="resnet", image_size=224, batch_size=256, total_batch_size=1024, blr=1e-3, epochs=75,
                   warmup_epochs=5, drop_path=0.0, layer_decay=1.0, weight_decay=0.05, randaug_n=2, randaug_m=8.0,
                   num_workers=8),
}
# Linear probing (MAE protocol, with AdamW instead of LARS): frozen encoder, no drop path, no
# layer decay, no weight decay, crop + flip only.
LINEAR_PROBE_OVERRIDES = dict(drop_path=0.0, layer_decay=1.0, weight_decay=0.0, randaug_n=0, rotation=0.0, blr=1e-3)

MODEL_CARD_TEMPLATE = "classifier"


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
    g.add_argument("--init", required=True,
                   help="MAE / ViT / ResNet checkpoint or encoder folder, or a preset for random init: "
                        + ", ".join([*VIT_PRESETS, *RESNET_PRESETS]))
    g.add_argument("--preset", choices=list(FINETUNE_PRESETS), default=None,
                   help="recipe defaults (default: tiny for --init tiny, else vit-b16 / vit-s16 by width, tiny below)")
    g.add_argument("--mode", choices=["finetune", "linear_probe"], default="finetune")
    g.add_argument("--pooling", choices=["mean", "cls"], default=None,
                   help="head input: mean of patch tokens + fc_norm (MAE fine-tuning default) or the CLS token "
                        "(default: mean for finetune, cls for linear_probe)")
    g.add_argument("--drop_path", type=float, default=None, help="stochastic depth rate of the last block")
    g.add_argument("--image_size", type=int, default=None, help="input size (default: preset / checkpoint)")
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
    g = p.add_argument_group("optimisation (defaults from --preset)")
    g.add_argument("--epochs", type=float, default=None)
    g.add_argument("--warmup_epochs", type=float, default=None)
    g.add_argument("--min_steps", type=int, default=0,
                   help="few-shot schedule: stretch epochs, warm-up and evaluation cadence alike so the run has at "
                        "least this many optimiser steps (small label fractions otherwise get a handful of steps)")
    g.add_argument("--batch_size", type=int, default=None, help="per-process micro batch")
    g.add_argument("--total_batch_size", type=int, default=None,
                   help="effective batch; sets gradient accumulation = total / (batch_size x processes)")
    g.add_argument("--blr", type=float, default=None, help="base lr: lr = blr x total batch / 256")
    g.add_argument("--lr", type=float, default=None, help="absolute lr (overrides --blr)")
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
    g.add_argument("--eval_batch_size", type=int, default=None)
    g.add_argument("--n_bootstrap", type=int, default=0, help="bootstrap replicates for the test-set CIs")
    g.add_argument("--threshold_rule", choices=list(THRESHOLD_RULES), default="youden",
                   help="decision thresholds chosen on the validation predictions of the selected model "
                        "(saved as best/thresholds.json; every rule is recorded there)")
    g.add_argument("--target_sensitivity", type=float, default=0.9, help="validation sensitivity of the 'sensitivity' rule")
    add_common_args(p)
    p.set_defaults(mixed_precision="no", checkpointing_steps=0)
    return checked_parser(p)


def _auto_preset(init: str) -> str:
    if init in FINETUNE_PRESETS:
        return init
    cfg, _ = encoder_config(init)
    if is_cnn_init(init):
        return "resnet-tiny" if cfg.hidden_sizes[-1] <= 128 else "resnet"
    if cfg.hidden_size >= 768:
        return "vit-b16"
    if cfg.hidden_size >= 384:
        return "vit-s16"
    return "tiny"


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the preset (and the linear-probe overrides); validate early."""
    args.preset = args.preset or _auto_preset(args.init)
    preset = dict(FINETUNE_PRESETS[args.preset])
    preset.setdefault("rotation", 10.0)
    if args.mode == "linear_probe":
        preset.update(LINEAR_PROBE_OVERRIDES)
    for key, value in preset.items():
        if key == "arch":
            continue
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.pooling is None:
        args.pooling = "cls" if args.mode == "linear_probe" else "mean"
    if args.mode == "linear_probe" and args.drop_path:
        raise ValueError("--drop_path has no effect with a frozen encoder (--mode linear_probe); leave it unset")
    if args.eval_batch_size is None:
        args.eval_batch_size = args.batch_size * 2
    if args.min_steps < 0:
        raise ValueError(f"--min_steps must be >= 0; got {args.min_steps}")
    if args.epochs <= 0 or args.batch_size <= 0:
        raise ValueError(f"--epochs and --batch_size must be positive (got {args.epochs}, {args.batch_size})")
    if not 0.0 <= args.drop_path < 1.0:
        raise ValueError(f"--drop_path must lie in [0, 1); got {args.drop_path}")
    if not 0.0 < args.layer_decay <= 1.0:
        raise ValueError(f"--layer_decay must lie in (0, 1]; got {args.layer_decay}")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val_fraction must lie in (0, 1); got {args.val_fraction}")
    return args


# ------------------------------------------------------------------------------------------ data
def load_splits(args: argparse.Namespace) -> dict[str, Any]:
    """``{"train", "validation", "test"?}`` datasets in the canonical schema; the validation split is
    carved (stratified, seeded) from train when the dataset has none. Raises before any training
    when a split or column is missing."""
    dd = load_dataset_spec(args.dataset, config=args.dataset_config, phantom_sizes=args.phantom_sizes,
                           phantom_resolution=args.phantom_resolution, seed=args.seed)
    train_name, val_name = args.train_split, args.validation_split
    test_name = None if args.test_split in (None, "none") else args.test_split
    if train_name not in dd:
        raise KeyError(f"dataset {args.dataset!r} has no split {train_name!r} (splits: {list(dd)})")
    if test_name is not None and test_name not in dd:
        logger.warning("dataset %s has no test split %r; skipping the test evaluation", args.dataset, test_name)
        test_name = None
    if val_name == test_name:
        raise ValueError("the validation split must not be the test split: model selection never uses test data")
    out: dict[str, Any] = {"train": dd[train_name]}
    features = out["train"].features
    if args.image_column not in features:
        raise KeyError(f"training split has no image column {args.image_column!r} (columns: {list(features)})")
    if "labels" not in features and "label" not in features:
        raise KeyError(f"training split has neither 'labels' (multi-label) nor 'label' (multi-class): {list(features)}")
    if len(out["train"]) == 0:
        raise ValueError(f"training split {train_name!r} of {args.dataset!r} is empty")
    if val_name in dd:
        out["validation"] = dd[val_name]
        out["validation_source"] = f"split {val_name!r}"
    else:
        targets, _, _ = targets_of(out["train"])
        tr, va = split_train_validation(targets, args.val_fraction, args.seed)
        out["validation"] = out["train"].select(va)
        out["train"] = out["train"].select(tr)
        out["validation_source"] = f"{args.val_fraction:.0%} of {train_name!r}, stratified, seed {args.seed}"
        out["validation_indices"] = va.tolist()
    if args.test_dataset:
        out["test"] = _external_test_split(args, out["train"])
    elif test_name is not None:
        out["test"] = dd[test_name]
    for name in ("validation", "test") if not args.test_dataset else ("validation",):
        if name in out and out[name].features.keys() != features.keys():
            missing = set(features) ^ set(out[name].features)
            raise ValueError(f"{name} split's columns differ from train's: {sorted(missing)}")
    return out


def _external_test_split(args: argparse.Namespace, train_ds):
    """``--test_dataset``'s test split, with its classes checked against (and ordered as) training's."""
    _, names, multi_label = targets_of(train_ds)
    dd = load_dataset_spec(args.test_dataset, label_names=names, seed=args.seed,
                           phantom_resolution=args.phantom_resolution)
    split = args.test_split if args.test_split not in (None, "none") else "test"
    if split not in dd:
        if len(dd) != 1:
            raise KeyError(f"--test_dataset {args.test_dataset!r} has no split {split!r} (splits: {list(dd)})")
        split = next(iter(dd))
    test = dd[split]
    if args.image_column not in test.features:
        raise KeyError(f"--test_dataset {args.test_dataset!r} has no image column {args.image_column!r}")
    _, test_names, test_multi = targets_of(test)
    if test_names != names or test_multi != multi_label:
        raise ValueError(f"--test_dataset {args.test_dataset!r} has classes {test_names}, training has {names}")
    return test


def _image_processor_of(folder: Path | None):
    """The ``AdaINImageProcessor`` (or any processor with mean / std) saved with a checkpoint."""
    if folder is None or not (folder / "preprocessor_config.json").is_file():
        return None
    import genssl_hf.processing  # noqa: F401  (registers AdaINImageProcessor with AutoImageProcessor)
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict_dataset(model, loader, normalizer: InputNormalizer, accelerator=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets over a loader of :class:`Collator` batches (gathered across processes)."""
    was_training = model.training
    model.eval()
    base = accelerator.unwrap_model(model) if accelerator is not None else model
    probs, targets = [], []
    for batch in loader:
        x = normalizer(normalizer.resize(batch["pixels"].float().div(255.0)))
        device = accelerator.device if accelerator is not None else next(base.parameters()).device
        logits = model(pixel_values=x.to(device)).logits.float()
        p = torch.sigmoid(logits) if base.config.problem_type == "multi_label_classification" else torch.softmax(logits, -1)
        y = batch["labels"].to(device)
        if accelerator is not None:
            p, y = accelerator.gather_for_metrics((p, y))
        probs.append(p.cpu())
        targets.append(y.cpu())
    model.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def _selection_value(metrics: dict[str, Any], name: str) -> float:
    value = metrics.get(name)
    if value is None:
        raise ValueError(f"selection metric {name!r} is undefined on the validation split "
                         f"(undefined AUCs: {metrics.get('undefined_auc')})")
    return -float(value) if name == "loss" else float(value)


# -------------------------------------------------------------------------------------- saving
def _save_model_folder(target: Path, model: GenSSLViTForImageClassification, processor, card_vars: dict[str, Any],
                       metrics: dict[str, Any], thresholds: dict[str, Any] | None = None) -> None:
    from genssl_hf.core.cards import render_model_card

    with atomic_dir(target, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(tmp / "eval_results.json", metrics)
        if thresholds is not None:  # the validation-chosen operating point travels with the model
            save_thresholds(tmp, thresholds)
        card_data = {
            "license": "apache-2.0",
            "library_name": "transformers",
            "pipeline_tag": "image-classification",
            "tags": ["genssl_hf", "chest-x-ray", "vit", "image-classification", "medical-imaging"],
        }
        if card_vars.get("base_model_id"):
            card_data["base_model"] = card_vars["base_model_id"]
        card = render_model_card(MODEL_CARD_TEMPLATE, card_data, metrics=metrics, **card_vars)
        card.save(str(tmp / "README.md"))


# ---------------------------------------------------------------------------------------- loop
def few_shot_schedule_scale(epochs: float, steps_per_epoch: int, min_steps: int) -> float:
    """Factor that stretches the schedule (epochs, warm-up, evaluation cadence) to ``min_steps``
    optimiser steps when ``epochs`` x ``steps_per_epoch`` falls short; 1.0 otherwise. At 1 % labels a
    10-epoch recipe is ~10 steps, too few to move a pre-trained encoder; a fixed step budget across
    label fractions is the usual few-shot protocol."""
    planned = epochs * steps_per_epoch
    return 1.0 if not min_steps or planned >= min_steps else float(min_steps) / planned


@no_trace_on_early_failure
def finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Run fine-tuning / linear probing as configured by :func:`build_parser` args; returns the
    final metrics dict (also written to ``<output_dir>/metrics.json``)."""
    from genssl_hf.core.classification_metrics import classification_metrics

    args = resolve_args(args)
    out_dir = Path(args.output_dir)
    check_hub_args(args)
    check_output_dir(out_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    check_weight_files(args.init, "--init")
    splits = load_splits(args)  # all data errors surface here, before any compute
    train_ds = splits["train"]
    targets, label_names, multi_label = targets_of(train_ds)
    fraction_idx = stratified_subset(targets, args.label_fraction, args.seed)
    if args.max_train_samples is not None and args.max_train_samples < len(fraction_idx):
        # a stratified cap too (a CSV sorted by class must not yield a one-class subset)
        keep = stratified_subset(targets[fraction_idx], args.max_train_samples / len(fraction_idx), args.seed + 1)
        fraction_idx = fraction_idx[keep]
    train_ds = train_ds.select(fraction_idx)
    if args.selection_metric == "auto":
        args.selection_metric = "mean_auc" if multi_label else "accuracy"
    if args.selection_metric not in ("mean_auc", "accuracy", "loss"):
        raise ValueError(f"--selection_metric must be mean_auc, accuracy or loss; got {args.selection_metric!r}")

    # ----- model and input normalisation
    _, init_folder = encoder_config(args.init)
    model = build_classifier(
        args.init, label_names, multi_label=multi_label, pooling=args.pooling,
        drop_path_rate=args.drop_path if args.mode == "finetune" else 0.0,
        image_size=args.image_size, label_smoothing=args.label_smoothing,
    )
    if args.image_size is None:
        args.image_size = int(model.config.image_size)
    cnn = is_cnn_init(args.init)
    if args.image_size % getattr(model.config, "patch_size", 1):
        raise ValueError(f"--image_size {args.image_size} is not divisible by the patch size {model.config.patch_size}")
    source_processor = _image_processor_of(init_folder)
    if source_processor is not None:
        normalizer = InputNormalizer.from_processor(source_processor, args.image_size, model.config.num_channels)
    else:
        normalizer = InputNormalizer(image_size=args.image_size, num_channels=model.config.num_channels)
    processor = normalizer.to_processor()
    if args.mode == "linear_probe":
        for name, prm in model.named_parameters():
            prm.requires_grad = name.startswith("classifier.")

    # ----- accelerate, batch arithmetic
    from accelerate.utils import set_seed

    # the launcher's WORLD_SIZE (creating accelerate's PartialState here, before the Accelerator,
    # would initialise it without the CPU/multi-process settings)
    nproc = int(os.environ.get("WORLD_SIZE", "1"))
    eff_batch = min(args.batch_size, max(1, len(train_ds) // nproc))
    accumulation = int(args.gradient_accumulation_steps)
    if args.total_batch_size:
        if args.total_batch_size % (eff_batch * nproc):
            raise ValueError(f"--total_batch_size {args.total_batch_size} is not a multiple of batch_size x processes "
                             f"({eff_batch} x {nproc})")
        accumulation = max(1, args.total_batch_size // (eff_batch * nproc))
    accelerator = make_accelerator(args, gradient_accumulation_steps=accumulation)
    if not cnn:  # ResNets have no attention kernel to choose
        model.set_attn_implementation(
            resolve_attn_implementation(args.attn_implementation, accelerator.device, accelerator.mixed_precision))
    set_seed(args.seed)
    total_batch = eff_batch * accelerator.num_processes * accumulation
    lr = args.lr if args.lr is not None else args.blr * total_batch / 256.0

    # images are decoded at --load_size (default: the input size); the random resized crop then
    # picks its region from that and resizes it to the input size
    collate = Collator(args.load_size or args.image_size, multi_label, len(label_names), args.image_column)
    sampler = EpochShuffleSampler(len(train_ds), seed=args.seed)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=eff_batch, sampler=sampler, collate_fn=collate,
                                               drop_last=True, num_workers=args.num_workers)
    eval_collate = Collator(args.image_size, multi_label, len(label_names), args.image_column)
    val_loader = torch.utils.data.DataLoader(splits["validation"], batch_size=args.eval_batch_size, shuffle=False,
                                             collate_fn=eval_collate, num_workers=args.num_workers)
    if cnn and args.layer_decay != 1.0:
        raise ValueError(f"--layer_decay {args.layer_decay} needs a ViT; a ResNet trains all stages at one lr (use 1.0)")
    groups = (param_groups(model, args.weight_decay, lr=lr) if cnn
              else param_groups_lrd(model, lr, args.weight_decay, args.layer_decay))
    for g in groups:
        g.pop("param_names", None)
        g.pop("layer_ids", None)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    steps_per_epoch = max(1, len(train_loader) // accumulation)
    schedule_scale = few_shot_schedule_scale(args.epochs, steps_per_epoch, args.min_steps)
    total_steps = max(1, int(math.ceil(args.epochs * schedule_scale * steps_per_epoch)))
    warmup_steps = int(round(args.warmup_epochs * schedule_scale * steps_per_epoch))
    eval_every = max(1, int(round(args.eval_every_epochs * schedule_scale * steps_per_epoch)))
    scheduler = cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps, args.min_lr_ratio)
    accelerator.register_for_checkpointing(scheduler)
    state = maybe_resume(accelerator, args.resume_from_checkpoint, out_dir)
    augment = FinetuneAugment(args.image_size, crop_scale=args.crop_scale, hflip=args.hflip, rotation=args.rotation,
                              randaug_n=args.randaug_n, randaug_m=args.randaug_m)

    # ----- provenance
    fraction_record = {
        "label_fraction": args.label_fraction,
        "seed": args.seed,
        "method": "stratified by class (multi-class) / label combination (multi-label), largest remainder, seeded",
        "num_selected": int(len(fraction_idx)),
        "num_available": int(len(targets)),
        "indices_sha256": sha256_strings(str(i) for i in fraction_idx.tolist()),
        "indices": fraction_idx.tolist(),
        "validation": splits["validation_source"],
    }
    if "validation_indices" in splits:
        fraction_record["validation_indices_in_original_train"] = splits["validation_indices"]
    config = args_to_dict(args) | {
        "resolved": {
            "lr": lr, "total_batch_size": total_batch, "per_process_batch": eff_batch,
            "gradient_accumulation_steps": accumulation, "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps, "warmup_steps": warmup_steps, "label_names": label_names,
            "schedule_scale": schedule_scale, "epochs": args.epochs * schedule_scale, "eval_every_steps": eval_every,
            "task": "multi_label" if multi_label else "multi_class", "num_train": len(train_ds),
            "num_validation": len(splits["validation"]), "num_test": len(splits["test"]) if "test" in splits else 0,
            "augment": augment.settings, "normalizer": dataclasses.asdict(normalizer),
            "normalizer_source": str(init_folder / "preprocessor_config.json") if source_processor is not None else "default",
            "validation_source": splits["validation_source"],
            "attn_implementation": None if cnn else model.config._attn_implementation,
        }
    }
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "label_fraction.json", fraction_record)
    write_run_config(accelerator, out_dir, config)
    init_trackers(accelerator, "genssl_hf-finetune", config)

    unwrapped = accelerator.unwrap_model(model)
    card_vars = dict(
        init=str(args.init), mode=args.mode, pooling=args.pooling, task="multi-label" if multi_label else "multi-class",
        label_names=label_names, dataset=str(args.dataset), label_fraction=args.label_fraction,
        num_train=len(train_ds), validation_source=splits["validation_source"], image_size=args.image_size,
        epochs=args.epochs * schedule_scale, lr=lr, total_batch=total_batch, drop_path=args.drop_path, layer_decay=args.layer_decay,
        normalizer=dataclasses.asdict(normalizer), selection_metric=args.selection_metric, seed=args.seed,
        base_model_id=None,
    )

    # ----- train
    guard = LossGuard(accelerator, out_dir)
    bar = TrainProgress(accelerator, total_steps, state, total_batch, desc=args.mode)
    history: list[dict[str, Any]] = list(state.extra.get("history", []))
    best = state.extra.get("best")
    model.train()
    encoder = unwrapped.resnet if cnn else unwrapped.vit
    if args.mode == "linear_probe":
        encoder.eval()  # frozen: no dropout, and BN keeps its pre-trained statistics

    def evaluate_and_select() -> None:
        nonlocal best
        probs, y = predict_dataset(model, val_loader, normalizer, accelerator)
        if args.mode == "linear_probe":
            encoder.eval()
        m = classification_metrics(y, probs, label_names=label_names)
        logits_loss = _val_loss(probs, y, multi_label)
        entry = {"step": state.global_step, "epoch": state.global_step / steps_per_epoch, "loss": logits_loss,
                 "mean_auc": m["mean_auc"], "accuracy": m["accuracy"], "undefined_auc": m["undefined_auc"],
                 "train_loss": state.last_loss}
        history.append(entry)
        m["loss"] = logits_loss
        value = _selection_value(m, args.selection_metric)
        if best is None or value > best["value"]:
            thresholds = choose_thresholds(y, probs, label_names, rule=args.threshold_rule,
                                           target_sensitivity=args.target_sensitivity) | {"selected_at_step": state.global_step}
            best = {"value": value, "step": state.global_step, "epoch": entry["epoch"], "metrics": m,
                    "thresholds": thresholds}
            if accelerator.is_main_process:
                _save_model_folder(out_dir / "best", unwrapped, processor, card_vars | {"stage": "best"},
                                   {"validation": m, "selected_at_step": state.global_step}, thresholds)
        accelerator.wait_for_everyone()
        accelerator.log({f"val/{k}": v for k, v in entry.items() if isinstance(v, (int, float))}, step=state.global_step)
        state.extra["history"] = history
        state.extra["best"] = best

    t0 = time.perf_counter()
    if state.global_step < total_steps:
        for batch in resumable_batches(accelerator, train_loader, state):
            seed_step(args.seed, state, accelerator)
            with accelerator.accumulate(model):
                x = augment(batch["pixels"].float().div(255.0))
                x = normalizer(x)
                loss = model(pixel_values=x, labels=batch["labels"]).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            guard.add(loss)
            if accelerator.sync_gradients:
                scheduler.step()
                state.global_step += 1
                state.images_seen += total_batch
                if state.global_step % args.logging_steps == 0 or state.global_step == total_steps:
                    value = guard.check(state)
                    bar.update(1, loss=value, lr=scheduler.get_last_lr()[-1])
                    accelerator.log({"train/loss": value, "train/lr": scheduler.get_last_lr()[-1]}, step=state.global_step)
                else:
                    bar.update(1)
                if state.global_step % eval_every == 0 or state.global_step == total_steps:
                    guard.check(state)
                    evaluate_and_select()
                if args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0:
                    guard.checkpoint(state, args.checkpoints_total_limit)
                if state.global_step >= total_steps:
                    break
    bar.close()
    train_seconds = time.perf_counter() - t0
    if best is None:
        evaluate_and_select()

    # ----- final model, test evaluation with the selected (best) model
    result: dict[str, Any] = {
        "task": "multi_label" if multi_label else "multi_class",
        "label_names": label_names,
        "selection_metric": args.selection_metric,
        "best": {"step": best["step"], "epoch": best["epoch"], "validation": best["metrics"]},
        "thresholds": best.get("thresholds"),
        "history": history,
        "train_seconds": train_seconds,
        "images_per_second": bar.images_per_second,
    }
    final_val = history[-1]
    if accelerator.is_main_process:
        _save_model_folder(out_dir / "final", unwrapped, processor, card_vars | {"stage": "final"},
                           {"validation_last": final_val})
    accelerator.wait_for_everyone()
    if "test" in splits:
        best_model = type(unwrapped).from_pretrained(out_dir / "best").to(accelerator.device)
        test_loader = accelerator.prepare(torch.utils.data.DataLoader(
            splits["test"], batch_size=args.eval_batch_size, shuffle=False, collate_fn=eval_collate,
            num_workers=args.num_workers))
        probs, y = predict_dataset(best_model, test_loader, normalizer, accelerator)
        result["test"] = classification_metrics(y, probs, label_names=label_names, n_bootstrap=args.n_bootstrap,
                                                seed=args.seed, threshold=_best_thresholds(best, label_names))
        if accelerator.is_main_process:
            np.savez_compressed(out_dir / "test_predictions.npz", probs=probs, targets=y)
            _save_model_folder(out_dir / "best", best_model, processor, card_vars | {"stage": "best"},
                               {"validation": best["metrics"], "test": result["test"],
                                "selected_at_step": best["step"]}, best.get("thresholds"))
    if accelerator.is_main_process:
        write_json(out_dir / "metrics.json", result)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _best_thresholds(best: dict[str, Any], label_names: list[str]) -> np.ndarray | float:
    """The selected model's validation-chosen thresholds (0.5 for a run resumed from a checkpoint
    written before thresholds were recorded)."""
    if not best.get("thresholds"):
        logger.warning("the selected model has no validation thresholds (old checkpoint); test metrics use 0.5")
        return 0.5
    return threshold_vector(best["thresholds"], label_names)


def _val_loss(probs: np.ndarray, y: np.ndarray, multi_label: bool) -> float:
    eps = 1e-7
    p = np.clip(probs.astype(np.float64), eps, 1 - eps)
    if multi_label:
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(y)), y.astype(np.int64)]).mean())


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
