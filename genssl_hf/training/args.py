"""The shared command-line options of the training entry points, as typed dataclasses
(:mod:`genssl_hf.typed_args`, transformers' ``HfArgumentParser``).

:class:`RunArguments` / :func:`add_common_args` (every script: output, seed, precision,
accumulation, checkpoints, resume, trackers, Hub) and the option groups several pre-training
parsers repeat, written once with the same option names: :class:`ImageDataArguments` (MAE, SSL),
:class:`AdainArguments` (MAE, SSL, VLP), :class:`OptimisationArguments` (MAE, SSL, VLP, report
generation; per-script defaults). The ``add_*_args`` builders add them to any parser and return
the group, to which a parser may add its own options. Also the argument checks made before any
compute (output folder, Hub options).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal

from genssl_hf.processing.augment import ADAIN_MODES
from genssl_hf.typed_args import add_dataclass_arguments
from genssl_hf.validation import renamed_options
from genssl_hf.utils import FolderLock

__all__ = [
    "RunArguments",
    "ImageDataArguments",
    "AdainArguments",
    "OptimisationArguments",
    "BaseLearningRateArguments",
    "WarmupRatioArguments",
    "LoaderWorkersArguments",
    "TimeBoxArguments",
    "add_common_args",
    "add_image_data_args",
    "add_adain_args",
    "add_optimisation_args",
    "args_to_dict",
    "check_output_dir",
    "check_hub_args",
    "check_publish_available",
]

_UNSET = object()


# --------------------------------------------------------------------- shared option dataclasses
@dataclass(kw_only=True)
class RunArguments:
    """run (shared): output, seed, precision, accumulation, checkpoints, resume, trackers, Hub."""

    _argument_group_name = "run (shared)"
    output_dir: str = field(metadata={"help": "folder for checkpoints, the run config and the final model"})
    seed: int = field(default=0, metadata={"help": "seed of every randomness in the run"})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="bf16", metadata={"help": "autocast precision (bf16 uses AMX matmuls on recent CPUs)"}
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "micro batches per optimiser step (effective batch = batch * accumulation * processes)"},
    )
    checkpointing_steps: int = field(
        default=500, metadata={"help": "save a resumable checkpoint every K optimiser steps (0: never)"}
    )
    checkpoints_total_limit: int = field(default=2, metadata={"help": "keep at most this many checkpoints"})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (the newest checkpoint in --output_dir) or a checkpoint folder"}
    )
    report_to: str = field(
        default="none", metadata={"help": "trackers: none, tensorboard, wandb, all (comma separated)"}
    )
    logging_steps: int = field(default=10, metadata={"help": "log loss / lr every N optimiser steps"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "allow a non-empty --output_dir without resuming"}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final folder to the Hub (private)"})
    hub_model_id: str | None = field(default=None, metadata={"help": "repo id for --push_to_hub"})


@dataclass(kw_only=True)
class ImageDataArguments:
    """data: unlabelled training images (any source ``open_image_dataset`` reads)."""

    _argument_group_name = "data"
    dataset: str | None = field(
        default=None, metadata={"help": "local folder (parquet / images / save_to_disk), parquet file, or Hub id"}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "configuration name for load_dataset"})
    split: str = field(default="train", metadata={"help": "split of --dataset to train on"})
    image_column: str = field(default="image", metadata={"help": "column holding the images"})
    streaming: bool = field(default=False, metadata={"help": "stream the dataset (for sets larger than disk/RAM)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "cap the training rows"})
    load_size: int | None = field(
        default=None, metadata={"help": "size images are decoded to before cropping (default: image size)"}
    )
    num_workers: int = field(default=0, metadata={"help": "data loader worker processes"})
    on_error: Literal["raise", "skip"] = field(
        default="raise",
        metadata={"help": "an unreadable image in a plain image folder: stop naming it, or leave it out and record it"},
    )


@dataclass(kw_only=True)
class AdainArguments:
    """AdaIN of the training views to reference statistics, then the mean / std normalisation."""

    _argument_group_name = "AdaIN"
    adain: Literal["on", "off"] = field(default="on", metadata={"help": "AdaIN of the training views"})
    adain_mode: Literal[ADAIN_MODES] = field(  # type: ignore[valid-type]
        default="after_crop",
        metadata={"help": "after_crop: per crop (the paper's code); before_crop: whole image (the processor)"},
    )
    reference_stats: str | None = field(
        default=None, metadata={"help": "JSON from compute_reference_stats, or a folder with an AdaIN processor"}
    )
    adain_mean: float | None = field(
        default=None, metadata={"help": "AdaIN target mean (default: the reference, else the paper's)"}
    )
    adain_std: float | None = field(default=None, metadata={"help": "AdaIN target std"})
    image_mean: float = field(default=0.5, metadata={"help": "normalisation after AdaIN"})
    image_std: float = field(default=0.5, metadata={"help": "normalisation after AdaIN"})


@dataclass(kw_only=True)
class OptimisationArguments:
    """optimisation: batch, length, learning rate, weight decay, clipping (defaults: the command's recipe,
    ``None`` filled by it)."""

    _argument_group_name = "optimisation"
    per_device_train_batch_size: int | None = field(
        default=None, metadata={"help": "images (or pairs) per process per micro batch"}
    )
    num_train_epochs: float | None = field(default=None, metadata={"help": "passes over the training set"})
    max_steps: int | None = field(
        default=None, metadata={"help": "optimiser steps (overrides --num_train_epochs; needed for --streaming)"}
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "absolute lr (overrides the base lr rule where there is one)"}
    )
    weight_decay: float | None = field(default=None, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping (0: off)"})


@dataclass(kw_only=True)
class BaseLearningRateArguments:
    _argument_group_name = "optimisation"
    base_learning_rate: float | None = field(default=None, metadata={"help": "lr = base x total batch / 256"})


@dataclass(kw_only=True)
class WarmupRatioArguments:
    _argument_group_name = "optimisation"
    warmup_ratio: float | None = field(default=None, metadata={"help": "warm-up as a fraction of the steps"})


@dataclass(kw_only=True)
class LoaderWorkersArguments:
    _argument_group_name = "optimisation"
    num_workers: int = field(default=0, metadata={"help": "data loader worker processes"})


@dataclass(kw_only=True)
class TimeBoxArguments:
    _argument_group_name = "optimisation"
    stop_after_steps: int | None = field(
        default=None,
        metadata={"help": "stop (resumably) after this many more optimiser steps, as if interrupted (time-boxed jobs)"},
    )


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options every training script shares (:class:`RunArguments`). Script-specific options
    are added by the script."""
    add_dataclass_arguments(parser, RunArguments)
    return parser


