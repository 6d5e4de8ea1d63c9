"""What to generate: a prompt set (balanced over its class labels) or a report corpus (one image
per report). Both are validated and hashed here, before any model is loaded.

Prompts are :class:`~genssl_hf.prompts.Prompt` / :class:`~genssl_hf.prompts.PromptSet`, the
package's one prompt model (with its one class-label rule, ``class_label_for``); this module only
reads the looser input forms a user may hand the dataset writer (strings, mappings, JSON files).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from genssl_hf.prompts.promptset import EXISTENCE, Prompt, PromptSet
from genssl_hf.utils import sha256_bytes

EXISTENCE_VALUES = EXISTENCE
_EXISTENCE_ALIASES = {
    "positive": "positive",
    "present": "positive",
    "pos": "positive",
    "true": "positive",
    "1": "positive",
    "negative": "negative",
    "absent": "negative",
    "neg": "negative",
    "false": "negative",
    "0": "negative",
    "unspecified": "unspecified",
    "none": "unspecified",
    "": "unspecified",
    "unknown": "unspecified",
}


def _norm_existence(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "positive" if value else "negative"
    key = "" if value is None else str(getattr(value, "value", value)).strip().lower()
    if key not in _EXISTENCE_ALIASES:
        raise ValueError(f"{where}: existence must be one of {EXISTENCE_VALUES}, got {value!r}")
    return _EXISTENCE_ALIASES[key]


def prompt_from(item: Any, where: str) -> Prompt:
    """A :class:`Prompt` from a string, a mapping (``text`` or ``prompt``, optional ``disease``,
    ``existence`` with aliases such as "absent", ``class_label``) or a prompt-like object."""
    if isinstance(item, str):
        raw: dict[str, Any] = {"text": item}
    elif isinstance(item, Mapping):
        raw = dict(item)
    elif hasattr(item, "text"):
        raw = {k: getattr(item, k) for k in ("text", "disease", "existence", "class_label") if hasattr(item, k)}
    else:
        raise ValueError(f"{where}: a prompt must be a string, a mapping or a Prompt, got {type(item).__name__}")
    text = raw.get("text", raw.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: prompt text must be a non-empty string, got {text!r}")
    disease = raw.get("disease") or ""
    if not isinstance(disease, str):
        raise ValueError(f"{where}: disease must be a string, got {disease!r}")
    existence = _norm_existence(raw.get("existence"), where)
    try:  # an empty class_label is derived by the rule (class_label_for)
        return Prompt(
            text=text.strip(),
            disease=disease.strip(),
            existence=existence,
            class_label=str(raw.get("class_label") or ""),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _prompt_set(items: Sequence[Any], name: str, source_hash: str | None) -> PromptSet:
    """A validated :class:`PromptSet` from loosely typed items (errors name the set and the item)."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(f"prompt set {name!r}: expected a list of prompts, got {type(items).__name__}")
    if len(items) == 0:
        raise ValueError(f"prompt set {name!r} is empty")
    prompts = [prompt_from(item, f"prompt set {name!r}, prompt {i}") for i, item in enumerate(items)]
    try:
        return PromptSet(prompts, strategy="custom", name=name, source_hash=source_hash)
    except ValueError as exc:
        raise ValueError(f"prompt set {name!r}: {exc}") from None


def _read_prompt_json(path: Path) -> tuple[list[Any], str | None, str | None]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"prompt set file {path} is not valid JSON: {exc}") from exc
    if isinstance(obj, Mapping):
        items = obj.get("prompts")
        if items is None:
            raise ValueError(f"prompt set file {path} has no 'prompts' list")
        meta = obj.get("metadata", obj)
        name = meta.get("name") or meta.get("strategy")
        digest = meta.get("fingerprint") or meta.get("hash") or meta.get("content_hash") or meta.get("sha256")
        return list(items), name, digest
    if isinstance(obj, list):
        return obj, None, None
    raise ValueError(f"prompt set file {path} must hold a list of prompts or an object with 'prompts'")


