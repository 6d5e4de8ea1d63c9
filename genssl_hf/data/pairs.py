"""Image-report pairs for vision-language pre-training and report generation.

Three sources, one result (:class:`ImageReportPairs`: an image dataset that never holds report
text, plus the texts kept in memory and aligned with its rows):

- **phantom** (the embedded default): the phantom world's own images and the reports written from
  their findings (:func:`phantom_pairs`). Any acquisition setting (``PhantomConfig``) gives a
  "real-domain" variant.
- **generated**: a report-conditioned generated dataset (``generate_dataset(..., reports=...)``),
  which stores only each report's SHA-256, joined back to the user's local report corpus by that
  hash (:func:`generated_pairs`). The text is read from the corpus at run time and held in memory
  only; it is never written to the image dataset, the Arrow cache or any output.
- **mimic**: real MIMIC-CXR-JPG images joined to their MIMIC-CXR reports by study
  (:func:`mimic_pairs`).

The report part used as text is chosen with ``section``: ``findings``, ``impression`` or ``text``
(findings then impression, the columns of :mod:`genssl_hf.data.reports`). Pairs whose chosen section
is empty are left out and counted in the provenance. Truncation to a text encoder's limit happens
when tokenising (the training collator), not here.

:func:`load_pairs` opens any of them from a spec string (``phantom[:N]``, ``generated:DIR``,
``mimic:ROOT``); a corpus for ``generated`` / ``mimic`` is given with ``corpus=`` (a spec for
:func:`load_report_rows`: ``iu:NLMCXR_reports.tgz``, ``mimic-reports:ROOT``, a dataset / file path,
or rows in memory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..utils import sha256_bytes, sha256_strings
from .adapters._common import CXRDataError
from .reports import combine_sections, iter_iu_reports, iter_mimic_reports
from .schema import CHEXPERT5

logger = logging.getLogger(__name__)

__all__ = [
    "SECTIONS",
    "CORPUS_LICENSES",
    "ImageReportPairs",
    "phantom_report_sections",
    "phantom_pairs",
    "load_report_rows",
    "corpus_hash",
    "report_sha256",
    "generated_pairs",
    "mimic_pairs",
    "load_pairs",
]

SECTIONS = ("findings", "impression", "text")
PHANTOM_LICENSE = "none: procedural phantoms, no patient data"
CORPUS_LICENSES = {
    "iu-xray": "CC BY-NC-ND 4.0 (Demner-Fushman et al., JAMIA 2016)",
    "mimic-cxr": "PhysioNet Credentialed Health Data License 1.5.0 (Johnson et al., 2019)",
    "phantom": PHANTOM_LICENSE,
}


def check_section(section: str) -> str:
    if section not in SECTIONS:
        raise ValueError(f"report section must be one of {SECTIONS}, got {section!r}")
    return section


def report_sha256(text: str) -> str:
    """SHA-256 of a report's UTF-8 text: what a report-conditioned generated dataset stores
    (the same rule as ``genssl_hf.generation.materialize.report_hash``)."""
    return sha256_bytes(text.encode("utf-8"))


def corpus_hash(texts: Iterable[str]) -> str:
    """Content hash of a corpus's texts in order: the generated dataset's ``corpus_hash`` rule
    (length-prefixed UTF-8, :func:`genssl_hf.utils.sha256_strings`)."""
    return sha256_strings(texts)


@dataclasses.dataclass
class ImageReportPairs:
    """Images (a ``datasets.Dataset`` with an ``image`` column and, when known, ``labels``; no
    report text) and their report texts (memory only), row ``i`` with ``texts[i]``.

    ``provenance`` says where the pairs come from (``source``, ``corpus_name``, ``corpus_hash``,
    ``corpus_license``, ``generator_id`` for generated images, ``section``, counts); it is what a
    model card records, and it never contains report text.
    """

    images: Any
    texts: list[str]
    section: str
    label_names: list[str] | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    image_column: str = "image"

    def __post_init__(self):
        if len(self.images) != len(self.texts):
            raise ValueError(f"{len(self.images)} images but {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.images[int(i)]
        out = {"image": row[self.image_column], "text": self.texts[int(i)], "index": int(i)}
        if "labels" in row:
            out["labels"] = row["labels"]
        return out

    def select(self, indices: Sequence[int]) -> "ImageReportPairs":
        idx = [int(i) for i in indices]
        prov = {**self.provenance, "num_pairs": len(idx)}
        return dataclasses.replace(
            self, images=self.images.select(idx), texts=[self.texts[i] for i in idx], provenance=prov
        )

    def labels_multi_hot(self) -> np.ndarray | None:
        """(N, C) multi-hot labels over ``label_names`` or None when the images carry none."""
        if not self.label_names or "labels" not in self.images.column_names:
            return None
        y = np.zeros((len(self), len(self.label_names)), dtype=np.float32)
        for r, labs in enumerate(self.images["labels"]):
            y[r, list(labs)] = 1.0
        return y

    def text_groups(self) -> np.ndarray:
        """Group id per pair: pairs with identical text share a group (retrieval counts any of
        them as a correct match, since identical reports cannot be told apart)."""
        ids: dict[str, int] = {}
        return np.array([ids.setdefault(t, len(ids)) for t in self.texts], dtype=np.int64)


# ------------------------------------------------------------------------------------- phantom


def phantom_report_sections(report: str) -> dict[str, str]:
    """The phantom report as report sections: ``findings`` is the whole report (one sentence per
    finding, present or absent); ``impression`` keeps the positive sentences, or says there is no
    acute finding, as a radiologist's impression would."""
    sentences = [s.strip() + "." for s in report.split(".") if s.strip()]
    positive = [s for s in sentences if not s.lower().startswith("no ")]
    impression = " ".join(positive) if positive else "No acute cardiopulmonary abnormality."
    return {"findings": report, "impression": impression, "text": combine_sections(report, impression)}


