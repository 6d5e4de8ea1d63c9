"""COVIDx (v9A and the other COVID-Net releases): a split txt file -> canonical multi-class dataset
over :data:`~genssl_hf.data.schema.COVIDX3` (normal, pneumonia, COVID-19)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import datasets

from ..schema import COVIDX3, cxr_features
from ._common import CXRDataError, Row, Verify, build_image_dataset, check_root, iter_text_lines, unknown_value

# Spellings seen across COVIDx releases -> canonical class name.
_CLASS_ALIASES = {name.lower(): name for name in COVIDX3} | {"covid": "COVID-19", "covid19": "COVID-19"}


def parse_covidx_line(line: str, path, line_no: int) -> tuple[str, str, str, str]:
    """``patient_id filename class data_source`` -> the four fields.

    Split from both ends, so a file name with spaces still parses.
    """
    tokens = line.split()
    if len(tokens) < 4:
        raise CXRDataError(
            f"{path} line {line_no}: expected 'patient_id filename class data_source', got {line.strip()!r}"
        )
    patient, cls, source = tokens[0], tokens[-2], tokens[-1]
    filename = " ".join(tokens[1:-2])
    canonical = _CLASS_ALIASES.get(cls.lower())
    if canonical is None:
        raise unknown_value(path, line_no, "class", cls, COVIDX3)
    return patient, filename, canonical, source


def load_covidx(
    root: str | os.PathLike,
    split_file: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """The images of one COVIDx split file as a canonical dataset (``label`` over COVIDX3).

    Args:
        root: the COVIDx folder (with ``train/`` and ``test/`` image folders).
        split_file: e.g. ``train_COVIDx9A.txt`` / ``test_COVIDx9A.txt`` (relative to ``root`` or
            absolute); lines are ``patient_id filename class data_source``.
        image_dir: where the split's images are; by default ``root/train``, ``root/val`` or
            ``root/test`` according to the split file's name.

    Columns: image, label, patient_id, study_id (""), view (""), source (``covidx``), path
    (file name), data_source (the contributing collection, e.g. ``rsna``, ``cohen``).
    """
    root = check_root(root, "COVIDx")
    split_path = Path(split_file)
    if not split_path.is_absolute():
        split_path = root / split_path
    if not split_path.is_file():
        raise CXRDataError(f"COVIDx split file {split_path} does not exist")
    if image_dir is None:
        stem = split_path.stem.lower()
        guess = next((d for d in ("train", "val", "test") if d in stem), None)
        if guess is None or not (root / guess).is_dir():
            raise CXRDataError(
                f"cannot tell the image folder of {split_path.name} (looked for {root}/train|val|test); pass image_dir="
            )
        image_dir = root / guess
    image_dir = Path(image_dir).resolve()
    features = cxr_features(
        COVIDX3, multi_label=False, extra={"path": datasets.Value("string"), "data_source": datasets.Value("string")}
    )

    def rows():
        for line_no, line in iter_text_lines(split_path, "COVIDx split file"):
            if not line.strip():
                continue
            patient, filename, cls, source = parse_covidx_line(line, split_path, line_no)
            yield Row(
                f"{split_path} line {line_no}",
                str(image_dir / filename),
                {
                    "label": COVIDX3.index(cls),
                    "patient_id": patient,
                    "study_id": "",
                    "view": "",
                    "source": "covidx",
                    "path": filename,
                    "data_source": source,
                },
            )

    return build_image_dataset(
        name="covidx",
        rows=rows,
        features=features,
        sources=[split_path],
        options={"image_dir": str(image_dir)},
        on_error=on_error,
        skipped=skipped,
        verify=verify,
        cache_dir=cache_dir,
    )
