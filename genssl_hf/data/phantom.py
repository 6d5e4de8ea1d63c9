"""The phantom chest X-ray world: procedural, seeded, deterministic chest radiographs.

Every image is rendered analytically from a few anatomical primitives (body outline, lungs,
heart, mediastinum and spine, ribs, clavicles, diaphragm domes with costophrenic angles, gastric
bubble) as a map of X-ray attenuation, then exposed as ``1 - exp(-mu * density)`` so that dense
structures are bright (MONOCHROME2), as on a real radiograph. The findings are the CheXpert
five, each with a size (small / big) and, where it makes sense, a side:

===================  ======================================================  ==================
finding              rendering                                               sides
===================  ======================================================  ==================
Atelectasis          plate-like (small) or wedge (big) opacity running from   left/right/bilateral
                     the hilum to the base, with volume loss (raised
                     hemidiaphragm, mediastinal shift toward the side)
Cardiomegaly         cardiothoracic ratio 0.55-0.60 (small) / 0.63-0.72       none
                     (big) instead of 0.40-0.48
Consolidation        dense patchy opacity (thresholded smooth noise) in a     left/right/bilateral
                     lower/mid zone, with air bronchograms
Edema                bilateral perihilar ("bat-wing") haze; big adds Kerley   bilateral
                     B lines at the bases
Pleural Effusion     basal fluid with a meniscus rising laterally, blunting   left/right/bilateral
                     the costophrenic angle; small fills ~12 %, big ~35 %
                     of the lung height
===================  ======================================================  ==================

Sides follow the radiological convention: the patient's right is on the image's left.
Acquisition varies per image: exposure, contrast (gamma), quantum noise, blur, small rotation,
scale and shift. Each sample carries its multi-hot labels, its finding parameters and a short
report written from them ("Big left-sided pleural effusion. No cardiomegaly. ..."), so the
phantom world is also a report corpus whose vocabulary matches the heuristic prompt set.

The parts live in their own modules: :mod:`.phantom_findings` (finding specs, their random draw,
reports and their parsing) and :mod:`.phantom_render` (:class:`PhantomConfig` and the renderer);
this module composes them into samples, dataset rows and ``datasets`` splits, and its public names
(``__all__``) are the phantom world's API.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .phantom_findings import (
    FINDING_SIDES,
    SIDES,
    SIZES,
    findings_from_text,
    normalise_findings,
    sample_findings,
    write_report,
)
from .phantom_render import PhantomConfig, _check_size, render_phantom
from .schema import CHEXPERT5, cxr_features

DEFAULT_PHANTOM_CONFIG = PhantomConfig()  # frozen: one shared default for every function below

PHANTOM_SOURCE = "genssl_hf-phantom"
PHANTOM_VERSION = "1"


@dataclass
class PhantomSample:
    image: np.ndarray  # uint8 (H, W), bright = dense
    labels: np.ndarray  # float32 multi-hot over CHEXPERT5
    findings: dict[str, dict[str, Any]]  # present findings -> {"size", "side", ...rendering params}
    acquisition: dict[str, float]
    report: str
    seed: int
    size: int = field(default=0)

    @property
    def label_indices(self) -> list[int]:
        return [i for i, v in enumerate(self.labels) if v > 0.5]


def sample_seed(seed: int, index: int) -> int:
    """The per-sample seed of sample ``index`` in a stream with global ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def sample_phantom(
    seed: int,
    size: int = 128,
    findings: Mapping[str, Mapping[str, Any] | None] | None = None,
    config: PhantomConfig = DEFAULT_PHANTOM_CONFIG,
    finding_maps: dict[str, Any] | None = None,
) -> PhantomSample:
    """One phantom chest X-ray. ``findings=None`` draws findings at ``config.prevalence``; a dict
    (possibly empty, for a normal film) fixes them. Deterministic in (seed, size, findings, config).
    ``finding_maps``, when given, receives where each finding was drawn (:func:`render_phantom`; the
    sample is the same with or without it)."""
    size = _check_size(size)
    rng = np.random.default_rng(int(seed))
    spec = sample_findings(rng, config.prevalence) if findings is None else normalise_findings(findings)
    image, rendered, acquisition = render_phantom(size, spec, rng, config, finding_maps=finding_maps)
    labels = np.array([1.0 if name in rendered else 0.0 for name in CHEXPERT5], dtype=np.float32)
    return PhantomSample(
        image=image,
        labels=labels,
        findings=rendered,
        acquisition=acquisition,
        report=write_report(rendered),
        seed=int(seed),
        size=size,
    )


def phantom_features():
    import datasets

    return cxr_features(
        CHEXPERT5,
        extra={
            "report": datasets.Value("string"),
            "seed": datasets.Value("int64"),
            "findings": datasets.Value("string"),  # JSON: finding -> size, side, rendering params
        },
    )


