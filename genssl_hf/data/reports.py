"""Radiology report corpora as text datasets.

- Indiana University chest X-ray reports (Open-i), read straight from the original
  ``NLMCXR_reports.tgz`` (no extraction to disk): :func:`iter_iu_reports` streams one dict per XML
  report, :func:`load_iu_reports` builds a ``datasets.Dataset``.
- MIMIC-CXR free-text reports (``files/pXX/pSUBJECT/sSTUDY.txt``): :func:`parse_report_sections`
  splits a report at its upper-case ``HEADER:`` lines; :func:`load_mimic_reports` keeps FINDINGS
  and IMPRESSION per study.

Columns common to both: ``findings``, ``impression`` (whitespace-normalised, ``""`` when the
section is absent) and ``text`` = findings and impression joined by a newline (the image-describing
part of a report; indication / history and comparison are left out of ``text`` because they
describe the request, not the image). Report text is licensed data: use it at run time, never
ship it in an artifact.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import datasets

from .adapters._common import CXRDataError, build_text_dataset, check_root

logger = logging.getLogger(__name__)

IU_SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")

IU_FEATURES = datasets.Features(
    {
        "report_id": datasets.Value("string"),
        "comparison": datasets.Value("string"),
        "indication": datasets.Value("string"),
        "findings": datasets.Value("string"),
        "impression": datasets.Value("string"),
        "text": datasets.Value("string"),
        "mesh_major": datasets.List(datasets.Value("string")),
        "mesh_automatic": datasets.List(datasets.Value("string")),
        "image_ids": datasets.List(datasets.Value("string")),
        "source": datasets.Value("string"),
    }
)
"""IU report columns. ``report_id`` is the XML's ``uId`` (``CXR1``); ``mesh_major`` are the
manually assigned MeSH-style tags (``Calcified Granuloma/lung/upper lobe/right``, ``normal``),
``mesh_automatic`` those the archive marks as automatically extracted; ``image_ids`` the
``parentImage`` ids of the study's radiographs."""

