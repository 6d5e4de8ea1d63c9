"""Image-text data of the generator's training: datasets, the batch collator, prompt augmentation."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..common import EpochShuffleSampler

DEFAULT_PHANTOM_PROMPTS = [
    "No atelectasis. No cardiomegaly. No consolidation. No edema. No pleural effusion.",
    "Big left-sided atelectasis.",
    "Big cardiomegaly.",
    "Big right-sided consolidation.",
    "Big bilateral edema.",
    "Big left-sided pleural effusion.",
]


# ------------------------------------------------------------------------------------------- data
def load_image_text_dataset(
    spec: str,
    *,
    split: str = "train",
    image_column: str = "image",
    text_column: str | None = "report",
    resolution: int = 64,
    seed: int = 0,
    config_name: str | None = None,
    max_samples: int | None = None,
):
    """A ``datasets.Dataset`` from ``spec``: ``phantom:N`` (N phantoms at ``resolution`` from
    :func:`genssl_hf.data.phantom.phantom_dataset`, seeded by ``seed``), a folder saved with
    ``save_to_disk``, a local data folder/file (parquet, imagefolder...) or a Hub dataset name.
    Checks the image and text columns exist and the dataset is not empty."""

    if spec.startswith("phantom:"):
        from ...data.phantom import phantom_dataset

        try:
            n = int(spec.split(":")[1])
        except ValueError:
            raise ValueError(f"--dataset {spec!r}: expected phantom:N with N an integer") from None
        ds = phantom_dataset(n, size=resolution, seed=seed)
    else:
        from ...data.open import open_image_dataset

        ds = open_image_dataset(spec, split, image_column=image_column, dataset_config=config_name)
    if text_column is not None and text_column not in ds.column_names:
        raise ValueError(f"--dataset {spec}: no text column {text_column!r} (columns: {ds.column_names})")
    if len(ds) == 0:
        raise ValueError(f"--dataset {spec}: the dataset is empty")
    if max_samples is not None and max_samples < len(ds):
        ds = ds.select(range(max_samples))
    keep = [image_column] + ([text_column] if text_column else [])
    return ds.select_columns(keep)


def prepare_texts(texts: Sequence[Any], prompt_dropout: float = 0.0, drop_negative_sentences: float = 0.0) -> list[str]:
    """Training prompts from a batch of the text column (torch RNG; call after seeding the step).

    A list cell gives one of its strings at random; each sentence starting with "No " is dropped
    with probability ``drop_negative_sentences`` (so a model trained on full reports also answers
    short prompts such as "Big left-sided pleural effusion."); finally the whole prompt becomes the
    empty prompt with probability ``prompt_dropout`` (the unconditional branch of CFG)."""
    out = []
    for t in texts:
        if isinstance(t, (list, tuple)):
            t = t[int(torch.randint(len(t), (1,)))] if t else ""
        t = "" if t is None else str(t)
        if drop_negative_sentences > 0:
            sents = [s.strip() for s in t.split(".") if s.strip()]
            keep = [
                s
                for s in sents
                if not (s.lower().startswith("no ") and float(torch.rand(())) < drop_negative_sentences)
            ]
            t = " ".join(s + "." for s in keep)
        if prompt_dropout > 0 and float(torch.rand(())) < prompt_dropout:
            t = ""
        out.append(t)
    return out


def image_text_loader(ds, collator, batch_size: int, seed: int):
    """Seeded per-epoch permutation (exact resume), whole batches only."""
    if len(ds) < batch_size:
        raise ValueError(f"the dataset has {len(ds)} rows, fewer than one batch of {batch_size}")
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(len(ds), seed=seed),
        collate_fn=collator,
        drop_last=True,
        num_workers=0,
    )


def check_resolution(res: int, factor: int) -> None:
    """The training resolution must be a positive multiple of the autoencoder's downsampling factor."""
    if res <= 0 or res % factor:
        raise ValueError(
            f"--resolution {res} must be a positive multiple of the autoencoder downsampling factor {factor}"
        )
