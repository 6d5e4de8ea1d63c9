"""Reference statistics for AdaIN, streamed over a dataset of any size with mergeable moments.

Which statistic does AdaIN need?  S_Y(x) = sigma(Y) * (x - mu(x)) / sigma(x) + mu(Y) gives *every*
aligned image exactly the mean mu(Y) and standard deviation sigma(Y) of its own pixels. To make a
generated image look like a *typical real image*, mu(Y) and sigma(Y) should therefore be per-image
statistics averaged over the reference set (``statistic="per_image"``): the mean over images of each
image's pixel mean and of each image's pixel standard deviation. The pooled statistics
(``statistic="pooled"``: mean and std of all pixels of all images together, the usual dataset
normalisation constants such as the paper's 0.5062 / 0.2732) add the between-image spread of
brightness to sigma, so pooled sigma >= mean per-image sigma and pooled-AdaIN images come out with
slightly more contrast than a typical real image. Both are computed in the same single pass and both
are stored; ``statistic`` only chooses which pair the processor uses. Values are on the [0, 1] scale
of grayscale pixels (after ``/ 255``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Iterable

import numpy as np

STATISTICS = ("pooled", "per_image")


@dataclasses.dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations (M2) of a stream of numbers, mergeable in any order
    (Chan, Golub & LeVeque 1979 parallel update), numerically stable in float64."""

    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> "RunningMoments":
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return cls()
        m = float(v.mean())
        return cls(float(v.size), m, float(((v - m) ** 2).sum()))

    def merge(self, other: "RunningMoments") -> "RunningMoments":
        """Combine in place with another set of moments; returns ``self``."""
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.m2 = other.n, other.mean, other.m2
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        return self

    def update(self, values: np.ndarray) -> "RunningMoments":
        return self.merge(RunningMoments.of(values))

    @property
    def var(self) -> float:
        """Population variance (ddof=0), the variance of the pixels themselves."""
        return self.m2 / self.n if self.n > 0 else float("nan")

    @property
    def std(self) -> float:
        return math.sqrt(self.var) if self.n > 0 else float("nan")


@dataclasses.dataclass
class ReferenceStats:
    """AdaIN reference statistics with provenance. ``mean`` / ``std`` are the pair selected by
    ``statistic``; both variants are kept so a config can be re-targeted without a new pass."""

    mean: float
    std: float
    statistic: str
    pooled_mean: float
    pooled_std: float
    per_image_mean: float
    per_image_std: float
    per_image_mean_spread: float  # std over images of the per-image means
    per_image_std_spread: float  # std over images of the per-image stds
    num_images: int
    num_pixels: int
    content_hash: str
    dataset_name: str = "unknown"
    image_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReferenceStats":
        fields = dataclasses.fields(cls)
        if not isinstance(d, dict):
            raise ValueError(f"reference statistics must be a JSON object, got a JSON {type(d).__name__}")
        required = [
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(
                f"reference statistics lack the keys {missing} (has {sorted(d)}); write them with "
                "genssl_hf.processing.compute_reference_stats / save_reference_stats, or pass --adain_mean/--adain_std"
            )
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields}})

    def select(self, statistic: str) -> "ReferenceStats":
        """The same statistics with ``mean`` / ``std`` taken from the other variant."""
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        m, s = (
            (self.pooled_mean, self.pooled_std) if statistic == "pooled" else (self.per_image_mean, self.per_image_std)
        )
        return dataclasses.replace(self, mean=m, std=s, statistic=statistic)


