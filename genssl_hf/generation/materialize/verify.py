"""Verification of a generated folder against its ``generation_config.json``."""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from genssl_hf.utils import read_json

from .layout import CONFIG_NAME, DATA_DIR, ShardLayout


@dataclass
class VerificationReport:
    ok: bool
    num_expected: int
    num_found: int
    missing: list[list[int]] = field(default_factory=list)  # [start, stop) ranges
    duplicates: list[int] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    unexpected_files: list[str] = field(default_factory=list)
    num_bytes: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    prompt_counts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    truncated_prompts: int = 0  # images whose prompt the text encoder cut
    max_tokens_truncated: int = 0

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.num_found} / {self.num_expected} indices, no duplicates"
        parts = [f"{self.num_found} / {self.num_expected} indices found"]
        if self.missing:
            n = sum(b - a for a, b in self.missing)
            parts.append(f"{n} missing in ranges {self.missing[:10]}{' ...' if len(self.missing) > 10 else ''}")
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicated indices, e.g. {self.duplicates[:10]}")
        if self.misplaced:
            parts.append(f"indices in the wrong shard: {self.misplaced[:5]}")
        if self.unexpected_files:
            parts.append(f"unexpected files: {self.unexpected_files[:5]}")
        return "; ".join(parts)


def _compress_ranges(indices: Iterable[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def verify_dataset(out_dir: str | os.PathLike) -> VerificationReport:
    """Check a generated folder against its ``generation_config.json``: every index exactly once,
    each in its own shard, no stray parquet files; also count images per class, prompt and label
    from the data itself (reads only small columns, one shard at a time)."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    if not (out / CONFIG_NAME).is_file():
        raise ValueError(f"{out} has no {CONFIG_NAME}: not a folder written by generate_dataset")
    config = read_json(out / CONFIG_NAME)
    layout = ShardLayout(int(config["num_images"]), int(config["shard_images"]))
    report = VerificationReport(ok=False, num_expected=layout.num_images, num_found=0)
    expected = {layout.shard_relpath(k): k for k in range(layout.num_shards)}
    present = (
        {str(p.relative_to(out)) for p in (out / DATA_DIR).rglob("*.parquet")} if (out / DATA_DIR).is_dir() else set()
    )
    report.unexpected_files = sorted(present - set(expected))
    class_counts: collections.Counter = collections.Counter()
    prompt_counts: collections.Counter = collections.Counter()
    label_counts: collections.Counter = collections.Counter()
    features = None
    for rel, k in expected.items():
        s0, s1 = layout.shard_range(k)
        if rel not in present:
            report.missing.append([s0, s1])
            continue
        pf = pq.ParquetFile(out / rel)
        report.num_bytes += (out / rel).stat().st_size
        if features is None:
            import datasets

            features = datasets.Features.from_arrow_schema(pf.schema_arrow)
        names = set(pf.schema_arrow.names)
        want = [
            c for c in ("index", "prompt", "class_label", "label", "labels", "prompt_tokens_truncated") if c in names
        ]
        table = pf.read(columns=want)
        idx = np.asarray(table.column("index").to_numpy(), dtype=np.int64)
        counts = collections.Counter(idx.tolist())
        dups = sorted(i for i, c in counts.items() if c > 1)
        report.duplicates.extend(dups)
        outside = sorted(i for i in counts if not s0 <= i < s1)
        if outside:
            report.misplaced.append(f"{rel}: {outside[:5]}")
        inside = {i for i in counts if s0 <= i < s1}
        gap = sorted(set(range(s0, s1)) - inside)
        report.missing.extend(_compress_ranges(gap))
        report.num_found += len(inside)
        if "prompt" in names:
            prompt_counts.update(table.column("prompt").to_pylist())
        if "prompt_tokens_truncated" in names:
            cut = [v for v in table.column("prompt_tokens_truncated").to_pylist() if v]
            report.truncated_prompts += len(cut)
            report.max_tokens_truncated = max([report.max_tokens_truncated, *cut])
        for col in ("class_label", "label"):
            if col in names:
                cl = features[col]
                class_counts.update(cl.int2str(v) for v in table.column(col).to_pylist())
        if "labels" in names:
            inner = features["labels"].feature
            for row in table.column("labels").to_pylist():
                label_counts.update(inner.int2str(v) for v in row) if row else label_counts.update(["(none)"])
    report.missing = _merge_ranges(report.missing)
    report.class_counts = dict(class_counts)
    report.prompt_counts = dict(prompt_counts) if config.get("mode") == "prompts" else {}
    report.label_counts = dict(label_counts)
    report.ok = not (report.missing or report.duplicates or report.misplaced or report.unexpected_files)
    return report


def _merge_ranges(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and out[-1][1] >= a:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out
