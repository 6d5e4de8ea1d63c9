"""One registry of labelled dataset names, used by fine-tuning, evaluation, zero-shot scoring and
the SSL kNN monitor (``--dataset`` / ``--test_dataset``).

A spec is ``phantom``, ``SCHEME:ROOT`` for a scheme in :data:`DATASET_SCHEMES`, a ``save_to_disk``
folder, or anything ``datasets.load_dataset`` accepts (a local folder or a Hub id). Each scheme is
one entry of :data:`DATASET_SCHEMES`: adding a dataset is an adapter in :mod:`genssl_hf.data.adapters`
plus one line here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["DATASET_SCHEMES", "open_labelled_dataset", "describe_schemes"]

_SPLIT_FOLDERS = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}


def _kermany(root: str, label_names):
    import datasets

    from .adapters import load_kermany

    return datasets.DatasetDict({"train": load_kermany(root, "train")})


def _nih_subset(root: str, label_names):
    import datasets

    from .adapters import load_nih_subset

    dd = load_nih_subset(root, None)
    return datasets.DatasetDict({("validation" if k == "valid" else k): v for k, v in dd.items()})


def _chexpert(root: str, label_names):
    import datasets

    from .adapters import load_chexpert

    # The usual protocol: the official ``valid`` set is the test set; validation is carved from train.
    return datasets.DatasetDict({"train": load_chexpert(root, "train"), "test": load_chexpert(root, "valid")})


def _nih14(root: str, label_names):
    import datasets

    from .adapters import load_nih_cxr14

    return datasets.DatasetDict({"train": load_nih_cxr14(root, "train_val"), "test": load_nih_cxr14(root, "test")})


def _covidx(root: str, label_names):
    import datasets

    from .adapters import load_covidx

    out = {}
    for split in ("train", "test"):
        files = sorted(Path(root).glob(f"{split}*.txt"))
        if not files:
            raise FileNotFoundError(f"covidx:{root}: no {split}*.txt split file in {root}")
        out[split] = load_covidx(root, files[0])
    return datasets.DatasetDict(out)


def _mimic(root: str, label_names):
    import datasets

    from .adapters import load_mimic_cxr

    return datasets.DatasetDict(
        {
            "train": load_mimic_cxr(root, "train"),
            "validation": load_mimic_cxr(root, "validate"),
            "test": load_mimic_cxr(root, "test"),
        }
    )


def _match_class_folders(root: Path, label_names: Sequence[str] | None) -> list[str] | None:
    """The folder names in the order of ``label_names`` (matched case-insensitively, so a folder
    ``normal/`` scores a model whose class is ``NORMAL``), or ``None`` to keep the sorted folders."""
    if label_names is None:
        return None
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    by_lower = {f.lower(): f for f in folders}
    missing = [n for n in label_names if n.lower() not in by_lower]
    extra = [f for f in folders if f.lower() not in {n.lower() for n in label_names}]
    if extra:
        raise ValueError(
            f"imagefolder:{root}: class folder(s) {extra} are not among the model's classes {list(label_names)}"
        )
    if missing:
        # A test folder may lack a class (e.g. no positives); keep the model's class list anyway.
        return [by_lower.get(n.lower(), n) for n in label_names]
    return [by_lower[n.lower()] for n in label_names]


def _imagefolder(root: str, label_names):
    """``ROOT/<class>/...`` is one split (``test``); ``ROOT/{train,validation,test}/<class>/...`` gives
    those splits. The classes come from the folder names, or follow ``label_names`` (the model's)."""
    import datasets

    from .adapters import load_image_folder

    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"imagefolder:{root}: no such folder")
    split_dirs = {
        _SPLIT_FOLDERS[e.name.lower()]: Path(e.path)
        for e in os.scandir(base)
        if e.is_dir() and e.name.lower() in _SPLIT_FOLDERS
    }
    if not split_dirs:
        split_dirs = {"test": base}
    out = {}
    for split, folder in split_dirs.items():
        names = _match_class_folders(folder, label_names)
        ds = load_image_folder(folder, label_names=names, source=f"imagefolder:{base.name}")
        if names is not None and list(names) != list(label_names):
            # Folder spellings differ from the model's: name the classes as the model does.
            ds = ds.cast_column("label", datasets.ClassLabel(names=list(label_names)))
        out[split] = ds
    return datasets.DatasetDict(out)


DATASET_SCHEMES: dict[str, tuple[Callable, str]] = {
    "kermany": (_kermany, "Kermany paediatric pneumonia (train only; validation/test are carved from it)"),
    "nih-subset": (_nih_subset, "the NIH ChestX-ray14 subset of ../shared/data (train / validation / test)"),
    "nih14": (_nih14, "NIH ChestX-ray14, official train_val / test lists"),
    "chexpert": (_chexpert, "CheXpert: train, and the official valid set as test"),
    "covidx": (_covidx, "COVIDx: the train*.txt / test*.txt split files"),
    "mimic": (_mimic, "MIMIC-CXR-JPG: the official train / validate / test split"),
    "imagefolder": (_imagefolder, "a folder of class sub-folders (one test split, or train/validation/test)"),
}


def describe_schemes() -> str:
    """One line per scheme, for ``--help`` texts and error messages."""
    return "; ".join(f"{k}:ROOT ({v[1]})" for k, v in DATASET_SCHEMES.items())


def open_labelled_dataset(
    spec: str,
    *,
    config: str | None = None,
    phantom_sizes: Sequence[int] = (2000, 300, 500),
    phantom_resolution: int = 64,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
):
    """A ``DatasetDict`` in the canonical schema from a dataset spec (see the module docstring).

    ``phantom`` gives ``train`` / ``validation`` / ``test`` streams of ``phantom_sizes``.
    ``label_names`` (a model's classes) orders the classes of an ``imagefolder:`` spec.
    """
    import datasets

    if spec == "phantom":
        from .phantom import phantom_splits

        names = ("train", "validation", "test")
        return phantom_splits(
            {n: int(k) for n, k in zip(names, phantom_sizes) if int(k) > 0}, size=phantom_resolution, seed=seed
        )
    scheme, sep, root = spec.partition(":")
    if sep and scheme in DATASET_SCHEMES:
        if not root:
            raise ValueError(f"dataset spec {spec!r}: {scheme}: needs a folder, e.g. {scheme}:/data/{scheme}")
        return DATASET_SCHEMES[scheme][0](root, label_names)
    path = Path(spec)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        dd = datasets.load_from_disk(str(path))
    else:
        from .open import check_dataset_source, not_found_anywhere

        check_dataset_source(spec, "--dataset", ["phantom", *DATASET_SCHEMES])
        try:
            dd = datasets.load_dataset(spec, config)
        except ConnectionError as exc:
            raise not_found_anywhere(spec, "--dataset", exc) from exc
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    return dd
