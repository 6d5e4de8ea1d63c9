"""Write a ``datasets`` dataset as a Hub-layout folder of parquet shards with a README card whose
YAML ``configs`` lets ``load_dataset(<folder>)`` (and a Hub repo with the same files) find them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import datasets

from ..utils import atomic_dir


def export_parquet(
    data: datasets.Dataset | datasets.DatasetDict | Mapping[str, datasets.Dataset],
    out_dir: str | Path,
    *,
    rows_per_shard: int = 10_000,
    card_body: str = "",
    card_data: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Export splits to ``out_dir/data/<split>-XXXXX-of-YYYYY.parquet`` plus ``README.md``.

    The Features are embedded in each parquet file's schema metadata, so a reload gives the same
    types (images as PNG bytes, class labels with their names) bit for bit.
    """
    splits = {"train": data} if isinstance(data, datasets.Dataset) else dict(data)
    if not splits:
        raise ValueError("export_parquet: no splits to write")
    for name, ds in splits.items():
        if len(ds) == 0:
            raise ValueError(f"export_parquet: split {name!r} is empty")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "data").mkdir()
        data_files = []
        for name, ds in splits.items():
            num_shards = max(1, math.ceil(len(ds) / rows_per_shard))
            for k in range(num_shards):
                shard = ds.shard(num_shards=num_shards, index=k, contiguous=True)
                shard.to_parquet(str(tmp / "data" / f"{name}-{k:05d}-of-{num_shards:05d}.parquet"))
            data_files.append({"split": name, "path": f"data/{name}-*.parquet"})
        first = next(iter(splits.values()))
        meta = dict(card_data or {})
        meta["configs"] = [{"config_name": "default", "data_files": data_files}]
        meta["dataset_info"] = {
            "features": first.features._to_yaml_list(),
            "splits": [{"name": n, "num_bytes": int(d.data.nbytes), "num_examples": len(d)} for n, d in splits.items()],
        }
        (tmp / "README.md").write_text(_card_text(meta, card_body), encoding="utf-8")
    return out_dir


def _card_text(meta: dict, body: str) -> str:
    from huggingface_hub import DatasetCardData

    header = DatasetCardData(**meta).to_yaml()
    return f"---\n{header}\n---\n\n{body.strip()}\n"
