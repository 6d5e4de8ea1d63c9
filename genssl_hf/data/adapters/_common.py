"""Shared machinery of the dataset adapters: lazy CSV reading, the validating pre-pass and the
streaming build of a ``datasets.Dataset``.

How an adapter builds its dataset
---------------------------------
1. **Pre-pass** (cheap, streaming): every source row is parsed (unknown label values raise
   :class:`CXRDataError` at once, naming the file, line, column and value) and every referenced
   image is checked: it must exist and, with ``verify="header"`` (default), its header must parse
   and a JPEG/PNG must end with its end marker (catches truncated downloads). Unusable files raise
   one :class:`CXRDataError` listing them, or under ``on_error="skip"`` are left out and recorded.
   Nothing but a set of skipped row positions is kept in memory.
2. **Build**: the source is re-read lazily and written in Arrow record batches (columns built with
   pyarrow, about 10x faster than ``Dataset.from_generator``'s per-example casting) to
   ``<cache_dir or HF_DATASETS_CACHE>/genssl_hf/<adapter>/<fingerprint>/data.arrow``, which the
   returned ``Dataset`` memory-maps. 8-bit images are stored as path references (decoded lazily when accessed);
   16-bit PNG, TIFF and DICOM are windowed by :func:`~genssl_hf.data.io.read_cxr` and stored as
   8-bit PNG bytes (``datasets.Image(mode="L")`` would clip them).
3. **Cache**: the file appears only when complete (temporary name, then rename); the fingerprint covers the adapter, its
   options and each source file's size and
   modification time, so an unchanged call reloads from the cache and a changed CSV rebuilds.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import datasets
from datasets.utils.tqdm import tqdm

from ..image_files import CXRReadError, check_image_file
from ..io import SkippedFile, cxr_image_value, read_cxr, record_skip

logger = logging.getLogger("genssl_hf.data.adapters")

ADAPTER_VERSION = "1"
Verify = Literal["header", "exists", "full"]
_MAX_LISTED = 10
_SIDECAR = "genssl_skipped.json"


class CXRDataError(ValueError):
    """A source file (CSV, list, split file) is inconsistent: unknown label value, missing column,
    a row pointing to a missing file... The message names the file, the row and the value."""


@dataclasses.dataclass
class Row:
    """One image of a source, as parsed by an adapter."""

    where: str  # "<csv path> line <n>", used in errors and skip records
    image: str  # absolute path of the image file
    fields: dict[str, Any]  # every other column of the canonical record


def open_text(path: str | os.PathLike):
    """Open a text file for streaming, transparently gunzipping ``*.gz`` (MIMIC ships .csv.gz)."""
    path = os.fspath(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def iter_text_lines(path: str | os.PathLike, what: str = "text file") -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` of a UTF-8 text file (1-based); a binary file raises
    :class:`CXRDataError` naming it instead of a bare ``UnicodeDecodeError``."""
    try:
        with open_text(path) as fh:
            yield from enumerate(fh, start=1)
    except UnicodeDecodeError as exc:
        raise CXRDataError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); is it the right file?"
        ) from None