MIMIC_REPORT_FEATURES = datasets.Features(
    {
        "patient_id": datasets.Value("string"),
        "study_id": datasets.Value("string"),
        "findings": datasets.Value("string"),
        "impression": datasets.Value("string"),
        "text": datasets.Value("string"),
        "path": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
)

_WS = re.compile(r"\s+")


def normalize_whitespace(text: str | None) -> str:
    return _WS.sub(" ", text or "").strip()


def combine_sections(findings: str, impression: str) -> str:
    """The ``text`` column: findings then impression, newline-separated, empty parts left out."""
    return "\n".join(part for part in (findings, impression) if part)


# ------------------------------------------------------------------------------------ IU


def parse_iu_report(xml_bytes: bytes, *, name: str = "<report>") -> dict:
    """One IU XML report -> a dict with the :data:`IU_FEATURES` columns."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise CXRDataError(f"{name}: not well-formed XML ({exc})") from exc
    if root.tag != "eCitation":
        raise CXRDataError(f"{name}: not an IU report (root element <{root.tag}>, expected <eCitation>)")
    sections = {s: "" for s in IU_SECTIONS}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").upper()
        if label in sections:
            sections[label] = normalize_whitespace("".join(node.itertext()))
    uid = root.find("uId")
    report_id = uid.get("id", "") if uid is not None else ""
    if not report_id:
        raise CXRDataError(f"{name}: report has no <uId id=...>")
    mesh = root.find("MeSH")
    major = [normalize_whitespace(e.text) for e in mesh.iter("major")] if mesh is not None else []
    automatic = [normalize_whitespace(e.text) for e in mesh.iter("automatic")] if mesh is not None else []
    findings, impression = sections["FINDINGS"], sections["IMPRESSION"]
    return {
        "report_id": report_id,
        "comparison": sections["COMPARISON"],
        "indication": sections["INDICATION"],
        "findings": findings,
        "impression": impression,
        "text": combine_sections(findings, impression),
        "mesh_major": [m for m in major if m],
        "mesh_automatic": [m for m in automatic if m],
        "image_ids": [e.get("id", "") for e in root.findall("parentImage")],
        "source": "iu-xray",
    }


def iter_iu_reports(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the reports of ``NLMCXR_reports.tgz`` (archive order), one dict per XML file, read
    from the compressed archive without extracting it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CXRDataError(f"IU report archive {path} does not exist")
    try:
        with tarfile.open(path, mode="r|*") as tar:  # forward-only stream
            for member in tar:
                if not (member.isfile() and member.name.lower().endswith(".xml")):
                    continue
                fh = tar.extractfile(member)
                yield parse_iu_report(fh.read(), name=f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CXRDataError(f"IU report archive {path} is unreadable or truncated: {exc}") from exc


def load_iu_reports(
    path: str | os.PathLike, *, drop_empty: bool = False, cache_dir: str | os.PathLike | None = None
) -> datasets.Dataset:
    """The IU reports as a ``datasets.Dataset`` (:data:`IU_FEATURES`).

    ``drop_empty`` leaves out reports with neither findings nor impression (the archive has a
    few; they are kept by default so that the count matches the archive's 3,955).
    """
    from ..utils import sha256_file

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CXRDataError(f"IU report archive {path} does not exist")

    def generate():
        for report in iter_iu_reports(path):
            if drop_empty and not report["text"]:
                continue
            yield report

    return build_text_dataset(
        name="iu-reports",
        generate=generate,
        features=IU_FEATURES,
        fingerprint_parts={"sha256": sha256_file(path), "drop_empty": drop_empty},
        cache_dir=cache_dir,
    )


# ------------------------------------------------------------------------------------ MIMIC

# A section header: an upper-case phrase at the start of a line, then a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 /&,()'-]*[A-Z)])[ \t]*:", re.MULTILINE)
FINDINGS_HEADERS = ("FINDINGS", "FINDING")
IMPRESSION_HEADERS = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS")


def parse_report_sections(text: str) -> dict[str, str]:
    """``{"HEADER": body}`` for each ``HEADER:`` section of a free-text report (bodies are
    whitespace-normalised; a repeated header's bodies are joined)."""
    out: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = normalize_whitespace(text[m.end() : end])
        name = _WS.sub(" ", m.group(1)).strip()
        out[name] = f"{out[name]} {body}".strip() if name in out else body
    return out


def report_findings_impression(text: str) -> tuple[str, str]:
    """FINDINGS and IMPRESSION of a MIMIC-style report. A combined ``FINDINGS AND IMPRESSION``
    section counts as findings; ``CONCLUSION`` counts as impression."""
    sections = parse_report_sections(text)
    findings = " ".join(sections[h] for h in sections if h in FINDINGS_HEADERS or h.startswith("FINDINGS AND"))
    impression = " ".join(sections[h] for h in sections if h in IMPRESSION_HEADERS)
    return findings.strip(), impression.strip()


def _iter_mimic_report_files(files_root: Path) -> Iterator[Path]:
    for group in sorted(os.scandir(files_root), key=lambda e: e.name):  # p10 ... p19
        if not (group.is_dir() and group.name.startswith("p")):
            continue
        for subject in sorted(os.scandir(group.path), key=lambda e: e.name):
            if not (subject.is_dir() and subject.name.startswith("p")):
                continue
            for study in sorted(os.scandir(subject.path), key=lambda e: e.name):
                if study.is_file() and study.name.startswith("s") and study.name.endswith(".txt"):
                    yield Path(study.path)


def iter_mimic_reports(root: str | os.PathLike, *, drop_empty: bool = False) -> Iterator[dict]:
    """Stream MIMIC-CXR reports (``root/files/pXX/pSUBJECT/sSTUDY.txt``) as dicts."""
    root = check_root(root, "MIMIC-CXR reports")
    files_root = root / "files" if (root / "files").is_dir() else root
    for path in _iter_mimic_report_files(files_root):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CXRDataError(f"cannot read report {path}: {exc}") from exc
        findings, impression = report_findings_impression(text)
        combined = combine_sections(findings, impression)
        if drop_empty and not combined:
            continue
        yield {
            "patient_id": path.parent.name[1:],
            "study_id": path.stem[1:],
            "findings": findings,
            "impression": impression,
            "text": combined,
            "path": path.relative_to(root).as_posix(),
            "source": "mimic-cxr",
        }


def load_mimic_reports(
    root: str | os.PathLike, *, drop_empty: bool = False, cache_dir: str | os.PathLike | None = None
) -> datasets.Dataset:
    """MIMIC-CXR free-text reports as a text dataset (:data:`MIMIC_REPORT_FEATURES`), one row per
    study, FINDINGS and IMPRESSION extracted. ``root`` holds ``files/`` (the
    ``mimic-cxr-reports`` download)."""
    root = check_root(root, "MIMIC-CXR reports")
    files_root = root / "files" if (root / "files").is_dir() else root
    import hashlib

    # cache key: the listing (names, sizes, mtimes) of the report files
    h = hashlib.sha256()
    n = 0
    for p in _iter_mimic_report_files(files_root):
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        n += 1
    if n == 0:
        raise CXRDataError(f"no report files (files/pXX/pSUBJECT/sSTUDY.txt) under {root}")
    return build_text_dataset(
        name="mimic-reports",
        generate=lambda: iter_mimic_reports(root, drop_empty=drop_empty),
        features=MIMIC_REPORT_FEATURES,
        fingerprint_parts={"listing": h.hexdigest(), "root": str(root), "drop_empty": drop_empty},
        cache_dir=cache_dir,
    )
