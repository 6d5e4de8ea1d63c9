"""One opener for the image datasets the training and statistics scripts read (``--dataset``).

:func:`open_image_dataset` accepts a ``datasets`` object, a ``save_to_disk`` folder, a data file
(parquet, arrow, csv, json), a plain folder of image files, any other local dataset folder, or a
Hub id, and checks what every consumer needs before any compute: the split exists and has rows,
and the image column exists and holds images. Errors name the source and the column.

A plain image folder is read through the adapters' checked reader (header check of every file,
``on_error`` policy, cached Arrow build): a truncated or decompression-bomb file fails here,
naming the file, instead of in a data-loader worker at step N.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
from typing import Any, Literal

from .image_files import IMAGE_EXTENSIONS

__all__ = ["open_image_dataset", "check_image_column", "is_plain_image_folder"]

_DATA_FILE_EXTENSIONS = (".parquet", ".arrow", ".csv", ".json", ".jsonl", ".tsv", ".txt.gz", ".csv.gz")
_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json", ".tsv": "csv"}


def is_plain_image_folder(path: Path) -> bool:
    """A folder holding image files and no data files (parquet, csv, json...), at any depth."""
    found = False
    for _dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            lower = name.lower()
            if name.startswith(".") or lower == "readme.md":
                continue
            if lower.endswith(_DATA_FILE_EXTENSIONS):
                return False
            found = found or lower.endswith(IMAGE_EXTENSIONS)
    return found


def check_image_column(ds: Any, column: str, what: str = "the dataset") -> None:
    """Raise ``ValueError`` naming ``what`` unless ``column`` exists and holds images (an
    ``Image`` feature, encoded bytes, or pixel arrays), e.g. when a text column is given."""
    import datasets

    from ..validation import did_you_mean

    features = getattr(ds, "features", None)
    columns = list(features) if features is not None else (ds.column_names or [])
    if column not in columns:
        raise ValueError(
            f"{what} has no image column {column!r}{did_you_mean(column, columns)} "
            f"(columns: {columns}); pass --image_column"
        )
    if features is None:
        return
    feature = features[column]
    if isinstance(feature, (datasets.Image, datasets.Array2D, datasets.Array3D)):
        return
    if isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary"):
        return
    sequences = tuple(
        t for t in (getattr(datasets, n, None) for n in ("Sequence", "List", "LargeList")) if isinstance(t, type)
    )
    if isinstance(feature, sequences) or isinstance(feature, list):
        return  # nested lists of pixel values
    if isinstance(feature, dict) and ("bytes" in feature or "path" in feature):
        return
    kind = feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__
    image_columns = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    raise ValueError(
        f"{what}: column {column!r} holds {kind} values, not images"
        + (f"; the image column is {image_columns[0]!r}" if image_columns else "")
        + " (pass --image_column)"
    )


def _load(source: str, split: str, config: str | None, streaming: bool, what: str):
    import datasets

    try:
        p = Path(source)
        if p.is_file():
            builder = _BUILDERS.get(p.suffix.lower())
            if builder is None:
                raise ValueError(
                    f"{what} {source}: a {p.suffix or 'extension-less'} file is not a dataset "
                    f"(give a folder, or a {', '.join(sorted(_BUILDERS))} file)"
                )
            return datasets.load_dataset(builder, data_files=str(p), split="train", streaming=streaming)
        return datasets.load_dataset(source, config, split=split, streaming=streaming)
    except ConnectionError as exc:  # offline, or no such Hub dataset: say a local path was looked for too
        raise not_found_anywhere(source, what, exc) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} {source}: not UTF-8 text ({exc.reason} at byte {exc.start}); a binary file?"
        ) from None
    except ValueError as exc:
        if "corresponds to no data" in str(exc):
            raise ValueError(f"{what} {source}: split {split!r} has no rows (empty dataset)") from None
        if str(exc).startswith(what):
            raise
        raise ValueError(f"{what} {source}: cannot be opened as a dataset: {exc}") from exc
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc
        raise ValueError(f"{what} {source}: cannot be read as a dataset ({type(cause).__name__}: {cause})") from exc


_FSSPEC_PROTOCOLS = ("hf", "http", "https", "s3", "gs", "gcs", "az", "abfs", "file")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]*):(.*)$")


def check_dataset_source(source: str, what: str = "--dataset", schemes: "list[str] | None" = None) -> None:
    """Before ``datasets.load_dataset`` is asked: a ``scheme:`` spec must name a known scheme, and
    a spec that is not an existing path must be able to be a Hub dataset id (``name`` or
    ``owner/name``, and the Hub reachable); otherwise say which local path was looked for."""
    if Path(source).exists():
        return
    m = _SCHEME.match(source)
    if m and m.group(1).lower() in _FSSPEC_PROTOCOLS:
        return  # a remote URL datasets opens itself
    if m and not (len(m.group(1)) == 1 and os.name == "nt"):  # a Windows drive letter is a path
        known = "".join(f"{k}, " if k == "phantom" else f"{k}:<folder>, " for k in schemes or [])
        raise ValueError(
            f"{what} {source!r}: unknown dataset scheme {m.group(1)!r}; give {known}a local folder or file, "
            "or a Hub dataset id"
        )
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(
            f"{what} {source!r}: no such file or folder ({Path(source).absolute()}), and it is not a Hub dataset id"
        )


def not_found_anywhere(source: str, what: str, exc: BaseException) -> FileNotFoundError:
    """The error for a spec that is neither a local path nor reachable on the Hub (offline mode)."""
    return FileNotFoundError(
        f"{what} {source!r}: no such file or folder ({Path(source).absolute()}), and not found on the Hub "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    )


def open_image_dataset(
    source: Any,
    split: str = "train",
    *,
    image_column: str = "image",
    streaming: bool = False,
    dataset_config: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    what: str = "--dataset",
    cache_dir: str | os.PathLike | None = None,
):
    """The ``split`` of ``source`` as a ``Dataset`` / ``IterableDataset``, checked (see module doc)."""
    import datasets

    ds: Any = source
    name = what if not isinstance(source, (str, os.PathLike)) else f"{what} {os.fspath(source)}"
    if isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in source:
            raise KeyError(f"{name} has no split {split!r} (splits: {list(source)})")
        ds = source[split]
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise KeyError(f"{name} has no split {split!r} (splits: {list(ds)})")
                ds = ds[split]
            if streaming:
                ds = ds.to_iterable_dataset(num_shards=max(1, min(64, len(ds) // 1000 or 1)))
        elif p.is_dir() and is_plain_image_folder(p):
            from .adapters import load_unlabelled_images

            ds = load_unlabelled_images(p, on_error=on_error, skipped=skipped, cache_dir=cache_dir)
            if streaming:
                ds = ds.to_iterable_dataset(num_shards=max(1, min(64, len(ds) // 1000 or 1)))
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            raise ValueError(f"{name} is a single image file; give the folder that holds the images")
        else:
            check_dataset_source(os.fspath(source), what)
            ds = _load(os.fspath(source), split, dataset_config, streaming, what)
    elif not isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(f"{what}: unsupported dataset source of type {type(source).__name__}")
    check_image_column(ds, image_column, name)
    if isinstance(ds, datasets.Dataset):
        if len(ds) == 0:
            raise ValueError(f"{name}: the dataset is empty (split {split!r} has no rows)")
    elif next(iter(ds.take(1)), None) is None:
        raise ValueError(f"{name}: the dataset is empty (split {split!r} has no rows)")
    return ds
