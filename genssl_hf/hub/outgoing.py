"""What may leave the artifact folder: nothing from outside it, and no credentials.

Checked by :func:`genssl_hf.hub.publish.publish` over the selected files and the new card before
anything is staged or uploaded (the leak guard, :mod:`.leak`, checks real data; this checks the
rest):

* **Inside the folder only**: a symlink (of the file or of a folder on its way) is resolved and must
  land inside the artifact folder; one pointing outside is refused, as staging would copy the file
  it points at (a token file, a private key, another user's data).
* **No credentials**: every text file (UTF-8 without NUL bytes: cards, JSON configs, logs,
  vocabularies, recorded commands), the metadata header of each ``.safetensors`` file and the new
  card are scanned for Hugging Face / GitHub / API tokens, cloud keys, private keys and URLs with
  ``user:password@`` (:mod:`genssl_hf.core.secrets`). The message names file, line and kind, with
  the secret masked.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.secrets import find_secrets
from .card_metadata import LICENSE_FILE, LICENSE_TEXT
from .leak import LeakError, check_text, decode_text, scan_files
from .local_paths import without_local_paths

MAX_TEXT_BYTES = 64 << 20  # larger files are data (shards, weights), never hand-written text


class OutgoingFileError(RuntimeError):
    """An outgoing file lies outside the artifact folder or carries a credential."""

    def __init__(self, problems: Sequence[str], folder: str | os.PathLike):
        self.problems = list(problems)
        lines = [f"refusing to publish {folder}: {len(self.problems)} problem(s):"]
        lines += [f"  - {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"  ... and {len(self.problems) - 20} more")
        lines.append("move the files into the folder (no symlinks out of it) and remove credentials before publishing")
        super().__init__("\n".join(lines))


class PublishInterruptedError(RuntimeError):
    """An upload of several artifacts failed part-way. Each artifact is one Hub commit (all of its
    files or none), so the repos are either complete or untouched: the message names both, and
    running the same command again uploads the rest (re-uploading a complete repo changes nothing)."""

    def __init__(self, uploaded: dict[str, str], missing: dict[str, str], cause: BaseException):
        self.uploaded, self.missing = uploaded, missing
        done = ", ".join(f"{k} ({r})" for k, r in uploaded.items()) or "none"
        todo = ", ".join(f"{k} ({r})" for k, r in missing.items())
        super().__init__(
            f"publishing stopped at {next(iter(missing))}: {type(cause).__name__}: {cause}\n"
            f"  uploaded: {done}\n  not uploaded: {todo}\n"
            "nothing is half-published (one commit per repo); run the same command again to finish"
        )


def outside_files(folder: str | os.PathLike, files: Sequence[str]) -> list[str]:
    """The problems of files of ``folder`` that resolve (through symlinks) outside it."""
    root = Path(folder).resolve()
    problems = []
    for rel in files:
        target = (Path(folder) / rel).resolve()
        if not target.is_relative_to(root):
            problems.append(f"{rel}: a symlink to {target}, outside the artifact folder")
    return problems


def _text_of(path: Path) -> str | None:
    """The text to scan in ``path``: the whole file when it is text, the header of a safetensors
    file, else None (binary data)."""
    if path.suffix == ".safetensors":
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            return fh.read(min(n, MAX_TEXT_BYTES)).decode("utf-8", "replace")
    if path.stat().st_size > MAX_TEXT_BYTES:
        return None
    return decode_text(path.read_bytes())


def credential_findings(folder: str | os.PathLike, files: Sequence[str]) -> list[str]:
    """``file: line N: <kind> (<masked>)`` for every credential-looking string in the text files."""
    problems = []
    for rel in files:
        text = _text_of(Path(folder) / rel)
        if text:
            problems += [f"{rel}: {f}" for f in find_secrets(text)]
    return problems


def check_outgoing(folder: str | os.PathLike, files: Sequence[str], card_text: str | None = None) -> None:
    """Refuse (:class:`OutgoingFileError`) when a selected file resolves outside ``folder`` or any
    outgoing text (files, the new card) carries a credential."""
    problems = outside_files(folder, files)
    inside = [f for f in files if not any(p.startswith(f"{f}: ") for p in problems)]
    problems += credential_findings(folder, inside)
    if card_text is not None:
        problems += [f"README.md (the card): {f}" for f in find_secrets(card_text)]
    if problems:
        raise OutgoingFileError(problems, folder)


def prepare_outgoing(
    source: Path, files: Sequence[str], card: Any, index: Any, run_dir: Path
) -> tuple[str, Mapping[str, str], list[str]]:
    """Refuse the publication before anything is written: local paths, user or host names (paths
    inside ``run_dir`` are made relative: the card and ``{file: text}`` rewritten), files from
    outside the folder and credentials (:func:`check_outgoing`), then the leak guard (report text,
    pixels of the real data in ``index``) over every file and the card. Returns the card text, the
    rewritten files and the outgoing files (a ``license: other`` card brings its ``LICENSE.md``)."""
    text, rewritten = without_local_paths(source, files, str(card), run_dir)
    check_outgoing(source, [f for f in files if f != "README.md"], text)
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
