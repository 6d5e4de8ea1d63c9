"""The two real image sets of the development data folder (``../shared/data``):
Kermany paediatric pneumonia (224 px JPEG) and a 1,000-image NIH ChestX-ray14 subset (64 px PNG).
Both are described by a ``labels.csv`` beside their images."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import datasets

from ..schema import NIH14
from ._common import CXRDataError, Verify, check_root, iter_csv
from .generic import load_image_csv

KERMANY_LABELS = ("NORMAL", "PNEUMONIA")
# IM-0115-0001.jpeg / NORMAL2-IM-0927-0001.jpeg -> IM-0115 / NORMAL2-IM-0927;
# person1000_bacteria_2931.jpeg -> person1000 (the patient, so splits can keep patients apart).
_KERMANY_PATIENT = re.compile(r"^(person\d+)_|^((?:NORMAL2-)?IM-\d+)-")


def kermany_patient_id(path: str) -> str:
    """The patient a Kermany file name belongs to (``""`` if the name has another form)."""
    m = _KERMANY_PATIENT.match(Path(path).name)
    return (m.group(1) or m.group(2)) if m else ""


def _kermany_derive(row: dict[str, str]) -> dict[str, str]:
    return {"patient_id": kermany_patient_id(row["path"]), "view": "AP"}


def _nih_subset_derive(row: dict[str, str]) -> dict[str, str]:
    return {"study_id": Path(row["path"]).stem}  # the NIH image index, e.g. 00000231_013


def _splits_of(csv_path: Path, column: str = "split") -> list[str]:
    seen: dict[str, None] = {}
    for _, row in iter_csv(csv_path, (column,)):
        seen.setdefault(row[column].strip(), None)
    return list(seen)


def _one_or_all(load, csv_path: Path, split: str | None):
    if split is not None:
        return load(split)
    return datasets.DatasetDict({s: load(s) for s in _splits_of(csv_path)})


def load_kermany(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Kermany pediatric pneumonia (``root/labels.csv``: path, split, label, subtype).

    Multi-class ``label`` over ("NORMAL", "PNEUMONIA"); ``subtype`` (normal / bacterial / viral)
    kept as an extra column; ``patient_id`` parsed from the file name (``person1000``,
    ``IM-0115``); view ``AP`` (all are paediatric AP films). ``split=None`` gives a
    ``DatasetDict`` of every split in the CSV.
    """
    root = check_root(root, "Kermany")
    csv_path = root / "labels.csv"
    if not csv_path.is_file():
        raise CXRDataError(f"Kermany labels file {csv_path} does not exist")

    def load(s):
        return load_image_csv(
            csv_path,
            path_column="path",
            label_column="label",
            label_names=KERMANY_LABELS,
            split_column="split",
            split=s,
            extra_columns={"subtype": datasets.Value("string")},
            derive=_kermany_derive,
            source="kermany-pneumonia",
            on_error=on_error,
            skipped=skipped,
            verify=verify,
            cache_dir=cache_dir,
        )

    return _one_or_all(load, csv_path, split)


def load_nih_subset(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """The NIH ChestX-ray14 subset (``root/labels.csv``: path, split, binary, finding_labels,
    view, patient_id, age, sex).

    Multi-label ``labels`` over NIH14 from ``finding_labels`` (``|``-separated, ``No Finding`` =
    none); study_id is the NIH image index (file stem); extra columns ``binary`` (0_normal / 1_abnormal), ``age``,
    ``sex``. Splits in the CSV:
    train / valid / test; ``split=None`` gives a ``DatasetDict`` of all of them.
    """
    root = check_root(root, "NIH ChestX-ray14 subset")
    csv_path = root / "labels.csv"
    if not csv_path.is_file():
        raise CXRDataError(f"NIH subset labels file {csv_path} does not exist")

    def load(s):
        return load_image_csv(
            csv_path,
            path_column="path",
            label_column="finding_labels",
            label_names=NIH14,
            separator="|",
            none_values=("No Finding",),
            split_column="split",
            split=s,
            patient_id_column="patient_id",
            view_column="view",
            extra_columns={
                "binary": datasets.Value("string"),
                "age": datasets.Value("int32"),
                "sex": datasets.Value("string"),
            },
            derive=_nih_subset_derive,
            source="nih-cxr14",
            on_error=on_error,
            skipped=skipped,
            verify=verify,
            cache_dir=cache_dir,
        )

    return _one_or_all(load, csv_path, split)
