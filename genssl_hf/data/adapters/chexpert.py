"""CheXpert (Stanford ML Group): ``train.csv`` / ``valid.csv`` -> canonical multi-label dataset
over the five competition labels (:data:`~genssl_hf.data.schema.CHEXPERT5`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Literal

import datasets

from ..schema import CHEXPERT5, cxr_features
from ._common import (
    CXRDataError,
    Row,
    Verify,
    build_image_dataset,
    check_root,
    iter_csv,
    parse_int,
    path_inside_root,
    unknown_value,
)

Uncertainty = Literal["u_ones", "u_zeros", "mixed"]
UNCERTAINTY_POLICIES = ("u_ones", "u_zeros", "mixed")

MIXED_U_ONES = ("Atelectasis", "Edema")
"""Under ``uncertainty="mixed"`` these labels map uncertain (-1) to positive (U-Ones) and the other
three to negative (U-Zeros): the per-label choice of the CheXpert paper (Irvin et al. 2019)."""

# Labeler outputs: 1 positive, 0 negative, -1 uncertain, blank = not mentioned (-> negative).
_VALUES = {"": 0, "0": 0, "0.0": 0, "1": 1, "1.0": 1, "-1": -1, "-1.0": -1}
_VIEWS = {"Frontal", "Lateral"}
_SPLITS = {"train": "train.csv", "valid": "valid.csv"}
_PATIENT_STUDY = re.compile(r"(patient\d+)/(study\d+)/")
_REQUIRED = ("Path", "Frontal/Lateral", "AP/PA", *CHEXPERT5)


def uncertain_to(label: str, uncertainty: str) -> int:
    """What an uncertain (-1) mention of ``label`` becomes under ``uncertainty``."""
    if uncertainty == "u_ones":
        return 1
    if uncertainty == "u_zeros":
        return 0
    return 1 if label in MIXED_U_ONES else 0


def check_uncertainty(uncertainty: str) -> None:
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty must be one of {UNCERTAINTY_POLICIES}, got {uncertainty!r}")


def chexpert_labels(row: dict, uncertainty: str, where_csv, line: int) -> list[int]:
    """Indices (into CHEXPERT5) of the positive labels of one labeler row."""
    out = []
    for i, name in enumerate(CHEXPERT5):
        raw = (row.get(name) or "").strip()
        if raw not in _VALUES:
            raise unknown_value(where_csv, line, name, raw, _VALUES)
        v = _VALUES[raw]
        if v == -1:
            v = uncertain_to(name, uncertainty)
        if v == 1:
            out.append(i)
    return out


def load_chexpert(
    root: str | os.PathLike,
    split: Literal["train", "valid"] = "train",
    *,
    uncertainty: Uncertainty = "mixed",
    frontal_only: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """CheXpert ``split`` as a canonical dataset (``labels`` over CHEXPERT5).

    Args:
        root: the folder holding ``train.csv`` / ``valid.csv`` (e.g. ``CheXpert-v1.0-small``).
            The CSV ``Path`` column starts with the dataset folder name
            (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``); that first part
            is replaced by ``root``, so a renamed folder still works.
        uncertainty: how an uncertain (-1) label is read: ``"u_ones"`` positive, ``"u_zeros"``
            negative, ``"mixed"`` U-Ones for Atelectasis and Edema, U-Zeros for the others.
            Blank (not mentioned) is negative.
        frontal_only: keep only ``Frontal/Lateral == "Frontal"`` images.

    Columns: image, labels, patient_id (``patient00001``), study_id (``patient00001/study1``),
    view (``AP``/``PA`` from the ``AP/PA`` column, ``LATERAL`` for lateral images), source
    (``chexpert``), path (as in the CSV), sex, age.
    """
    check_uncertainty(uncertainty)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    root = check_root(root, "CheXpert")
    csv_path = root / _SPLITS[split]
    features = cxr_features(
        CHEXPERT5,
        extra={"path": datasets.Value("string"), "sex": datasets.Value("string"), "age": datasets.Value("int32")},
    )

    return build_image_dataset(
        name="chexpert",
        rows=lambda: _chexpert_rows(csv_path, str(root), uncertainty, frontal_only),
        features=features,
        sources=[csv_path],
        options={"root": str(root), "split": split, "uncertainty": uncertainty, "frontal_only": frontal_only},
        on_error=on_error,
        skipped=skipped,
        verify=verify,
        cache_dir=cache_dir,
    )


def _chexpert_rows(csv_path: Path, root_str: str, uncertainty: str, frontal_only: bool) -> Iterator[Row]:
    """The images of one CheXpert CSV, their labels under ``uncertainty`` and their metadata."""
    for line, row in iter_csv(csv_path, _REQUIRED):
        where = f"{csv_path} line {line}"
        fl = row["Frontal/Lateral"].strip()
        if fl not in _VIEWS:
            raise unknown_value(csv_path, line, "Frontal/Lateral", fl, _VIEWS)
        if frontal_only and fl != "Frontal":
            continue
        labels = chexpert_labels(row, uncertainty, csv_path, line)
        rel = row["Path"].strip()
        if not rel:
            raise CXRDataError(f"{where}: empty Path")
        # Drop the dataset folder prefix ("CheXpert-v1.0-small/"): root stands for it.
        # (plain string ops: this runs once per row of a 200k-row CSV)
        head, sep, tail = rel.partition("/")
        local = tail if sep and head not in ("train", "valid", "test") else rel
        m = _PATIENT_STUDY.search(rel)
        age = row.get("Age")
        yield Row(
            where,
            path_inside_root(root_str, local, where),
            {
                "labels": labels,
                "patient_id": m.group(1) if m else "",
                "study_id": f"{m.group(1)}/{m.group(2)}" if m else "",
                "view": "LATERAL" if fl == "Lateral" else row["AP/PA"].strip(),
                "source": "chexpert",
                "path": rel,
                "sex": (row.get("Sex") or "").strip(),
                "age": parse_int(age),
            },
        )
