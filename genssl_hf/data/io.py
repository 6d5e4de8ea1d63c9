"""Chest X-ray image I/O: every supported file becomes ONE documented grayscale representation.

The representation
------------------
:func:`read_cxr` returns a ``numpy.float32`` array of shape ``(H, W)`` with values in ``[0, 1]``
and MONOCHROME2 polarity: **bright = dense / attenuating** (bone and the heart are bright, air in
the lungs is dark), as a radiologist views the image. How each source gets there:

===========================  =================================================================
source                       conversion
===========================  =================================================================
8-bit PNG / JPEG / BMP (L)   value / 255
RGB, RGBA, LA, P, 1, CMYK    ITU-R 601 luma (what ``PIL.Image.convert("L")`` computes, kept in
                             float), alpha ignored, then / 255
16-bit PNG / TIFF (I;16*)    value / 65535 (full 16-bit range, nothing stretched), or the
                             image's own min..max with ``normalize="minmax"``
32-bit int (mode I)          / 65535 when all values lie in [0, 65535] (how 16-bit data is
                             often opened), else the image's own min..max
float (mode F)               kept when all values lie in [0, 1], else the image's own min..max
DICOM (pydicom)              Modality LUT / Rescale Slope+Intercept (``apply_modality_lut``),
                             then the VOI LUT Sequence or Window Center/Width
                             (``apply_voi_lut``, first view unless ``voi_index``), scaled by that
                             transform's output range; without any VOI the image's own
                             min..max; MONOCHROME1 is inverted last so bright = dense.
===========================  =================================================================

``window=(center, width)`` overrides the stored VOI for DICOM (applied to modality values) and
windows 16-bit / integer data directly, with the DICOM LINEAR function (PS3.3 C.11.2.1.2.1).

To store an image in a ``datasets.Image(mode="L")`` column use :func:`to_pil` / :func:`encode_png`
(8-bit by default). Note that ``datasets.Image(mode="L")`` decoding a *raw* 16-bit PNG would clip
every value above 255 to white, so 16-bit and DICOM sources must go through these functions first;
the adapters in :mod:`genssl_hf.data.adapters` do that automatically.

Errors
------
A missing, corrupt, truncated or unreadable file raises :class:`CXRReadError`, whose message and
``path`` attribute name the file. With ``on_error="skip"`` the reader returns ``None`` instead and
appends a :class:`SkippedFile` to the ``skipped`` list you pass (and logs a warning): a file is never
dropped silently.

File kinds and the structural check that runs before decoding (:func:`check_image_file`,
:func:`needs_conversion`, :class:`CXRReadError`) live in :mod:`genssl_hf.data.image_files`; they
are part of this module's API too.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import struct
from typing import Literal, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .image_files import CXRReadError, check_image_file, is_dicom, needs_conversion

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

# ITU-R BT.601 luma weights, as PIL uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file left out under ``on_error="skip"``: which, why, and where it was referenced."""

    path: str
    reason: str
    where: str = ""  # e.g. "train.csv line 17"

    def __str__(self) -> str:
        return f"{self.path} ({self.where + ': ' if self.where else ''}{self.reason})"


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def record_skip(skipped: list | None, path, reason: str, where: str = "") -> SkippedFile:
    """Record a skipped file in ``skipped`` (if given) and log it; returns the record."""
    item = SkippedFile(str(path), reason, where)
    if skipped is not None:
        skipped.append(item)
    logger.warning("skipping %s", item)
    return item


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_cxr(
    path: str | os.PathLike,
    *,
    normalize: Literal["dtype", "minmax"] = "dtype",
    window: tuple[float, float] | None = None,
    use_voi: bool = True,
    voi_index: int = 0,
    on_error: OnError = "raise",
    skipped: list | None = None,
) -> np.ndarray | None:
    """Read a chest X-ray (PNG, JPEG, TIFF, BMP, DICOM, ...) as float32 ``(H, W)`` in [0, 1],
    bright = dense. See the module docstring for the exact conversion of each source.

    Args:
        normalize: for non-DICOM integer data, ``"dtype"`` divides by the storage maximum
            (255 or 65535); ``"minmax"`` stretches the image's own min..max to [0, 1].
        window: ``(center, width)`` of a linear window that overrides the file's own VOI.
        use_voi: apply the DICOM VOI LUT / window stored in the file (default True).
        voi_index: which of several stored DICOM windows / VOI LUTs to use.
        on_error: ``"raise"`` (default) raises :class:`CXRReadError`; ``"skip"`` returns None
            and appends a :class:`SkippedFile` to ``skipped``.
    """
    _check_on_error(on_error)
    if normalize not in ("dtype", "minmax"):
        raise ValueError(f"normalize must be 'dtype' or 'minmax', got {normalize!r}")
    try:
        if os.path.isdir(path):
            raise CXRReadError(path, "is a folder, not an image file")
        if not os.path.isfile(path):
            raise CXRReadError(path, "file does not exist")
        if is_dicom(path):
            out = _read_dicom(path, window=window, use_voi=use_voi, voi_index=voi_index)
        else:
            out = _read_pil(path, normalize=normalize, window=window)
    except CXRReadError as exc:
        if on_error == "skip":
            record_skip(skipped, path, exc.reason)
            return None
        raise
    return out