class ReferenceStatsAccumulator:
    """Streaming accumulator: feed grayscale images one by one (``add``) or merge partial
    accumulators computed elsewhere (``merge``; e.g. one per shard or per process)."""

    def __init__(self) -> None:
        self.pixels = RunningMoments()
        self.image_means = RunningMoments()
        self.image_stds = RunningMoments()
        self._hash = hashlib.sha256()
        self.num_images = 0

    def add(self, gray01: np.ndarray, raw_bytes: bytes | None = None) -> None:
        """``gray01``: one grayscale image, float on [0, 1]; ``raw_bytes`` feed the content hash."""
        m = RunningMoments.of(gray01)
        if m.n == 0:
            raise ValueError("empty image (zero pixels) in the reference dataset")
        self.pixels.merge(m)
        self.image_means.update(np.array([m.mean]))
        self.image_stds.update(np.array([m.std]))
        shape = np.asarray(gray01.shape, dtype=np.int64).tobytes()
        self._hash.update(shape)
        self._hash.update(
            raw_bytes if raw_bytes is not None else np.ascontiguousarray(gray01, dtype=np.float32).tobytes()
        )
        self.num_images += 1

    def merge(self, other: "ReferenceStatsAccumulator") -> "ReferenceStatsAccumulator":
        """Merge moments; the merged content hash covers both hashes in merge order."""
        self.pixels.merge(other.pixels)
        self.image_means.merge(other.image_means)
        self.image_stds.merge(other.image_stds)
        self._hash.update(other._hash.digest())
        self.num_images += other.num_images
        return self

    def result(
        self, statistic: str = "per_image", dataset_name: str = "unknown", image_size: int | None = None
    ) -> ReferenceStats:
        if self.num_images == 0:
            raise ValueError("no images were seen: cannot compute reference statistics of an empty dataset")
        stats = ReferenceStats(
            mean=0.0,
            std=0.0,
            statistic=statistic,
            pooled_mean=self.pixels.mean,
            pooled_std=self.pixels.std,
            per_image_mean=self.image_means.mean,
            per_image_std=self.image_stds.mean,
            per_image_mean_spread=self.image_means.std,
            per_image_std_spread=self.image_stds.std,
            num_images=self.num_images,
            num_pixels=int(self.pixels.n),
            content_hash=self._hash.hexdigest(),
            dataset_name=dataset_name,
            image_size=image_size,
        )
        return stats.select(statistic)


def to_gray_uint8_or_float(image: Any) -> np.ndarray:
    """Any image (PIL, numpy HxW / HxWxC / CxHxW, torch) as a 2-D grayscale array: uint8 when the
    input is uint8 (ITU-R 601 luma, like PIL ``convert('L')``), float32 otherwise."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I", "F"):
            return np.asarray(image, dtype=np.float32)
        return np.asarray(image if image.mode == "L" else image.convert("L"))
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3:
        if arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):  # channels first (torch layout)
            arr = np.moveaxis(arr, 0, -1)
        c = arr.shape[-1]
        if c == 1:
            arr = arr[..., 0]
        elif c in (3, 4):
            if arr.dtype == np.uint8:
                # Same integer formula as PIL's convert("L") so every input type gives identical pixels.
                rgb = arr[..., :3].astype(np.uint32)
                arr = ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
            else:
                arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        else:
            raise ValueError(f"cannot read an image with {c} channels (shape {np.asarray(image).shape})")
    elif arr.ndim != 2:
        raise ValueError(f"expected a 2-D or 3-D image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    return arr.astype(np.float32)


def _iter_images(dataset: Any, image_column: str, max_images: int | None) -> Iterable[Any]:
    import datasets

    if isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        names = dataset.column_names
        if names is not None and image_column not in names:
            raise KeyError(f"dataset has no column {image_column!r} (columns: {names}); pass image_column=")
        it = dataset.select_columns([image_column]) if names is not None else dataset
        n = 0
        for row in it:
            if image_column not in row:
                raise KeyError(f"dataset has no column {image_column!r} (row keys: {sorted(row)}); pass image_column=")
            yield row[image_column]
            n += 1
            if max_images is not None and n >= max_images:
                return
        return
    n = 0
    for item in dataset:  # any iterable of images or of dicts
        yield item[image_column] if isinstance(item, dict) else item
        n += 1
        if max_images is not None and n >= max_images:
            return


def compute_reference_stats(
    dataset: Any,
    image_column: str = "image",
    statistic: str = "per_image",
    *,
    size: int | None = None,
    max_images: int | None = None,
    dataset_name: str | None = None,
    show_progress: bool = False,
) -> ReferenceStats:
    """AdaIN reference statistics of a real image set, in one streaming pass.

    ``dataset``: a ``datasets.Dataset`` / ``IterableDataset`` (streaming works: memory stays O(1)), or any
    iterable of images (PIL / numpy / torch) or of dicts holding ``image_column``. Images are converted
    to grayscale on [0, 1]; with ``size`` they are first resized to ``size x size`` (bilinear, like the
    processor) so the statistics match the resolution AdaIN is applied at. ``statistic`` picks which
    pair becomes ``mean`` / ``std`` (``"per_image"``, what AdaIN's mu(Y), sigma(Y) mean for a set, or
    ``"pooled"``); both are always returned. The content hash is the SHA-256 of the grayscale pixel
    bytes and shapes in iteration order.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    from PIL import Image

    acc = ReferenceStatsAccumulator()
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="reference stats", unit="img")
    for image in _iter_images(dataset, image_column, max_images):
        if image is None:
            raise ValueError(f"a row of the reference dataset has no image in column {image_column!r}")
        g = to_gray_uint8_or_float(image)
        if size is not None:
            pil = Image.fromarray(g) if g.dtype == np.uint8 else Image.fromarray(g.astype(np.float32), mode="F")
            g = np.asarray(pil.resize((size, size), Image.BILINEAR))
        raw = g.tobytes() if g.dtype == np.uint8 else None
        g01 = g.astype(np.float64) / 255.0 if g.dtype == np.uint8 else _float_to_unit(g)
        acc.add(g01, raw_bytes=raw)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if acc.num_images == 0:
        raise ValueError("the reference dataset is empty: no images to compute AdaIN statistics from")
    if dataset_name is None:
        info = getattr(dataset, "info", None)
        dataset_name = (
            (getattr(info, "dataset_name", None) or getattr(info, "builder_name", None) or "unknown")
            if info
            else "unknown"
        )
    return acc.result(statistic, dataset_name=str(dataset_name), image_size=size)


