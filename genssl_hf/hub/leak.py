"""Leak guard: refuse to publish a folder that carries report text or pixels of real data.

Two in-memory indexes are built from the real data an artifact was derived from and every file
of an outgoing folder is checked against them before anything is written or uploaded:

* **report text** (:class:`ReportIndex`): every report is cut into segments at sentence
  punctuation and line breaks, lower-cased and reduced to alphanumeric tokens. Whole segments of at
  least ``min_sentence_tokens`` tokens and every run of ``ngram`` consecutive tokens are kept as
  keyed 64-bit BLAKE2b digests (the key is drawn per process, so the index cannot be replayed
  against a dictionary and is never written anywhere). Short generic sentences ("No
  pneumothorax.") are below both limits on purpose: they are vocabulary, not a report, and the
  shipped prompt sets and phantom reports use them.
* **real pixels** (:class:`ImageIndex`): the exact SHA-256 of each image's decoded grayscale
  pixels at its stored size, and a 32 x 32 box-filtered, mean-centred, unit-norm thumbnail.
  An outgoing image is a copy when its pixels hash equal, or when its thumbnail's cosine
  similarity to a real one reaches ``near_threshold`` (0.995 by default). Measured on the shared
  data: re-encoding as JPEG q50, resizing 224 -> 64 or 128 px, and a brightness/contrast change
  all keep a copy above 0.9995, while the closest pair of *different* real images (follow-up films
  of one NIH patient) is at 0.982 and phantom images stay below 0.84. Figures and sample grids
  are also cut into their panels at uniform gutters, and each panel is compared the same way, so
  a real image pasted into a ``render_grid`` sheet or a matplotlib figure is found. Crops, flips
  and partial copies (an MAE's masked input) are not detected, which is why model folders ship
  no figures by default (see ``genssl_hf.hub.publish.select_files``).

Files looked at: PNG/JPEG/other PIL images, images and strings inside parquet shards (including
``datasets.Image`` structs), ``.npy``/``.npz`` arrays shaped like images, safetensors headers,
every text file (JSON, Markdown, YAML, vocabularies, ...; base64 ``data:image`` URIs in them are
decoded and checked as images), and printable runs inside other binary files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import struct
import tarfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "LeakError",
    "LeakFinding",
    "ReportIndex",
    "ImageIndex",
    "RealDataIndex",
    "build_real_data_index",
    "scan_folder",
    "scan_files",
    "check_folder",
    "check_text",
    "describe_index",
    "IMAGE_EXTENSIONS",
    "REPORT_ARCHIVE_SUFFIXES",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
REPORT_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar")
TEXT_EXTENSIONS = (
    ".json", ".jsonl", ".md", ".txt", ".yaml", ".yml", ".csv", ".tsv", ".py", ".cfg", ".ini", ".toml",
    ".html", ".xml", ".model", ".vocab", ".merges", ".log",
)
_THUMB = 32
_KEY = os.urandom(16)  # per-process hash key: the digests mean nothing outside this process
_TOKEN = re.compile(r"[a-z0-9]+")
# Segment boundaries: sentence punctuation, line breaks, quotes and JSON / Markdown structure.
_SEGMENT = re.compile(r"[.!?;:\n\r\t\"{}\[\]|<>]+")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t\n\r]{24,}")
_DATA_URI = re.compile(r"data:image/[a-z+]+;base64,([A-Za-z0-9+/=\s]{64,})")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


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


# ----------------------------------------------------------------------------------- text
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


# ----------------------------------------------------------------------------------- pixels
def _gray_u8(img: Any) -> np.ndarray | None:
    """A PIL image or array as a 2-D uint8 array (None when it does not look like an image)."""
    from PIL import Image

    if isinstance(img, Image.Image):
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            a = np.asarray(img, dtype=np.float64)
        else:
            return np.asarray(img.convert("L"))
    else:
        a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        if a.shape[-1] == 1 or (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            a = a[..., 0]
        else:
            return np.asarray(Image.fromarray(np.ascontiguousarray(a[..., :3]).astype(np.uint8)).convert("L"))
    elif a.ndim == 3 and a.shape[0] in (1, 3):  # channels-first
        a = a[0]
    if a.ndim != 2 or min(a.shape) < 8 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        return None
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if 0.0 <= lo and hi <= 1.0:  # [0, 1] floats
        return np.round(a * 255.0).astype(np.uint8)
    if hi > lo:
        return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return np.zeros(a.shape, np.uint8)


def _exact_key(g: np.ndarray) -> bytes:
    h = hashlib.sha256()
    h.update(struct.pack("<II", *g.shape))
    h.update(np.ascontiguousarray(g).tobytes())
    return h.digest()


def _thumb(g: np.ndarray) -> np.ndarray | None:
    from PIL import Image

    t = np.asarray(Image.fromarray(g).resize((_THUMB, _THUMB), Image.BOX), dtype=np.float32).ravel()
    t = t - t.mean()
    n = float(np.linalg.norm(t))
    return t / n if n > 1e-3 else None  # flat images carry no structure to compare


def _content_runs(uniform: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
    """Runs of non-uniform lines, split only at uniform gaps of at least ``min_gap`` lines."""
    runs: list[tuple[int, int]] = []
    start, gap = None, 0
    for i, u in enumerate(uniform.tolist()):
        if not u:
            if start is None:
                start = i
            elif gap >= min_gap:
                runs.append((start, i - gap))
                start = i
            gap = 0
        elif start is not None:
            gap += 1
    if start is not None:
        runs.append((start, len(uniform) - gap))
    return runs


def _tiles(g: np.ndarray, *, min_size: int = 16, max_tiles: int = 256, tol: int = 6) -> list[tuple[int, int, int, int]]:
    """Rectangles ``(y0, y1, x0, x1)`` of the panels of a figure or grid: the image is cut at
    uniform rows / columns (gutters, at least 2 px) recursively, and every trimmed piece of at
    least ``min_size`` px a side is a candidate (the first one is the image without its border)."""
    out: list[tuple[int, int, int, int]] = []

    def uniform(a: np.ndarray, axis: int) -> np.ndarray:
        return (a.max(axis=axis).astype(np.int16) - a.min(axis=axis).astype(np.int16)) <= tol

    def rec(y0: int, y1: int, x0: int, x1: int, depth: int) -> None:
        if len(out) >= max_tiles:
            return
        sub = g[y0:y1, x0:x1]
        rows = _content_runs(uniform(sub, 1), 2)
        if not rows:
            return
        ty0, ty1 = rows[0][0], rows[-1][1]
        cols = _content_runs(uniform(sub[ty0:ty1], 0), 2)
        if not cols:
            return
        tx0, tx1 = cols[0][0], cols[-1][1]
        if ty1 - ty0 < min_size or tx1 - tx0 < min_size:
            return
        rect = (y0 + ty0, y0 + ty1, x0 + tx0, x0 + tx1)
        if rect not in out:
            out.append(rect)
        if depth >= 4:
            return
        if len(rows) > 1:
            for a, b in rows:
                rec(y0 + a, y0 + b, x0 + tx0, x0 + tx1, depth + 1)
        elif len(cols) > 1:
            for a, b in cols:
                rec(y0 + ty0, y0 + ty1, x0 + a, x0 + b, depth + 1)

    rec(0, g.shape[0], 0, g.shape[1], 0)
    return out


class ImageIndex:
    """Exact pixel hashes and thumbnails of real images.

    Outgoing images are compared whole and panel by panel (:func:`_tiles`), so a real image
    pasted into a sample grid or a matplotlib figure is found too; real images are indexed
    whole and without their uniform border, to match panels that lost it.
    """

    def __init__(self, *, near_threshold: float = 0.995, tiles: bool = True):
        if not 0.0 < near_threshold <= 1.0:
            raise ValueError(f"near_threshold must lie in (0, 1], got {near_threshold}")
        self.near_threshold = float(near_threshold)
        self.tiles = bool(tiles)
        self._exact: dict[bytes, str] = {}
        self._names: list[str] = []
        self._rows: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, image: Any, name: str) -> bool:
        """Index one real image (PIL image or array); returns False when it is not image-like."""
        g = _gray_u8(image)
        if g is None:
            return False
        self._count += 1
        self._exact.setdefault(_exact_key(g), name)
        variants = [g]
        rects = _tiles(g, max_tiles=1)
        if rects and rects[0] != (0, g.shape[0], 0, g.shape[1]):
            y0, y1, x0, x1 = rects[0]
            variants.append(g[y0:y1, x0:x1])
        for v in variants:
            t = _thumb(v)
            if t is not None:
                self._names.append(name)
                self._rows.append(t)
        self._matrix = None
        return True

    def _mat(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = np.stack(self._rows) if self._rows else np.zeros((0, _THUMB * _THUMB), np.float32)
        return self._matrix

    def match_many(self, images: Sequence[Any]) -> list[tuple[str, str] | None]:
        """For each image: ``None`` or ``(kind, detail)`` naming the real image it copies."""
        out: list[tuple[str, str] | None] = [None] * len(images)
        thumbs, where = [], []
        for i, im in enumerate(images):
            g = _gray_u8(im)
            if g is None:
                continue
            hit = self._exact.get(_exact_key(g))
            if hit is not None:
                out[i] = ("real-pixels-exact", f"identical pixels to real image {hit}")
                continue
            pieces: list[tuple[str, np.ndarray]] = [("", g)]
            if self.tiles:
                for y0, y1, x0, x1 in _tiles(g):
                    if (y0, y1, x0, x1) != (0, g.shape[0], 0, g.shape[1]):
                        pieces.append((f" (panel at x={x0}, y={y0}, {x1 - x0}x{y1 - y0} px)", g[y0:y1, x0:x1]))
            for label, piece in pieces:
                if label:
                    hit = self._exact.get(_exact_key(piece))
                    if hit is not None:
                        out[i] = ("real-pixels-exact", f"identical pixels to real image {hit}{label}")
                        break
                t = _thumb(piece)
                if t is not None:
                    thumbs.append(t)
                    where.append((i, label))
        mat = self._mat()
        if thumbs and len(mat):
            for s0 in range(0, len(thumbs), 1024):  # bounded memory for big grids / shards
                sims = np.stack(thumbs[s0 : s0 + 1024]) @ mat.T
                best = sims.argmax(1)
                for k, (i, label) in enumerate(where[s0 : s0 + 1024]):
                    s = float(sims[k, best[k]])
                    if out[i] is None and s >= self.near_threshold:
                        out[i] = ("real-pixels-near",
                                  f"near-copy of real image {self._names[best[k]]}{label} (thumbnail cosine {s:.4f})")
        return out


# ----------------------------------------------------------------------------------- both
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

        for f in tqdm(files, desc=f"indexing real data {path.name}", unit="file", disable=len(files) < 200, leave=False):
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
    key = (tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths), min_sentence_tokens, ngram, near_threshold)
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


# ----------------------------------------------------------------------------------- scanning
def _open_image_bytes(data: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _looks_like_image(data: bytes) -> bool:
    return any(data.startswith(m) for m in _IMAGE_MAGIC)


def _iter_arrow_values(arr: Any, loc: str) -> Iterator[tuple[str, str, Any]]:
    """(location, "text" | "image", value) for every string / image-bytes cell of an arrow array."""
    import pyarrow as pa
    import pyarrow.types as pt

    t = arr.type
    if pt.is_struct(t):
        for i in range(t.num_fields):
            yield from _iter_arrow_values(arr.field(i), f"{loc}.{t.field(i).name}")
    elif pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t):
        yield from _iter_arrow_values(arr.flatten(), f"{loc}[]")
    elif pt.is_string(t) or pt.is_large_string(t):
        for i, v in enumerate(arr.to_pylist()):
            if v:
                yield f"{loc} row {i}", "text", v
    elif pt.is_binary(t) or pt.is_large_binary(t):
        for i, v in enumerate(arr.to_pylist()):
            if not v:
                continue
            if _looks_like_image(v):
                yield f"{loc} row {i}", "image", v
            else:
                yield f"{loc} row {i}", "text", v.decode("utf-8", errors="ignore")
    elif pt.is_dictionary(t):
        yield from _iter_arrow_values(arr.dictionary, f"{loc} (dictionary)")
    elif isinstance(arr, pa.ChunkedArray):
        for c in arr.chunks:
            yield from _iter_arrow_values(c, loc)


def _iter_parquet_values(path: Path, include_metadata: bool = True) -> Iterator[tuple[str, str, Any]]:
    """Values of a parquet file; the schema metadata (e.g. the datasets Features JSON) is scanned in
    outgoing files but never indexed as real report text (it is schema, shared by every dataset)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    meta = (pf.schema_arrow.metadata or {}) if include_metadata else {}
    for k, v in meta.items():
        yield f"schema metadata {k.decode(errors='ignore')}", "text", v.decode("utf-8", errors="ignore")
    offset = 0
    for batch in pf.iter_batches(batch_size=256):
        for name, col in zip(batch.schema.names, batch.columns):
            for loc, kind, value in _iter_arrow_values(col, f"column {name}"):
                m = re.search(r" row (\d+)$", loc)
                if m and "[]" not in loc:
                    loc = f"{loc[: m.start()]} row {offset + int(m.group(1))}"
                yield loc, kind, value
        offset += batch.num_rows


def _decode_text(data: bytes) -> str | None:
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

    def _text(self, rel: str, loc: str, text: str) -> None:
        hit = self.index.scan_text(text)
        if hit:
            self.findings.append(LeakFinding(rel, hit[0], hit[1], loc))
        if "data:image" in text:
            for m in _DATA_URI.finditer(text):
                try:
                    data = base64.b64decode("".join(m.group(1).split()), validate=False)
                except (binascii.Error, ValueError):
                    continue
                if _looks_like_image(data):
                    self._image_bytes(rel, f"{loc} data URI".strip(), data)

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
        else:
            data = path.read_bytes()
            text = _decode_text(data)
            if text is not None:
                self._text(rel, "", text)
            else:
                for m in _PRINTABLE_RUN.finditer(data):
                    self._text(rel, f"byte {m.start()}", m.group().decode("ascii", errors="ignore"))

    def _numpy(self, rel: str, path: Path) -> None:
        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as e:
            self.findings.append(LeakFinding(rel, "unreadable-array", f"cannot check a pickled array ({e})"))
            return
        arrays = dict(loaded.items()) if hasattr(loaded, "files") else {"": loaded}
        for key, a in arrays.items():
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

