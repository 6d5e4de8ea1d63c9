"""The shared command-line options of the training entry points.

:func:`add_common_args` (every script: output, seed, precision, accumulation, checkpoints, resume,
trackers, Hub) and the option groups several pre-training parsers repeat, written once with the
same option names: :func:`add_image_data_args` (MAE, SSL), :func:`add_adain_args` (MAE, SSL, VLP),
:func:`add_optimisation_args` (MAE, SSL, VLP, report generation; per-script defaults). A parser
adds its own options to the group a builder returns. Also the argument checks made before any
compute (output folder, Hub options).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from genssl_hf.processing.augment import ADAIN_MODES
from genssl_hf.validation import renamed_options
from genssl_hf.utils import FolderLock

__all__ = [
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


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options every training script shares (output, seed, precision, accumulation,
    checkpointing, resume, trackers, Hub). Script-specific options are added by the script."""
    g = parser.add_argument_group("run (shared)")
    g.add_argument("--output_dir", required=True, help="folder for checkpoints, the run config and the final model")
    g.add_argument("--seed", type=int, default=0, help="seed of every randomness in the run")
    g.add_argument(
        "--mixed_precision",
        choices=["no", "bf16", "fp16"],
        default="bf16",
        help="autocast precision (bf16 uses AMX matmuls on recent CPUs)",
    )
    g.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="micro batches per optimiser step (effective batch = batch * accumulation * processes)",
    )
    g.add_argument(
        "--checkpointing_steps",
        type=int,
        default=500,
        help="save a resumable checkpoint every K optimiser steps (0: never)",
    )
    g.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep at most this many checkpoints")
    g.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' (the newest checkpoint in --output_dir) or a checkpoint folder",
    )
    g.add_argument("--report_to", default="none", help="trackers: none, tensorboard, wandb, all (comma separated)")
    g.add_argument("--logging_steps", type=int, default=10, help="log loss / lr every N optimiser steps")
    g.add_argument(
        "--overwrite_output_dir", action="store_true", help="allow a non-empty --output_dir without resuming"
    )
    g.add_argument("--push_to_hub", action="store_true", help="upload the final folder to the Hub (private)")
    g.add_argument("--hub_model_id", default=None, help="repo id for --push_to_hub")
    return parser


def add_image_data_args(parser: argparse.ArgumentParser, title: str = "data") -> argparse._ArgumentGroup:
    """Unlabelled training images: ``--dataset`` (any source :func:`genssl_hf.data.open.open_image_dataset`
    reads), its config / split / image column, streaming, a row cap, the decode size and loader workers."""
    g = parser.add_argument_group(title)
    g.add_argument(
        "--dataset", default=None, help="local folder (parquet / images / save_to_disk), parquet file, or Hub id"
    )
    g.add_argument("--dataset_config", default=None)
    g.add_argument("--split", default="train")
    g.add_argument("--image_column", default="image")
    g.add_argument("--streaming", action="store_true", help="stream the dataset (for sets larger than disk/RAM)")
    g.add_argument("--max_train_samples", type=int, default=None)
    g.add_argument(
        "--load_size", type=int, default=None, help="size images are decoded to before cropping (default: image size)"
    )
    g.add_argument("--num_workers", type=int, default=0)
    return g


def add_adain_args(parser: argparse.ArgumentParser, title: str = "AdaIN") -> argparse._ArgumentGroup:
    """AdaIN of the training views to reference statistics, then the mean / std normalisation."""
    g = parser.add_argument_group(title)
    g.add_argument("--adain", choices=["on", "off"], default="on")
    g.add_argument(
        "--adain_mode",
        choices=list(ADAIN_MODES),
        default="after_crop",
        help="after_crop: per crop (the paper's code); before_crop: whole image (the processor)",
    )
    g.add_argument(
        "--reference_stats", default=None, help="JSON from compute_reference_stats, or a folder with an AdaIN processor"
    )
    g.add_argument(
        "--adain_mean", type=float, default=None, help="AdaIN target mean (default: the reference, else the paper's)"
    )
    g.add_argument("--adain_std", type=float, default=None, help="AdaIN target std")
    g.add_argument("--image_mean", type=float, default=0.5, help="normalisation after AdaIN")
    g.add_argument("--image_std", type=float, default=0.5)
    return g


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
    ``base_learning_rate`` x total batch / 256), weight decay, gradient clipping; optionally the
    warm-up ratio, loader workers and the time box ``--stop_after_steps``. Defaults are the calling
    script's recipe (``None``: filled by its recipe). ``--max_train_steps`` is a renamed option
    (an error naming ``--max_steps``)."""
    g = parser.add_argument_group(title)
    g.add_argument(
        "--per_device_train_batch_size",
        type=int,
        default=batch_size,
        help="images (or pairs) per process per micro batch",
    )
    g.add_argument("--num_train_epochs", type=float, default=epochs)
    g.add_argument(
        "--max_steps",
        type=int,
        default=None,
        help="optimiser steps (overrides --num_train_epochs; needed for --streaming)",
    )
    if base_learning_rate:
        g.add_argument("--base_learning_rate", type=float, default=None, help="lr = base x total batch / 256")
    g.add_argument(
        "--learning_rate",
        type=float,
        default=learning_rate,
        help="absolute lr" + (" (overrides the base lr rule)" if base_learning_rate else ""),
    )
    if warmup_ratio is not _UNSET:
        g.add_argument("--warmup_ratio", type=float, default=warmup_ratio, help="warm-up as a fraction of the steps")
    g.add_argument("--weight_decay", type=float, default=weight_decay)
    g.add_argument("--max_grad_norm", type=float, default=max_grad_norm, help="gradient clipping (0: off)")
    if num_workers:
        g.add_argument("--num_workers", type=int, default=0)
    if stop_after_steps:
        g.add_argument(
            "--stop_after_steps",
            type=int,
            default=None,
            help="stop (resumably) after this many more optimiser steps, as if interrupted (time-boxed jobs)",
        )
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
