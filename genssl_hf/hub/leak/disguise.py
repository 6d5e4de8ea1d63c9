"""Seeing through disguises: what the scanner unwraps before it compares.

* **Compressed files and archives** (gzip, bzip2, xz, zip, tar, by content, not by name): each
  member is scanned like a file of its own name, archives inside archives too (3 levels). An
  archive that cannot be read, or that expands beyond :data:`MAX_EXPANDED_BYTES` (a zip bomb), is
  refused rather than let through unchecked.
* **Data embedded in text**: ``data:<type>;base64,`` URIs of any type and bare base64 runs of at
  least :data:`MIN_BASE64_CHARS` characters (a PNG or a gzip inside a JSON string) are decoded and
  scanned by what they hold (image, archive or text).
* **Mirrored or rotated images**: :func:`dihedral_variants` gives the 8 flips / 90-degree rotations
  of an outgoing image; each is compared with the index (see :mod:`.image_index`).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import io
import lzma
import re
import tarfile
import zipfile
from typing import Iterator

import numpy as np

MAX_EXPANDED_BYTES = 1 << 30  # per outgoing file, all members together
MAX_DEPTH = 3
MIN_BASE64_CHARS = 64
# line-wrapped base64 (MIME, PEM) breaks lines only between 4-character groups
_BASE64_RUN = re.compile(r"(?:data:[\w.+-]+/[\w.+-]+;base64,)?((?:[A-Za-z0-9+/]{4}(?:\r?\n)?){16,}[A-Za-z0-9+/=]{0,4})")

_COMPRESSED = (
    (b"\x1f\x8b", "gzip", gzip.decompress),
    (b"BZh", "bzip2", bz2.decompress),
    (b"\xfd7zXZ\x00", "xz", lzma.decompress),
)


class ArchiveError(ValueError):
    """An archive that cannot be unpacked (corrupt, encrypted, or too big) and so cannot be cleared."""


def archive_kind(data: bytes) -> str | None:
    """``gzip`` / ``bzip2`` / ``xz`` / ``zip`` / ``tar`` when ``data`` is one, by its magic bytes."""
    for magic, kind, _ in _COMPRESSED:
        if data.startswith(magic):
            return kind
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "zip"
    if len(data) > 262 and data[257:262] == b"ustar":
        return "tar"
    return None


def archive_members(name: str, data: bytes, budget: list[int] | None = None) -> Iterator[tuple[str, bytes]]:
    """``(member name, bytes)`` of a compressed file or archive (one member for a plain gzip: its
    name without the suffix). Raises :class:`ArchiveError` when it cannot be read whole."""
    budget = budget if budget is not None else [MAX_EXPANDED_BYTES]

    def take(n: int) -> None:
        budget[0] -= n
        if budget[0] < 0:
            raise ArchiveError(f"expands beyond {MAX_EXPANDED_BYTES >> 20} MiB (a zip bomb?)")

    kind = archive_kind(data)
    try:
        for _magic, k, decompress in _COMPRESSED:
            if kind == k:
                inner = decompress(data)
                take(len(inner))
                stem = name.rsplit(".", 1)[0] if "." in name else name
                yield stem, inner
                return
        if kind == "zip":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    take(info.file_size)
                    yield info.filename, zf.read(info)
        elif kind == "tar":
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                for member in tf.getmembers():
                    if member.isfile():
                        take(member.size)
                        fh = tf.extractfile(member)
                        yield member.name, fh.read() if fh is not None else b""
    except ArchiveError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, lzma.LZMAError, RuntimeError, ValueError) as e:
        raise ArchiveError(f"cannot unpack this {kind} ({type(e).__name__}: {e})") from None


def base64_payloads(text: str) -> Iterator[tuple[int, bytes]]:
    """``(offset, decoded bytes)`` of each data URI or bare base64 run in ``text`` that decodes."""
    if len(text) < MIN_BASE64_CHARS:
        return
    for m in _BASE64_RUN.finditer(text):
        run = "".join(m.group(1).split())
        if len(run) < MIN_BASE64_CHARS:
            continue
        run = run[: len(run) - len(run) % 4]
        try:
            yield m.start(), base64.b64decode(run, validate=True)
        except (binascii.Error, ValueError):
            continue


def dihedral_variants(g: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """The 7 flips / 90-degree rotations of a 2-D image other than itself, named."""
    yield "mirrored left-right", g[:, ::-1]
    yield "mirrored top-bottom", g[::-1, :]
    yield "rotated 180", g[::-1, ::-1]
    yield "rotated 270", np.rot90(g, 1)  # rotating the copy by 90 undoes a 270-degree rotation
    yield "rotated 90", np.rot90(g, 3)
    yield "transposed", g.T
    yield "anti-transposed", np.rot90(g, 1)[::-1, :]
