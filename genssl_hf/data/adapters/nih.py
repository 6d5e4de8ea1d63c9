"""NIH ChestX-ray14: ``Data_Entry_2017[_v2020].csv`` + the official ``train_val_list.txt`` /
``test_list.txt`` -> canonical multi-label dataset over :data:`~genssl_hf.data.schema.NIH14`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Literal

import datasets

from ..schema import NIH14, cxr_features
from ._common import (
    CXRDataError,
    Row,
    Verify,
    build_image_dataset,
    check_root,
    iter_csv,
    iter_text_lines,
    parse_int,
    path_inside_root,
    unknown_value,
)

NIH_NO_FINDING = "No Finding"
_SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
_CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
_INDEX = {name: i for i, name in enumerate(NIH14)}
_REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "View Position")


def nih_labels(value: str, where_csv, line: int, column: str = "Finding Labels") -> list[int]:
    """``"Cardiomegaly|Effusion"`` -> sorted NIH14 indices; ``"No Finding"`` -> ``[]``."""
    out = set()
    for token in value.split("|"):
        token = token.strip()
        if token in ("", NIH_NO_FINDING):
            continue
        if token not in _INDEX:
            raise unknown_value(where_csv, line, column, token, [*NIH14, NIH_NO_FINDING])
        out.add(_INDEX[token])
    return sorted(out)


def index_nih_images(root: Path) -> dict[str, str]:
    """File name -> path for the PNGs under ``images/`` and the archive folders
    ``images_001/images/`` ... ``images_012/images/`` (one ``os.scandir`` pass, names only)."""
    found: dict[str, str] = {}
    folders = [root / "images"]
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and entry.name.startswith("images_"):
            folders += [Path(entry.path) / "images", Path(entry.path)]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.endswith(".png") and entry.is_file():
                found.setdefault(entry.name, entry.path)
    return found


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise CXRDataError(f"official split list {path} does not exist")
    names = [line.strip() for _, line in iter_text_lines(path, "official split list") if line.strip()]
    if not names:
        raise CXRDataError(f"official split list {path} is empty")
    return names


def load_nih_cxr14(
    root: str | os.PathLike,
    split: Literal["train_val", "test", "all"] = "train_val",
    *,
    csv: str | os.PathLike | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """NIH ChestX-ray14 ``split`` as a canonical dataset (``labels`` over NIH14, official order).

    Args:
        root: the folder holding ``Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``),
            ``train_val_list.txt``, ``test_list.txt`` and the images, either in ``images/`` or in
            the archive folders ``images_001/images/`` ... as the NIH download unpacks.
        split: ``"train_val"`` / ``"test"`` (the official patient-wise lists) or ``"all"``.
        csv: a labels CSV to use instead of the one found in ``root``.

    ``No Finding`` is the empty label list. Columns: image, labels, patient_id, study_id (image
    name without extension), view (``View Position``: PA/AP), source (``nih-cxr14``), path
    (image name), age, sex, follow_up. A name in the split list with no CSV row is an error.
    """
    root = check_root(root, "NIH ChestX-ray14")
    if split not in ("train_val", "test", "all"):
        raise ValueError(f"split must be 'train_val', 'test' or 'all', got {split!r}")
    csv_path = Path(csv) if csv is not None else next((root / n for n in _CSV_NAMES if (root / n).is_file()), None)
    if csv_path is None:
        raise CXRDataError(f"none of {list(_CSV_NAMES)} found in {root}")
    sources = [csv_path]
    wanted: set[str] | None = None
    if split != "all":
        list_path = root / _SPLIT_FILES[split]
        names = _read_list(list_path)
        wanted = set(names)
        sources.append(list_path)
    images = index_nih_images(root)
    if wanted is not None:  # every listed image must have a label row: check before building
        _check_listed_have_rows(csv_path, list_path, names)

    features = cxr_features(
        NIH14,
        extra={
            "path": datasets.Value("string"),
            "age": datasets.Value("int32"),
            "sex": datasets.Value("string"),
            "follow_up": datasets.Value("int32"),
        },
    )

    return build_image_dataset(
        name="nih-cxr14",
        rows=lambda: _nih_rows(csv_path, root, images, wanted),
        features=features,
        sources=sources,
        options={"root": str(root), "split": split, "n_images_found": len(images)},
        on_error=on_error,
        skipped=skipped,
        verify=verify,
        cache_dir=cache_dir,
    )


def _check_listed_have_rows(csv_path: Path, list_path: Path, names: list[str]) -> None:
    """Every image of an official split list has a row in the labels CSV."""
    seen = {row["Image Index"].strip() for _, row in iter_csv(csv_path, _REQUIRED)}
    absent = [n for n in names if n not in seen]
    if absent:
        raise CXRDataError(f"{len(absent)} image(s) of {list_path} have no row in {csv_path}, e.g. {absent[:5]}")


def _nih_rows(csv_path: Path, root: Path, images: dict[str, str], wanted: set[str] | None) -> Iterator[Row]:
    """The images of the labels CSV (those in ``wanted`` when given), found in ``images`` or
    expected under ``root/images``."""
    for line, row in iter_csv(csv_path, _REQUIRED):
        name = row["Image Index"].strip()
        if wanted is not None and name not in wanted:
            continue
        labels = nih_labels(row["Finding Labels"], csv_path, line)
        yield Row(
            f"{csv_path} line {line}",
            images.get(name) or path_inside_root(root / "images", name, f"{csv_path} line {line}"),
            {
                "labels": labels,
                "patient_id": row["Patient ID"].strip(),
                "study_id": name.rsplit(".", 1)[0],
                "view": row["View Position"].strip(),
                "source": "nih-cxr14",
                "path": name,
                "age": parse_int(row.get("Patient Age")),
                "sex": (row.get("Patient Gender") or "").strip(),
                "follow_up": parse_int(row.get("Follow-up #")),
            },
        )
