"""Data side of fine-tuning: targets from the canonical schema, stratified seeded label fractions and
validation splits, batching, the fine-tuning augmentation and input normalisation.

Everything here is a pure function of its inputs and seed, so label fractions are reproducible and
recorded (the chosen indices are written to the run folder by the training loop).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.data.registry import open_labelled_dataset
from genssl_hf.data.schema import is_multi_label, label_names_of, to_multi_hot
from genssl_hf.processing.collate import LabelledImageCollator

logger = logging.getLogger(__name__)

__all__ = [
    "targets_of",
    "stratified_subset",
    "check_training_subset",
    "split_train_validation",
    "Collator",
    "FinetuneAugment",
    "InputNormalizer",
    "GRAYSCALE_RANDAUGMENT_POLICY",
    "load_dataset_spec",
    "load_splits",
]


def targets_of(dataset) -> tuple[np.ndarray, list[str], bool]:
    """``(targets, label_names, multi_label)`` of a canonical dataset: an ``(N, C)`` float 0/1 matrix
    (multi-label ``labels``) or ``(N,)`` int class indices (multi-class ``label``). Reads only the
    label column."""
    features = dataset.features
    names = label_names_of(features)
    if is_multi_label(features):
        rows = dataset["labels"]
        return (
            np.stack([to_multi_hot(r, len(names)) for r in rows])
            if len(rows)
            else np.zeros((0, len(names)), np.float32),
            names,
            True,
        )
    return np.asarray(dataset["label"], dtype=np.int64), names, False


MIN_IMAGES_PER_CLASS = 1


def check_training_subset(targets: np.ndarray, idx: np.ndarray, label_names: list[str], what: str) -> None:
    """Refuse a label subset that cannot teach the task: below :data:`MIN_IMAGES_PER_CLASS` image(s)
    of a class present in the full split (multi-class), or fewer than 2 images / no positive label
    at all (multi-label). ``what`` names the options that chose the subset."""
    n, kept = int(targets.shape[0]), targets[idx]
    if targets.ndim == 1:
        present = sorted(set(np.unique(targets).tolist()))
        counts = {c: int((kept == c).sum()) for c in present}
        short = [
            label_names[c] if c < len(label_names) else str(c) for c, k in counts.items() if k < MIN_IMAGES_PER_CLASS
        ]
        if short:
            raise ValueError(
                f"{what} keeps {len(idx)} of {n} training images, leaving the classes {short} with fewer than "
                f"{MIN_IMAGES_PER_CLASS} image(s) each; fine-tuning needs at least {MIN_IMAGES_PER_CLASS} image(s) of "
                f"every class: raise it (to about {len(present) * MIN_IMAGES_PER_CLASS / n:.2g} or more) or use more "
                "training data"
            )
    elif len(idx) < 2 or not kept.any():
        raise ValueError(
            f"{what} keeps {len(idx)} of {n} training images ({int(kept.any(axis=1).sum())} with a positive label); "
            "fine-tuning needs at least 2 images and one positive label: raise it or use more training data"
        )


def _strata(targets: np.ndarray) -> np.ndarray:
    """Stratum id per row: the class (multi-class) or the label combination (multi-label)."""
    if targets.ndim == 1:
        return targets.astype(np.int64)
    _, inverse = np.unique(targets.astype(np.int8), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def stratified_subset(targets: np.ndarray, fraction: float, seed: int, *, min_per_stratum: int = 0) -> np.ndarray:
    """Sorted indices of a stratified random ``fraction`` of the rows.

    Strata are the classes (multi-class) or the label combinations (multi-label). The total is
    ``max(1, round(fraction * N))``, allotted to strata in proportion to their sizes by the
    largest-remainder rule (ties broken by a seeded draw), then each stratum's rows are a seeded
    random choice. ``min_per_stratum`` (e.g. 1) guarantees that many rows per stratum when the total
    allows. Deterministic given ``(targets, fraction, seed)``.
    """
    n = int(targets.shape[0])
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1]; got {fraction}")
    if n == 0:
        raise ValueError("cannot take a fraction of an empty dataset")
    if fraction == 1.0:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(round(fraction * 1e6))]))
    strata = _strata(targets)
    ids, counts = np.unique(strata, return_counts=True)
    total = max(1, int(round(fraction * n)))
    quota = counts * total / n
    alloc = np.floor(quota).astype(np.int64)
    if min_per_stratum and total >= min_per_stratum * len(ids):
        alloc = np.maximum(alloc, np.minimum(counts, min_per_stratum))
    left = total - int(alloc.sum())
    if left > 0:
        # largest remainder first; a seeded random key breaks ties
        order = np.lexsort((rng.random(len(ids)), -(quota - np.floor(quota))))
        for k in order:
            if left == 0:
                break
            if alloc[k] < counts[k]:
                alloc[k] += 1
                left -= 1
    elif left < 0:  # min_per_stratum pushed us over: take back from the biggest allotments
        for k in np.argsort(-alloc, kind="stable"):
            while left < 0 and alloc[k] > max(min_per_stratum, 0) and alloc[k] > 1:
                alloc[k] -= 1
                left += 1
    chosen = []
    for k, sid in enumerate(ids):
        rows = np.flatnonzero(strata == sid)
        if alloc[k] > 0:
            chosen.append(rng.choice(rows, size=int(alloc[k]), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def split_train_validation(targets: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified seeded ``(train_indices, validation_indices)`` carved out of one labelled split."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"validation fraction must lie in (0, 1); got {val_fraction}")
    val = stratified_subset(targets, val_fraction, seed + 7_777_777)
    mask = np.ones(targets.shape[0], dtype=bool)
    mask[val] = False
    train = np.flatnonzero(mask)
    if len(train) == 0:
        raise ValueError("the validation split would take every training row")
    return train, val


# the fine-tuning batch layout of the grayscale collate family (genssl_hf.processing.collate)
Collator = LabelledImageCollator


# RandAugment ops of timm's policy that make sense on grayscale radiographs ("color" is a no-op on
# one channel and is left out); ranges as kornia's default policy.
GRAYSCALE_RANDAUGMENT_POLICY = [
    [("auto_contrast", 0, 1)],
    [("equalize", 0, 1)],
    [("invert", 0, 1)],
    [("rotate", -30.0, 30.0)],
    [("posterize", 4.0, 8.0)],
    [("solarize", 0.0, 1.0)],
    [("solarize_add", 0.0, 0.43)],
    [("contrast", 0.1, 1.9)],
    [("brightness", 0.1, 1.9)],
    [("sharpness", 0.1, 1.9)],
    [("shear_x", -0.3, 0.3)],
    [("shear_y", -0.3, 0.3)],
    [("translate_x", -0.1, 0.1)],
    [("translate_y", -0.1, 0.1)],
]


class FinetuneAugment(torch.nn.Module):
    """Fine-tuning augmentation on ``(B, 1, H, W)`` floats in [0, 1] (kornia, no torchvision):
    random resized crop to ``size`` (scale ``crop_scale``), horizontal flip, rotation up to
    ``rotation`` degrees, then RandAugment (``randaug_n`` ops at magnitude ``randaug_m`` of 30,
    drawn independently for every group of ``randaug_group`` images, since kornia draws one op set
    per call). Randomness comes from the global torch RNG (seeded per step by the loop).
    """

    def __init__(
        self,
        size: int,
        *,
        crop_scale: Sequence[float] = (0.5, 1.0),
        hflip: float = 0.5,
        rotation: float = 10.0,
        randaug_n: int = 2,
        randaug_m: float = 8.0,
        randaug_group: int = 8,
    ):
        super().__init__()
        import kornia.augmentation as K
        from kornia.augmentation.auto import RandAugment

        geo = [K.RandomResizedCrop((size, size), scale=tuple(crop_scale), ratio=(3 / 4, 4 / 3))]
        if hflip > 0:
            geo.append(K.RandomHorizontalFlip(p=hflip))
        if rotation > 0:
            geo.append(K.RandomRotation(degrees=float(rotation), p=1.0))
        self.geometric = torch.nn.Sequential(*geo)
        self.randaug = (
            RandAugment(n=int(randaug_n), m=float(randaug_m), policy=GRAYSCALE_RANDAUGMENT_POLICY)
            if randaug_n > 0 and randaug_m > 0
            else None
        )
        self.randaug_group = max(1, int(randaug_group))
        self.settings = dict(
            size=size,
            crop_scale=list(crop_scale),
            hflip=hflip,
            rotation=rotation,
            randaug_n=randaug_n,
            randaug_m=randaug_m,
            randaug_group=randaug_group,
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.geometric(x.float())
        if self.randaug is not None:
            x = torch.cat([self.randaug(x[i : i + self.randaug_group]) for i in range(0, len(x), self.randaug_group)])
        return x.clamp_(0.0, 1.0)


@dataclass
class InputNormalizer:
    """[0, 1] grayscale batch -> model input, with the settings of an ``AdaINImageProcessor``:
    optional AdaIN to ``(adain_mean, adain_std)`` per image, then ``(x - mean) / std``, then
    replication to ``num_channels``."""

    image_size: int
    num_channels: int = 3
    do_adain: bool = False
    adain_mean: float = 0.5
    adain_std: float = 0.25
    adain_eps: float = 1e-3
    adain_clip: bool = False
    image_mean: float = 0.5
    image_std: float = 0.5

    @classmethod
    def from_processor(cls, processor, image_size: int, num_channels: int) -> "InputNormalizer":
        mean = processor.image_mean if getattr(processor, "do_normalize", True) else 0.0
        std = processor.image_std if getattr(processor, "do_normalize", True) else 1.0
        return cls(
            image_size=int(image_size),
            num_channels=int(num_channels),
            do_adain=bool(getattr(processor, "do_adain", False)),
            adain_mean=float(getattr(processor, "adain_mean", 0.5) or 0.5),
            adain_std=float(getattr(processor, "adain_std", 0.25) or 0.25),
            adain_eps=float(getattr(processor, "adain_eps", 1e-3) or 1e-3),
            adain_clip=bool(getattr(processor, "adain_clip", False)),
            image_mean=float(np.mean(mean)),
            image_std=float(np.mean(std)),
        )

    def to_processor(self):
        """The ``AdaINImageProcessor`` that reproduces this normalisation at inference time."""
        from genssl_hf.processing import AdaINImageProcessor

        return AdaINImageProcessor(
            size={"height": self.image_size, "width": self.image_size},
            num_channels=self.num_channels,
            do_adain=self.do_adain,
            adain_mean=self.adain_mean,
            adain_std=self.adain_std,
            adain_eps=self.adain_eps,
            adain_clip=self.adain_clip,
            image_mean=[self.image_mean],
            image_std=[self.image_std],
        )

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.image_size, self.image_size):
            return x
        return torch.nn.functional.interpolate(
            x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.do_adain:
            var, mu = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, correction=0)
            x = (x - mu) * (self.adain_std / var.sqrt().clamp_min(self.adain_eps)) + self.adain_mean
            if self.adain_clip:
                x = x.clamp(0.0, 1.0)
        x = (x - self.image_mean) / self.image_std
        if self.num_channels != x.shape[1]:
            x = x.expand(-1, self.num_channels, -1, -1)
        return x


# ------------------------------------------------------------------------------ dataset resolution and splits
# The one registry of dataset names lives in the data layer; the name stays for existing callers.
load_dataset_spec = open_labelled_dataset


def load_splits(args: argparse.Namespace) -> dict[str, Any]:
    """``{"train", "validation", "test"?}`` datasets in the canonical schema; the validation split is
    carved (stratified, seeded) from train when the dataset has none. Raises before any training
    when a split or column is missing."""
    dd = load_dataset_spec(
        args.dataset,
        config=args.dataset_config,
        phantom_sizes=args.phantom_sizes,
        phantom_resolution=args.phantom_resolution,
        seed=args.seed,
    )
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
    dd = load_dataset_spec(
        args.test_dataset, label_names=names, seed=args.seed, phantom_resolution=args.phantom_resolution
    )
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
