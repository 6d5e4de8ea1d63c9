"""Staging an outgoing folder: the real-data index to check it against, the metrics JSON for its
card, and the copy (or hard-linked upload staging) of the selected files plus the new card."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import HfApi

from ..utils import atomic_dir, read_json, writer_lock
from .artifacts import REPO_TYPES, validate_artifact
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


def _stage(
    source: Path,
    files: Sequence[str],
    card_text_: str,
    dest: Path,
    *,
    link: bool = False,
    rewritten: Mapping[str, str] | None = None,
) -> None:
    """Write the outgoing folder; the files in ``rewritten`` (run-relative paths) get that text.
    ``link``: hard-link instead of copying (for the short-lived upload staging only: a dry-run
    folder must not change when the source is rewritten in place)."""
    rewritten = rewritten or {}
    for rel in files:
        if rel == "README.md":
            continue
        if rel in rewritten:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(rewritten[rel], encoding="utf-8")
        else:
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


def _check_destination(source: Path, repo_id: str | None, dry_run: str | os.PathLike | None, overwrite: bool) -> None:
    """Where the publication goes is given and usable: a repo id, or a dry-run folder that is not
    the source and does not exist yet (unless ``overwrite``)."""
    if dry_run is None and not repo_id:
        raise ValueError("pass repo_id (to upload) or dry_run=DIR (to write the folder that would be uploaded)")
    if repo_id is not None and repo_id.count("/") > 1:
        raise ValueError(f"repo_id {repo_id!r} must be 'name' or 'namespace/name'")
    if dry_run is not None:
        dest = Path(dry_run)
        if dest.resolve() == source.resolve():
            raise ValueError(f"dry-run folder {dest} is the artifact folder itself; pick another path")
        if dest.exists() and not overwrite:
            raise FileExistsError(f"dry-run folder {dest} already exists (pass overwrite=True to replace it)")


def _write_dry_run(
    kind: str,
    source: Path,
    files: Sequence[str],
    text: str,
    dest: Path,
    overwrite: bool,
    rewritten: Mapping[str, str] | None = None,
) -> None:
    """Write exactly the folder that would be uploaded to ``dest`` (atomically) and reload it."""
    with writer_lock(dest, "dry-run folder", beside=True), atomic_dir(dest, overwrite=overwrite) as tmp:
        _stage(source, files, text, tmp, rewritten=rewritten)
        validate_artifact(kind, tmp)


def _upload(
    kind: str,
    source: Path,
    files: Sequence[str],
    text: str,
    rewritten: Mapping[str, str] | None,
    result: Any,  # the PublishResult to fill in
    api: HfApi,
    revision: str | None,
    commit_message: str | None,
) -> None:
    """Stage the folder (hard links), reload it, then create the repo and upload; the commit and
    the repo URL go into ``result``."""
    with tempfile.TemporaryDirectory(prefix=f"genssl-publish-{kind}-") as tmpd:
        staged = Path(tmpd) / "upload"
        _stage(source, files, text, staged, link=True, rewritten=rewritten)
        validate_artifact(kind, staged)
        repo = api.create_repo(result.repo_id, repo_type=REPO_TYPES[kind], private=result.private, exist_ok=True)
        result.commit = api.upload_folder(
            repo_id=result.repo_id,
            folder_path=str(staged),
            repo_type=REPO_TYPES[kind],
            revision=revision,
            commit_message=commit_message or f"Upload genssl_hf {kind.replace('_', ' ')}",
        )
        result.url = str(getattr(repo, "url", repo) or "") or None
        result.folder = None
