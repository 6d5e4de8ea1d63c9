"""The unlabelled-image data path every pre-training method shares (MAE, the SSL methods, VLP's
image side): open the images, batch them as uint8 tensors with a seeded, resumable order, and
resolve the AdaIN reference statistics the views are aligned to."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from genssl_hf.processing import ReferenceStats
from genssl_hf.processing.collate import ImageCollator
from genssl_hf.training.common import EpochShuffleSampler
from genssl_hf.utils import read_json

__all__ = ["load_image_dataset", "open_pretraining_images", "build_dataloader", "resolve_reference"]


def load_image_dataset(
    source: Any,
    split: str = "train",
    *,
    image_column: str = "image",
    streaming: bool = False,
    dataset_config: str | None = None,
    on_error: str = "raise",
    skipped: list | None = None,
):
    """A ``datasets`` object from a ``Dataset`` / ``IterableDataset`` / ``DatasetDict``, a ``save_to_disk``
    folder, a data file, a plain image folder (read through the checked reader ``read_cxr`` with the
    ``on_error`` policy), another local dataset folder, or a Hub id; checks the image column holds
    images and the data is not empty, before any training (:func:`genssl_hf.data.open.open_image_dataset`)."""
    from genssl_hf.data.open import open_image_dataset

    return open_image_dataset(
        source,
        split,
        image_column=image_column,
        streaming=streaming,
        dataset_config=dataset_config,
        on_error=on_error,
        skipped=skipped,
    )


def open_pretraining_images(args: argparse.Namespace, dataset: Any = None, skipped: list | None = None):
    """The unlabelled training images of a pre-training run (MAE and the SSL methods): ``dataset`` (a
    ``datasets`` object) or ``--dataset``, opened by :func:`load_image_dataset` with the run's
    ``--on_error`` policy (unreadable files go to ``skipped``), capped at ``--max_train_samples``."""
    if dataset is None and args.dataset is None:
        raise ValueError("no training data: pass --dataset (or a datasets object)")
    ds = load_image_dataset(
        dataset if dataset is not None else args.dataset,
        args.split,
        image_column=args.image_column,
        streaming=args.streaming,
        dataset_config=args.dataset_config,
        on_error=getattr(args, "on_error", "raise"),
        skipped=skipped,
    )
    if args.max_train_samples is not None:
        import datasets

        n = int(args.max_train_samples)
        ds = ds.take(n) if isinstance(ds, datasets.IterableDataset) else ds.select(range(min(len(ds), n)))
    return ds


def build_dataloader(
    ds: Any,
    accelerator,
    *,
    batch_size: int,
    image_column: str,
    load_size: int,
    seed: int,
    num_workers: int = 0,
    shuffle_buffer: int = 10_000,
):
    """Map-style data: seeded per-epoch permutation, sharded across processes by ``accelerator.prepare``.
    Streaming data: shuffle buffer reseeded per epoch, split across processes with ``split_dataset_by_node``."""
    import datasets

    ds = ds.select_columns([image_column])
    collate = ImageCollator(load_size, image_column)
    common = dict(
        batch_size=batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=True,
        persistent_workers=num_workers > 0,
        pin_memory=False,
    )
    if isinstance(ds, datasets.IterableDataset):
        from datasets.distributed import split_dataset_by_node

        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
        ds = split_dataset_by_node(ds, rank=accelerator.process_index, world_size=accelerator.num_processes)
        return torch.utils.data.DataLoader(ds, **common), None
    if len(ds) < batch_size * accelerator.num_processes:
        raise ValueError(
            f"the training dataset has {len(ds)} images, fewer than one global batch "
            f"({batch_size} x {accelerator.num_processes} processes)"
        )
    loader = torch.utils.data.DataLoader(ds, sampler=EpochShuffleSampler(len(ds), seed=seed), **common)
    loader = accelerator.prepare(loader)
    return loader, len(loader)


def resolve_reference(args: argparse.Namespace) -> tuple[float, float, dict[str, Any] | None]:
    """AdaIN target (mean, std, provenance) from --reference_stats (a JSON written by
    ``compute_reference_stats`` or a folder with an AdaIN ``preprocessor_config.json``) or --adain_mean/std."""
    prov = None
    mean, std = args.adain_mean, args.adain_std
    if args.reference_stats:
        p = Path(args.reference_stats)
        if p.is_dir():
            try:
                cfg = read_json(p / "preprocessor_config.json")
                mean, std, prov = cfg["adain_mean"], cfg["adain_std"], cfg.get("reference_stats")
            except (ValueError, OSError, KeyError, TypeError) as e:
                raise ValueError(
                    f"--reference_stats {p}: a folder needs an AdaIN preprocessor_config.json with adain_mean / "
                    f"adain_std ({type(e).__name__}: {e})"
                ) from e
        else:
            try:
                stats = ReferenceStats.from_dict(read_json(p))
            except (ValueError, OSError) as e:  # JSONDecodeError is a ValueError
                raise ValueError(f"--reference_stats {p}: {e}") from e
            mean, std, prov = stats.mean, stats.std, stats.to_dict()
    if mean is None or std is None:
        from genssl_hf.processing import PAPER_ADAIN_MEAN, PAPER_ADAIN_STD

        mean, std = PAPER_ADAIN_MEAN, PAPER_ADAIN_STD
        prov = {
            "dataset_name": "paper constants (no provenance published)",
            "statistic": "unknown",
            "mean": mean,
            "std": std,
        }
    if not std > 0:
        raise ValueError(f"AdaIN reference std must be > 0, got {std}")
    return float(mean), float(std), prov