def load_prompts(spec: Any) -> PromptSet:
    """A prompt set from any of: a ``genssl_hf.prompts.PromptSet`` (returned as it is); a shipped
    name ("disease", "heuristic", "elaborated") or a saved prompt-set folder (through
    ``PromptSet.from_pretrained``, else its ``prompts.json``); a JSON file (a list of strings /
    objects, or an object with a ``prompts`` list); a Python list of strings, mappings or prompt
    objects.

    Errors name the input: a missing file, an empty set, a duplicate prompt, an empty text.
    """
    if isinstance(spec, PromptSet):
        return spec
    if hasattr(spec, "prompts") and not isinstance(spec, (str, os.PathLike, Mapping)):
        name = getattr(spec, "name", None) or type(spec).__name__
        return _prompt_set(list(spec.prompts), name, getattr(spec, "fingerprint", None))
    if isinstance(spec, (str, os.PathLike)):
        return _load_prompt_path(os.fspath(spec))
    if isinstance(spec, Mapping):
        items = spec.get("prompts")
        if items is None:
            raise ValueError("prompt set mapping has no 'prompts' list")
        return _prompt_set(list(items), str(spec.get("name", "prompts")), spec.get("hash"))
    if isinstance(spec, Sequence):
        return _prompt_set(list(spec), "prompts", None)
    raise ValueError(f"cannot read a prompt set from {type(spec).__name__}")


def _load_prompt_path(text: str) -> PromptSet:
    """A prompt set from a JSON file, a saved folder, a shipped name or a Hub repo id."""
    path = Path(text)
    if path.is_file():
        items, name, digest = _read_prompt_json(path)
        if path.suffix == ".json" and "format" in json.loads(path.read_text(encoding="utf-8")):
            try:  # a saved PromptSet file: let the prompt-set code validate it
                return PromptSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except Exception as exc:  # noqa: BLE001 - re-raised with the input named
                raise ValueError(f"prompt set file {path}: {exc}") from exc
        return _prompt_set(items, name or path.stem, digest)
    try:  # a saved folder, a shipped name or a Hub repo id
        return PromptSet.from_pretrained(text)
    except Exception as exc:  # noqa: BLE001 - re-raised with the input named
        if not path.is_dir():
            raise ValueError(
                f"prompt set {text!r} is neither a file, a folder nor a shipped prompt set: {exc}"
            ) from exc
    pj = path / "prompts.json"
    if not pj.is_file():
        raise ValueError(f"prompt set folder {path} has no prompts.json")
    items, name, digest = _read_prompt_json(pj)
    return _prompt_set(items, name or path.name, digest)


@dataclass
class ReportCorpus:
    """A report corpus: the text of report ``i`` is the prompt of image ``i``.

    ``rows`` is re-iterable (a ``datasets`` dataset, a list...) and yields mappings or strings.
    Construction reads the text column once (cheap next to generation) to count, validate and
    hash it, so a bad corpus fails before any image is generated.
    """

    rows: Any
    text_column: str
    name: str
    num_reports: int
    content_hash: str
    label_names: list[str] | None = None

    def iter_records(self, start: int = 0) -> Iterator[tuple[int, str, list[int] | None]]:
        """(index, text, label indices or None) from index ``start`` on, in corpus order."""
        source = self.rows
        if start and hasattr(source, "select") and hasattr(source, "__len__"):
            source = source.select(range(start, len(source)))
            offset = start
        elif start and hasattr(source, "skip"):  # datasets.IterableDataset
            source = source.skip(start)
            offset = start
        else:
            offset = 0
        for i, row in enumerate(source, start=offset):
            if i < start:
                continue
            if i >= self.num_reports:
                return
            text = _report_text(row, self.text_column, i)
            labels = list(row.get("labels")) if self.label_names and isinstance(row, Mapping) else None
            yield i, text, labels


def _report_text(row: Any, column: str, i: int) -> str:
    if isinstance(row, str):
        text = row
    elif isinstance(row, Mapping):
        if column not in row:
            raise ValueError(f"report corpus row {i} has no text column {column!r}; columns: {sorted(row)}")
        text = row[column]
    else:
        raise ValueError(f"report corpus row {i} is a {type(row).__name__}, expected a mapping or a string")
    if not isinstance(text, str):
        raise ValueError(f"report corpus row {i}: column {column!r} holds {type(text).__name__}, not text")
    return text


