"""The checks every outgoing file and the new card pass before anything is written or uploaded
(see :func:`check_outgoing`); :mod:`.publish` calls them between building the card and staging."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .card_metadata import LICENSE_FILE, LICENSE_TEXT
from .leak import LeakError, check_text, scan_files
from .local_paths import without_local_paths

__all__ = ["check_outgoing"]


def check_outgoing(
    source: Path, files: Sequence[str], card: Any, index: Any, run_dir: Path
) -> tuple[str, Mapping[str, str], list[str]]:
    """Refuse the publication before anything is written: local paths, user or host names (paths
    inside ``run_dir`` are made relative: the card and ``{file: text}`` rewritten), then
    the leak guard (report text, pixels of the real data in ``index``) over every file and the card.
    Returns the card text, the rewritten files and the outgoing files (a ``license: other`` card
    brings its ``LICENSE.md``)."""
    text, rewritten = without_local_paths(source, files, str(card), run_dir)
    if index is not None:
        findings = scan_files(source, [f for f in files if f != "README.md"], index)
        if findings:
            raise LeakError(findings, source)
        check_text(text, index, name="README.md")
    files = list(files)
    if getattr(card.data, "license_link", None) == LICENSE_FILE and LICENSE_FILE not in files:
        rewritten = {**rewritten, LICENSE_FILE: LICENSE_TEXT}
        files.append(LICENSE_FILE)
    return text, rewritten, files