def phantom_pairs(
    num_samples: int = 2000,
    *,
    size: int = 64,
    seed: int = 0,
    split: str = "train",
    config: Any = None,
    section: str = "findings",
    cache_dir: str | None = None,
) -> ImageReportPairs:
    """``num_samples`` phantoms with their own reports. ``config`` is a ``PhantomConfig`` or a
    dict of its fields (e.g. the pipeline's real-domain ``{"exposure": [1.2, 1.6], ...}``)."""
    from .phantom import PhantomConfig, phantom_dataset

    check_section(section)
    if isinstance(config, Mapping):
        config = PhantomConfig.from_dict(config)
    config = config or PhantomConfig()
    ds = phantom_dataset(num_samples, size=size, seed=seed, config=config, split=split, cache_dir=cache_dir)
    texts = [phantom_report_sections(r)[section] for r in ds["report"]]
    images = ds.remove_columns(["report", "findings"])
    prov = {
        "source": "phantom",
        "corpus_name": f"phantom-{split}",
        "corpus_hash": corpus_hash(ds["report"]),
        "corpus_license": PHANTOM_LICENSE,
        "generator_id": None,
        "section": section,
        "num_pairs": len(texts),
        "phantom": {"size": size, "seed": seed, "split": split, "config": dataclasses.asdict(config)},
    }
    return ImageReportPairs(images, texts, section, list(CHEXPERT5), prov)


# ------------------------------------------------------------------------------------ corpora


def load_report_rows(spec: Any) -> tuple[list[dict[str, Any]], str, str]:
    """Report rows (dicts) from a corpus spec, with the corpus name and licence:

    - ``iu:PATH`` or a path ending in ``.tgz``: the IU archive (streamed, nothing cached);
    - ``mimic-reports:ROOT``: MIMIC-CXR free-text reports;
    - a ``save_to_disk`` folder, a dataset folder or a parquet / json(l) / csv file;
    - rows in memory (a list of dicts or a ``datasets.Dataset``).

    Rows keep every text column (``findings``, ``impression``, ``text``, ``report``...).
    """
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        kind, _, rest = s.partition(":")
        if kind == "iu" or (not rest and s.endswith(".tgz")):
            path = Path(rest if kind == "iu" else s)
            if not path.is_file():
                raise CXRDataError(f"report corpus {path} does not exist")
            return list(iter_iu_reports(path)), f"iu-xray-reports ({path.name})", CORPUS_LICENSES["iu-xray"]
        if kind == "mimic-reports":
            rows = list(iter_mimic_reports(rest))
            return rows, "mimic-cxr-reports", CORPUS_LICENSES["mimic-cxr"]
        path = Path(s)
        if not path.exists():
            raise CXRDataError(f"report corpus {path} does not exist")
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            import datasets

            ds = datasets.load_from_disk(str(path))  # memory-mapped in place, no copy
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"]
            return _string_rows(ds), path.name, "unknown (the user's own corpus)"
        files = sorted(f for ext in _CORPUS_FILES for f in path.rglob(f"*{ext}")) if path.is_dir() else [path]
        if not files:
            raise CXRDataError(f"report corpus folder {path} holds no {'/'.join(_CORPUS_FILES)} files")
        return [row for f in files for row in _read_corpus_file(f)], path.name, "unknown (the user's own corpus)"
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise ValueError(f"report corpus must be a path, a spec or rows, got {type(spec).__name__}")
    import datasets

    if isinstance(spec, datasets.Dataset):
        return _string_rows(spec), "reports", "unknown (the user's own corpus)"
    rows = [dict(r) if isinstance(r, Mapping) else {"text": r} for r in spec]
    return rows, "reports", "unknown (the user's own corpus)"


