"""The report-text index: keyed digests of report sentences and long n-grams (no text is kept)."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Iterator, Sequence

REPORT_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar")
_KEY = os.urandom(16)  # per-process hash key: the digests mean nothing outside this process
_TOKEN = re.compile(r"[a-z0-9]+")
# Segment boundaries: sentence punctuation, line breaks, quotes and JSON / Markdown structure.
_SEGMENT = re.compile(r"[.!?;:\n\r\t\"{}\[\]|<>]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _digest(tokens: Sequence[str]) -> int:
    h = hashlib.blake2b(" ".join(tokens).encode("utf-8"), digest_size=8, key=_KEY)
    return int.from_bytes(h.digest(), "little")


class ReportIndex:
    """Hashed sentences and long n-grams of a report corpus (nothing of the text is kept)."""

    def __init__(self, *, min_sentence_tokens: int = 6, ngram: int = 8):
        if min_sentence_tokens < 1 or ngram < 2:
            raise ValueError(f"min_sentence_tokens must be >= 1 and ngram >= 2, got {min_sentence_tokens}, {ngram}")
        self.min_sentence_tokens = int(min_sentence_tokens)
        self.ngram = int(ngram)
        self._sentences: set[int] = set()
        self._ngrams: set[int] = set()
        self.num_reports = 0
        self.sources: list[str] = []

    def __len__(self) -> int:
        return self.num_reports

    def add(self, text: str) -> None:
        """Index one report."""
        if not text:
            return
        self.num_reports += 1
        for seg in _SEGMENT.split(text):
            toks = _tokens(seg)
            if len(toks) >= self.min_sentence_tokens:
                self._sentences.add(_digest(toks))
        toks = _tokens(text)
        n = self.ngram
        for i in range(len(toks) - n + 1):
            self._ngrams.add(_digest(toks[i : i + n]))

    def add_many(self, texts: Iterable[str], source: str | None = None) -> "ReportIndex":
        for t in texts:
            self.add(t)
        if source:
            self.sources.append(source)
        return self

    def find(self, text: str) -> str | None:
        """The first span of ``text`` that is a report sentence or report n-gram, else ``None``."""
        if not self.num_reports or not text:
            return None
        for seg in _SEGMENT.split(text):
            toks = _tokens(seg)
            if len(toks) >= self.min_sentence_tokens and _digest(toks) in self._sentences:
                return " ".join(toks)
        toks = _tokens(text)
        n = self.ngram
        for i in range(len(toks) - n + 1):
            if _digest(toks[i : i + n]) in self._ngrams:
                return " ".join(toks[i : i + n])
        return None


def _iter_report_archive(path: Path) -> Iterator[str]:
    """Every report of an IU-style XML archive (``NLMCXR_reports.tgz``) as one text: all of its
    sections (comparison, indication, findings, impression), one per line."""
    try:
        from genssl_hf.data.reports import iter_iu_reports
    except ImportError:  # the data layer's reader is optional here
        iter_iu_reports = None
    if iter_iu_reports is not None:
        for r in iter_iu_reports(path):
            text = "\n".join(r[k] for k in ("comparison", "indication", "findings", "impression") if r.get(k))
            if text:
                yield text
        return
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if not (member.isfile() and member.name.lower().endswith(".xml")):
                continue
            root = ET.fromstring(tar.extractfile(member).read())
            parts = [" ".join("".join(node.itertext()).split()) for node in root.iter("AbstractText")]
            text = "\n".join(p for p in parts if p)
            if text:
                yield text
