"""The grayscale collate family: dataset rows -> a (B, 1, S, S) batch, converted to grayscale and
resized in the data-loader workers, so the main process only sees small tensors.

One base class, :class:`GrayscaleCollator` (which column, which size, how to turn one image into a
2-D array), and the three batch layouts the training loops use:

* :class:`ImageCollator`: uint8 pixels only (MAE, the SSL methods, VLP images);
* :class:`LabelledImageCollator`: ``{"pixels": uint8, "labels": targets}`` (fine-tuning, probes);
* :class:`ImageTextCollator`: ``{"pixel_values": float in [0, 1], "text": list[str]}`` (the generator).

uint8 batches keep the images' own 8 bits (bilinear resize; 16-bit and float images are scaled, not
clipped); the generator's float batches resize bicubic, as the MONAI bundle's recipe does. No
collator draws random numbers (augmentation runs batched on tensors, after the per-step seed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genssl_hf.data.schema import to_multi_hot
from genssl_hf.processing.stats import to_gray_uint8_or_float

__all__ = [
    "GrayscaleCollator",
    "ImageCollator",
    "LabelledImageCollator",
    "ImageTextCollator",
    "gray_uint8",
    "gray_unit_float",
]


def gray_uint8(img: Any, size: int) -> np.ndarray:
    """Any image (PIL, array, tensor) as a uint8 (size, size) grayscale array: 8-bit images keep
    their values (ITU-R 601 luma for colour), 16-bit / float ones are scaled to 0-255 and resized in
    float (bilinear) before rounding. Raises on NaN pixels (kept visible to the caller, not hidden
    in uint8)."""
    from PIL import Image

    g = to_gray_uint8_or_float(img)
    if g.dtype != np.uint8:
        g = np.asarray(g, dtype=np.float32)
        g = np.clip(g * (255.0 if np.nanmax(g) <= 1.0 else 1.0), 0, 255)
        g = np.asarray(Image.fromarray(g.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
        if np.isnan(g).any():
            raise ValueError("a training image contains NaN pixels")
        return np.rint(g).astype(np.uint8)
    if g.shape != (size, size):
        g = np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR))
    return g


def gray_unit_float(img: Any, size: int) -> np.ndarray:
    """Any image (PIL, array, ``{"bytes": ...}``) as a float32 (size, size) array in [0, 1], resized
    bicubic (the generator's recipe). Colour arrays average their channels."""
    from PIL import Image

    if isinstance(img, dict) and "bytes" in img:
        import io

        img = Image.open(io.BytesIO(img["bytes"]))
    if isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 3:
            arr = arr.mean(-1) if arr.shape[-1] in (3, 4) else arr[..., 0]
        arr = arr.astype(np.float32)
        arr = arr / (255.0 if arr.max() > 1.0 else 1.0)
        img = Image.fromarray(arr.astype(np.float32), mode="F")
    elif img.mode not in ("L", "F", "I", "I;16"):
        img = img.convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    if img.mode == "L":
        arr = arr / 255.0
    elif img.mode in ("I", "I;16"):
        arr = arr / 65535.0
    return np.clip(arr, 0.0, 1.0)


class GrayscaleCollator:
    """Rows -> (B, 1, size, size) tensor of the ``image_column``; subclasses add the other columns.

    ``convert(image, size) -> 2-D array`` turns one image into pixels (:func:`gray_uint8` by default).
    """

    convert = staticmethod(gray_uint8)

    def __init__(self, size: int, image_column: str = "image"):
        self.size = int(size)
        self.image_column = image_column

    def pixels(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        out = None
        for i, row in enumerate(rows):
            img = row[self.image_column]
            if img is None:
                raise ValueError(f"a training row has no image in column {self.image_column!r}")
            pixels = self.convert(img, self.size)
            if out is None:
                out = np.empty((len(rows), 1, self.size, self.size), dtype=pixels.dtype)
            out[i, 0] = pixels
        if out is None:
            out = np.empty((0, 1, self.size, self.size), dtype=np.uint8)
        return torch.from_numpy(out)

    def __call__(self, rows: list[dict[str, Any]]) -> Any:
        return self.pixels(rows)


class ImageCollator(GrayscaleCollator):
    """Rows -> uint8 tensor (B, 1, S, S), resized to ``load_size`` (MAE, SSL, VLP images)."""

    def __init__(self, load_size: int, image_column: str = "image"):
        super().__init__(load_size, image_column)

    @property
    def load_size(self) -> int:
        return self.size


class LabelledImageCollator(ImageCollator):
    """Rows of the canonical schema -> ``{"pixels": uint8 (B, 1, S, S), "labels": targets}``: multi-hot
    float targets from ``labels`` (multi-label) or class indices from ``label`` (multi-class)."""

    def __init__(self, load_size: int, multi_label: bool, num_labels: int, image_column: str = "image"):
        super().__init__(load_size, image_column)
        self.multi_label = multi_label
        self.num_labels = num_labels

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.multi_label:
            labels = torch.from_numpy(np.stack([to_multi_hot(r["labels"], self.num_labels) for r in rows]))
        else:
            labels = torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)
        return {"pixels": self.pixels(rows), "labels": labels}


class ImageTextCollator(GrayscaleCollator):
    """Batch of ``{"pixel_values": (B, 1, R, R) float in [0, 1], "text": list[str]}`` (the generator).

    No flips (a flip turns a left-sided finding into a right-sided one). Texts pass through as they
    are: random text augmentation happens in the loop, after the per-step seeding."""

    convert = staticmethod(gray_unit_float)

    def __init__(self, resolution: int, image_column: str = "image", text_column: str | None = "report"):
        super().__init__(resolution, image_column)
        self.text_column = text_column

    @property
    def resolution(self) -> int:
        return self.size

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"pixel_values": self.pixels(rows)}
        if self.text_column is not None:
            out["text"] = [r[self.text_column] for r in rows]
        return out
