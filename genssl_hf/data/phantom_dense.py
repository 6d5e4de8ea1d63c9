"""Dense labels of the phantom world: exact per-finding masks and boxes from the renderer.

The renderer knows where it drew each finding (:func:`~genssl_hf.data.phantom_render.render_phantom`'s
``finding_maps``); this module turns that into labels for segmentation and detection:

* **mask**: pixels where a finding shows at least half its peak opacity (the visible share: a
  finding replaces lung air, so the heart and the chest wall hide it); Cardiomegaly's mask is the
  heart (its soft mask >= 0.5). One uint8 image holds all five, bit ``i`` for ``CHEXPERT5[i]``, so
  overlapping findings (effusion under atelectasis) stay exact in one lossless PNG.
* **objects**: one box per finding and lung (a bilateral finding has two; Cardiomegaly one),
  ``[x0, y0, x1, y1]`` in pixels (x1, y1 exclusive: the box covers pixels ``x0 .. x1 - 1``),
  the bounding box of the finding's mask on that side; parts under :data:`MIN_BOX_PIXELS` pixels
  are left out (a sliver no reader would box).

The rows are those of :func:`~genssl_hf.data.phantom.phantom_dataset` (same seeds, the same image
and labels pixel for pixel) plus ``mask`` and ``objects``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterator, Mapping

import numpy as np

from .phantom import (
    DEFAULT_PHANTOM_CONFIG,
    PhantomSample,
    phantom_features,
    phantom_record,
    record_seed,
    sample_phantom,
)
from .phantom_render import PhantomConfig, _check_size
from .schema import CHEXPERT5

__all__ = [
    "MIN_BOX_PIXELS",
    "boxes_from_masks",
    "decode_mask",
    "encode_mask",
    "iter_phantom_dense_records",
    "phantom_dense_dataset",
    "phantom_dense_features",
    "sample_phantom_dense",
]

MIN_BOX_PIXELS = 4


def sample_phantom_dense(
    seed: int,
    size: int = 128,
    findings: Mapping[str, Mapping[str, Any] | None] | None = None,
    config: PhantomConfig = DEFAULT_PHANTOM_CONFIG,
) -> tuple[PhantomSample, np.ndarray, list[tuple[list[float], int]]]:
    """:func:`~genssl_hf.data.phantom.sample_phantom` (the same sample) with its masks ``(5, H, W)``
    bool over ``CHEXPERT5`` and its boxes ``[(xyxy, class index), ...]``."""
    maps: dict[str, Any] = {}
    sample = sample_phantom(seed, size, findings, config, finding_maps=maps)
    masks = np.zeros((len(CHEXPERT5), sample.size, sample.size), dtype=bool)
    for i, name in enumerate(CHEXPERT5):
        if name in maps:
            masks[i] = maps[name] >= 0.5
    sides = {s: m >= 0.5 for s, m in maps["lung_sides"].items()}
    return sample, masks, boxes_from_masks(masks, sides)


def boxes_from_masks(masks: np.ndarray, lung_sides: Mapping[int, np.ndarray]) -> list[tuple[list[float], int]]:
    """One box per finding and lung side (Cardiomegaly: one box), from ``(5, H, W)`` bool masks."""
    boxes = []
    for i, name in enumerate(CHEXPERT5):
        parts = [masks[i]] if name == "Cardiomegaly" else [masks[i] & lung_sides[s] for s in sorted(lung_sides)]
        for part in parts:
            if part.sum() < MIN_BOX_PIXELS:
                continue
            ys, xs = np.nonzero(part)
            boxes.append(([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)], i))
    return boxes


def encode_mask(masks: np.ndarray) -> np.ndarray:
    """``(5, H, W)`` bool -> ``(H, W)`` uint8 with bit ``i`` set where finding ``i`` is."""
    if masks.ndim != 3 or masks.shape[0] > 8:
        raise ValueError(f"masks must be (C <= 8, H, W); got shape {masks.shape}")
    weights = (1 << np.arange(masks.shape[0], dtype=np.uint16)).astype(np.uint8)
    return np.tensordot(weights, masks.astype(np.uint8), axes=1).astype(np.uint8)


def decode_mask(mask: Any, num_classes: int = len(CHEXPERT5)) -> np.ndarray:
    """The inverse of :func:`encode_mask` (a PIL image or an array) -> ``(C, H, W)`` bool."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a dense mask is one (H, W) channel; got shape {arr.shape}")
    return ((arr[None].astype(np.uint8) >> np.arange(num_classes, dtype=np.uint8)[:, None, None]) & 1).astype(bool)


def phantom_dense_features():
    """:func:`~genssl_hf.data.phantom.phantom_features` plus ``mask`` (Image, bit-coded per finding)
    and ``objects`` (``bbox`` xyxy pixels, ``category`` over ``CHEXPERT5``)."""
    import datasets

    features = phantom_features()
    features["mask"] = datasets.Image(mode="L")
    features["objects"] = {
        "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
        "category": datasets.List(datasets.ClassLabel(names=list(CHEXPERT5))),
    }
    return features


def iter_phantom_dense_records(
    num_samples: int,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = DEFAULT_PHANTOM_CONFIG,
    start: int = 0,
    split: str = "train",
) -> Iterator[dict[str, Any]]:
    """The rows of :func:`~genssl_hf.data.phantom.iter_phantom_records` plus ``mask`` and ``objects``."""
    for index in range(start, start + num_samples):
        sample, masks, boxes = sample_phantom_dense(record_seed(seed, index, split), size, None, config)
        yield {
            **phantom_record(sample, index, split),
            "mask": encode_mask(masks),
            "objects": {"bbox": [b for b, _ in boxes], "category": [c for _, c in boxes]},
        }


def _dense_generator(shards: list[tuple[int, int]], size: int, seed: int, config: dict, split: str):
    cfg = PhantomConfig.from_dict(config)
    for start, count in shards:
        yield from iter_phantom_dense_records(count, size, seed, cfg, start, split)


def phantom_dense_dataset(
    num_samples: int,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = DEFAULT_PHANTOM_CONFIG,
    split: str = "train",
    cache_dir: str | None = None,
):
    """A ``datasets.Dataset``: :func:`~genssl_hf.data.phantom.phantom_dataset`'s rows (the same
    images and labels for the same arguments) with their masks and boxes."""
    import datasets

    if not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    _check_size(size)
    shards = [(s, min(256, num_samples - s)) for s in range(0, num_samples, 256)]
    return datasets.Dataset.from_generator(
        _dense_generator,
        features=phantom_dense_features(),
        gen_kwargs={"shards": shards, "size": int(size), "seed": int(seed), "config": asdict(config), "split": split},
        cache_dir=cache_dir,
        split=datasets.Split.TRAIN if split == "train" else datasets.NamedSplit(split),
    )
