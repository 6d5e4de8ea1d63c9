"""Staging an outgoing folder: the real-data index to check it against, the metrics JSON for its
card, and the copy (or hard-linked upload staging) of the selected files plus the new card."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..utils import read_json
from .leak import RealDataIndex, build_real_data_index

logger = logging.getLogger(__name__)

REAL_DATA_ENV = "GENSSL_REAL_DATA"  # os.pathsep-separated real-data paths for the leak guard


def _resolve_index(real_data: Any, allow_unchecked: bool) -> RealDataIndex | None:
    if isinstance(real_data, RealDataIndex):
        return real_data
    if real_data is None:
        env = os.environ.get(REAL_DATA_ENV)
        real_data = [p for p in env.split(os.pathsep) if p] if env else None
    if real_data is None or (not isinstance(real_data, (str, os.PathLike)) and not list(real_data)):
        if allow_unchecked:
            logger.warning("publishing WITHOUT the real-data leak check (allow_unchecked=True)")
            return None
        raise ValueError(
            "no real data to check the outgoing files against: pass real_data=[...] (the real images and "
            f"report archives the artifacts were built from), set {REAL_DATA_ENV}, or pass allow_unchecked=True"
        )
    return build_real_data_index(real_data)


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _stage(source: Path, files: Sequence[str], card_text_: str, dest: Path, *, link: bool = False) -> None:
    """Write the outgoing folder. ``link``: hard-link instead of copying (for the short-lived
    upload staging only: a dry-run folder must not change when the source is rewritten in place)."""
    for rel in files:
        if rel == "README.md":
            continue
        _link_or_copy(source / rel, dest / rel, link)
    (dest / "README.md").write_text(card_text_, encoding="utf-8")


def _read_metrics(metrics: Any) -> Mapping[str, Any] | None:
    if metrics is None or isinstance(metrics, Mapping):
        return metrics
    path = Path(metrics)
    if not path.is_file():
        raise FileNotFoundError(f"metrics JSON {path} does not exist")
    try:
        data = read_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"metrics file {path} is not valid JSON: {e}") from e
    if not isinstance(data, Mapping):
        raise ValueError(f"metrics file {path} must hold a JSON object")
    return data
