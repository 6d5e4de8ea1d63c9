"""Small shared helpers: atomic writes, hashing, JSON config files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


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
}
PRETRAINED_PREFIX = "genssl_hf/"


def pretrained_path(name_or_path: str | os.PathLike) -> Path:
    """The folder of a shipped artifact (``"genssl_hf/nih-ldm-64"``, see :data:`PRETRAINED`), or
    ``name_or_path`` itself as a ``Path`` when it is not such a name (an existing folder wins)."""
    text = str(name_or_path)
    if not text.startswith(PRETRAINED_PREFIX) or Path(text).exists():
        return Path(name_or_path)
    name = text[len(PRETRAINED_PREFIX):]
    if name not in PRETRAINED:
        raise ValueError(f"{text!r} is not a shipped genssl_hf artifact; shipped: "
                         + ", ".join(PRETRAINED_PREFIX + n for n in PRETRAINED))
    path = Path(__file__).resolve().parent / PRETRAINED[name]
    if not path.is_dir():
        raise FileNotFoundError(f"{text!r} is not packaged in this installation ({path} is absent): "
                                "build it with scripts/package_pretrained.py (see genssl_hf.hub.shipped)")
    return path
