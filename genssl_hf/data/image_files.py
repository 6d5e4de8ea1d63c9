"""Image files on disk: which kind a file is (extension, magic bytes, PNG bit depth) and a cheap
structural check that it is intact, without decoding its pixels.

A missing, empty, truncated or unreadable file raises :class:`CXRReadError`, whose message and
``path`` attribute name the file. The readers in :mod:`genssl_hf.data.io` (which re-exports these
names) decode what passes.
"""

from __future__ import annotations

import os
import struct

from PIL import Image, UnidentifiedImageError

DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp") + DICOM_EXTENSIONS

_NON_DICOM_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


class CXRReadError(OSError):
    """An image file could not be read; ``path`` names the file, the message says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read chest X-ray image {self.path}: {reason}")

    def __reduce__(self):  # keep it picklable across processes
        return (type(self), (self.path, self.reason))


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a DICOM file: a DICOM extension, or (for other names, e.g. MIMIC's extension-less
    files) the ``DICM`` magic at byte 128."""
    path = str(path)
    lower = path.lower()
    if lower.endswith(DICOM_EXTENSIONS):
        return True
    if lower.endswith(_NON_DICOM_EXTENSIONS):  # no need to open the file
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def png_bit_depth(path: str | os.PathLike) -> int | None:
    """Bit depth per sample from a PNG's IHDR chunk (cheap: reads 26 bytes); None if not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def needs_conversion(path: str | os.PathLike) -> bool:
    """Whether ``datasets.Image(mode="L")`` cannot decode this file faithfully by itself.

    True for DICOM, TIFF and 16-bit PNG (PIL's I;16 -> L conversion clips at 255); False for
    8-bit PNG, JPEG and the other 8-bit formats, which are stored as lazy path references.
    """
    lower = str(path).lower()
    if lower.endswith((".tif", ".tiff")) or is_dicom(path):
        return True
    if lower.endswith(".png"):
        try:
            depth = png_bit_depth(path)
        except OSError:
            return False  # the structural check reports it
        return depth is not None and depth > 8
    return False


def check_image_file(path: str | os.PathLike) -> None:
    """Cheap structural check (no pixel decoding, about 20 us for a JPEG/PNG): the file exists and
    is not empty; a JPEG starts with SOI and still ends with its EOI marker, a PNG has its IHDR and
    IEND chunks (a truncated download fails here); a DICOM header parses; other formats are
    identified by PIL.

    Raises :class:`CXRReadError` naming the file. A full decode (:func:`read_cxr`) is the
    thorough check.
    """
    path = str(path)
    if os.path.isdir(path):
        raise CXRReadError(path, "is a folder, not an image file")
    try:
        size = os.path.getsize(path)
    except OSError:
        raise CXRReadError(path, "file does not exist") from None
    if size == 0:
        raise CXRReadError(path, "file is empty")
    with open(path, "rb") as fh:
        head = fh.read(132)
        fh.seek(max(0, size - 4096))
        tail = fh.read()
    if head.startswith(_JPEG_SOI):
        if not _jpeg_has_end(tail):
            raise CXRReadError(path, "truncated JPEG (no end-of-image marker)")
        _open_header(path)  # the frame size, for the decompression-bomb limit
        return
    if head.startswith(_PNG_SIGNATURE):
        if head[12:16] != b"IHDR":
            raise CXRReadError(path, "corrupt PNG (no IHDR chunk)")
        if b"IEND" not in tail[-64:]:
            raise CXRReadError(path, "truncated PNG (no IEND chunk)")
        width, height = struct.unpack(">II", head[16:24])
        _check_pixel_count(path, width, height)
        return
    if head[128:132] == b"DICM" or path.lower().endswith(DICOM_EXTENSIONS):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for broken headers
            raise CXRReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
        if "Rows" not in ds or "Columns" not in ds:
            raise CXRReadError(path, "DICOM file has no image (no Rows/Columns)")
        return
    _open_header(path)


def _check_pixel_count(path: str, width: int, height: int) -> None:
    """PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, doubled as PIL's own error
    threshold), as a :class:`CXRReadError` that ``on_error="skip"`` can skip."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > 2 * limit:
        raise CXRReadError(
            path,
            f"decompression bomb: {width}x{height} = {width * height} pixels exceeds the "
            f"limit of {2 * limit} (PIL.Image.MAX_IMAGE_PIXELS x 2; raise it for such files)",
        )


def _open_header(path: str) -> None:
    """Parse the header with PIL (no pixel decoding): unreadable files and decompression bombs
    become :class:`CXRReadError`."""
    try:
        with Image.open(path) as im:
            _check_pixel_count(path, *im.size)
    except CXRReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise CXRReadError(path, f"decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise CXRReadError(path, f"not a readable image ({type(exc).__name__}: {exc})") from exc


def _jpeg_has_end(tail: bytes) -> bool:
    # Padding after EOI (zeros, newlines) is common and harmless; other trailing data is rare,
    # so also accept an EOI marker anywhere in the last 4 KiB.
    return tail.rstrip(b"\x00\r\n \xff").endswith(b"\xff\xd9") or _JPEG_EOI in tail


__all__ = [
    "CXRReadError",
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "check_image_file",
    "is_dicom",
    "needs_conversion",
    "png_bit_depth",
]
