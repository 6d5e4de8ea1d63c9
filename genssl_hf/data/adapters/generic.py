"""Generic adapters: a class-per-subfolder image folder, and any CSV with a path column and label
column(s) (multi-class, multi-label with a separator, or one 0/1 column per label)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import datasets

from ..image_files import IMAGE_EXTENSIONS
from ..schema import cxr_features
from ._common import (
    CXRDataError,
    Row,
    Verify,
    build_image_dataset,
    check_root,
    iter_csv,
    parse_int,
    path_inside_root,
    unknown_value,
)

POSITIVE_VALUES = ("1", "1.0", "true", "True", "TRUE", "yes", "Yes")
NEGATIVE_VALUES = ("0", "0.0", "false", "False", "FALSE", "no", "No", "")


def load_image_folder(
    root: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    source: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """``root/<class>/**/<image>`` -> canonical multi-class dataset (``label``).

    Classes are the sub-folder names, sorted, unless ``label_names`` fixes them (and their order);
    a sub-folder that is not among ``label_names`` is an error. Files with other extensions and
    hidden files are ignored. Columns: image, label, patient_id/study_id/view (""), source
    (``source`` or the folder name), path (relative to ``root``).
    """
    root = check_root(root, "image folder")
    exts = tuple(e.lower() for e in extensions)
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise CXRDataError(f"image folder {root} has no class sub-folders")
    if label_names is None:
        names = folders
    else:
        names = list(label_names)
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise CXRDataError(f"image folder {root}: sub-folder(s) {unknown} are not among label_names {names}")
    source = source or root.name
    features = cxr_features(names, multi_label=False, extra={"path": datasets.Value("string")})

    def rows():
        for folder in folders:
            for dirpath, dirnames, filenames in os.walk(root / folder):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    if fname.startswith(".") or not fname.lower().endswith(exts):
                        continue
                    full = Path(dirpath) / fname
                    rel = full.relative_to(root).as_posix()
                    yield Row(
                        str(full),
                        str(full),
                        {
                            "label": names.index(folder),
                            "patient_id": "",
                            "study_id": "",
                            "view": "",
                            "source": source,
                            "path": rel,
                        },
                    )

    return build_image_dataset(
        name="image-folder",
        rows=rows,
        features=features,
        # the folder's own state: its listing is re-read on each call, so key the cache on it
        sources=[root / f for f in folders],
        options={
            "root": str(root),
            "label_names": names,
            "extensions": exts,
            "source": source,
            "listing": _listing_state(root, folders, exts),
        },
        on_error=on_error,
        skipped=skipped,
        verify=verify,
        cache_dir=cache_dir,
    )


def _listing_state(root: Path, folders: list[str], exts: tuple[str, ...]) -> str:
    import hashlib

    h = hashlib.sha256()
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(root / folder):
            dirnames.sort()
            for fname in sorted(filenames):
                if fname.lower().endswith(exts):
                    st = os.stat(os.path.join(dirpath, fname))
                    h.update(f"{dirpath}/{fname}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _check_csv_options(
    label_column: str | None,
    label_columns: Sequence[str] | None,
    separator: str | None,
    split: str | None,
    split_column: str | None,
) -> None:
    """The label and split options of :func:`load_image_csv` fit together (before any row is read)."""
    if (label_column is None) == (label_columns is None):
        raise ValueError("give exactly one of label_column (multi-class or separated) or label_columns (0/1 columns)")
    if label_columns is not None and separator is not None:
        raise ValueError("separator applies to label_column, not to label_columns")
    if split is not None and split_column is None:
        raise ValueError("split needs split_column")


def load_image_csv(
    csv_path: str | os.PathLike,
    *,
    path_column: str,
    label_column: str | None = None,
    label_columns: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    separator: str | None = None,
    none_values: Sequence[str] = ("", "No Finding"),
    image_root: str | os.PathLike | None = None,
    split_column: str | None = None,
    split: str | None = None,
    patient_id_column: str | None = None,
    study_id_column: str | None = None,
    view_column: str | None = None,
    extra_columns: Sequence[str] | Mapping[str, datasets.Value] = (),
    source: str | None = None,
    derive: Callable[[dict[str, str]], dict[str, str]] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
) -> datasets.Dataset:
    """Any CSV of image paths and labels -> canonical dataset.

    Label modes (give exactly one of ``label_column`` / ``label_columns``):

    - ``label_column`` alone: multi-class ``label``; each value must be one of ``label_names``.
    - ``label_column`` + ``separator`` (e.g. ``"|"``): multi-label ``labels``; each token must be
      one of ``label_names``; a value in ``none_values`` (e.g. ``"No Finding"``) is no label.
    - ``label_columns``: multi-label from one 0/1 column per label (``1``/``1.0``/``true``/``yes``
      positive; ``0``/``0.0``/``false``/``no``/blank negative; anything else, e.g. ``-1``, is an
      error); the label names are the column names.

    ``label_names`` fixes the label set and order; without it the sorted distinct values of the
    CSV are used (one extra streaming pass). Paths are relative to ``image_root`` (default: the
    CSV's folder) and must stay inside it (``../`` and absolute paths leading out are refused
    naming the row) unless ``allow_outside_root=True``. ``split_column`` + ``split`` keep only one split.
    ``extra_columns`` are carried along as strings, or typed when given as a mapping to
    ``datasets.Value`` (``int*`` / ``float*`` parse, blank -> None). ``derive(row)`` may return
    metadata fields (e.g. ``{"patient_id": ...}``) computed from a row.
    """
    csv_path = Path(csv_path).expanduser().resolve()
    _check_csv_options(label_column, label_columns, separator, split, split_column)
    src = _CsvSource(
        csv_path=csv_path,
        image_root=Path(image_root).expanduser().resolve() if image_root is not None else csv_path.parent,
        extras=dict(extra_columns)
        if isinstance(extra_columns, Mapping)
        else {c: datasets.Value("string") for c in extra_columns},
        path_column=path_column,
        label_column=label_column,
        label_columns=label_columns,
        separator=separator,
        none_set=frozenset(none_values),
        split_column=split_column,
        split=split,
        meta_columns=(patient_id_column, study_id_column, view_column),
        source_name=source or csv_path.stem,
        derive=derive,
        allow_outside_root=allow_outside_root,
    )
    names = src.label_names(label_names)
    features = cxr_features(names, multi_label=src.multi_label, extra={"path": datasets.Value("string"), **src.extras})
    return build_image_dataset(
        name=f"csv:{csv_path.name}",
        rows=lambda: src.rows(names),
        features=features,
        sources=[csv_path],
        options=src.options(names),
        on_error=on_error,
        skipped=skipped,
        verify=verify,
        cache_dir=cache_dir,
    )


@dataclasses.dataclass(frozen=True)
class _CsvSource:
    """How one :func:`load_image_csv` call reads its CSV: which rows, which label mode, which
    metadata and extra columns (the call's arguments, resolved)."""

    csv_path: Path
    image_root: Path
    extras: dict[str, datasets.Value]
    path_column: str
    label_column: str | None
    label_columns: Sequence[str] | None
    separator: str | None
    none_set: frozenset[str]
    split_column: str | None
    split: str | None
    meta_columns: tuple[str | None, str | None, str | None]  # patient_id, study_id, view
    source_name: str
    derive: Callable[[dict[str, str]], dict[str, str]] | None
    allow_outside_root: bool = False

    @property
    def multi_label(self) -> bool:
        return self.label_columns is not None or self.separator is not None

    def selected(self) -> Iterator[tuple[int, dict[str, str]]]:
        """``(line, row)`` of the rows of the chosen split."""
        required = [
            self.path_column,
            *(self.label_columns or [self.label_column]),
            *(c for c in (*self.meta_columns, self.split_column) if c),
            *self.extras,
        ]
        for line, row in iter_csv(self.csv_path, required):
            if self.split is not None and row[self.split_column].strip() != self.split:
                continue
            yield line, row

    def label_names(self, given: Sequence[str] | None) -> list[str]:
        """The label set and order: the label columns, ``given``, or else the sorted distinct
        values of the CSV (one extra streaming pass)."""
        if self.label_columns is not None:
            names = list(given) if given is not None else list(self.label_columns)
            if names != list(self.label_columns):
                raise ValueError("with label_columns the label names are the column names; leave label_names out")
            return names
        if given is not None:
            return list(given)
        found: set[str] = set()
        for _, row in self.selected():
            value = row[self.label_column].strip()
            if self.multi_label:
                found.update(t.strip() for t in value.split(self.separator) if t.strip() not in self.none_set)
            elif value:  # a blank class is reported as an unknown value when the rows are read
                found.add(value)
        names = sorted(found - {""})
        if not names:
            raise CXRDataError(f"{self.csv_path}: column {self.label_column!r} has no label values")
        return names

    def labels(self, row: dict[str, str], line: int, names: list[str], index: dict[str, int]) -> dict[str, Any]:
        """The ``label`` (multi-class) or ``labels`` (multi-label) field of one row."""
        if self.label_columns is not None:
            out = []
            for i, col in enumerate(self.label_columns):
                v = row[col].strip()
                if v in POSITIVE_VALUES:
                    out.append(i)
                elif v not in NEGATIVE_VALUES:
                    raise unknown_value(self.csv_path, line, col, v, (*POSITIVE_VALUES, *NEGATIVE_VALUES))
            return {"labels": out}
        value = row[self.label_column].strip()
        if not self.multi_label:
            if value not in index:
                raise unknown_value(self.csv_path, line, self.label_column, value, names)
            return {"label": index[value]}
        found = set()
        if value not in self.none_set:
            for token in value.split(self.separator):
                token = token.strip()
                if token in self.none_set:
                    continue
                if token not in index:
                    raise unknown_value(self.csv_path, line, self.label_column, token, [*names, *sorted(self.none_set)])
                found.add(index[token])
        return {"labels": sorted(found)}

    def typed(self, value: str, feature: datasets.Value, line: int, col: str) -> Any:
        """An extra column's value as its feature's type (``int*`` / ``float*`` parse, blank -> None)."""
        dtype = feature.dtype
        value = value.strip()
        if dtype.startswith(("int", "uint")):
            return parse_int(value)
        if dtype.startswith("float"):
            if not value:
                return None
            try:
                return float(value)
            except ValueError:
                raise CXRDataError(f"{self.csv_path} line {line}, column {col!r}: not a number: {value!r}") from None
        return value

    def rows(self, names: list[str]) -> Iterator[Row]:
        """One :class:`Row` per selected CSV row."""
        index = {n: i for i, n in enumerate(names)}
        patient_id_column, study_id_column, view_column = self.meta_columns
        for line, row in self.selected():
            rel = row[self.path_column].strip()
            if not rel:
                raise CXRDataError(f"{self.csv_path} line {line}: empty {self.path_column!r}")
            fields = self.labels(row, line, names, index)
            fields.update(
                patient_id=row[patient_id_column].strip() if patient_id_column else "",
                study_id=row[study_id_column].strip() if study_id_column else "",
                view=row[view_column].strip() if view_column else "",
                source=self.source_name,
            )
            if self.derive is not None:
                fields.update(self.derive(row))
            fields["path"] = rel
            for col, feat in self.extras.items():
                fields[col] = self.typed(row[col], feat, line, col)
            where = f"{self.csv_path} line {line}"
            yield Row(where, path_inside_root(self.image_root, rel, where, self.allow_outside_root), fields)

    def options(self, names: list[str]) -> dict[str, Any]:
        """What the cache fingerprint covers besides the CSV file itself."""
        return {
            "path_column": self.path_column,
            "label_column": self.label_column,
            "label_columns": list(self.label_columns) if self.label_columns else None,
            "names": names,
            "separator": self.separator,
            "none_values": sorted(self.none_set),
            "image_root": str(self.image_root),
            "split": [self.split_column, self.split],
            "meta": list(self.meta_columns),
            "extras": {k: v.dtype for k, v in self.extras.items()},
            "source": self.source_name,
            "derive": _hash_callable(self.derive) if self.derive else None,
            # (only when set: existing caches keep their key; a cache made with it is never reused without it)
            **({"allow_outside_root": True} if self.allow_outside_root else {}),
        }


def _hash_callable(fn) -> str:
    """Content hash of ``derive`` (its code, via datasets' dill-based hasher), so that two
    different lambdas never share a cache entry; unhashable callables disable cache reuse."""
    from datasets.fingerprint import Hasher

    try:
        return Hasher.hash(fn)
    except Exception:  # noqa: BLE001 - anything dill cannot pickle
        import uuid

        return f"unhashable-{uuid.uuid4().hex}"


def load_unlabelled_images(
    root: str | os.PathLike,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_error: Literal["raise", "skip"] = "raise",
    skipped: list | None = None,
    verify: Verify = "header",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Every image under ``root`` (recursively, hidden files and other extensions ignored) as an
    unlabelled dataset (``image``, ``path`` relative to ``root``), for pre-training on a plain
    image folder. Files go through the same checked reader as the labelled adapters: a truncated,
    corrupt or oversized (decompression-bomb) file raises :class:`~genssl_hf.data.image_files.CXRReadError`
    naming it, or is left out and recorded under ``on_error="skip"``."""
    root = check_root(root, "image folder")
    exts = tuple(e.lower() for e in extensions)
    features = datasets.Features({"image": datasets.Image(mode="L"), "path": datasets.Value("string")})

    def rows():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith(".") or not fname.lower().endswith(exts):
                    continue
                full = Path(dirpath) / fname
                yield Row(str(full), str(full), {"path": full.relative_to(root).as_posix()})

    return build_image_dataset(
        name="unlabelled-image-folder",
        rows=rows,
        features=features,
        sources=[root],
        options={"root": str(root), "extensions": exts, "listing": _listing_state(root, ["."], exts)},
        on_error=on_error,
        skipped=skipped,
        verify=verify,
        cache_dir=cache_dir,
    )
