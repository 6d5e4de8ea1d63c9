"""Crash-safe shard writing and the processes' file-based synchronisation.

A shard is produced in checkpoint chunks, each written to a temporary file, fsync'ed and atomically
renamed into ``.incomplete/<shard>/``. When all chunks of a shard exist they are streamed into a
temporary shard file, which is renamed into ``data/``: a file in ``data/`` is always complete.
Processes meet through marker files, not collectives, so a long run has no collective timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from genssl_hf.utils import read_json, remove_stale_temps

from .layout import _ATOMIC_FILES, DATA_DIR, INCOMPLETE_DIR


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None
    device: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist_from(state: Any) -> _Dist:
    if state is None:  # one process: a diffusers generator goes to the GPU when there is one
        import torch

        return _Dist(device="cuda" if torch.cuda.is_available() else None)
    if isinstance(state, _Dist):
        return state
    return _Dist(
        rank=int(state.process_index),
        world=int(state.num_processes),
        barrier=state.wait_for_everyone,
        device=getattr(state, "device", None),
    )


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_parquet_atomic(path: Path, tables: Iterable[Any], schema: Any, tmp_dir: Path | None = None) -> int:
    """Stream ``tables`` (or callables returning tables) into ``path`` atomically; returns rows.
    The temporary file lives in ``tmp_dir`` (same file system), so ``data/`` never holds one."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (tmp_dir or path.parent) / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in tables:
                table = table() if callable(table) else table
                writer.write_table(table, row_group_size=max(1, table.num_rows))
                rows += table.num_rows
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return rows


_CHUNK_RE = re.compile(r"^rows-(\d+)-(\d+)\.parquet$")


def _existing_chunks(cdir: Path, start: int, stop: int) -> list[tuple[int, int, Path]]:
    """Complete checkpoint chunks of one shard, disjoint, sorted; stale temporaries removed."""
    if not cdir.is_dir():
        return []
    chunks = []
    for f in cdir.iterdir():
        if f.name.startswith(".tmp-"):
            f.unlink(missing_ok=True)  # left by a killed writer of this shard (we own the shard now)
            continue
        m = _CHUNK_RE.match(f.name)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if start <= a < b <= stop:
                chunks.append((a, b, f))
    chunks.sort()
    kept, end = [], start
    for a, b, f in chunks:
        if a >= end:
            kept.append((a, b, f))
            end = b
        else:
            f.unlink(missing_ok=True)  # overlaps a kept chunk (a changed checkpoint size): redo-safe
    return kept


def _gaps(start: int, stop: int, done: list[tuple[int, int, Path]], step: int) -> list[tuple[int, int]]:
    """Ranges of [start, stop) not covered by ``done``, cut into pieces aligned to ``step``."""
    out, cursor = [], start
    for a, b, _ in done + [(stop, stop, None)]:
        s = cursor
        while s < a:
            e = min(a, start + ((s - start) // step + 1) * step)
            out.append((s, e))
            s = e
        cursor = max(cursor, b)
    return out


def _table(encoded: dict[str, list], schema: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_pydict(encoded, schema=schema)


def _merge_chunks(cdir: Path, start: int, stop: int, final: Path, schema: Any, tmp_dir: Path) -> None:
    import pyarrow.parquet as pq

    chunks = _existing_chunks(cdir, start, stop)
    covered = sum(b - a for a, b, _ in chunks)
    if covered != stop - start or (chunks and (chunks[0][0] != start or chunks[-1][1] != stop)):
        raise RuntimeError(f"shard {final.name}: checkpoint chunks cover {covered} of {stop - start} rows")
    # Lazily read one chunk at a time: memory stays at one chunk.
    _write_parquet_atomic(final, [(lambda f=f: pq.read_table(f, schema=schema)) for _, _, f in chunks], schema, tmp_dir)


def _wait_for_ranks(out: Path, world: int, token: str, poll: float = 1.0) -> None:
    if world <= 1:
        return
    pending = set(range(world))
    while pending:
        for r in list(pending):
            marker = out / INCOMPLETE_DIR / f"done-{r:05d}"
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                if read_json(marker)["token"] == token:
                    pending.discard(r)
        if pending:
            time.sleep(poll)


def _has_stored_images(out: Path) -> bool:
    """Whether any process stored images in ``out`` (a shard or a checkpoint chunk)."""
    return any(
        p.suffix == ".parquet" and not p.name.startswith(".tmp-")
        for d in (out / DATA_DIR, out / INCOMPLETE_DIR)
        if d.is_dir()
        for p in d.rglob("*.parquet")
    )


def _remove_run_files(out: Path) -> None:
    """Remove what a run that stored no image created (config, empty folders, markers)."""
    for child in (INCOMPLETE_DIR, DATA_DIR, *_ATOMIC_FILES):
        p = out / child
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    remove_stale_temps(out, _ATOMIC_FILES)
