"""The real-pixel index: exact hashes of grayscale pixels and unit-norm 32 x 32 thumbnails, with
figures and grids cut into their panels."""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Sequence

import numpy as np

from .disguise import dihedral_variants

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_THUMB = 32


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


# crops indexed beside each real image (kept fraction of each side x anchor): a copy cropped by a
# few to ~20 % of a side near the centre or a corner is near one of them. Stored as float16 and
# matched at CROP_THRESHOLD (a crop's thumbnail is a little blurrier than a whole image's).
CROPS = tuple((f, a) for f in (0.95, 0.9, 0.8) for a in ("centre", "tl", "tr", "bl", "br"))
CROP_THRESHOLD = 0.99


def _crop_boxes(shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    h, w = shape
    boxes = []
    for frac, anchor in CROPS:
        ch, cw = max(8, round(h * frac)), max(8, round(w * frac))
        y0 = {"centre": (h - ch) // 2, "tl": 0, "tr": 0, "bl": h - ch, "br": h - ch}[anchor]
        x0 = {"centre": (w - cw) // 2, "tl": 0, "tr": w - cw, "bl": 0, "br": w - cw}[anchor]
        boxes.append((y0, y0 + ch, x0, x0 + cw))
    return boxes


def _exact_key(g: np.ndarray) -> bytes:
    h = hashlib.sha256()
    h.update(struct.pack("<II", *g.shape))
    h.update(np.ascontiguousarray(g).tobytes())
    return h.digest()


def _thumb(g: np.ndarray) -> np.ndarray | None:
    """Box-filtered 32 x 32 thumbnail, rank-transformed (so any monotone intensity change: gamma,
    contrast, brightness, leaves it as it was), mean-centred, unit norm."""
    from PIL import Image
    from scipy.stats import rankdata

    t = np.asarray(Image.fromarray(g).resize((_THUMB, _THUMB), Image.BOX), dtype=np.float32).ravel()
    t = rankdata(t).astype(np.float32)
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


def _best_match(queries: np.ndarray, rows_f16: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per query (float32), the largest dot product with the float16 ``rows_f16`` and its row. The rows
    are widened to float32 a block at a time: numpy has no BLAS for float16, and a float16 product ran
    ~190x slower (3,000 outgoing images against a few thousand real ones' crops took ~5 CPU minutes)."""
    best_sim = np.full(len(queries), -np.inf, dtype=np.float32)
    best_row = np.zeros(len(queries), dtype=np.int64)
    for r0 in range(0, len(rows_f16), block):
        sims = queries @ rows_f16[r0 : r0 + block].astype(np.float32).T
        arg = sims.argmax(1)
        val = sims[np.arange(len(queries)), arg]
        better = val > best_sim
        best_sim[better], best_row[better] = val[better], arg[better] + r0
    return best_sim, best_row


class ImageIndex:
    """Exact pixel hashes and thumbnails of real images.

    Outgoing images are compared whole and panel by panel (:func:`_tiles`), so a real image
    pasted into a sample grid or a matplotlib figure is found too; real images are indexed
    whole and without their uniform border, to match panels that lost it.
    """

    def __init__(self, *, near_threshold: float = 0.995, tiles: bool = True, crops: bool = True):
        if not 0.0 < near_threshold <= 1.0:
            raise ValueError(f"near_threshold must lie in (0, 1], got {near_threshold}")
        self.near_threshold = float(near_threshold)
        self.tiles = bool(tiles)
        self.crops = bool(crops)  # also index crops (see CROPS), so a cropped copy is found
        self._exact: dict[bytes, str] = {}
        self._names: list[str] = []
        self._rows: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._crop_names: list[str] = []
        self._crop_rows: list[np.ndarray] = []
        self._crop_matrix: np.ndarray | None = None
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
        if self.crops:
            for y0, y1, x0, x1 in _crop_boxes(g.shape):
                t = _thumb(g[y0:y1, x0:x1])
                if t is not None:
                    self._crop_names.append(f"{name} (cropped to x={x0}..{x1}, y={y0}..{y1})")
                    self._crop_rows.append(t.astype(np.float16))
        self._matrix = self._crop_matrix = None
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
            pieces += [(f" ({how})", v) for how, v in dihedral_variants(g)]  # a flipped / rotated copy
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
        if self._crop_matrix is None and self._crop_rows:
            self._crop_matrix = np.stack(self._crop_rows)
        if thumbs and self._crop_matrix is not None:  # a cropped copy: the whole outgoing image only
            whole = [k for k, (_, label) in enumerate(where) if not label]
            queries = np.stack([thumbs[k] for k in whole]).astype(np.float16).astype(np.float32)
            best_sim, best_row = _best_match(queries, self._crop_matrix)
            for k, best, sim in zip(whole, best_row.tolist(), best_sim.tolist()):
                i = where[k][0]
                if out[i] is None and sim >= CROP_THRESHOLD:
                    out[i] = (
                        "real-pixels-near",
                        f"near-copy of real image {self._crop_names[best]} (thumbnail cosine {sim:.4f})",
                    )
        if thumbs and len(mat):
            for s0 in range(0, len(thumbs), 1024):  # bounded memory for big grids / shards
                sims = np.stack(thumbs[s0 : s0 + 1024]) @ mat.T
                best = sims.argmax(1)
                for k, (i, label) in enumerate(where[s0 : s0 + 1024]):
                    s = float(sims[k, best[k]])
                    if out[i] is None and s >= self.near_threshold:
                        out[i] = (
                            "real-pixels-near",
                            f"near-copy of real image {self._names[best[k]]}{label} (thumbnail cosine {s:.4f})",
                        )
        return out
