"""Indiana University chest X-ray image-report pairs (Open-i ``NLMCXR_png`` images + ``NLMCXR_reports.tgz``).

Each IU report lists its radiographs as ``parentImage`` ids (``CXR1_1_IM-0001-3001``); the image
archive holds them as ``<id>.png``. :func:`iu_xray_pairs` joins the two: one pair per image whose
report has a non-empty chosen section, the report id as patient (IU has one study per patient), so
splits by patient keep both views of a study together. Report text stays in memory
(:class:`~genssl_hf.data.pairs.ImageReportPairs`); only file paths reach the image dataset.
Images and reports are CC BY-NC-ND 4.0 (Demner-Fushman et al., JAMIA 2016).
"""

from __future__ import annotations

import os
from pathlib import Path

from .adapters._common import CXRDataError
from .pairs import CORPUS_LICENSES, ImageReportPairs, check_section, corpus_hash
from .reports import iter_iu_reports

__all__ = ["iu_xray_pairs"]


def iu_xray_pairs(
    image_root: str | os.PathLike, reports: str | os.PathLike, *, section: str = "findings", frontal_only: bool = False
) -> ImageReportPairs:
    """Pairs of the PNGs under ``image_root`` (searched recursively) with their IU reports
    (``reports``: the ``NLMCXR_reports.tgz`` archive). Raises when no image matches a report.

    ``frontal_only`` keeps the first image of each report (IU lists the frontal view first in most
    studies; the archive has no view tag, so this is a heuristic and is recorded as such)."""
    import datasets

    check_section(section)
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise CXRDataError(f"IU image folder {root} does not exist")
    files = {p.stem: p for p in root.rglob("*.png")}
    if not files:
        raise CXRDataError(f"IU image folder {root} holds no .png files (expected the NLMCXR_png images)")
    paths, texts, patients, no_image = [], [], [], 0
    for rep in iter_iu_reports(reports):
        text = rep[section] if section != "text" else rep["text"]
        if not text.strip():
            continue
        ids = [i for i in rep["image_ids"] if i in files]
        if not ids:
            no_image += 1
            continue
        for image_id in ids[:1] if frontal_only else ids:
            paths.append(str(files[image_id]))
            texts.append(text)
            patients.append(rep["report_id"])
    if not paths:
        raise CXRDataError(f"no image under {root} matches a report of {reports} (parentImage ids vs file names)")
    images = datasets.Dataset.from_dict(
        {"image": paths, "patient_id": patients},
        features=datasets.Features({"image": datasets.Image(mode="L"), "patient_id": datasets.Value("string")}),
    )
    prov = {
        "source": "iu-xray",
        "corpus_name": "iu-xray (NLMCXR_reports.tgz + NLMCXR_png)",
        "corpus_hash": corpus_hash(texts),
        "corpus_license": CORPUS_LICENSES["iu-xray"],
        "generator_id": None,
        "section": section,
        "num_pairs": len(texts),
        "num_reports_without_image": no_image,
        "frontal_only_heuristic": frontal_only,
    }
    return ImageReportPairs(images, texts, section, None, prov)