_CORPUS_FILES = (".parquet", ".jsonl", ".json", ".csv")


def _string_rows(ds) -> list[dict[str, Any]]:
    cols = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    return [dict(r) for r in ds.select_columns(cols)]


def _read_corpus_file(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet / json(l) / csv corpus file, read directly: going through
    ``datasets.load_dataset`` would copy the report text into the Arrow cache."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else list(data.get("data", []))
    if suffix == ".csv":
        import csv

        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh))
    raise CXRDataError(f"report corpus {path}: unsupported file type {path.suffix!r} (tgz, parquet, json, jsonl, csv)")


def _section_of(row: Mapping[str, Any], section: str, where: str) -> str:
    if section in row:
        return row[section] or ""
    if section == "text" and ("findings" in row or "impression" in row):
        return combine_sections(row.get("findings") or "", row.get("impression") or "")
    if section in ("findings", "impression") and "report" in row:
        return phantom_report_sections(row["report"])[section]
    raise CXRDataError(f"{where}: the corpus rows have no {section!r} section (columns: {sorted(row)})")


# ---------------------------------------------------------------------------------- generated


def _report_generation_config(folder: Path) -> dict[str, Any]:
    """The ``generation_config.json`` of a dataset generated from reports (clear errors otherwise)."""
    cfg_path = folder / "generation_config.json"
    if not cfg_path.is_file():
        raise CXRDataError(f"{folder} is not a generated dataset (no generation_config.json)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("mode") != "reports":
        raise CXRDataError(
            f"{folder} was generated from prompts, not reports (mode={cfg.get('mode')!r}); it has no report pairs"
        )
    return cfg


def _sections_by_hash(
    rows: list[Mapping[str, Any]], column: str, section: str, name: str
) -> tuple[dict[str, str], list[str]]:
    """Each corpus row's ``section`` keyed by the hash of its ``column`` text (first row wins), and
    the ``column`` texts in corpus order (what generation hashed)."""
    by_hash: dict[str, str] = {}
    generated_texts = []
    for r, row in enumerate(rows):
        src = row.get(column)
        if not isinstance(src, str) or not src:
            continue
        generated_texts.append(src)
        by_hash.setdefault(report_sha256(src), _section_of(row, section, f"report corpus {name!r} row {r}"))
    return by_hash, generated_texts


def generated_pairs(
    folder: str | os.PathLike,
    corpus: Any,
    *,
    section: str = "findings",
    text_column: str | None = None,
    corpus_name: str | None = None,
    corpus_license: str | None = None,
) -> ImageReportPairs:
    """A report-conditioned generated dataset joined back to its report corpus by hash.

    ``folder`` is the output of ``generate_dataset(..., reports=...)`` (its ``generation_config.json`` says
    which text column each image was generated from, and the corpus hash). ``corpus`` is that same
    corpus (any :func:`load_report_rows` spec): row ``r``'s ``text_column`` is hashed and matched
    to the images' ``report_sha256``; the pair's text is that row's ``section``. Every image must
    find its report, or a :class:`CXRDataError` names how many did not (wrong corpus or column).
    """
    import datasets

    check_section(section)
    folder = Path(folder)
    cfg = _report_generation_config(folder)
    column = text_column or cfg.get("text_column") or "text"
    rows, name, licence = load_report_rows(corpus)
    if rows and column not in rows[0]:
        raise CXRDataError(
            f"report corpus {name!r} has no column {column!r} (the column {folder} was generated from); "
            f"columns: {sorted(rows[0])}"
        )
    by_hash, generated_texts = _sections_by_hash(rows, column, section, name)
    images = datasets.load_dataset(str(folder), split="train")
    hashes = images["report_sha256"]
    missing = [i for i, h in enumerate(hashes) if h not in by_hash]
    if missing:
        raise CXRDataError(
            f"{len(missing)} of {len(hashes)} images of {folder} "
            f"have no report in corpus {name!r} (column {column!r}), "
            f"e.g. rows {missing[:5]}: pass the corpus the dataset was generated from"
        )
    keep = [i for i, h in enumerate(hashes) if by_hash[h].strip()]
    texts = [by_hash[hashes[i]] for i in keep]
    if len(keep) < len(hashes):
        images = images.select(keep)
    label_names = None
    lab = images.features.get("labels")
    if lab is not None and hasattr(getattr(lab, "feature", None), "names"):
        label_names = list(lab.feature.names)
    full_hash = corpus_hash(generated_texts[: cfg.get("corpus_num_reports") or len(generated_texts)])
    prov = {
        "source": "generated",
        "corpus_name": corpus_name or cfg.get("corpus_name") or name,
        "corpus_hash": cfg.get("corpus_hash"),
        "corpus_hash_matches": full_hash == cfg.get("corpus_hash"),
        "corpus_license": corpus_license or licence,
        "generator_id": cfg.get("generator_id"),
        "generated_dataset": str(folder),
        "generation": {k: cfg.get(k) for k in ("num_inference_steps", "guidance_scale", "height", "seed")},
        "text_column": column,
        "section": section,
        "num_pairs": len(texts),
        "num_empty_section": len(hashes) - len(keep),
    }
    if not prov["corpus_hash_matches"]:
        logger.warning(
            "corpus %r hashes differently from the one %s was generated from (every image still found its "
            "report): the card records the generation-time hash",
            name,
            folder,
        )
    return ImageReportPairs(
        images.select_columns([c for c in ("image", "labels") if c in images.column_names]),
        texts,
        section,
        label_names,
        prov,
    )


# -------------------------------------------------------------------------------------- mimic


def mimic_pairs(
    image_root: str | os.PathLike,
    reports: Any,
    *,
    split: str = "train",
    section: str = "findings",
    views: Sequence[str] | None = ("PA", "AP"),
    **adapter_kwargs: Any,
) -> ImageReportPairs:
    """MIMIC-CXR-JPG images (:func:`~genssl_hf.data.load_mimic_cxr`) with their study's report
    (``reports``: the MIMIC-CXR reports root, or a :func:`load_report_rows` spec with ``study_id``).
    Images of studies without a report or with an empty section are left out and counted."""
    from .adapters.mimic import load_mimic_cxr

    check_section(section)
    spec = (
        reports
        if not isinstance(reports, (str, os.PathLike)) or ":" in os.fspath(reports)
        else f"mimic-reports:{os.fspath(reports)}"
    )
    rows, name, licence = load_report_rows(spec)
    if rows and "study_id" not in rows[0]:
        raise CXRDataError(f"report corpus {name!r} has no study_id column to join MIMIC images on")
    text_of = {str(r["study_id"]): _section_of(r, section, f"report of study {r['study_id']}") for r in rows}
    images = load_mimic_cxr(image_root, split, views=views, **adapter_kwargs)
    studies = images["study_id"]
    keep = [i for i, s in enumerate(studies) if text_of.get(str(s), "").strip()]
    texts = [text_of[str(studies[i])] for i in keep]
    prov = {
        "source": "mimic-cxr",
        "corpus_name": name,
        "corpus_hash": corpus_hash(texts),
        "corpus_license": licence,
        "generator_id": None,
        "split": split,
        "section": section,
        "num_pairs": len(texts),
        "num_without_report": len(studies) - len(keep),
    }
    return ImageReportPairs(images.select(keep), texts, section, list(CHEXPERT5), prov)


# -------------------------------------------------------------------------------------- specs


def load_pairs(
    spec: Any,
    *,
    section: str = "findings",
    corpus: Any = None,
    split: str = "train",
    image_size: int = 64,
    seed: int = 0,
    phantom_config: Any = None,
) -> ImageReportPairs:
    """Image-report pairs from a spec: an :class:`ImageReportPairs` (returned as is),
    ``phantom`` / ``phantom:N`` (N phantoms of ``split``, default 2000; ``phantom_config`` sets the
    acquisition), ``generated:DIR`` (needs ``corpus``), ``mimic:ROOT`` (``corpus`` = the reports
    root). Errors name the spec before anything is loaded."""
    check_section(section)
    if isinstance(spec, ImageReportPairs):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"pairs spec must be a string or ImageReportPairs, got {type(spec).__name__}")
    kind, _, rest = os.fspath(spec).partition(":")
    if kind == "phantom":
        try:
            n = int(rest) if rest else 2000
        except ValueError:
            raise ValueError(f"pairs spec {spec!r}: phantom:N needs an integer N") from None
        if n <= 0:
            raise ValueError(f"pairs spec {spec!r}: N must be positive")
        return phantom_pairs(n, size=image_size, seed=seed, split=split, config=phantom_config, section=section)
    if kind == "generated":
        if corpus is None:
            raise ValueError(
                f"pairs spec {spec!r}: a generated dataset keeps only report hashes; pass the report "
                "corpus it was generated from (corpus=..., --reports)"
            )
        if not Path(rest).is_dir():
            raise CXRDataError(f"pairs spec {spec!r}: {rest} is not a folder")
        return generated_pairs(rest, corpus, section=section)
    if kind == "mimic":
        if corpus is None:
            raise ValueError(f"pairs spec {spec!r}: pass the MIMIC-CXR reports root (corpus=..., --reports)")
        return mimic_pairs(rest, corpus, split=split, section=section)
    raise ValueError(f"unknown pairs spec {spec!r}: use phantom[:N], generated:DIR or mimic:ROOT")
