"""Scanning outgoing files against a :class:`~genssl_hf.hub.leak.index.RealDataIndex`."""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .disguise import MAX_DEPTH, ArchiveError, archive_kind, archive_members, base64_payloads
from .image_index import IMAGE_EXTENSIONS
from .index import RealDataIndex
from .readers import _iter_parquet_values, _looks_like_image, _open_image_bytes

TEXT_EXTENSIONS = (
    ".json",
    ".jsonl",
    ".md",
    ".txt",
    ".yaml",
    ".yml",
    ".csv",
    ".tsv",
    ".py",
    ".cfg",
    ".ini",
    ".toml",
    ".html",
    ".xml",
    ".model",
    ".vocab",
    ".merges",
    ".log",
)
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t\n\r]{24,}")


class LeakError(RuntimeError):
    """An outgoing folder carries report text or real pixels; ``findings`` lists each hit."""

    def __init__(self, findings: Sequence["LeakFinding"], folder: str | os.PathLike | None = None):
        self.findings = list(findings)
        where = f" in {folder}" if folder is not None else ""
        lines = [f"refusing to publish: {len(self.findings)} leak(s) of real data{where}:"]
        lines += [f"  - {f}" for f in self.findings[:20]]
        if len(self.findings) > 20:
            lines.append(f"  ... and {len(self.findings) - 20} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class LeakFinding:
    """One hit: ``file`` (path relative to the scanned folder), ``location`` inside it (row and
    column of a parquet shard, array name...), ``kind`` (``report-text`` / ``real-pixels-exact`` /
    ``real-pixels-near``) and ``detail`` (what matched; report text is shown truncated)."""

    file: str
    kind: str
    detail: str
    location: str = ""

    def __str__(self) -> str:
        loc = f" [{self.location}]" if self.location else ""
        return f"{self.file}{loc}: {self.kind}: {self.detail}"


def decode_text(data: bytes) -> str | None:
    """``data`` as UTF-8 text, or None for binary data (a NUL byte in its first 8 KiB, or not UTF-8)."""
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _Scanner:
    def __init__(self, index: RealDataIndex, root: Path):
        self.index = index
        self.root = root
        self.findings: list[LeakFinding] = []
        self._pending: list[tuple[str, str, Any]] = []  # (file, location, image) waiting for a batch

    def _text(self, rel: str, loc: str, text: str, depth: int = 0) -> None:
        hit = self.index.scan_text(text)
        if hit:
            self.findings.append(LeakFinding(rel, hit[0], hit[1], loc))
        if depth < MAX_DEPTH:  # base64 / data URIs: decoded and scanned by what they hold
            for offset, data in base64_payloads(text):
                where = f"{loc} base64 at char {offset}".strip()
                if _looks_like_image(data) or archive_kind(data):
                    self._bytes(rel, where, "", data, depth + 1)
                else:
                    inner = decode_text(data)
                    if inner is not None:
                        self._text(rel, where, inner, depth + 1)

    def _bytes(self, rel: str, loc: str, name: str, data: bytes, depth: int) -> None:
        """A file's content found inside an archive or a base64 string: scanned by what it is."""
        lower = name.lower()
        if archive_kind(data):
            if depth >= MAX_DEPTH:
                self.findings.append(LeakFinding(rel, "unreadable-archive", "archives nested too deep to check", loc))
                return
            try:
                for member, inner in archive_members(name, data):
                    self._bytes(rel, f"{loc} > {member}".strip(" >"), member, inner, depth + 1)
            except ArchiveError as e:
                self.findings.append(LeakFinding(rel, "unreadable-archive", f"cannot check its content ({e})", loc))
        elif lower.endswith(IMAGE_EXTENSIONS) or _looks_like_image(data):
            self._image_bytes(rel, loc, data)
        elif lower.endswith((".npy", ".npz", ".parquet")):
            import tempfile

            with tempfile.TemporaryDirectory() as tmpd:  # the readers take paths
                path = Path(tmpd) / Path(lower).name
                path.write_bytes(data)
                if lower.endswith(".parquet"):
                    for ploc, kind, value in _iter_parquet_values(path):
                        (self._text if kind == "text" else self._image_bytes)(rel, f"{loc} {ploc}", value)
                else:
                    self._numpy(rel, path, loc)
        else:
            text = decode_text(data)
            if text is not None:
                self._text(rel, loc, text, depth)
            else:
                for m in _PRINTABLE_RUN.finditer(data):
                    self._text(rel, f"{loc} byte {m.start()}".strip(), m.group().decode("ascii", errors="ignore"))

    def _image(self, rel: str, loc: str, image: Any) -> None:
        if not len(self.index.images):
            return
        self._pending.append((rel, loc, image))
        if len(self._pending) >= 256:
            self.flush()

    def _image_bytes(self, rel: str, loc: str, data: bytes) -> None:
        if not len(self.index.images):
            return
        try:
            im = _open_image_bytes(data)
        except Exception as e:  # an undecodable image cannot be cleared
            self.findings.append(LeakFinding(rel, "unreadable-image", f"cannot decode image to check it ({e})", loc))
            return
        self._image(rel, loc, im)

    def flush(self) -> None:
        if not self._pending:
            return
        hits = self.index.images.match_many([p[2] for p in self._pending])
        for (rel, loc, _), hit in zip(self._pending, hits):
            if hit:
                self.findings.append(LeakFinding(rel, hit[0], hit[1], loc))
        self._pending.clear()

    def file(self, path: Path) -> None:
        rel = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        name = path.name.lower()
        if name.endswith(IMAGE_EXTENSIONS):
            self._image_bytes(rel, "", path.read_bytes())
        elif name.endswith(".parquet"):
            for loc, kind, value in _iter_parquet_values(path):
                if kind == "text":
                    self._text(rel, loc, value)
                else:
                    self._image_bytes(rel, loc, value)
        elif name.endswith(".npy") or name.endswith(".npz"):
            self._numpy(rel, path)
        elif name.endswith(".safetensors"):
            with open(path, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                header = fh.read(min(n, 100 << 20)).decode("utf-8", errors="ignore")
            self._text(rel, "header", header)  # tensor data is numbers, not text or images
        else:  # text, compressed files and archives (by content), other binaries
            self._bytes(rel, "", path.name, path.read_bytes(), 0)

    def _numpy(self, rel: str, path: Path, where: str = "") -> None:
        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as e:
            self.findings.append(LeakFinding(rel, "unreadable-array", f"cannot check a pickled array ({e})"))
            return
        arrays = dict(loaded.items()) if hasattr(loaded, "files") else {"": loaded}
        for name, a in arrays.items():
            key = f"{where} {name}".strip()
            if a.dtype.kind in "US":
                for i, s in enumerate(a.ravel().tolist()):
                    self._text(rel, f"{key} item {i}".strip(), str(s))
            elif a.ndim == 2 or (a.ndim == 3 and (a.shape[-1] in (1, 3, 4) or a.shape[0] in (1, 3))):
                self._image(rel, key, a)
            elif a.ndim in (3, 4):  # a stack of images
                for i in range(min(a.shape[0], 100_000)):
                    self._image(rel, f"{key} item {i}".strip(), a[i])


def scan_files(root: str | os.PathLike, files: Iterable[str | os.PathLike], index: RealDataIndex) -> list[LeakFinding]:
    """Check ``files`` (paths, absolute or relative to ``root``) and return every finding."""
    root = Path(root)
    sc = _Scanner(index, root)
    for f in files:
        p = Path(f)
        sc.file(p if p.is_absolute() else root / p)
    sc.flush()
    return sc.findings


def scan_folder(folder: str | os.PathLike, index: RealDataIndex) -> list[LeakFinding]:
    """Every finding in every file under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    return scan_files(folder, sorted(p for p in folder.rglob("*") if p.is_file()), index)


def check_folder(folder: str | os.PathLike, index: RealDataIndex) -> None:
    """Raise :class:`LeakError` naming each file that carries report text or real pixels."""
    findings = scan_folder(folder, index)
    if findings:
        raise LeakError(findings, folder)


def check_text(text: str, index: RealDataIndex, *, name: str = "<text>") -> None:
    """Raise :class:`LeakError` when ``text`` (e.g. a rendered card) carries report text."""
    sc = _Scanner(index, Path("."))
    sc._text(name, "", text)
    sc.flush()
    if sc.findings:
        raise LeakError(sc.findings)
