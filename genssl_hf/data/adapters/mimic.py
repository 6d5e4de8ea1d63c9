"""MIMIC-CXR-JPG (PhysioNet): metadata + CheXpert-labeler + official split CSVs -> canonical
multi-label dataset over :data:`~genssl_hf.data.schema.CHEXPERT5`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Literal, Sequence

import datasets

from ..schema import CHEXPERT5, cxr_features
from ._common import CXRDataError, Row, Verify, build_image_dataset, check_root, find_file, iter_csv
from .chexpert import check_uncertainty, chexpert_labels

logger = logging.getLogger("genssl_hf.data.adapters")

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
MIMIC_SPLITS = ("train", "validate", "test")
_SPLIT_ALIASES = {"valid": "validate", "validation": "validate", "val": "validate"}


def mimic_image_path(subject_id: str, study_id: str, dicom_id: str) -> str:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (relative to the MIMIC-CXR-JPG root)."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


def load_mimic_cxr(
    root: str | os.PathLike,
    split: Literal["train", "validate", "test", "all"] = "train",
    *,
    views: Sequence[str] | None = ("PA", "AP"),
    uncertainty: Literal["u_ones", "u_zeros", "mixed"] = "mixed",
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """MIMIC-CXR-JPG ``split`` as a canonical dataset (``labels`` over CHEXPERT5).

    Args:
        root: the MIMIC-CXR-JPG folder with ``files/`` and the three CSVs
            (``mimic-cxr-2.0.0-{metadata,chexpert,split}.csv``, plain or ``.gz`` as distributed).
        split: the official split (``train`` / ``validate`` / ``test``; ``valid`` and
            ``validation`` are accepted) or ``"all"``.
        views: keep images whose ``ViewPosition`` is one of these (default PA and AP, the
            frontal views); ``None`` keeps every view.
        uncertainty: the labeler's uncertain (-1) values, as for CheXpert
            (``u_ones`` / ``u_zeros`` / ``mixed``); blank = negative.

    Studies without a row in the labeler CSV (a handful in 2.0.0, reports the labeler could not
    read) are left out with a warning giving their count. Columns: image, labels, patient_id
    (subject_id), study_id, view (ViewPosition), source (``mimic-cxr``), path (relative), dicom_id.
    """
    check_uncertainty(uncertainty)
    split = _SPLIT_ALIASES.get(split, split)
    if split not in (*MIMIC_SPLITS, "all"):
        raise ValueError(f"split must be one of {MIMIC_SPLITS} or 'all', got {split!r}")
    view_set = None if views is None else {v.strip().upper() for v in views}
    root = check_root(root, "MIMIC-CXR-JPG")
    meta_csv = find_file(root, METADATA_CSV)
    label_csv = find_file(root, CHEXPERT_CSV)
    split_csv = find_file(root, SPLIT_CSV)

    # The labels of every study and the dicom ids of the split: small tables kept as dicts/sets
    # (ids and label indices only, never images).
    labels_of = _study_labels(label_csv, uncertainty)
    in_split = _split_dicom_ids(split_csv, split) if split != "all" else None

    features = cxr_features(CHEXPERT5, extra={"path": datasets.Value("string"), "dicom_id": datasets.Value("string")})
    return build_image_dataset(
        name="mimic-cxr",
        rows=lambda: _mimic_rows(root, meta_csv, label_csv, labels_of, in_split, view_set),
        features=features,
        sources=[meta_csv, label_csv, split_csv],
        options={
            "root": str(root),
            "split": split,
            "views": sorted(view_set) if view_set is not None else None,
            "uncertainty": uncertainty,
        },
        on_error=on_error,
        skipped=skipped,
        verify=verify,
        cache_dir=cache_dir,
    )


def _study_labels(label_csv: Path, uncertainty: str) -> dict[tuple[str, str], tuple[int, ...]]:
    """(subject_id, study_id) -> the study's CHEXPERT5 label indices, from the labeler CSV."""
    labels_of: dict[tuple[str, str], tuple[int, ...]] = {}
    for line, row in iter_csv(label_csv, ("subject_id", "study_id", *CHEXPERT5)):
        labels_of[(row["subject_id"].strip(), row["study_id"].strip())] = tuple(
            chexpert_labels(row, uncertainty, label_csv, line)
        )
    return labels_of


def _split_dicom_ids(split_csv: Path, split: str) -> set[str]:
    """The dicom ids of one official split."""
    in_split: set[str] = set()
    for line, row in iter_csv(split_csv, ("dicom_id", "split")):
        value = row["split"].strip()
        if value not in MIMIC_SPLITS:
            raise CXRDataError(
                f"{split_csv} line {line}, column 'split': unknown value {value!r} (known: {MIMIC_SPLITS})"
            )
        if value == split:
            in_split.add(row["dicom_id"].strip())
    return in_split


def _mimic_rows(
    root: Path,
    meta_csv: Path,
    label_csv: Path,
    labels_of: dict[tuple[str, str], tuple[int, ...]],
    in_split: set[str] | None,
    view_set: set[str] | None,
) -> Iterator[Row]:
    """The images of the metadata CSV in the split and views; those of studies without labels are
    left out with one warning at the end."""
    unlabeled: list[str] = []
    for line, row in iter_csv(meta_csv, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        dicom_id = row["dicom_id"].strip()
        if in_split is not None and dicom_id not in in_split:
            continue
        view = row["ViewPosition"].strip()
        if view_set is not None and view.upper() not in view_set:
            continue
        subject, study = row["subject_id"].strip(), row["study_id"].strip()
        labels = labels_of.get((subject, study))
        if labels is None:
            unlabeled.append(study)
            continue
        rel = mimic_image_path(subject, study, dicom_id)
        yield Row(
            f"{meta_csv} line {line}",
            str(root / rel),
            {
                "labels": list(labels),
                "patient_id": subject,
                "study_id": study,
                "view": view,
                "source": "mimic-cxr",
                "path": rel,
                "dicom_id": dicom_id,
            },
        )
    if unlabeled:
        logger.warning(
            "MIMIC-CXR: %d image(s) of %d studies have no row in %s and are left out, e.g. studies %s",
            len(unlabeled),
            len(set(unlabeled)),
            label_csv.name,
            sorted(set(unlabeled))[:5],
        )
