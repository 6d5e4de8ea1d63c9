"""The index of the real data an artifact must not carry: reports and images together."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Iterable

from .image_index import IMAGE_EXTENSIONS, ImageIndex
from .readers import _iter_parquet_values, _open_image_bytes
from .text_index import REPORT_ARCHIVE_SUFFIXES, ReportIndex, _iter_report_archive


class RealDataIndex:
    """The report and image indexes of the real data an artifact must not carry."""

    def __init__(self, *, min_sentence_tokens: int = 6, ngram: int = 8, near_threshold: float = 0.995):
        self.reports = ReportIndex(min_sentence_tokens=min_sentence_tokens, ngram=ngram)
        self.images = ImageIndex(near_threshold=near_threshold)
        self.sources: list[str] = []

    def __repr__(self) -> str:
        return f"RealDataIndex(reports={len(self.reports)}, images={len(self.images)}, sources={self.sources})"

    @property
    def empty(self) -> bool:
        return not len(self.reports) and not len(self.images)

    def add_report(self, text: str) -> None:
        self.reports.add(text)

    def add_image(self, image: Any, name: str) -> bool:
        return self.images.add(image, name)

    def add_path(self, path: str | os.PathLike) -> "RealDataIndex":
        """Index a real-data path: an image file, a report archive (``.tgz``/``.tar`` of IU XML),
        a parquet file (image columns and string columns), a ``.txt`` report, or a folder of any
        of these (walked recursively)."""
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"real-data path {path} does not exist")
        before = (len(self.reports), len(self.images))
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        from tqdm.auto import tqdm

        for f in tqdm(
            files, desc=f"indexing real data {path.name}", unit="file", disable=len(files) < 200, leave=False
        ):
            self._add_file(f)
        if (len(self.reports), len(self.images)) == before:
            raise ValueError(f"real-data path {path} holds no images, reports or parquet shards to index")
        self.sources.append(str(path))
        return self

    def _add_file(self, f: Path) -> None:
        name = f.name.lower()
        if name.endswith(IMAGE_EXTENSIONS):
            from PIL import Image

            with Image.open(f) as im:
                self.images.add(im, str(f))
        elif name.endswith(REPORT_ARCHIVE_SUFFIXES):
            self.reports.add_many(_iter_report_archive(f), str(f))
        elif name.endswith(".parquet"):
            for loc, kind, value in _iter_parquet_values(f, include_metadata=False):
                if kind == "text":
                    self.reports.add(value)
                else:
                    self.images.add(_open_image_bytes(value), f"{f} [{loc}]")
        elif name.endswith(".txt"):
            self.reports.add(f.read_text(encoding="utf-8", errors="replace"))

    def scan_text(self, text: str) -> tuple[str, str] | None:
        hit = self.reports.find(text)
        if hit is None:
            return None
        shown = hit if len(hit) <= 80 else hit[:77] + "..."
        return "report-text", f"matches report text of the real corpus: {shown!r}"


_INDEX_CACHE: dict[tuple, RealDataIndex] = {}
_CACHE_LOCK = threading.Lock()


def build_real_data_index(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    min_sentence_tokens: int = 6,
    ngram: int = 8,
    near_threshold: float = 0.995,
    cache: bool = True,
) -> RealDataIndex:
    """A :class:`RealDataIndex` over ``paths`` (see :meth:`RealDataIndex.add_path`). Indexes are
    cached in this process only (keyed by the resolved paths, their sizes and mtimes)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p).expanduser().resolve() for p in paths]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"real-data path {p} does not exist")
    key = (
        tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths),
        min_sentence_tokens,
        ngram,
        near_threshold,
    )
    with _CACHE_LOCK:
        if cache and key in _INDEX_CACHE:
            return _INDEX_CACHE[key]
    idx = RealDataIndex(min_sentence_tokens=min_sentence_tokens, ngram=ngram, near_threshold=near_threshold)
    for p in paths:
        idx.add_path(p)
    if cache:
        with _CACHE_LOCK:
            _INDEX_CACHE[key] = idx
    return idx


def describe_index(index: RealDataIndex) -> dict[str, Any]:
    """A JSON-able summary (counts and source paths; no hashes) for logs and provenance."""
    return {
        "reports": len(index.reports),
        "report_sentences_min_tokens": index.reports.min_sentence_tokens,
        "report_ngram": index.reports.ngram,
        "images": len(index.images),
        "near_threshold": index.images.near_threshold,
        "sources": [Path(s).name for s in index.sources],
    }