def _open_corpus(spec: Any, split: str, name: str | None) -> tuple[Any, str | None]:
    """The corpus rows ``spec`` names (opened with ``datasets`` when it is a path) and its name so far."""
    import datasets

    rows = spec
    corpus_name = name
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        corpus_name = corpus_name or path.name
        if not path.exists():
            raise ValueError(f"report corpus {path} does not exist")
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            rows = datasets.load_from_disk(str(path))
        elif path.is_dir():
            rows = datasets.load_dataset(str(path), split=split)
        else:
            ext = path.suffix.lower().lstrip(".")
            builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
            if builder is None:
                raise ValueError(
                    f"report corpus {path}: unsupported file type {path.suffix!r} (parquet, json, jsonl, csv)"
                )
            rows = datasets.load_dataset(builder, data_files=str(path), split="train")
        if isinstance(rows, datasets.DatasetDict):
            if split not in rows:
                raise ValueError(f"report corpus {path} has no split {split!r}; splits: {list(rows)}")
            rows = rows[split]
    return rows, corpus_name


def _corpus_label_names(rows: Any, text_column: str, corpus_name: str) -> list[str] | None:
    """Check a dataset's text column is text; the names of its ``labels`` classes when it has them."""
    import datasets

    label_names = None
    features = getattr(rows, "features", None)
    if features is not None:
        if text_column not in features:
            raise ValueError(
                f"report corpus {corpus_name!r} has no text column {text_column!r}; columns: {list(features)}"
            )
        if not isinstance(features[text_column], datasets.Value) or features[text_column].dtype not in (
            "string",
            "large_string",
        ):
            raise ValueError(
                f"report corpus {corpus_name!r}: column {text_column!r} is {features[text_column]}, not text"
            )
        lab = features.get("labels")
        inner = getattr(lab, "feature", None)
        if isinstance(inner, datasets.ClassLabel):
            label_names = list(inner.names)
    return label_names


def _hash_reports(text_rows: Any, text_column: str, corpus_name: str, limit: int | None) -> tuple[int, str]:
    """One validating, hashing pass over the first ``limit`` reports: their count and SHA-256."""
    h = hashlib.sha256()
    count = 0
    for i, row in enumerate(text_rows):
        if limit is not None and i >= limit:
            break
        text = _report_text(row, text_column, i)
        if not text.strip():
            raise ValueError(f"report corpus {corpus_name!r}: report {i} is empty")
        b = text.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        count += 1
    if count == 0:
        raise ValueError(f"report corpus {corpus_name!r} is empty")
    if limit is not None and count < limit:
        raise ValueError(f"report corpus {corpus_name!r} has {count} reports, fewer than the {limit} images asked for")
    return count, h.hexdigest()


def load_report_corpus(
    spec: Any, text_column: str = "report", *, limit: int | None = None, split: str = "train", name: str | None = None
) -> ReportCorpus:
    """A report corpus from a ``datasets`` dataset (map-style or iterable), a list of strings or
    mappings, a folder written by ``save_to_disk``, a dataset folder, or a parquet / json(l) /
    csv file. Only the first ``limit`` reports are used when given. Empty reports are an error
    (an empty prompt would silently become unconditional generation)."""
    import datasets

    rows, corpus_name = _open_corpus(spec, split, name)
    corpus_name = corpus_name or getattr(getattr(rows, "info", None), "dataset_name", None) or "reports"
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise ValueError(f"report corpus must be an iterable of rows, got {type(rows).__name__}")

    label_names = _corpus_label_names(rows, text_column, corpus_name)
    if isinstance(rows, (datasets.Dataset, datasets.IterableDataset)):
        # only the text (and labels): never decode a corpus's images or other columns
        rows = rows.select_columns([text_column] + (["labels"] if label_names else []))
    # One validating, hashing pass over the text only (never kept in memory).
    text_rows = rows
    if isinstance(rows, datasets.Dataset):
        text_rows = rows.select_columns([text_column])
    elif isinstance(rows, datasets.IterableDataset):
        text_rows = rows.select_columns([text_column])
    count, digest = _hash_reports(text_rows, text_column, corpus_name, limit)
    return ReportCorpus(rows, text_column, str(corpus_name), count, digest, label_names)


def report_hash(text: str) -> str:
    """What the published dataset stores instead of a report: SHA-256 of its UTF-8 text."""
    return sha256_bytes(text.encode("utf-8"))