def _read_pil(path, *, normalize: str, window) -> np.ndarray:
    check_image_file(path)  # catches truncation even if ImageFile.LOAD_TRUNCATED_IMAGES is on
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                logger.info("%s has %d frames; reading the first", path, im.n_frames)
            im.load()
            return _pil_to_float(im, normalize=normalize, window=window)
    except CXRReadError:
        raise
    except Image.DecompressionBombError as exc:  # not an OSError: would escape on_error="skip"
        raise CXRReadError(path, f"decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise CXRReadError(path, f"{type(exc).__name__}: {exc}") from exc


def _pil_to_float(im: Image.Image, *, normalize: str = "dtype", window=None) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "1", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB") if mode != "1" else im.convert("L")
            mode = im.mode
        arr = np.asarray(im)
        if mode in ("RGB", "RGBA", "RGBX"):
            arr = arr[..., :3].astype(np.float64) @ _LUMA
        elif mode == "LA":
            arr = arr[..., 0]
        return _scale(np.asarray(arr, dtype=np.float64), 255.0, normalize, window)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if mode == "I" and (arr.min(initial=0) < 0 or arr.max(initial=0) > 65535):
            return _scale(arr, None, "minmax", window)
        return _scale(arr, 65535.0, normalize, window)
    if mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if window is None and normalize == "dtype" and arr.size and arr.min() >= 0 and arr.max() <= 1:
            return arr.astype(np.float32)
        return _scale(arr, None, "minmax", window)
    raise ValueError(f"unsupported PIL image mode {mode!r}")


def _scale(arr: np.ndarray, full: float | None, normalize: str, window) -> np.ndarray:
    if window is not None:
        return _linear_window(arr, *window)
    if normalize == "minmax" or full is None:
        return _minmax(arr)
    return np.clip(arr / full, 0.0, 1.0).astype(np.float32)


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0:
        return arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:  # a flat image stays flat (zeros), no division by zero
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def _linear_window(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM LINEAR VOI function (PS3.3 C.11.2.1.2.1) mapped to [0, 1]."""
    center, width = float(center), float(width)
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    c, w = center - 0.5, width - 1.0
    if w == 0:
        return (np.asarray(arr) > c).astype(np.float32)
    out = (np.asarray(arr, dtype=np.float64) - c) / w + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _read_dicom(path, *, window, use_voi: bool, voi_index: int) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise CXRReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise CXRReadError(path, "DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = ""
        if syntax is not None and getattr(syntax, "is_compressed", False):
            hint = f" (compressed transfer syntax {syntax.name}; install pylibjpeg / gdcm to decode it)"
        raise CXRReadError(path, f"cannot decode DICOM pixel data: {type(exc).__name__}: {exc}{hint}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        raise CXRReadError(path, f"multi-frame DICOM ({frames} frames) is not a single radiograph")
    if samples > 1:
        # Colour DICOM (RGB / YBR, pydicom converts YBR to RGB): luma, no LUTs apply.
        rgb = np.asarray(arr)[..., :3].astype(np.float64) @ _LUMA
        full = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return _scale(rgb, full, "dtype", window)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise CXRReadError(path, f"unsupported Photometric Interpretation {photometric!r}")
    try:
        values = apply_modality_lut(arr, ds)
        if window is not None:
            out = _linear_window(values, *window)
        elif use_voi and ds.get("VOILUTSequence"):
            items = ds.VOILUTSequence
            if not 0 <= voi_index < len(items):
                raise CXRReadError(path, f"voi_index {voi_index} out of range: {len(items)} VOI LUT(s) stored")
            if np.issubdtype(np.asarray(values).dtype, np.floating):
                values = np.rint(values).astype(np.int64)  # LUT lookup needs integer input
            mapped = apply_voi_lut(values, ds, index=voi_index, prefer_lut=True)
            # The LUT's own output range: push its whole input domain through pydicom.
            n_entries, first = items[voi_index].LUTDescriptor[0] or 2**16, items[voi_index].LUTDescriptor[1]
            domain = np.arange(first, first + n_entries, dtype=np.int64)
            lut = np.asarray(apply_voi_lut(domain, ds, index=voi_index, prefer_lut=True), dtype=np.float64)
            out = _to_unit(mapped, float(lut.min()), float(lut.max()))
        elif use_voi and "WindowCenter" in ds and "WindowWidth" in ds:
            n_windows = ds["WindowCenter"].VM
            if not 0 <= voi_index < max(1, n_windows):
                raise CXRReadError(path, f"voi_index {voi_index} out of range: {n_windows} window(s) stored")
            mapped = apply_voi_lut(values, ds, index=voi_index, prefer_lut=False)
            y_min, y_max = _window_output_range(ds)
            out = _to_unit(mapped, y_min, y_max)
        else:
            out = _minmax(values)
    except CXRReadError:
        raise
    except Exception as exc:
        raise CXRReadError(path, f"cannot apply DICOM LUTs: {type(exc).__name__}: {exc}") from exc
    if photometric == "MONOCHROME1":  # low values are bright: invert so bright = dense
        out = 1.0 - out
    return np.ascontiguousarray(out, dtype=np.float32)


def _window_output_range(ds) -> tuple[float, float]:
    """The output range pydicom's ``apply_windowing`` maps to (mirrors its PS3.3 C.11.2 logic)."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2**bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min = y_min * float(slope) + float(intercept)
        y_max = y_max * float(slope) + float(intercept)
    return min(y_min, y_max), max(y_min, y_max)


def _to_unit(arr, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return _minmax(arr)
    return np.clip((np.asarray(arr, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def iter_cxr(
    paths: Sequence[str | os.PathLike],
    *,
    on_error: OnError = "raise",
    skipped: list | None = None,
    **read_kwargs,
):
    """Yield ``(path, image)`` for each readable file; under ``on_error="skip"`` unreadable ones
    are left out and recorded in ``skipped``."""
    _check_on_error(on_error)
    for p in paths:
        img = read_cxr(p, on_error=on_error, skipped=skipped, **read_kwargs)
        if img is not None:
            yield p, img


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def to_pil(image: np.ndarray, *, bits: Literal[8, 16] = 8) -> Image.Image:
    """The [0, 1] float representation -> a PNG-encodable grayscale PIL image.

    ``bits=8`` gives mode ``L`` (what ``datasets.Image(mode="L")`` stores and decodes);
    ``bits=16`` gives mode ``I;16`` for lossless archival (decode it with :func:`read_cxr`, not
    with ``datasets.Image(mode="L")``, which would clip it).
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image (H, W), got shape {arr.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.isfinite(arr).all():
            raise ValueError("image has NaN or infinite values")
        arr = np.clip(arr, 0.0, 1.0)
    elif arr.dtype == np.uint8 and bits == 8:
        return Image.fromarray(arr, mode=None)
    else:
        raise ValueError(f"expected a float image in [0, 1] (or uint8 for bits=8), got dtype {arr.dtype}")
    if bits == 8:
        return Image.fromarray(np.rint(arr * 255.0).astype(np.uint8))
    return Image.fromarray(np.rint(arr * 65535.0).astype(np.uint16))


def encode_png(image: np.ndarray, *, bits: Literal[8, 16] = 8, compress_level: int = 6) -> bytes:
    """PNG bytes of :func:`to_pil` (lossless)."""
    buf = io.BytesIO()
    to_pil(image, bits=bits).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def cxr_image_value(
    path: str | os.PathLike,
    *,
    on_error: OnError = "raise",
    skipped: list | None = None,
    where: str = "",
    **read_kwargs,
) -> dict | None:
    """The value to store in a ``datasets.Image(mode="L")`` column for ``path``.

    8-bit files become a lazy path reference ``{"path": ..., "bytes": None}`` (decoded when
    accessed). 16-bit PNG, TIFF and DICOM are read with :func:`read_cxr` (windowing applied) and
    stored as 8-bit PNG bytes, because ``datasets.Image(mode="L")`` would clip them.
    """
    path = os.fspath(path)
    if not needs_conversion(path):
        return {"path": os.path.abspath(path), "bytes": None}
    try:
        img = read_cxr(path, **read_kwargs)
    except CXRReadError as exc:
        if on_error == "skip":
            record_skip(skipped, path, exc.reason, where)
            return None
        if where:
            raise CXRReadError(path, f"{exc.reason} (referenced at {where})") from exc
        raise
    return {"path": None, "bytes": encode_png(img)}


__all__ = [
    "CXRReadError",
    "OnError",
    "SkippedFile",
    "check_image_file",
    "cxr_image_value",
    "encode_png",
    "is_dicom",
    "iter_cxr",
    "needs_conversion",
    "read_cxr",
    "record_skip",
    "to_pil",
]
