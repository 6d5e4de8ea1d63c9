"""Small shared helpers: atomic writes, hashing, JSON config files."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it to ``target`` only on success.

    Nothing is half-written: if the body raises, the temporary folder is removed and an
    existing ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    # mkdtemp makes a private (0700) folder; give the final folder the usual umask permissions.
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        normalise_modes(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def normalise_modes(folder: str | os.PathLike) -> None:
    """Give every file under ``folder`` the mode a new file gets (``0666 & ~umask``, 0644 under umask
    022, executable bits kept): writers that go through a private temporary file (transformers 5's
    safetensors, ``mkstemp``) leave 0600, which makes one file of a shared folder unreadable."""
    mode = 0o666 & ~current_umask()
    for p in Path(folder).rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat().st_mode & 0o777
            want = mode | (st & 0o111 & ~current_umask())
            if st != want:
                os.chmod(p, want)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    try:
        # mkstemp makes a private (0600) file; the result gets the mode any new file gets (umask),
        # so a card or config is as readable as the shards beside it.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_prefix(name: str) -> str:
    """Name prefix of the atomic writers' temporary files for ``name``: ``.<name>.tmp-``."""
    return f".{name}.tmp-"


def remove_stale_temps(folder: str | os.PathLike, names: "Iterator[str] | list[str] | tuple[str, ...]") -> list[Path]:
    """Delete the temporary files a killed atomic write of ``folder/<name>`` left behind (call it
    only while no other process writes these files, e.g. under :class:`FolderLock`); returns them."""
    removed = []
    folder = Path(folder)
    for name in names:
        for stale in folder.glob(temp_prefix(name) + "*"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


class FolderBusyError(RuntimeError):
    """Another live process holds the writer lock of an output folder."""


class FolderLock:
    """Exclusive writer lock of an output folder: ``<folder>/.genssl-writer.lock``, held with
    ``flock`` (so the kernel releases it when the holder dies, even on SIGKILL: a stale file
    never blocks anyone). A second writer fails at once with :class:`FolderBusyError` naming the
    holder. Creates ``folder`` if needed (``created`` says whether it did); the lock file is
    removed on release."""

    NAME = ".genssl-writer.lock"

    def __init__(self, folder: str | os.PathLike, what: str = "output folder", path: str | os.PathLike | None = None):
        self.folder = Path(folder)
        self.path = Path(path) if path is not None else self.folder / self.NAME
        self.what = what
        self.created = False
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl
        import socket
        import time

        self.created = not self.folder.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown process"
                finally:
                    os.close(fd)
                raise FolderBusyError(
                    f"{self.what} {self.folder} is being written by another run ({holder}); wait for it to "
                    f"finish or choose another output folder (two writers would corrupt each other's files)"
                ) from None
            try:  # the holder may have released and unlinked it between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_HELD_LOCKS: dict[Path, FolderLock] = {}


def held_lock_fds() -> tuple[int, ...]:
    """The file descriptors of the writer locks this process holds: handed to a stage subprocess,
    they keep the run folder locked until the stage ends too, even if this process dies first."""
    return tuple(lock._fd for lock in _HELD_LOCKS.values() if lock._fd is not None)


@contextlib.contextmanager
def writer_lock(
    folder: str | os.PathLike, what: str = "output folder", *, beside: bool = False
) -> Iterator[FolderLock | None]:
    """Hold the :class:`FolderLock` of ``folder`` for the body: every command that writes a run
    folder (training, evaluation, probes, publish staging, the pipeline root) takes it before any
    work, so a second writer stops at once naming the first; a dead holder's lock is taken over
    (``flock`` dies with its process). ``beside``: the lock file sits next to ``folder``
    (``.<name>.genssl-writer.lock``), for folders written whole by :func:`atomic_dir`. Only rank 0
    of a distributed launch (``$RANK``) locks: the other ranks follow it. Re-entrant within a
    process. A folder the lock created and the body left empty is removed."""
    folder = Path(folder)
    key = folder.resolve()
    if int(os.environ.get("RANK", "0")) != 0 or key in _HELD_LOCKS:
        yield _HELD_LOCKS.get(key)
        return
    path = folder.parent / f".{folder.name}{FolderLock.NAME}" if beside else None
    lock = FolderLock(folder, what, path=path)
    lock.acquire()
    _HELD_LOCKS[key] = lock
    try:
        yield lock
    finally:
        _HELD_LOCKS.pop(key, None)
        lock.release()
        if lock.created and not beside:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a failed command leaves no empty folder behind


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


TRAIN_SUMMARY_FILE = "train_summary.json"
TRAIN_STEPS_FILE = "train_steps.json"  # the per-step arrays of a run summary (step times, histories)


def write_train_summary(folder: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """``train_summary.json`` that a reader can read: the per-step arrays (lists longer than 16
    entries) go to ``train_steps.json`` beside it, which the summary names."""
    per_step = {k: v for k, v in summary.items() if isinstance(v, (list, tuple)) and len(v) > 16}
    short = {k: v for k, v in summary.items() if k not in per_step}
    if per_step:
        short["per_step_file"] = TRAIN_STEPS_FILE
        write_json(Path(folder) / TRAIN_STEPS_FILE, per_step)
    write_json(Path(folder) / TRAIN_SUMMARY_FILE, short)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def sha256_strings(items: "Iterator[str] | list[str]") -> str:
    """Order-sensitive content hash of a stream of strings (length-prefixed, so unambiguous)."""
    h = hashlib.sha256()
    for s in items:
        b = s.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# Artifacts shipped inside the package, by their "genssl_hf/<name>" names: from_pretrained-style
# entry points of genssl_hf resolve them to the packaged folder, offline (no Hub involved). The NIH
# pair is built by scripts/package_pretrained.py; a name whose folder is absent says so when used.
PRETRAINED: dict[str, str] = {
    "phantom-ldm-64": "generation/pretrained/phantom-ldm-64",
    "nih-ldm-64": "generation/pretrained/nih-ldm-64",
    "nih-genssl-mae-64": "training/pretrained/nih-genssl-mae-64",
    # the GEN-SSL encoder chosen on validation under the real-data protocol (genssl_hf.hub.shipped_protocol)
    "nih-genssl-mae-64-protocol": "training/pretrained/nih-genssl-mae-64-protocol",
}
PRETRAINED_PREFIX = "genssl_hf/"


def pretrained_path(name_or_path: str | os.PathLike) -> Path:
    """The folder of a shipped artifact (``"genssl_hf/nih-ldm-64"``, see :data:`PRETRAINED`), or
    ``name_or_path`` itself as a ``Path`` when it is not such a name (an existing folder wins)."""
    text = str(name_or_path)
    if not text.startswith(PRETRAINED_PREFIX) or Path(text).exists():
        return Path(name_or_path)
    name = text[len(PRETRAINED_PREFIX) :]
    if name not in PRETRAINED:
        raise ValueError(
            f"{text!r} is not a shipped genssl_hf artifact; shipped: "
            + ", ".join(PRETRAINED_PREFIX + n for n in PRETRAINED)
        )
    path = Path(__file__).resolve().parent / PRETRAINED[name]
    if not path.is_dir():
        raise FileNotFoundError(
            f"{text!r} is not packaged in this installation ({path} is absent): "
            "build it with scripts/package_pretrained.py (see genssl_hf.hub.shipped)"
        )
    return path


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Any, Any]:
    """``(__getattr__, __dir__)`` for a package ``__init__`` that re-exports names of its submodules
    without importing them (PEP 562): ``exports`` maps a name to the submodule defining it
    (``{"read_cxr": "io"}``). A submodule is imported, and the name cached in the package, on first
    use, so ``import genssl_hf.data`` stays light while ``from genssl_hf.data import read_cxr`` and
    ``genssl_hf.data.io`` work as before."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        elif not name.startswith("_"):  # a submodule not imported yet, as an attribute
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