def _float_to_unit(g: np.ndarray) -> np.ndarray:
    """Float images are taken as already on [0, 1] unless they clearly hold 0..255 or 16-bit values."""
    g = g.astype(np.float64)
    mx = float(g.max()) if g.size else 0.0
    if mx > 255.0:
        return g / 65535.0
    if mx > 1.0:
        return g / 255.0
    return g


def save_reference_stats(stats: ReferenceStats, path: Any) -> None:
    """Write the statistics with provenance as JSON (what ``--reference_stats`` of pretrain_mae reads)."""
    from genssl_hf.utils import write_json

    write_json(path, stats.to_dict())


def main(argv: list[str] | None = None) -> int:
    """``python -m genssl_hf.processing.stats --dataset DIR_OR_HUB_ID --output stats.json``"""
    import argparse

    ap = argparse.ArgumentParser(description="AdaIN reference statistics of a real image set (one streaming pass)")
    ap.add_argument(
        "--dataset", required=True, help="save_to_disk folder, local folder/file (parquet, images) or Hub id"
    )
    ap.add_argument("--split", default="train")
    ap.add_argument("--image_column", default="image")
    ap.add_argument("--statistic", choices=STATISTICS, default="per_image")
    ap.add_argument("--size", type=int, default=None, help="resize to size x size first (the training resolution)")
    ap.add_argument("--max_images", type=int, default=None)
    ap.add_argument("--dataset_name", default=None, help="name recorded in the provenance (default: --dataset)")
    ap.add_argument("--streaming", action="store_true")
    ap.add_argument("--output", required=True)
    from ..validation import checked_parser

    a = checked_parser(ap).parse_args(argv)
    from ..data.open import open_image_dataset

    ds = open_image_dataset(a.dataset, a.split, image_column=a.image_column, streaming=a.streaming)
    stats = compute_reference_stats(
        ds,
        a.image_column,
        a.statistic,
        size=a.size,
        max_images=a.max_images,
        dataset_name=a.dataset_name or a.dataset,
        show_progress=True,
    )
    save_reference_stats(stats, a.output)
    print(
        f"{stats.num_images} images: mean {stats.mean:.4f} std {stats.std:.4f} ({stats.statistic}); "
        f"pooled {stats.pooled_mean:.4f}/{stats.pooled_std:.4f}, "
        f"per-image {stats.per_image_mean:.4f}/{stats.per_image_std:.4f} -> {a.output}"
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