def add_image_data_args(parser: argparse.ArgumentParser, title: str = "data") -> argparse._ArgumentGroup:
    """Unlabelled training images (:class:`ImageDataArguments`): ``--dataset``, its config / split /
    image column, streaming, a row cap, the decode size and loader workers."""
    return add_dataclass_arguments(parser, ImageDataArguments, title)


def add_adain_args(parser: argparse.ArgumentParser, title: str = "AdaIN") -> argparse._ArgumentGroup:
    """AdaIN of the training views to reference statistics, then the mean / std normalisation
    (:class:`AdainArguments`)."""
    return add_dataclass_arguments(parser, AdainArguments, title)


def add_optimisation_args(
    parser: argparse.ArgumentParser,
    title: str = "optimisation",
    *,
    batch_size: int | None = None,
    epochs: float | None = None,
    learning_rate: float | None = None,
    base_learning_rate: bool = False,
    weight_decay: float | None = None,
    warmup_ratio: Any = _UNSET,
    max_grad_norm: float = 0.0,
    num_workers: bool = False,
    stop_after_steps: bool = False,
) -> argparse._ArgumentGroup:
    """Batch, length (``--num_train_epochs`` or ``--max_steps``), lr (absolute, or
    ``base_learning_rate`` x total batch / 256), weight decay, gradient clipping
    (:class:`OptimisationArguments`); optionally the warm-up ratio, loader workers and the time box
    ``--stop_after_steps``. Defaults are the calling script's recipe (``None``: filled by its
    recipe). ``--max_train_steps`` is a renamed option (an error naming ``--max_steps``)."""
    g = add_dataclass_arguments(parser, OptimisationArguments, title)
    extras = [BaseLearningRateArguments] if base_learning_rate else []
    extras += [WarmupRatioArguments] if warmup_ratio is not _UNSET else []
    extras += [LoaderWorkersArguments] if num_workers else []
    extras += [TimeBoxArguments] if stop_after_steps else []
    for dtype in extras:
        add_dataclass_arguments(parser, dtype, group=g)
    defaults = dict(
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
    )
    if warmup_ratio is not _UNSET:
        defaults["warmup_ratio"] = warmup_ratio
    parser.set_defaults(**defaults)
    renamed_options(parser, {"--max_train_steps": "--max_steps"})
    return g


def args_to_dict(args: argparse.Namespace) -> dict[str, Any]:
    """JSON-ready copy of an argparse namespace (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def check_output_dir(output_dir: str | os.PathLike, resume_from: str | None, overwrite: bool) -> None:
    """Refuse to train into a folder that already holds a run unless resuming or overwriting."""
    out = Path(output_dir)
    if out.is_dir() and any(p.name != FolderLock.NAME for p in out.iterdir()) and not resume_from and not overwrite:
        raise FileExistsError(
            f"--output_dir {out} is not empty; pass --resume_from_checkpoint latest to continue the run there, "
            "or --overwrite_output_dir to start over"
        )


def check_hub_args(args: argparse.Namespace) -> None:
    """``--push_to_hub`` needs ``--hub_model_id``: say so before any training starts."""
    if getattr(args, "push_to_hub", False) and not getattr(args, "hub_model_id", None):
        raise ValueError("--push_to_hub needs --hub_model_id (the repo to create, e.g. me/genssl-vit-s16)")


def check_publish_available(args: argparse.Namespace, publish) -> None:
    """``--push_to_hub`` is the scripts' job (training never imports ``hub``): a training module run
    directly (``python -m genssl_hf.training...``) gets no publisher and says so before training."""
    if getattr(args, "push_to_hub", False) and publish is None:
        raise ValueError(
            "--push_to_hub: publishing happens in the scripts (scripts/pretrain_mae.py, "
            "scripts/finetune.py, ...) or with scripts/publish.py after training; "
            "python -m genssl_hf.training... only trains"
        )
