"""Where a generated dataset's files live: folder names, the shard size rule, the shard layout.

``data/train-KKKKK-of-TTTTT.parquet``; shard ``k`` holds indices ``[k * S, (k + 1) * S)`` (``S``
images per shard, from ``shard_size``: a number of images, or bytes such as ``"256MB"``,
converted to images by the raw size of one image, H x W bytes, an upper bound for PNG). Above
10,000 shards the files go into subfolders of 1,000 (``data/00012/train-...``) so that no folder
exceeds 10,000 files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1
CONFIG_NAME = "generation_config.json"
VERIFICATION_NAME = "verification.json"
INCOMPLETE_DIR = ".incomplete"
DATA_DIR = "data"
SPLIT = "train"
DEFAULT_SHARD_SIZE = "256MB"
DEFAULT_ROWS_PER_CHECKPOINT = 128
MAX_FILES_PER_FOLDER = 10_000
FILES_PER_SUBFOLDER = 1_000
SOURCE = "genssl_hf-generated"
_ATOMIC_FILES = (CONFIG_NAME, VERIFICATION_NAME, "README.md")  # written whole by write_json / atomic_write_text
CARD_TEMPLATE = "synthetic_dataset"
_ROW_OVERHEAD_BYTES = 512  # prompt, ids and parquet framing per row, for the bytes -> images estimate

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_shard_size(value: int | str) -> tuple[str, int]:
    """``1000`` / ``"1000"`` -> ("images", 1000); ``"256MB"``, ``"1GiB"`` -> ("bytes", n)."""
    if isinstance(value, bool):
        raise ValueError(f"shard size must be a number of images or bytes like '256MB', got {value!r}")
    if isinstance(value, (int, np.integer)):
        kind, n = "images", int(value)
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise ValueError(f"shard size {value!r}: expected a number of images (e.g. 1000) or bytes (e.g. '256MB')")
        number, unit = m.groups()
        if unit is None:
            if "." in number:
                raise ValueError(f"shard size {value!r}: a number of images must be an integer")
            kind, n = "images", int(number)
        else:
            kind, n = "bytes", int(float(number) * _UNITS[unit.lower()])
    if n <= 0:
        raise ValueError(f"shard size must be positive, got {value!r}")
    return kind, n


def shard_images_for(shard_size: int | str, height: int, width: int) -> int:
    """Images per shard: the number given, or a byte budget divided by the raw image size."""
    kind, n = parse_shard_size(shard_size)
    if kind == "images":
        return n
    return max(1, n // (int(height) * int(width) + _ROW_OVERHEAD_BYTES))


@dataclass(frozen=True)
class ShardLayout:
    """Index ranges of the shards and their paths; a pure function of (N, images per shard)."""

    num_images: int
    shard_images: int
    rows_per_checkpoint: int = DEFAULT_ROWS_PER_CHECKPOINT

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_images)

    @property
    def nested(self) -> bool:
        return self.num_shards > MAX_FILES_PER_FOLDER

    @property
    def digits(self) -> int:
        return max(5, len(str(self.num_shards)))

    def shard_range(self, k: int) -> tuple[int, int]:
        start = k * self.shard_images
        return start, min(start + self.shard_images, self.num_images)

    def shard_name(self, k: int) -> str:
        return f"{SPLIT}-{k:0{self.digits}d}-of-{self.num_shards:0{self.digits}d}"

    def shard_relpath(self, k: int) -> str:
        if self.nested:
            return f"{DATA_DIR}/{k // FILES_PER_SUBFOLDER:05d}/{self.shard_name(k)}.parquet"
        return f"{DATA_DIR}/{self.shard_name(k)}.parquet"

    @property
    def data_files_pattern(self) -> str:
        return f"{DATA_DIR}/*/{SPLIT}-*.parquet" if self.nested else f"{DATA_DIR}/{SPLIT}-*.parquet"