def iter_csv(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Stream ``(line_number, row)`` from a CSV, checking the header has the ``required`` columns.

    Line numbers are 1-based physical lines (the header is line 1), as an editor shows them.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CXRDataError(f"CSV file {path} does not exist")
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames
            if not header:
                raise CXRDataError(f"CSV {path} is empty (no header row)")
            missing = [c for c in required if c not in header]
            if missing:
                raise CXRDataError(f"CSV {path} lacks column(s) {missing}; its columns are {list(header)}")
            for row in reader:
                for col in required:
                    if row.get(col) is None:
                        raise CXRDataError(
                            f"CSV {path} line {reader.line_num}: too few fields (no value for column {col!r})"
                        )
                yield reader.line_num, row
        except UnicodeDecodeError as exc:  # a binary file (an image, a zip...) given as the CSV
            raise CXRDataError(
                f"CSV {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); is it really a CSV file?"
            ) from None
        except (csv.Error, EOFError, OSError) as exc:  # NUL bytes, broken gzip
            raise CXRDataError(f"CSV {path} line {reader.line_num}: unreadable ({type(exc).__name__}: {exc})") from None


def find_file(root: Path, *names: str) -> Path:
    """The first of ``names`` (also tried with ``.gz``) that exists under ``root``."""
    for name in names:
        for cand in (root / name, root / (name + ".gz")):
            if cand.is_file():
                return cand
    raise CXRDataError(f"none of {list(names)} (or .gz) found in {root}")


def check_root(root: str | os.PathLike, what: str) -> Path:
    root = Path(os.fspath(root)).expanduser()
    if not root.is_dir():
        raise CXRDataError(f"{what} root folder {root} does not exist or is not a folder")
    return root.resolve()


def path_inside_root(root: str | os.PathLike, rel: str, where: str, allow_outside: bool = False) -> str:
    """``root/rel`` normalised (``..`` resolved), refused with a :class:`CXRDataError` naming the
    row when it lies outside ``root`` (a ``../`` or absolute path in a CSV), unless
    ``allow_outside`` (the caller's explicit ``allow_outside_root=True``)."""
    root_s = os.path.normpath(os.fspath(root))
    path = os.path.normpath(os.path.join(root_s, rel))
    if not allow_outside and path != root_s and not path.startswith(root_s.rstrip(os.sep) + os.sep):
        raise CXRDataError(
            f"{where}: image path {rel!r} resolves to {path}, outside the image root {root_s}; "
            "pass allow_outside_root=True to read images outside it"
        )
    return path


def unknown_value(path, line, column, value, known) -> CXRDataError:
    known = sorted(known, key=str)
    return CXRDataError(f"{path} line {line}, column {column!r}: unknown label value {value!r} (known: {known})")


def parse_int(value: str | None) -> int | None:
    """Leading digits of an age-like field ("058Y" -> 58, "57" -> 57, "" -> None)."""
    if value is None:
        return None
    digits = ""
    for ch in value.strip():
        if ch.isdigit():
            digits += ch
        elif digits:
            break
    return int(digits) if digits else None


def _file_state(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _fingerprint(name: str, sources: list[Path], options: dict, skip: set[str]) -> str:
    payload = {
        "adapter": name,
        "version": ADAPTER_VERSION,
        "sources": [_file_state(Path(p)) for p in sources],
        "options": options,
        "skip": sorted(skip),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _check_verify(verify: str) -> None:
    if verify not in ("header", "exists", "full"):
        raise ValueError(f"verify must be 'header', 'exists' or 'full', got {verify!r}")


def build_image_dataset(
    *,
    name: str,
    rows: Callable[[], Iterator[Row]],
    features: datasets.Features,
    sources: list[Path],
    options: dict,
    on_error: str = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Pre-pass (validate) then stream ``rows()`` into a cached ``datasets.Dataset``.

    ``rows`` is a zero-argument callable returning a fresh iterator (it is called twice).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    _check_verify(verify)
    records: list = skipped if skipped is not None else []
    n_before = len(records)

    # 1. pre-pass
    skip_where = _prepass(name, rows, sources, options, on_error, verify, records)

    # 2. build (streaming); conversion failures of 16-bit/DICOM files surface here
    fingerprint = _fingerprint(name, sources, {**options, "verify": verify, "on_error": on_error}, skip_where)
    late: list = []

    def generate():
        for row in rows():
            if row.where in skip_where:
                continue
            value = cxr_image_value(row.image, on_error=on_error, skipped=late, where=row.where)
            if value is not None:
                yield {"image": value, **row.fields}

    ds, built, folder = _build_cached(name, generate, features, cache_dir, fingerprint, sidecar=lambda: late)

    # 3. conversion skips are remembered next to the cache, so a cached reload reports them too
    if built:
        records.extend(late)
    elif (folder / _SIDECAR).is_file():
        for item in json.loads((folder / _SIDECAR).read_text()):
            records.append(SkippedFile(**item))
            logger.warning("skipping %s (recorded when this cached dataset was built)", records[-1])
    n_skipped = len(records) - n_before
    if n_skipped and skipped is None:
        logger.warning(
            "%s: %d file(s) skipped under on_error='skip'; pass skipped=[] to receive the list", name, n_skipped
        )
    return ds


def _prepass(
    name: str,
    rows: Callable[[], Iterator[Row]],
    sources: list[Path],
    options: dict,
    on_error: str,
    verify: str,
    records: list,
) -> set[str]:
    """Check every row's image (``verify``); returns the ``where`` of the rows skipped under
    ``on_error="skip"`` (recorded in ``records``), or raises one :class:`CXRDataError` listing the
    unusable files, or saying that nothing is left."""
    skip_where: set[str] = set()
    problems: list[str] = []
    n_problems = n_rows = 0
    for row in tqdm(rows(), desc=f"checking {name} files", unit=" rows", mininterval=1):
        n_rows += 1
        try:
            if verify == "exists":
                if not os.path.isfile(row.image):
                    raise CXRReadError(row.image, "file does not exist")
            elif verify == "header":
                check_image_file(row.image)
            else:
                read_cxr(row.image)
        except CXRReadError as exc:
            if on_error == "skip":
                record_skip(records, row.image, exc.reason, row.where)
                skip_where.add(row.where)
            else:
                n_problems += 1
                if len(problems) < _MAX_LISTED:
                    problems.append(f"  {row.where}: {row.image}: {exc.reason}")
    if n_problems:
        more = f"\n  ... and {n_problems - len(problems)} more" if n_problems > len(problems) else ""
        raise CXRDataError(
            f"{name}: {n_problems} of {n_rows} rows reference missing or unreadable image files "
            "(to leave them out and record them: --on_error skip on the pretraining commands, on_error='skip' "
            "in Python; or fix the files):\n" + "\n".join(problems) + more
        )
    if n_rows - len(skip_where) == 0:
        raise CXRDataError(f"{name}: no images selected from {[str(s) for s in sources]} with options {options}")
    return skip_where


def build_text_dataset(
    *,
    name: str,
    generate: Callable[[], Iterator[dict]],
    features: datasets.Features,
    fingerprint_parts: dict,
    cache_dir=None,
) -> datasets.Dataset:
    blob = json.dumps({"adapter": name, "version": ADAPTER_VERSION, **fingerprint_parts}, sort_keys=True, default=str)
    ds, _, _ = _build_cached(name, generate, features, cache_dir, hashlib.sha256(blob.encode()).hexdigest()[:32])
    return ds


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """Where adapters keep their Arrow files: ``<cache_dir or HF_DATASETS_CACHE>/genssl_hf``."""
    return Path(os.fspath(cache_dir) if cache_dir is not None else datasets.config.HF_DATASETS_CACHE) / "genssl_hf"


def _build_cached(name, generate, features, cache_dir, fingerprint, sidecar=None, batch_size: int = 2000):
    """Write ``generate()`` to ``<cache>/<name>/<fingerprint>/data.arrow`` in Arrow record batches
    (columns built straight with pyarrow: no per-example Python casting) and memory-map it.

    Returns ``(dataset, built, folder)``; ``built`` is False when the file was already there. The
    file appears only when complete (temporary name, then rename).
    """
    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils.tqdm import tqdm as hf_tqdm

    from ...utils import write_json

    folder = cache_root(cache_dir) / name.replace(":", "_").replace("/", "_") / fingerprint
    path = folder / "data.arrow"
    info = datasets.DatasetInfo(features=features)
    if path.is_file():
        return datasets.Dataset.from_file(str(path), info=info), False, folder
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".data.arrow.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    schema = features.arrow_schema
    columns = list(features)
    try:
        with ArrowWriter(features=features, path=str(tmp)) as writer:
            batch: list[dict] = []
            for record in hf_tqdm(generate(), desc=f"writing {name}", unit=" rows", mininterval=1):
                batch.append(record)
                if len(batch) >= batch_size:
                    writer.write_table(pa.Table.from_pydict({c: [r[c] for r in batch] for c in columns}, schema=schema))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pydict({c: [r[c] for r in batch] for c in columns}, schema=schema))
            writer.finalize()
        if sidecar is not None:
            write_json(folder / _SIDECAR, [dataclasses.asdict(s) for s in sidecar()])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return datasets.Dataset.from_file(str(path), info=info), True, folder


def embed_images(ds: datasets.Dataset, *, num_proc: int | None = None) -> datasets.Dataset:
    """A copy of ``ds`` whose path-referenced images carry their file bytes, so it no longer
    depends on the source folder (for ``to_parquet`` / ``save_to_disk``; ``push_to_hub`` embeds by
    itself). Only for data you may redistribute: real images of licensed datasets stay private.
    """
    from datasets.table import embed_table_storage

    fmt = ds.format
    out = ds.with_format("arrow").map(embed_table_storage, batched=True, num_proc=num_proc, desc="embedding images")
    return out.with_format(
        fmt["type"], columns=fmt["columns"], output_all_columns=fmt["output_all_columns"], **fmt["format_kwargs"]
    )
