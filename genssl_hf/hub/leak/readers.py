"""File readers shared by indexing and scanning: image bytes and the values inside parquet shards."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Iterator

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


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