def iter_phantom_records(
    num_samples: int,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = DEFAULT_PHANTOM_CONFIG,
    start: int = 0,
    split: str = "train",
) -> Iterator[dict[str, Any]]:
    """Rows of the canonical schema for samples ``start .. start + num_samples - 1``."""
    for index in range(start, start + num_samples):
        s = record_seed(seed, index, split)
        yield phantom_record(sample_phantom(s, size, None, config), index, split)


def record_seed(seed: int, index: int, split: str) -> int:
    """The sample seed of row ``index`` of ``split``'s stream (splits never share a sample)."""
    split_seed = int(np.frombuffer(split.encode().ljust(8, b"\0")[:8], dtype=np.uint64)[0] % (2**31))
    return sample_seed(seed * 7919 + split_seed, index)


def phantom_record(sample: PhantomSample, index: int, split: str) -> dict[str, Any]:
    """Row ``index`` of ``split`` in the canonical schema, for ``sample``."""
    return {
        "image": sample.image,
        "labels": sample.label_indices,
        "patient_id": f"phantom-{split}-{index:08d}",
        "study_id": f"phantom-{split}-{index:08d}-s1",
        "view": "PA",
        "source": PHANTOM_SOURCE,
        "report": sample.report,
        "seed": sample.seed,
        "findings": json.dumps(sample.findings, sort_keys=True),
    }


def _phantom_generator(shards: list[tuple[int, int]], size: int, seed: int, config: dict, split: str):
    cfg = PhantomConfig.from_dict(config)
    for start, count in shards:
        yield from iter_phantom_records(count, size, seed, cfg, start, split)


def phantom_dataset(
    num_samples: int,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = DEFAULT_PHANTOM_CONFIG,
    split: str = "train",
    num_proc: int | None = None,
    cache_dir: str | None = None,
):
    """A ``datasets.Dataset`` of ``num_samples`` phantoms in the canonical schema plus ``report``,
    ``seed`` and ``findings``. Rows stream to the Arrow cache, so memory stays flat; ``split`` picks
    an independent stream (train / validation / test never share a sample)."""
    import datasets

    if not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    _check_size(size)
    shard_len = 256
    shards = [(s, min(shard_len, num_samples - s)) for s in range(0, num_samples, shard_len)]
    return datasets.Dataset.from_generator(
        _phantom_generator,
        features=phantom_features(),
        gen_kwargs={"shards": shards, "size": int(size), "seed": int(seed), "config": asdict(config), "split": split},
        num_proc=num_proc if num_proc and len(shards) > 1 else None,
        cache_dir=cache_dir,
        split=datasets.Split.TRAIN if split == "train" else datasets.NamedSplit(split),
    )


def phantom_splits(
    sizes: Mapping[str, int],
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = DEFAULT_PHANTOM_CONFIG,
    cache_dir: str | None = None,
):
    """A ``DatasetDict`` with one independent phantom stream per split, e.g.
    ``phantom_splits({"train": 2000, "validation": 300, "test": 500})``."""
    import datasets

    return datasets.DatasetDict(
        {name: phantom_dataset(n, size, seed, config, split=name, cache_dir=cache_dir) for name, n in sizes.items()}
    )


def render_grid(
    images: Sequence[np.ndarray | Any],
    captions: Sequence[str] | None,
    path: str | Path,
    ncols: int = 4,
    title: str | None = None,
    cell_inches: float = 2.2,
) -> Path:
    """Render images (uint8/float arrays or PIL images) with captions as a labelled PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write_bytes

    if len(images) == 0:
        raise ValueError("render_grid needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_inches * ncols, cell_inches * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        arr = np.asarray(images[i])
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)
        if arr.ndim == 3:
            arr = arr[..., 0]
        vmax = 255 if arr.dtype == np.uint8 else 1.0
        ax.imshow(arr, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        if captions is not None:
            ax.set_title(_wrap(captions[i], 28), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:4])


def finding_gallery(size: int = 128, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """One image per (finding, size, side) of the heuristic grid plus a normal film: the images and
    captions used for the phantom world's sample grid."""
    images, captions = [], []
    normal = sample_phantom(seed, size, {})
    images.append(normal.image)
    captions.append("Normal")
    for i, name in enumerate(CHEXPERT5):
        sides = FINDING_SIDES[name] or (None,)
        for size_word in SIZES:
            for side in sides:
                spec = {"size": size_word} | ({"side": side} if side else {})
                sample = sample_phantom(seed + 1 + i, size, {name: spec})
                images.append(sample.image)
                captions.append(sample.report.split(".")[0])
    return images, captions


__all__ = [
    "FINDING_SIDES",
    "PHANTOM_SOURCE",
    "PhantomConfig",
    "PhantomSample",
    "SIDES",
    "SIZES",
    "finding_gallery",
    "findings_from_text",
    "iter_phantom_records",
    "normalise_findings",
    "phantom_dataset",
    "phantom_features",
    "phantom_record",
    "phantom_splits",
    "record_seed",
    "render_grid",
    "render_phantom",
    "sample_findings",
    "sample_phantom",
    "sample_seed",
    "write_report",
]
