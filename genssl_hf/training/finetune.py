"""Fine-tuning and linear probing of a ViT encoder on labelled chest X-rays (GEN-SSL / MAE recipe).

Run it as ``accelerate launch scripts/finetune.py ...``, ``python scripts/finetune.py ...`` or
``python -m genssl_hf.training.finetune ...``.

* start: ``--model`` a genssl_hf MAE checkpoint folder, any ViT / ViTMAE / ResNet folder, or a preset
  name (``tiny`` / ``vit-s16`` / ``vit-b16`` / ``resnet-tiny`` / ...) for random initialisation;
* model: :class:`~genssl_hf.models.vit_classifier.GenSSLViTForImageClassification` with a CLS head or
  the MAE global-average-pool head with its own LayerNorm; BCE for multi-label datasets (``labels``),
  cross-entropy for multi-class ones (``label``), read from the dataset's features;
* recipe (``--recipe``, the defaults of every unset option; :mod:`genssl_hf.training.finetune_args`): AdamW (no decay on
  biases / norms),
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

from genssl_hf.validation import check_scale_range, check_weight_files
from genssl_hf.training.attention import resolve_attn_implementation
from genssl_hf.models.classifier import is_cnn_init
from genssl_hf.training.classifier import build_classifier, encoder_config
from genssl_hf.training.args import args_to_dict, check_hub_args, check_output_dir, check_publish_available
from genssl_hf.training.optim import cosine_schedule_with_warmup, param_groups
from genssl_hf.training.common import (
    release_process_group,
    EpochShuffleSampler,
    make_accelerator,
    no_trace_on_early_failure,
    write_run_config,
    init_trackers,
    is_main_process_env,
)
from genssl_hf.training.finetune_args import (
    build_parser,
    check_image_processor_choice,
    image_processor_of,
    processor_folder,
    resolve_args,
)
from genssl_hf.training.finetune_data import (
    Collator,
    FinetuneAugment,
    InputNormalizer,
    load_splits,
    check_training_subset,
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
from genssl_hf.training.thresholds import choose_thresholds
from genssl_hf.utils import sha256_strings, write_json

logger = logging.getLogger(__name__)

# ``build_parser`` (training.finetune_args) stays importable here: scripts, the pipeline and docs import it from this
# module.
__all__ = ["build_parser", "few_shot_schedule_scale", "load_splits", "finetune", "main", "predict_dataset"]


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
    check_training_subset(targets, fraction_idx, label_names, f"--label_fraction {args.label_fraction}")
    if args.selection_metric == "auto":
        args.selection_metric = "mean_auc" if multi_label else "accuracy"
    if args.selection_metric not in ("mean_auc", "accuracy", "loss"):
        raise ValueError(f"--selection_metric must be mean_auc, accuracy or loss; got {args.selection_metric!r}")
    return {
        "splits": splits,
        "train": train_ds.select(fraction_idx),
        "targets": targets,
        "label_names": label_names,
        "multi_label": multi_label,
        "fraction_idx": fraction_idx,
    }


def _build_model(args: argparse.Namespace, label_names: list[str], multi_label: bool) -> dict[str, Any]:
    """The classifier (linear probe: only the head trains) and the input normaliser: the ``--model``
    folder's AdaIN processor when it has one, so fine-tuning sees what pre-training saw."""
    _, init_folder = encoder_config(args.model)
    # the head (or a random-init encoder): the same weights for the same --seed (torch's default
    # generator is seeded randomly at start-up, so an unseeded init differs run to run)
    torch.manual_seed(args.seed)
    model = build_classifier(
        args.model,
        label_names,
        multi_label=multi_label,
        pooling=args.pooling,
        drop_path_rate=args.drop_path if args.mode == "finetune" else 0.0,
        image_size=args.image_size,
        label_smoothing=args.label_smoothing,
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
    return {
        "model": model,
        "normalizer": normalizer,
        "processor": normalizer.to_processor(),
        "cnn": is_cnn_init(args.model),
        "normalizer_source": str(source_folder / "preprocessor_config.json")
        if source_processor is not None
        else "default",
    }


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
            raise ValueError(
                f"--total_batch_size {args.total_batch_size} "
                "is not a multiple of per_device_train_batch_size x processes "
                f"({eff_batch} x {nproc})"
            )
        accumulation = max(1, args.total_batch_size // (eff_batch * nproc))
    accelerator = make_accelerator(args, gradient_accumulation_steps=accumulation)
    if not built["cnn"]:  # ResNets have no attention kernel to choose
        built["model"].set_attn_implementation(
            resolve_attn_implementation(args.attn_implementation, accelerator.device, accelerator.mixed_precision)
        )
    set_seed(args.seed)
    total_batch = eff_batch * accelerator.num_processes * accumulation
    lr = args.learning_rate if args.learning_rate is not None else args.base_learning_rate * total_batch / 256.0
    return accelerator, eff_batch, accumulation, total_batch, lr


def _optimizer(model, args: argparse.Namespace, lr: float, cnn: bool) -> torch.optim.AdamW:
    """AdamW with layer-wise lr decay (ViT) or one lr (ResNet), no decay on biases / norms."""
    if cnn and args.layer_decay != 1.0:
        raise ValueError(
            f"--layer_decay {args.layer_decay} needs a ViT; a ResNet trains all stages at one lr (use 1.0)"
        )
    groups = (
        param_groups(model, args.weight_decay, lr=lr)
        if cnn
        else param_groups_lrd(model, lr, args.weight_decay, args.layer_decay)
    )
    for g in groups:
        g.pop("param_names", None)
        g.pop("layer_ids", None)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)


def _schedule(args: argparse.Namespace, batches_per_epoch: int, accumulation: int) -> dict[str, Any]:
    steps_per_epoch = max(1, batches_per_epoch // accumulation)
    scale = few_shot_schedule_scale(args.num_train_epochs, steps_per_epoch, args.min_steps)
    return {
        "steps_per_epoch": steps_per_epoch,
        "schedule_scale": scale,
        "total_steps": max(1, int(math.ceil(args.num_train_epochs * scale * steps_per_epoch))),
        "warmup_steps": int(round(args.warmup_epochs * scale * steps_per_epoch)),
        "eval_every_steps": max(1, int(round(args.eval_every_epochs * scale * steps_per_epoch))),
    }


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


def _card_vars(
    args: argparse.Namespace, data: dict[str, Any], built: dict[str, Any], resolved: dict[str, Any]
) -> dict[str, Any]:
    return dict(
        init=str(args.model),
        mode=args.mode,
        pooling=args.pooling,
        task="multi-label" if data["multi_label"] else "multi-class",
        label_names=data["label_names"],
        dataset=str(args.dataset),
        label_fraction=args.label_fraction,
        num_train=len(data["train"]),
        validation_source=data["splits"]["validation_source"],
        image_size=args.image_size,
        epochs=resolved["epochs"],
        lr=resolved["lr"],
        total_batch=resolved["total_batch_size"],
        drop_path=args.drop_path,
        layer_decay=args.layer_decay,
        normalizer=dataclasses.asdict(built["normalizer"]),
        selection_metric=args.selection_metric,
        seed=args.seed,
        base_model_id=None,
    )


def _loaders(args: argparse.Namespace, data: dict[str, Any], eff_batch: int):
    """Training loader (seeded per-epoch permutation; images decoded at --load_size, default the input
    size, for the random resized crop), validation loader, and the evaluation collator."""
    multi_label, n_labels = data["multi_label"], len(data["label_names"])
    collate = Collator(args.load_size or args.image_size, multi_label, n_labels, args.image_column)
    train_loader = torch.utils.data.DataLoader(
        data["train"],
        batch_size=eff_batch,
        collate_fn=collate,
        drop_last=True,
        sampler=EpochShuffleSampler(len(data["train"]), seed=args.seed),
        num_workers=args.num_workers,
    )
    eval_collate = Collator(args.image_size, multi_label, n_labels, args.image_column)
    val_loader = torch.utils.data.DataLoader(
        data["splits"]["validation"],
        batch_size=args.per_device_eval_batch_size,
        shuffle=False,
        collate_fn=eval_collate,
        num_workers=args.num_workers,
    )
    return train_loader, val_loader, eval_collate


def _engine_config(args: argparse.Namespace, out_dir: Path, schedule: dict[str, Any], eff_batch: int) -> EngineConfig:
    """The engine's settings: steps, checkpoints, evaluation cadence, logging."""
    return EngineConfig(
        output_dir=out_dir,
        total_steps=schedule["total_steps"],
        images_per_micro_batch=eff_batch,
        seed=args.seed,
        logging_steps=args.logging_steps,
        checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit,
        checkpoint_at_end=bool(args.checkpointing_steps) and schedule["total_steps"] % args.checkpointing_steps == 0,
        eval_steps=schedule["eval_every_steps"],
        desc=args.mode,
        history_key="train_log",
        progress_keys=("train/loss", "train/lr", "val/loss"),
    )


def _resolved(args, data, built, lr: float, batch: dict[str, int], schedule, augment) -> dict[str, Any]:
    """What the run resolved from its arguments (learning rate, batch, schedule, data sizes, ...): the
    run config's ``resolved``."""
    return {
        "lr": lr,
        **batch,
        **schedule,
        "label_names": data["label_names"],
        "epochs": args.num_train_epochs * schedule["schedule_scale"],
        "task": "multi_label" if data["multi_label"] else "multi_class",
        "num_train": len(data["train"]),
        "num_validation": len(data["splits"]["validation"]),
        "num_test": len(data["splits"]["test"]) if "test" in data["splits"] else 0,
        "augment": augment.settings,
        "normalizer": dataclasses.asdict(built["normalizer"]),
        "normalizer_source": built["normalizer_source"],
        "validation_source": data["splits"]["validation_source"],
        "attn_implementation": None if built["cnn"] else built["model"].config._attn_implementation,
    }


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
    check_scale_range(args.crop_scale, "--crop_scale")
    data = _labelled_training_data(args)
    train_ds, label_names, multi_label = data["train"], data["label_names"], data["multi_label"]
    built = _build_model(args, label_names, multi_label)
    accelerator, eff_batch, accumulation, total_batch, lr = _accelerator_and_batch(args, len(train_ds), built)
    train_loader, val_loader, eval_collate = _loaders(args, data, eff_batch)
    optimizer = _optimizer(built["model"], args, lr, built["cnn"])
    train_loader, val_loader = accelerator.prepare(train_loader, val_loader)
    schedule = _schedule(args, len(train_loader), accumulation)
    total_steps = schedule["total_steps"]
    scheduler = cosine_schedule_with_warmup(optimizer, schedule["warmup_steps"], total_steps, args.min_lr_ratio)
    engine = Engine(accelerator, _engine_config(args, out_dir, schedule, eff_batch))
    model, optimizer = engine.prepare(built["model"], optimizer, scheduler)
    state = engine.resume(args.resume_from_checkpoint)
    augment = FinetuneAugment(
        args.image_size,
        crop_scale=args.crop_scale,
        hflip=args.hflip,
        rotation=args.rotation,
        randaug_n=args.randaug_n,
        randaug_m=args.randaug_m,
    )
    batch = {
        "total_batch_size": total_batch,
        "per_process_batch": eff_batch,
        "gradient_accumulation_steps": accumulation,
    }
    resolved = _resolved(args, data, built, lr, batch, schedule, augment)
    config = args_to_dict(args) | {"resolved": resolved}
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "label_fraction.json", _fraction_record(args, data))
    write_run_config(accelerator, out_dir, config)
    init_trackers(accelerator, "genssl_hf-finetune", config)

    task = FinetuneTask(
        model=model,
        unwrapped=accelerator.unwrap_model(model),
        augment=augment,
        normalizer=built["normalizer"],
        val_loader=val_loader,
        accelerator=accelerator,
        label_names=label_names,
        multi_label=multi_label,
        steps_per_epoch=schedule["steps_per_epoch"],
        linear_probe=args.mode == "linear_probe",
        selection_metric=args.selection_metric,
        threshold_rule=args.threshold_rule,
        target_sensitivity=args.target_sensitivity,
        out_dir=out_dir,
        processor=built["processor"],
        card_vars=_card_vars(args, data, built, resolved),
        choose_thresholds=choose_thresholds,
    )
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


def _final_and_test(
    args: argparse.Namespace, task: FinetuneTask, state, data: dict[str, Any], eval_collate
) -> dict[str, Any]:
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
        save_model_folder(
            out_dir / "final",
            task.unwrapped,
            task.processor,
            task.card_vars | {"stage": "final"},
            {"validation_last": history[-1]},
        )
    accelerator.wait_for_everyone()
    if "test" in data["splits"]:
        best_model = type(task.unwrapped).from_pretrained(out_dir / "best").to(accelerator.device)
        test_loader = accelerator.prepare(
            torch.utils.data.DataLoader(
                data["splits"]["test"],
                batch_size=args.per_device_eval_batch_size,
                shuffle=False,
                collate_fn=eval_collate,
                num_workers=args.num_workers,
            )
        )
        probs, y = predict_dataset(best_model, test_loader, task.normalizer, accelerator)
        result["test"] = classification_metrics(
            y,
            probs,
            label_names=label_names,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
            threshold=best_thresholds(best, label_names),
        )
        if accelerator.is_main_process:
            np.savez_compressed(out_dir / "test_predictions.npz", probs=probs, targets=y)
            save_model_folder(
                out_dir / "best",
                best_model,
                task.processor,
                task.card_vars | {"stage": "best"},
                {"validation": best["metrics"], "test": result["test"], "selected_at_step": best["step"]},
                best.get("thresholds"),
            )
    return result


def main(argv: Sequence[str] | None = None, publish=None) -> dict[str, Any]:
    """Command line: fine-tune, then (scripts only) publish ``best/``. ``publish(kind, folder, repo_id)``
    is handed in by ``scripts/finetune.py``; training itself never imports ``hub``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    check_publish_available(args, publish)
    try:
        result = finetune(args)
    finally:
        release_process_group()
    if args.push_to_hub and is_main_process_env():
        result["hub_url"] = publish("classifier", Path(args.output_dir) / "best", args.hub_model_id)
    summary = {
        "best_step": result["best"]["step"],
        "selection_metric": result["selection_metric"],
        "validation": result["best"]["validation"].get(result["selection_metric"]),
    }
    if "test" in result:
        summary["test_mean_auc"] = result["test"]["mean_auc"]
        summary["test_accuracy"] = result["test"]["accuracy"]
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, default=str))
    return result


if __name__ == "__main__":
    main()
