"""Materialise generated chest X-rays as a Hugging Face ``datasets`` dataset.

``generate_dataset`` runs a text-to-image generator over a balanced prompt plan (or over a report
corpus, one image per report) and streams the images into parquet shards that
``datasets.load_dataset(<out>)`` opens directly, with or without ``streaming=True``, and that
push to the Hub as they are.

Determinism
    Sample ``i`` gets its prompt and its seed from (prompt set, N, global seed, i) alone (see
    :mod:`genssl_hf.generation.balance`), and the generator makes each image from its own seed,
    so the dataset does not depend on the number of processes, the batch size, or on where a run
    was interrupted.

Layout
    ``data/train-KKKKK-of-TTTTT.parquet``; shard ``k`` holds indices ``[k * S, (k + 1) * S)``
    (``S`` images per shard, from ``shard_size``: a number of images, or bytes such as
    ``"256MB"``, converted to images by the raw size of one image, H x W bytes, an upper bound for
    PNG). Above 10,000 shards the files go into subfolders of 1,000 (``data/00012/train-...``) so
    that no folder exceeds 10,000 files. Processes take the shards round-robin; a shard belongs
    to exactly one process, so processes never write the same file.

Crash safety and resume
    A shard is produced in checkpoint chunks of ``rows_per_checkpoint`` images, each written to
    a temporary file, fsync'ed and atomically renamed into ``.incomplete/<shard>/``. When all
    chunks of a shard exist they are streamed into a temporary shard file, which is renamed into
    ``data/`` (an atomic rename on the same file system): a file in ``data/`` is always complete.
    A rerun with the same settings skips complete shards and complete chunks, regenerates only
    the chunk that was in flight, and refuses to continue a folder started with settings that
    would change its content. At the end the main process reads the ``index`` column of every
    shard and reports missing, duplicate or unexpected indices (``verification.json``).

Memory
    At most one checkpoint chunk of encoded images per process is held in memory, whatever N is.

Report-conditioned generation
    With ``reports=`` each report of a corpus becomes the prompt of one image (index = row).
    The published dataset holds a SHA-256 of each report, never its text, unless
    ``keep_prompt_text=True``; the card records the corpus's content hash, not its text.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from genssl_hf.validation import NUMERIC_RANGES, check_number, checked_parser
from genssl_hf.generation.balance import BalancePlan, balance_plan, sample_seed
from genssl_hf.utils import (
    FolderLock,
    read_json,
    remove_stale_temps,
    sha256_bytes,
    sha256_file,
    sha256_strings,
    temp_prefix,
    write_json,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ImageGenerator",
    "DiffusersGenerator",
    "PhantomGenerator",
    "PromptSpec",
    "PromptCollection",
    "ReportCorpus",
    "ShardLayout",
    "GenerationResult",
    "VerificationReport",
    "load_prompts",
    "load_report_corpus",
    "load_generator",
    "check_generator_spec",
    "generated_features",
    "parse_shard_size",
    "generate_dataset",
    "verify_dataset",
    "write_dataset_card",
    "push_dataset_to_hub",
    "main",
]

FORMAT_VERSION = 1
CONFIG_NAME = "generation_config.json"
VERIFICATION_NAME = "verification.json"
INCOMPLETE_DIR = ".incomplete"
DATA_DIR = "data"
SPLIT = "train"
DEFAULT_SHARD_SIZE = "256MB"
DEFAULT_ROWS_PER_CHECKPOINT = 128
MAX_FILES_PER_FOLDER = 10_000
FILES_PER_SUBFOLDER = 1_000
SOURCE = "genssl_hf-generated"
_ATOMIC_FILES = (CONFIG_NAME, VERIFICATION_NAME, "README.md")  # written whole by write_json / atomic_write_text
CARD_TEMPLATE = "synthetic_dataset"
_ROW_OVERHEAD_BYTES = 512  # prompt, ids and parquet framing per row, for the bytes -> images estimate

EXISTENCE_VALUES = ("positive", "negative", "unspecified")
_EXISTENCE_ALIASES = {
    "positive": "positive", "present": "positive", "pos": "positive", "true": "positive", "1": "positive",
    "negative": "negative", "absent": "negative", "neg": "negative", "false": "negative", "0": "negative",
    "unspecified": "unspecified", "none": "unspecified", "": "unspecified", "unknown": "unspecified",
}


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of a set: its text, the disease it is about (or ""), whether it states the
    disease present / absent / neither, and the class label it stands for in the balance."""

    text: str
    disease: str = ""
    existence: str = "unspecified"
    class_label: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PromptCollection:
    """A validated, ordered prompt set as the materialiser sees it."""

    prompts: tuple[PromptSpec, ...]
    name: str
    source_hash: str | None = None  # the prompt set's own hash, when it publishes one

    @property
    def content_hash(self) -> str:
        """SHA-256 over the prompts (text, disease, existence, class label), order-sensitive."""
        return sha256_strings(json.dumps(p.as_dict(), sort_keys=True) for p in self.prompts)

    @property
    def diseases(self) -> list[str]:
        out: list[str] = []
        for p in self.prompts:
            if p.disease and p.disease not in out:
                out.append(p.disease)
        return out

    @property
    def class_names(self) -> list[str]:
        out: list[str] = []
        for p in self.prompts:
            if p.class_label not in out:
                out.append(p.class_label)
        return out


def _norm_existence(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "positive" if value else "negative"
    key = "" if value is None else str(getattr(value, "value", value)).strip().lower()
    if key not in _EXISTENCE_ALIASES:
        raise ValueError(f"{where}: existence must be one of {EXISTENCE_VALUES}, got {value!r}")
    return _EXISTENCE_ALIASES[key]


def _prompt_from(item: Any, where: str) -> PromptSpec:
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
    label = raw.get("class_label")
    if label is None or label == "":
        # Without an explicit class: "disease with / with no" where the set has diseases,
        # otherwise each prompt is its own class.
        if disease:
            label = f"no {disease}" if existence == "negative" else disease
        else:
            label = text.strip()
    return PromptSpec(text=text.strip(), disease=disease.strip(), existence=existence, class_label=str(label))


def _validate_prompts(items: Sequence[Any], name: str) -> tuple[PromptSpec, ...]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(f"prompt set {name!r}: expected a list of prompts, got {type(items).__name__}")
    if len(items) == 0:
        raise ValueError(f"prompt set {name!r} is empty")
    prompts = tuple(_prompt_from(item, f"prompt set {name!r}, prompt {i}") for i, item in enumerate(items))
    seen: dict[str, int] = {}
    for i, p in enumerate(prompts):
        if p.text in seen:
            raise ValueError(f"prompt set {name!r}: prompt {i} duplicates prompt {seen[p.text]} ({p.text!r})")
        seen[p.text] = i
    return prompts


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


def _promptset_meta(obj: Any) -> tuple[str | None, str | None]:
    name = None
    for attr in ("name", "strategy"):
        value = getattr(obj, attr, None)
        if value is None and hasattr(obj, "metadata"):
            meta = obj.metadata
            value = meta.get(attr) if isinstance(meta, Mapping) else getattr(meta, attr, None)
        if isinstance(value, str) and value:
            name = value
            break
    digest = None
    for attr in ("fingerprint", "content_hash", "hash", "sha256"):
        value = getattr(obj, attr, None)
        if value is None and hasattr(obj, "metadata"):
            meta = obj.metadata
            value = meta.get(attr) if isinstance(meta, Mapping) else getattr(meta, attr, None)
        if callable(value):
            value = value()
        if isinstance(value, str) and value:
            digest = value
            break
    return name, digest


def load_prompts(spec: Any) -> PromptCollection:
    """A prompt set from any of: a ``genssl_hf.prompts.PromptSet``; a shipped name ("disease",
    "heuristic", "elaborated") or a saved prompt-set folder (through ``PromptSet.from_pretrained``
    when available, else its ``prompts.json``); a JSON file (a list of strings / objects, or an
    object with a ``prompts`` list); a Python list of strings, mappings or prompt objects.

    Errors name the input: a missing file, an empty set, a duplicate prompt, an empty text.
    """
    if isinstance(spec, PromptCollection):
        return spec
    promptset_cls = _promptset_class()
    if promptset_cls is not None and isinstance(spec, promptset_cls):
        name, digest = _promptset_meta(spec)
        name = name or "prompts"
        return PromptCollection(_validate_prompts(list(spec), name), name, digest)
    if hasattr(spec, "prompts") and not isinstance(spec, (str, os.PathLike, Mapping)):
        name, digest = _promptset_meta(spec)
        name = name or type(spec).__name__
        return PromptCollection(_validate_prompts(list(spec.prompts), name), name, digest)
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        path = Path(text)
        if path.is_file():
            items, name, digest = _read_prompt_json(path)
            if promptset_cls is not None and path.suffix == ".json" and "format" in json.loads(path.read_text(encoding="utf-8")):
                try:  # a saved PromptSet file: let the prompt-set code validate it
                    obj = promptset_cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
                except Exception as exc:  # noqa: BLE001 - re-raised with the input named
                    raise ValueError(f"prompt set file {path}: {exc}") from exc
                return load_prompts(obj)
            name = name or path.stem
            return PromptCollection(_validate_prompts(items, name), name, digest)
        if promptset_cls is not None:  # a saved folder, a shipped name or a Hub repo id
            try:
                obj = promptset_cls.from_pretrained(text)
            except Exception as exc:  # noqa: BLE001 - re-raised with the input named
                if not path.is_dir():
                    raise ValueError(f"prompt set {text!r} is neither a file, a folder nor a shipped prompt set: {exc}") from exc
                obj = None
            if obj is not None:
                return load_prompts(obj)
        if path.is_dir():
            pj = path / "prompts.json"
            if not pj.is_file():
                raise ValueError(f"prompt set folder {path} has no prompts.json")
            items, name, digest = _read_prompt_json(pj)
            name = name or path.name
            return PromptCollection(_validate_prompts(items, name), name, digest)
        raise ValueError(f"prompt set {text!r} not found: not a file, not a folder, not a shipped prompt set name")
    if isinstance(spec, Mapping):
        items = spec.get("prompts")
        if items is None:
            raise ValueError("prompt set mapping has no 'prompts' list")
        name = str(spec.get("name", "prompts"))
        return PromptCollection(_validate_prompts(list(items), name), name, spec.get("hash"))
    if isinstance(spec, Sequence):
        return PromptCollection(_validate_prompts(list(spec), "prompts"), "prompts", None)
    raise ValueError(f"cannot read a prompt set from {type(spec).__name__}")


def _promptset_class():
    try:
        module = importlib.import_module("genssl_hf.prompts")
    except ImportError:
        return None
    return getattr(module, "PromptSet", None)


# ----------------------------------------------------------------------------------------------
# Report corpora
# ----------------------------------------------------------------------------------------------


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


def load_report_corpus(
    spec: Any, text_column: str = "report", *, limit: int | None = None, split: str = "train", name: str | None = None
) -> ReportCorpus:
    """A report corpus from a ``datasets`` dataset (map-style or iterable), a list of strings or
    mappings, a folder written by ``save_to_disk``, a dataset folder, or a parquet / json(l) /
    csv file. Only the first ``limit`` reports are used when given. Empty reports are an error
    (an empty prompt would silently become unconditional generation)."""
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
                raise ValueError(f"report corpus {path}: unsupported file type {path.suffix!r} (parquet, json, jsonl, csv)")
            rows = datasets.load_dataset(builder, data_files=str(path), split="train")
        if isinstance(rows, datasets.DatasetDict):
            if split not in rows:
                raise ValueError(f"report corpus {path} has no split {split!r}; splits: {list(rows)}")
            rows = rows[split]
    corpus_name = corpus_name or getattr(getattr(rows, "info", None), "dataset_name", None) or "reports"
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise ValueError(f"report corpus must be an iterable of rows, got {type(rows).__name__}")

    label_names = None
    features = getattr(rows, "features", None)
    if features is not None:
        if text_column not in features:
            raise ValueError(f"report corpus {corpus_name!r} has no text column {text_column!r}; columns: {list(features)}")
        if not isinstance(features[text_column], datasets.Value) or features[text_column].dtype not in ("string", "large_string"):
            raise ValueError(f"report corpus {corpus_name!r}: column {text_column!r} is {features[text_column]}, not text")
        lab = features.get("labels")
        inner = getattr(lab, "feature", None)
        if isinstance(inner, datasets.ClassLabel):
            label_names = list(inner.names)

    if isinstance(rows, (datasets.Dataset, datasets.IterableDataset)):
        # only the text (and labels): never decode a corpus's images or other columns
        rows = rows.select_columns([text_column] + (["labels"] if label_names else []))
    # One validating, hashing pass over the text only (never kept in memory).
    text_rows = rows
    if isinstance(rows, datasets.Dataset):
        text_rows = rows.select_columns([text_column])
    elif isinstance(rows, datasets.IterableDataset):
        text_rows = rows.select_columns([text_column])
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
    return ReportCorpus(rows, text_column, str(corpus_name), count, h.hexdigest(), label_names)


def report_hash(text: str) -> str:
    """What the published dataset stores instead of a report: SHA-256 of its UTF-8 text."""
    return sha256_bytes(text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------


@runtime_checkable
class ImageGenerator(Protocol):
    """What the materialiser needs from a generator: images for prompts, one seed per image,
    each image depending only on its own (prompt, seed). Returns a batch of grayscale images as
    uint8, or floats in [0, 1]: (B, H, W), (B, H, W, C), (B, C, H, W) arrays / tensors or a list
    of PIL images."""

    generator_id: str

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> Any: ...


def to_uint8_gray(images: Any, height: int | None = None, width: int | None = None) -> list[np.ndarray]:
    """A generator's batch -> list of (H, W) uint8 arrays; floats are read as [0, 1]."""
    if hasattr(images, "images"):  # a diffusers output object
        images = images.images
    if isinstance(images, (list, tuple)):
        arrays = [_one_gray(im) for im in images]
    else:
        if hasattr(images, "detach"):  # torch tensor
            images = images.detach().float().cpu().numpy()
        arr = np.asarray(images)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        arrays = [_one_gray(a) for a in arr]
    for a in arrays:
        if (height is not None and a.shape[0] != height) or (width is not None and a.shape[1] != width):
            raise ValueError(f"generator returned a {a.shape[0]}x{a.shape[1]} image, expected {height}x{width}")
    return arrays


def _one_gray(im: Any) -> np.ndarray:
    if hasattr(im, "convert") and hasattr(im, "mode"):  # PIL
        return np.asarray(im.convert("L") if im.mode != "L" else im, dtype=np.uint8)
    if hasattr(im, "detach"):
        im = im.detach().float().cpu().numpy()
    a = np.asarray(im)
    if a.ndim == 3:
        if a.shape[-1] == 1:
            a = a[..., 0]
        elif a.shape[-1] in (3, 4):
            rgb = a[..., :3].astype(np.float32)
            a = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as PIL "L"
            a = a.astype(np.float32) if np.issubdtype(im.dtype if hasattr(im, "dtype") else a.dtype, np.floating) else np.round(a)
        else:
            raise ValueError(f"cannot read an image of shape {a.shape} as grayscale")
    if a.ndim != 2:
        raise ValueError(f"cannot read an image of shape {a.shape} as grayscale")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError("generator returned non-finite pixel values")
        return np.ascontiguousarray(np.floor(np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return np.ascontiguousarray(np.clip(a, 0, 255).astype(np.uint8))


class DiffusersGenerator:
    """A diffusers text-to-image pipeline as an :class:`ImageGenerator`.

    One CPU ``torch.Generator`` per image, seeded with the sample seed (CPU generators give the
    same initial noise on any device), ``output_type="np"``.
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        generator_id: str,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.0,
        height: int | None = None,
        width: int | None = None,
        call_kwargs: Mapping[str, Any] | None = None,
    ):
        self.pipeline = pipeline
        self.generator_id = generator_id
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.height, self.width = height, width
        self.call_kwargs = dict(call_kwargs or {})
        dtype = self.call_kwargs.get("dtype")
        if isinstance(dtype, str):  # JSON from the command line: "bfloat16" -> torch.bfloat16
            import torch

            if not isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
                raise ValueError(f"pipeline dtype {dtype!r} is not a torch dtype")
            self.call_kwargs["dtype"] = getattr(torch, dtype.removeprefix("torch."))
        try:
            self._accepts_batch_size = "batch_size" in inspect.signature(pipeline.__call__).parameters
        except (TypeError, ValueError):
            self._accepts_batch_size = False

    @property
    def default_size(self) -> tuple[int, int] | None:
        return _pipeline_default_size(self.pipeline)

    def prompt_token_overflow(self, prompts: Sequence[str]) -> list[int | None]:
        """Tokens of each prompt the pipeline's text encoder cuts off (None: unknown)."""
        own = getattr(self.pipeline, "prompt_token_overflow", None)
        if own is not None:
            return list(own(prompts))
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        if tokenizer is None or not isinstance(limit, int) or limit > 1_000_000:
            return [None] * len(prompts)
        return [max(0, len(ids) - limit) for ids in tokenizer(list(prompts), truncation=False)["input_ids"]]

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> Any:
        import torch

        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        kwargs = dict(
            prompt=list(prompts),
            generator=gens,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            output_type="np",
            **self.call_kwargs,
        )
        if self._accepts_batch_size and "batch_size" not in self.call_kwargs:
            kwargs["batch_size"] = len(prompts)  # our batch is the pipeline's batch
        if self.height is not None:
            kwargs["height"] = self.height
        if self.width is not None:
            kwargs["width"] = self.width
        with torch.inference_mode():
            out = self.pipeline(**kwargs)
        return out.images if hasattr(out, "images") else out


def _pipeline_default_size(pipe: Any) -> tuple[int, int] | None:
    for attr in ("default_image_size", "image_size", "sample_size"):
        value = getattr(pipe, attr, None)
        if value is None and hasattr(pipe, "config"):
            value = pipe.config.get(attr) if isinstance(pipe.config, Mapping) else getattr(pipe.config, attr, None)
        if isinstance(value, int):
            return value, value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return int(value[0]), int(value[1])
    return None


class PhantomGenerator:
    """The phantom chest X-ray world as a text-to-image "generator": the prompt is parsed into
    findings (``genssl_hf.data.phantom.findings_from_text``) and the phantom is rendered from the
    sample seed. An oracle generator for dry runs, tests and pipeline demos without a trained
    diffusion model. Like the prompt sets, the parser reads "X with no <feature>" as the negative
    class: such a prompt renders a film without X, matching its "no X" label."""

    batch_invariant = True  # numpy, one image at a time: bit-exact for any batch size or thread count

    def prompt_token_overflow(self, prompts: Sequence[str]) -> list[int]:
        return [0] * len(prompts)  # the prompt parser reads the whole text

    def __init__(self, size: int = 128, generator_id: str | None = None):
        from genssl_hf.data import phantom

        self._phantom = phantom
        self.size = int(size)
        self.generator_id = generator_id or f"phantom-v{phantom.PHANTOM_VERSION}"
        self.default_size = (self.size, self.size)

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[np.ndarray]:
        out = []
        for text, seed in zip(prompts, seeds):
            findings = self._phantom.findings_from_text(text)
            out.append(self._phantom.sample_phantom(int(seed), self.size, findings=findings).image)
        return out


def check_generator_spec(spec: Any) -> None:
    """Cheap validation of a generator spec before any compute: a pipeline folder must exist and
    hold ``model_index.json``; ``module:factory`` must name an importable module."""
    if spec is None:
        raise ValueError("no generator given: pass a pipeline folder, 'phantom', or 'module:factory'")
    if not isinstance(spec, (str, os.PathLike)):
        if not callable(spec):
            raise ValueError(f"generator {spec!r} is not callable")
        return
    text = os.fspath(spec)
    if text == "phantom":
        return
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"pipeline {path} is not a folder")
        if not (path / "model_index.json").is_file():
            raise ValueError(f"pipeline folder {path} has no model_index.json (not a diffusers pipeline folder)")
        return
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        module = text.split(":")[0]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"generator factory module {module!r} (from {text!r}) cannot be imported")
        return
    raise ValueError(f"pipeline folder {path} does not exist")


def _folder_fingerprint(path: Path) -> str:
    """Content hash of a pipeline folder: every file's relative path and SHA-256."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def default_generator_id(spec: Any) -> str:
    """``<folder name>@<12 hex of its content hash>`` for a pipeline folder; the spec otherwise."""
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return f"{path.resolve().name}@{_folder_fingerprint(path)[:12]}"
        if os.fspath(spec) == "phantom":
            from genssl_hf.data import phantom

            return f"phantom-v{phantom.PHANTOM_VERSION}"
        return os.fspath(spec)
    return getattr(spec, "generator_id", None) or type(spec).__name__


def load_generator(
    spec: Any,
    *,
    height: int | None = None,
    width: int | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.0,
    device: Any = None,
    generator_id: str | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> ImageGenerator:
    """An :class:`ImageGenerator` from a spec: an object that already is one; ``"phantom"``;
    a diffusers pipeline folder (through ``genssl_hf.generation``'s pipeline class when present,
    else ``DiffusionPipeline.from_pretrained``); or ``"package.module:factory"``, a callable
    called with ``height, width, num_inference_steps, guidance_scale, device``."""
    check_generator_spec(spec)
    if not isinstance(spec, (str, os.PathLike)):
        if generator_id and not getattr(spec, "generator_id", None):
            with contextlib.suppress(AttributeError):
                spec.generator_id = generator_id
        return spec
    text = os.fspath(spec)
    gid = generator_id or default_generator_id(spec)
    if text == "phantom":
        if height is not None and width is not None and height != width:
            raise ValueError("the phantom generator makes square images: height must equal width")
        return PhantomGenerator(size=height or width or 128, generator_id=gid)
    path = Path(text)
    if path.is_dir():
        pipe = _load_pipeline(path)
        if device is not None:
            pipe = pipe.to(device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        return DiffusersGenerator(
            pipe,
            generator_id=gid,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            call_kwargs=call_kwargs,
        )
    module_name, attr = text.split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    gen = factory(
        height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, device=device
    )
    if not getattr(gen, "generator_id", None):
        with contextlib.suppress(AttributeError):
            gen.generator_id = gid
    return gen


def _load_pipeline(path: Path) -> Any:
    index = read_json(path / "model_index.json")
    class_name = index.get("_class_name")
    try:
        generation = importlib.import_module("genssl_hf.generation")
        cls = getattr(generation, class_name, None) if class_name else None
        if cls is None:
            with contextlib.suppress(ImportError):
                cls = getattr(importlib.import_module("genssl_hf.generation.pipeline"), class_name, None)
    except ImportError:
        cls = None
    if cls is not None:
        return cls.from_pretrained(str(path))
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(path))


# ----------------------------------------------------------------------------------------------
# Schema and layout
# ----------------------------------------------------------------------------------------------


def generated_features(
    *,
    label_names: Sequence[str] | None,
    class_names: Sequence[str] | None = None,
    report_mode: bool = False,
    keep_prompt_text: bool = True,
):
    """The ``datasets.Features`` of a generated dataset.

    Prompt mode with diseases: the canonical multi-label schema over the prompt set's diseases
    (``labels`` holds the prompt's disease when it is stated present or unspecified, nothing
    when it is stated absent) plus ``prompt``, ``prompt_id``, ``disease``, ``existence`` and
    ``class_label`` (the balance class). Prompt mode without diseases: the multi-class schema
    with ``label`` = the prompt's class. Report mode: ``labels`` when the corpus has them, and
    ``report_sha256`` (``prompt`` only when the text is kept on request). Always ``seed``,
    ``index`` and ``generator_id``.
    """
    import datasets

    from genssl_hf.data.schema import METADATA_FEATURES, cxr_features

    tail = {
        "seed": datasets.Value("int64"),
        "index": datasets.Value("int64"),
        "generator_id": datasets.Value("string"),
        # tokens of the prompt the text encoder cut off (0: none; null: the generator cannot say)
        "prompt_tokens_truncated": datasets.Value("int32"),
    }
    if report_mode:
        extra: dict[str, Any] = {}
        if keep_prompt_text:
            extra["prompt"] = datasets.Value("string")
        extra["report_sha256"] = datasets.Value("string")
        extra.update(tail)
        if label_names:
            return cxr_features(label_names, multi_label=True, extra=extra)
        return datasets.Features({"image": datasets.Image(mode="L"), **METADATA_FEATURES, **extra})
    extra = {
        "prompt": datasets.Value("string"),
        "prompt_id": datasets.Value("int32"),
        "disease": datasets.Value("string"),
        "existence": datasets.Value("string"),
    }
    if label_names:
        extra["class_label"] = datasets.ClassLabel(names=list(class_names or []))
        extra.update(tail)
        return cxr_features(label_names, multi_label=True, extra=extra)
    extra.update(tail)
    return cxr_features(list(class_names or []), multi_label=False, extra=extra)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_shard_size(value: int | str) -> tuple[str, int]:
    """``1000`` / ``"1000"`` -> ("images", 1000); ``"256MB"``, ``"1GiB"`` -> ("bytes", n)."""
    if isinstance(value, bool):
        raise ValueError(f"shard size must be a number of images or bytes like '256MB', got {value!r}")
    if isinstance(value, (int, np.integer)):
        kind, n = "images", int(value)
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise ValueError(f"shard size {value!r}: expected a number of images (e.g. 1000) or bytes (e.g. '256MB')")
        number, unit = m.groups()
        if unit is None:
            if "." in number:
                raise ValueError(f"shard size {value!r}: a number of images must be an integer")
            kind, n = "images", int(number)
        else:
            kind, n = "bytes", int(float(number) * _UNITS[unit.lower()])
    if n <= 0:
        raise ValueError(f"shard size must be positive, got {value!r}")
    return kind, n


def shard_images_for(shard_size: int | str, height: int, width: int) -> int:
    """Images per shard: the number given, or a byte budget divided by the raw image size."""
    kind, n = parse_shard_size(shard_size)
    if kind == "images":
        return n
    return max(1, n // (int(height) * int(width) + _ROW_OVERHEAD_BYTES))


@dataclass(frozen=True)
class ShardLayout:
    """Index ranges of the shards and their paths; a pure function of (N, images per shard)."""

    num_images: int
    shard_images: int
    rows_per_checkpoint: int = DEFAULT_ROWS_PER_CHECKPOINT

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_images)

    @property
    def nested(self) -> bool:
        return self.num_shards > MAX_FILES_PER_FOLDER

    @property
    def digits(self) -> int:
        return max(5, len(str(self.num_shards)))

    def shard_range(self, k: int) -> tuple[int, int]:
        start = k * self.shard_images
        return start, min(start + self.shard_images, self.num_images)

    def shard_name(self, k: int) -> str:
        return f"{SPLIT}-{k:0{self.digits}d}-of-{self.num_shards:0{self.digits}d}"

    def shard_relpath(self, k: int) -> str:
        if self.nested:
            return f"{DATA_DIR}/{k // FILES_PER_SUBFOLDER:05d}/{self.shard_name(k)}.parquet"
        return f"{DATA_DIR}/{self.shard_name(k)}.parquet"

    @property
    def data_files_pattern(self) -> str:
        return f"{DATA_DIR}/*/{SPLIT}-*.parquet" if self.nested else f"{DATA_DIR}/{SPLIT}-*.parquet"


# ----------------------------------------------------------------------------------------------
# Row sources: the prompt, labels and metadata of index i
# ----------------------------------------------------------------------------------------------


class _PromptRows:
    def __init__(self, prompts: PromptCollection, plan: BalancePlan, seed: int, generator_id: str):
        self.prompts, self.plan, self.seed, self.generator_id = prompts, plan, int(seed), generator_id
        self.label_index = {d: i for i, d in enumerate(prompts.diseases)}

    def rows(self, start: int, stop: int) -> dict[str, list]:
        pids = self.plan.prompt_ids(start, stop)
        cols: dict[str, list] = collections.defaultdict(list)
        for i, pid in zip(range(start, stop), pids.tolist()):
            p = self.prompts.prompts[pid]
            cols["prompt"].append(p.text)
            cols["prompt_id"].append(pid)
            cols["disease"].append(p.disease)
            cols["existence"].append(p.existence)
            if self.label_index:
                positive = p.disease and p.existence != "negative"
                cols["labels"].append([self.label_index[p.disease]] if positive else [])
                cols["class_label"].append(self.plan.prompt_class[pid])
            else:
                cols["label"].append(self.plan.prompt_class[pid])
            _common(cols, i, sample_seed(self.seed, i), self.generator_id)
        return cols


class _ReportRows:
    """Forward cursor over the corpus; ranges must come in increasing order (they do: a process
    walks its shards and their chunks in index order)."""

    def __init__(self, corpus: ReportCorpus, seed: int, generator_id: str, keep_prompt_text: bool):
        self.corpus, self.seed, self.generator_id, self.keep = corpus, int(seed), generator_id, keep_prompt_text
        self._it: Iterator | None = None
        self._pending: tuple | None = None

    def rows(self, start: int, stop: int) -> dict[str, list]:
        if self._it is None or (self._pending is not None and self._pending[0] > start):
            self._it, self._pending = self.corpus.iter_records(start), None
        cols: dict[str, list] = collections.defaultdict(list)
        while True:
            rec = self._pending if self._pending is not None else next(self._it, None)
            self._pending = None
            if rec is None:
                break
            i, text, labels = rec
            if i < start:
                continue
            if i >= stop:
                self._pending = rec
                break
            cols["_text"].append(text)  # the prompt for the generator; dropped before writing unless kept
            if self.keep:
                cols["prompt"].append(text)
            cols["report_sha256"].append(report_hash(text))
            if self.corpus.label_names:
                cols["labels"].append(list(labels or []))
            _common(cols, i, sample_seed(self.seed, i), self.generator_id)
        if len(cols["index"]) != stop - start:
            raise RuntimeError(f"report corpus ended early: rows [{start}, {stop}) are not all present")
        return cols


def _common(cols: dict[str, list], i: int, seed: int, generator_id: str) -> None:
    cols["patient_id"].append(f"synthetic-{i:09d}")
    cols["study_id"].append(f"synthetic-{i:09d}")
    cols["view"].append("")
    cols["source"].append(SOURCE)
    cols["seed"].append(seed)
    cols["index"].append(i)
    cols["generator_id"].append(generator_id)


# ----------------------------------------------------------------------------------------------
# Distributed context
# ----------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None
    device: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist_from(state: Any) -> _Dist:
    if state is None:
        return _Dist()
    if isinstance(state, _Dist):
        return state
    return _Dist(
        rank=int(state.process_index),
        world=int(state.num_processes),
        barrier=state.wait_for_everyone,
        device=getattr(state, "device", None),
    )


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    out_dir: Path
    num_images: int
    num_shards: int
    generated: int  # images generated by this process in this run
    seconds_generate: float
    seconds_encode: float
    seconds_write: float
    verification: "VerificationReport | None" = None
    card_path: Path | None = None
    pushed_to: str | None = None

    @property
    def write_share(self) -> float:
        total = self.seconds_generate + self.seconds_encode + self.seconds_write
        return (self.seconds_encode + self.seconds_write) / total if total > 0 else 0.0


@dataclass
class VerificationReport:
    ok: bool
    num_expected: int
    num_found: int
    missing: list[list[int]] = field(default_factory=list)  # [start, stop) ranges
    duplicates: list[int] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    unexpected_files: list[str] = field(default_factory=list)
    num_bytes: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    prompt_counts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    truncated_prompts: int = 0  # images whose prompt the text encoder cut
    max_tokens_truncated: int = 0

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.num_found} / {self.num_expected} indices, no duplicates"
        parts = [f"{self.num_found} / {self.num_expected} indices found"]
        if self.missing:
            n = sum(b - a for a, b in self.missing)
            parts.append(f"{n} missing in ranges {self.missing[:10]}{' ...' if len(self.missing) > 10 else ''}")
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicated indices, e.g. {self.duplicates[:10]}")
        if self.misplaced:
            parts.append(f"indices in the wrong shard: {self.misplaced[:5]}")
        if self.unexpected_files:
            parts.append(f"unexpected files: {self.unexpected_files[:5]}")
        return "; ".join(parts)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_parquet_atomic(path: Path, tables: Iterable[Any], schema: Any, tmp_dir: Path | None = None) -> int:
    """Stream ``tables`` (or callables returning tables) into ``path`` atomically; returns rows.
    The temporary file lives in ``tmp_dir`` (same file system), so ``data/`` never holds one."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (tmp_dir or path.parent) / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in tables:
                table = table() if callable(table) else table
                writer.write_table(table, row_group_size=max(1, table.num_rows))
                rows += table.num_rows
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return rows


_CHUNK_RE = re.compile(r"^rows-(\d+)-(\d+)\.parquet$")


def _existing_chunks(cdir: Path, start: int, stop: int) -> list[tuple[int, int, Path]]:
    """Complete checkpoint chunks of one shard, disjoint, sorted; stale temporaries removed."""
    if not cdir.is_dir():
        return []
    chunks = []
    for f in cdir.iterdir():
        if f.name.startswith(".tmp-"):
            f.unlink(missing_ok=True)  # left by a killed writer of this shard (we own the shard now)
            continue
        m = _CHUNK_RE.match(f.name)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if start <= a < b <= stop:
                chunks.append((a, b, f))
    chunks.sort()
    kept, end = [], start
    for a, b, f in chunks:
        if a >= end:
            kept.append((a, b, f))
            end = b
        else:
            f.unlink(missing_ok=True)  # overlaps a kept chunk (a changed checkpoint size): redo-safe
    return kept


def _gaps(start: int, stop: int, done: list[tuple[int, int, Path]], step: int) -> list[tuple[int, int]]:
    """Ranges of [start, stop) not covered by ``done``, cut into pieces aligned to ``step``."""
    out, cursor = [], start
    for a, b, _ in done + [(stop, stop, None)]:
        s = cursor
        while s < a:
            e = min(a, start + ((s - start) // step + 1) * step)
            out.append((s, e))
            s = e
        cursor = max(cursor, b)
    return out


_CONTENT_KEYS = (
    "format_version", "mode", "num_images", "seed", "shard_images", "height", "width", "num_inference_steps",
    "guidance_scale", "generator_id", "prompt_set_hash", "corpus_hash", "text_column", "keep_prompt_text",
    "features", "call_kwargs",
)
# Settings a diffusion generator's pixels depend on by float rounding (batched matmuls, thread
# count): checked on resume while images remain to be made, unless the generator is batch-invariant.
_EXACTNESS_KEYS = ("batch_size", "num_threads")


def _batch_invariant(generator: Any) -> bool:
    """Whether the generator's images are bit-identical for any batch size and thread count: the
    phantom world (numpy, one image at a time) and generators that declare ``batch_invariant``.
    A diffusion pipeline is not: batched matmuls change the rounding (see the module doc)."""
    if isinstance(generator, (str, os.PathLike)):
        return os.fspath(generator) == "phantom"
    return bool(getattr(generator, "batch_invariant", False))


def _check_resume(out: Path, config: dict[str, Any], layout: "ShardLayout | None" = None, generator: Any = None) -> None:
    path = out / CONFIG_NAME
    if not path.is_file():
        return
    try:
        old = read_json(path)
    except (OSError, ValueError) as exc:  # written atomically, so only a hand edit gets here
        raise ValueError(f"{path} is not readable JSON ({exc}); use another --out or --overwrite") from None
    diffs = [
        f"{k}: folder has {old.get(k)!r}, this run {config.get(k)!r}"
        for k in _CONTENT_KEYS
        if json.dumps(old.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True)
    ]
    if diffs:
        raise ValueError(
            f"output folder {out} was started with different settings, so resuming would mix two datasets "
            f"({'; '.join(diffs)}). Use another --out, the original settings, or overwrite=True / --overwrite."
        )
    remaining = layout is None or any(not (out / layout.shard_relpath(k)).is_file() for k in range(layout.num_shards))
    if remaining and not _batch_invariant(generator):
        changed = [f"{k}: folder has {old[k]!r}, this run {config.get(k)!r}"
                   for k in _EXACTNESS_KEYS if k in old and old[k] != config.get(k)]
        if changed:
            raise ValueError(
                f"output folder {out} was started with another {' and '.join(k for k in _EXACTNESS_KEYS if k in old and old[k] != config.get(k))} "
                f"({'; '.join(changed)}). A diffusion generator is bit-exact only at equal batch size and thread "
                "count (otherwise within +-1 grey level in a few pixels), so resuming would mix the two; rerun with "
                "the original values, or use another --out / --overwrite."
            )


def generate_dataset(
    out_dir: str | os.PathLike,
    generator: Any,
    *,
    prompts: Any = None,
    reports: Any = None,
    report_column: str = "report",
    num_images: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    rows_per_checkpoint: int = DEFAULT_ROWS_PER_CHECKPOINT,
    height: int | None = None,
    width: int | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.0,
    generator_id: str | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
    keep_prompt_text: bool = False,
    license: str = "other",
    quality: Mapping[str, Any] | None = None,
    push_to_hub: str | None = None,
    private: bool = True,
    hub_api: Any = None,
    overwrite: bool = False,
    state: Any = None,
    progress: bool = True,
    command: str | None = None,
    max_images_this_run: int | None = None,
) -> GenerationResult:
    """Generate a balanced (``prompts=``) or report-conditioned (``reports=``) dataset into
    ``out_dir`` (see the module doc for layout, determinism, resume). ``generator`` is an
    :class:`ImageGenerator` or a spec for :func:`load_generator`. ``state`` is an
    ``accelerate.PartialState`` (or None for one process). All inputs are validated before the
    generator is loaded or any image is made. ``max_images_this_run`` stops this process after
    about that many new images (whole checkpoint chunks), for time-boxed jobs; rerun to resume.
    """
    import datasets  # noqa: F401 - fail early if missing
    from tqdm.auto import tqdm

    dist = _dist_from(state)
    out = Path(out_dir)
    t_start = time.perf_counter()

    # ---- validation, all before compute --------------------------------------------------
    if (prompts is None) == (reports is None):
        raise ValueError("give exactly one of prompts= (balanced generation) or reports= (one image per report)")
    for name, value in (("batch_size", batch_size), ("rows_per_checkpoint", rows_per_checkpoint), ("num_inference_steps", num_inference_steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    check_number(guidance_scale, NUMERIC_RANGES["guidance_scale"], "guidance_scale")
    if max_images_this_run is not None:
        check_number(max_images_this_run, NUMERIC_RANGES["max_images_this_run"], "max_images_this_run")
    check_generator_spec(generator)
    for name, value in (("height", height), ("width", width)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if height is None or width is None:
        size = getattr(generator, "default_size", None) if not isinstance(generator, (str, os.PathLike)) else None
        if size is None and isinstance(generator, (str, os.PathLike)) and Path(generator).is_dir():
            size = _size_from_pipeline_folder(Path(generator))
        if size is None and generator == "phantom":
            size = (128, 128)
        if size is None:
            raise ValueError("image size unknown: pass height and width (--image-size)")
        height = height or size[0]
        width = width or size[1]
    height, width = int(height), int(width)
    if isinstance(generator, (str, os.PathLike)) and Path(generator).is_dir():
        _check_pipeline_size(Path(generator), height, width)
    parse_shard_size(shard_size)

    prompt_set = corpus = plan = None
    if prompts is not None:
        prompt_set = load_prompts(prompts)
        if num_images is None:
            raise ValueError("num_images is required with a prompt set")
        plan = balance_plan([p.class_label for p in prompt_set.prompts], num_images)
        n = plan.num_images
        features = generated_features(label_names=prompt_set.diseases, class_names=plan.class_names)
    else:
        corpus = reports if isinstance(reports, ReportCorpus) else load_report_corpus(reports, report_column, limit=num_images)
        n = corpus.num_reports if num_images is None else int(num_images)
        features = generated_features(label_names=corpus.label_names, report_mode=True, keep_prompt_text=keep_prompt_text)
    gid = generator_id or default_generator_id(generator)
    layout = ShardLayout(n, shard_images_for(shard_size, height, width), int(rows_per_checkpoint))

    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "mode": "prompts" if prompt_set else "reports",
        "num_images": n,
        "seed": int(seed),
        "seed_rule": "seed_i = first 63 bits of numpy.random.SeedSequence([seed, i]).generate_state(2, uint32) (lo | hi << 32)",
        "shard_size": str(shard_size),
        "shard_images": layout.shard_images,
        "num_shards": layout.num_shards,
        "data_files": layout.data_files_pattern,
        "height": height,
        "width": width,
        "num_inference_steps": int(num_inference_steps),
        "guidance_scale": float(guidance_scale),
        "generator": os.fspath(generator) if isinstance(generator, (str, os.PathLike)) else type(generator).__name__,
        "generator_id": gid,
        "call_kwargs": dict(call_kwargs or {}),
        "batch_size": int(batch_size),
        "num_threads": _torch_threads(),
        "keep_prompt_text": bool(keep_prompt_text) if corpus else True,
        "features": _features_yaml(features),  # a list: keeps column order through sort_keys JSON
        "license": license,
        "genssl_hf_version": _package_version(),
    }
    if prompt_set:
        config.update(
            prompt_set_name=prompt_set.name,
            prompt_set_hash=prompt_set.content_hash,
            prompt_set_source_hash=prompt_set.source_hash,
            prompts=[p.as_dict() for p in prompt_set.prompts],
            balance_rule="equal per class label (first N % C classes +1), then equal per prompt of a class "
            "(first n_c % P_c prompts +1); index i -> slot (a*i) mod N, a ~ N*0.618 coprime with N",
            planned_class_counts=[[c, n] for c, n in zip(plan.class_names, plan.class_counts)],
            planned_prompt_counts=list(plan.prompt_counts),
            corpus_hash=None,
            text_column=None,
        )
    else:
        config.update(
            prompt_set_hash=None,
            corpus_name=corpus.name,
            corpus_hash=corpus.content_hash,
            corpus_num_reports=corpus.num_reports,
            text_column=corpus.text_column,
        )
    if command:
        config["command"] = command

    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    # One writer per folder: a second run on the same --out stops here, naming the first.
    lock = FolderLock(out, "generated dataset folder") if dist.is_main else None
    if lock is not None:
        lock.acquire()
    fresh = not (out / CONFIG_NAME).is_file() or overwrite
    try:
        if lock is not None:  # temporaries of atomic writes a killed run left; nobody else writes here
            remove_stale_temps(out, _ATOMIC_FILES)
        if out.is_dir() and not overwrite:
            _check_resume(out, config, layout, generator)
            stray = [p.name for p in out.iterdir()
                     if p.name not in {*_ATOMIC_FILES, DATA_DIR, INCOMPLETE_DIR, FolderLock.NAME}
                     and not any(p.name.startswith(temp_prefix(n)) for n in _ATOMIC_FILES)]
            if stray and not (out / CONFIG_NAME).is_file():
                raise ValueError(f"output folder {out} is not empty and is not a generated dataset ({stray[:5]}); choose another --out")

        # ---- folder set-up (main process), then everyone lists the work ----------------------
        run_file = out / INCOMPLETE_DIR / "run.json"
        if dist.is_main:
            if overwrite and out.exists():
                for child in (DATA_DIR, INCOMPLETE_DIR, CONFIG_NAME, VERIFICATION_NAME, "README.md"):
                    p = out / child
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            (out / INCOMPLETE_DIR).mkdir(parents=True, exist_ok=True)
            (out / DATA_DIR).mkdir(parents=True, exist_ok=True)
            if not (out / CONFIG_NAME).is_file():
                write_json(out / CONFIG_NAME, config)
            # done markers of an earlier run, and shard temporaries a killed run left (no other
            # process writes yet: they wait at the barrier below)
            for stale in [*(out / INCOMPLETE_DIR).glob("done-*"), *(out / INCOMPLETE_DIR).glob(".tmp-*")]:
                stale.unlink(missing_ok=True)
            write_json(run_file, {"token": uuid.uuid4().hex, "world": dist.world})
        dist.barrier()
        token = read_json(run_file)["token"]
        remaining = [k for k in range(layout.num_shards) if not (out / layout.shard_relpath(k)).is_file()]
        dist.barrier()  # nobody finishes a shard before everyone has listed
        mine = remaining[dist.rank :: dist.world]
        logger.info(
            "rank %d/%d: %d of %d shards left in total, %d of them for this process",
            dist.rank, dist.world, len(remaining), layout.num_shards, len(mine),
        )

        todo_images = 0
        for k in mine:
            s0, s1 = layout.shard_range(k)
            todo_images += (s1 - s0) - sum(b - a for a, b, _ in _existing_chunks(out / INCOMPLETE_DIR / layout.shard_name(k), s0, s1))

        # ---- load the generator (the first expensive step) -----------------------------------
        gen_obj = None
        if mine:
            gen_obj = load_generator(
                generator,
                height=height,
                width=width,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                device=dist.device,
                generator_id=gid,
                call_kwargs=call_kwargs,
            )
        source = _PromptRows(prompt_set, plan, seed, gid) if prompt_set else _ReportRows(corpus, seed, gid, keep_prompt_text)
        schema = features.arrow_schema
        columns = list(features)

        t_gen = t_enc = t_write = 0.0
        generated = 0
        bar = tqdm(
            total=todo_images,
            unit="img",
            desc=f"generating [rank {dist.rank}/{dist.world}]",
            disable=not progress or not dist.is_main,
            dynamic_ncols=True,
        )
        stopped_early = False
        for k in mine:
            if stopped_early:
                break
            s0, s1 = layout.shard_range(k)
            final = out / layout.shard_relpath(k)
            cdir = out / INCOMPLETE_DIR / layout.shard_name(k)
            done = _existing_chunks(cdir, s0, s1)
            pieces = _gaps(s0, s1, done, layout.rows_per_checkpoint)
            one_piece = not done and len(pieces) == 1
            for a, b in pieces:
                if max_images_this_run is not None and generated >= max_images_this_run:
                    stopped_early = True
                    break
                cols = source.rows(a, b)
                texts = cols.pop("_text", None) or cols["prompt"]
                cols["prompt_tokens_truncated"] = _token_overflow(gen_obj, texts)
                images: list[np.ndarray] = []
                for bs in range(0, b - a, batch_size):
                    be = min(bs + batch_size, b - a)
                    t0 = time.perf_counter()
                    batch = gen_obj(texts[bs:be], cols["seed"][bs:be])
                    images.extend(to_uint8_gray(batch, height, width))
                    t_gen += time.perf_counter() - t0
                    bar.update(be - bs)
                if len(images) != b - a:
                    raise RuntimeError(f"generator returned {len(images)} images for {b - a} prompts")
                t0 = time.perf_counter()
                cols["image"] = images
                encoded = features.encode_batch({c: cols[c] for c in columns})
                table = _table(encoded, schema)
                del images, cols, encoded
                t_enc += time.perf_counter() - t0
                t0 = time.perf_counter()
                if one_piece:
                    _write_parquet_atomic(final, [table], schema, tmp_dir=out / INCOMPLETE_DIR)
                else:
                    _write_parquet_atomic(cdir / f"rows-{a:012d}-{b:012d}.parquet", [table], schema)
                t_write += time.perf_counter() - t0
                generated += b - a
            else:
                if not one_piece:
                    t0 = time.perf_counter()
                    _merge_chunks(cdir, s0, s1, final, schema, tmp_dir=out / INCOMPLETE_DIR)
                    t_write += time.perf_counter() - t0
                shutil.rmtree(cdir, ignore_errors=True)
        bar.close()

        result = GenerationResult(out, n, layout.num_shards, generated, t_gen, t_enc, t_write)
        if stopped_early:
            logger.warning("stopped after %d new images (max_images_this_run); rerun to continue", generated)
            return result
        write_json(out / INCOMPLETE_DIR / f"done-{dist.rank:05d}", {"token": token})
        if not dist.is_main:
            return result

        # ---- main process: wait for the others (files, not a collective: no timeout on long runs)
        _wait_for_ranks(out, dist.world, token)
        report = verify_dataset(out)
        result.verification = report
        write_json(out / VERIFICATION_NAME, dataclasses.asdict(report))
        if not report.ok:
            raise RuntimeError(f"generated dataset {out} failed verification: {report.summary()}")
        result.card_path = write_dataset_card(out, quality=quality)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(out / INCOMPLETE_DIR)
        if push_to_hub:
            result.pushed_to = push_dataset_to_hub(out, push_to_hub, private=private, api=hub_api)
        logger.info("dataset ready at %s (%s) in %.1f s", out, report.summary(), time.perf_counter() - t_start)
        return result
    except BaseException:
        # A failure before the first image was stored leaves no trace: the corrected rerun must
        # not be refused as "started with different settings".
        if dist.is_main and fresh and not _has_stored_images(out):
            _remove_run_files(out)
        raise
    finally:
        if lock is not None:
            lock.release()
            if lock.created:
                with contextlib.suppress(OSError):
                    out.rmdir()  # only when empty: the folder was ours and nothing is in it


def _torch_threads() -> int | None:
    """torch's intra-op thread count (part of the exactness guarantee), None without torch."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return int(torch.get_num_threads())


def _check_pipeline_size(path: Path, height: int, width: int) -> None:
    """A pipeline folder's autoencoder downsamples by 2 per level after the first: refuse a size it
    cannot decode now, before any folder is created or any model loaded."""
    vae = path / "vae" / "config.json"
    if not vae.is_file():
        return
    cfg = read_json(vae)
    levels = cfg.get("block_out_channels") or cfg.get("channels")
    if not isinstance(levels, list) or not levels:
        return
    factor = 2 ** (len(levels) - 1)
    if height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} is not a multiple of {factor}, the downsampling of the "
                         f"autoencoder in {path}; choose --image-size / --height / --width as a multiple of {factor}")


def _token_overflow(generator: Any, texts: Sequence[str]) -> list[int | None]:
    """Per prompt, the tokens the generator's text encoder cuts off (warned about once per run)."""
    count = getattr(generator, "prompt_token_overflow", None)
    values = list(count(texts)) if count is not None else [None] * len(texts)
    cut = [(t, n) for t, n in zip(texts, values) if n]
    if cut and not getattr(generator, "_genssl_truncation_warned", False):
        logger.warning("%d prompt(s) of this chunk are longer than the text encoder reads and are cut (e.g. %r... "
                       "loses %d tokens); the dataset records the count in prompt_tokens_truncated", len(cut),
                       cut[0][0][:60], cut[0][1])
        with contextlib.suppress(AttributeError):
            generator._genssl_truncation_warned = True
    return values


def _has_stored_images(out: Path) -> bool:
    """Whether any process stored images in ``out`` (a shard or a checkpoint chunk)."""
    return any(p.suffix == ".parquet" and not p.name.startswith(".tmp-")
               for d in (out / DATA_DIR, out / INCOMPLETE_DIR) if d.is_dir() for p in d.rglob("*.parquet"))


def _remove_run_files(out: Path) -> None:
    """Remove what a run that stored no image created (config, empty folders, markers)."""
    for child in (INCOMPLETE_DIR, DATA_DIR, *_ATOMIC_FILES):
        p = out / child
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    remove_stale_temps(out, _ATOMIC_FILES)


def _features_yaml(features: Any) -> list[dict[str, Any]]:
    import datasets

    return datasets.DatasetInfo(features=features)._to_yaml_dict()["features"]


def _features_from_yaml(items: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.DatasetInfo._from_yaml_dict({"features": items}).features


def _table(encoded: dict[str, list], schema: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_pydict(encoded, schema=schema)


def _merge_chunks(cdir: Path, start: int, stop: int, final: Path, schema: Any, tmp_dir: Path) -> None:
    import pyarrow.parquet as pq

    chunks = _existing_chunks(cdir, start, stop)
    covered = sum(b - a for a, b, _ in chunks)
    if covered != stop - start or (chunks and (chunks[0][0] != start or chunks[-1][1] != stop)):
        raise RuntimeError(f"shard {final.name}: checkpoint chunks cover {covered} of {stop - start} rows")
    # Lazily read one chunk at a time: memory stays at one chunk.
    _write_parquet_atomic(final, [(lambda f=f: pq.read_table(f, schema=schema)) for _, _, f in chunks], schema, tmp_dir)


def _wait_for_ranks(out: Path, world: int, token: str, poll: float = 1.0) -> None:
    if world <= 1:
        return
    pending = set(range(world))
    while pending:
        for r in list(pending):
            marker = out / INCOMPLETE_DIR / f"done-{r:05d}"
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                if read_json(marker)["token"] == token:
                    pending.discard(r)
        if pending:
            time.sleep(poll)


def _size_from_pipeline_folder(path: Path) -> tuple[int, int] | None:
    """Image size from a pipeline folder's configs (no weights loaded)."""
    index = read_json(path / "model_index.json")
    for key in ("default_image_size", "image_size", "sample_size", "height"):
        v = index.get(key)
        if isinstance(v, int):
            return v, v
        if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v):
            return v[0], v[1]
    return None


def _package_version() -> str:
    try:
        from genssl_hf.core import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


# ----------------------------------------------------------------------------------------------
# Verification, card, push
# ----------------------------------------------------------------------------------------------


def _compress_ranges(indices: Iterable[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def verify_dataset(out_dir: str | os.PathLike) -> VerificationReport:
    """Check a generated folder against its ``generation_config.json``: every index exactly once,
    each in its own shard, no stray parquet files; also count images per class, prompt and label
    from the data itself (reads only small columns, one shard at a time)."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    if not (out / CONFIG_NAME).is_file():
        raise ValueError(f"{out} has no {CONFIG_NAME}: not a folder written by generate_dataset")
    config = read_json(out / CONFIG_NAME)
    layout = ShardLayout(int(config["num_images"]), int(config["shard_images"]))
    report = VerificationReport(ok=False, num_expected=layout.num_images, num_found=0)
    expected = {layout.shard_relpath(k): k for k in range(layout.num_shards)}
    present = {str(p.relative_to(out)) for p in (out / DATA_DIR).rglob("*.parquet")} if (out / DATA_DIR).is_dir() else set()
    report.unexpected_files = sorted(present - set(expected))
    class_counts: collections.Counter = collections.Counter()
    prompt_counts: collections.Counter = collections.Counter()
    label_counts: collections.Counter = collections.Counter()
    features = None
    for rel, k in expected.items():
        s0, s1 = layout.shard_range(k)
        if rel not in present:
            report.missing.append([s0, s1])
            continue
        pf = pq.ParquetFile(out / rel)
        report.num_bytes += (out / rel).stat().st_size
        if features is None:
            import datasets

            features = datasets.Features.from_arrow_schema(pf.schema_arrow)
        names = set(pf.schema_arrow.names)
        want = [c for c in ("index", "prompt", "class_label", "label", "labels", "prompt_tokens_truncated") if c in names]
        table = pf.read(columns=want)
        idx = np.asarray(table.column("index").to_numpy(), dtype=np.int64)
        counts = collections.Counter(idx.tolist())
        dups = sorted(i for i, c in counts.items() if c > 1)
        report.duplicates.extend(dups)
        outside = sorted(i for i in counts if not s0 <= i < s1)
        if outside:
            report.misplaced.append(f"{rel}: {outside[:5]}")
        inside = {i for i in counts if s0 <= i < s1}
        gap = sorted(set(range(s0, s1)) - inside)
        report.missing.extend(_compress_ranges(gap))
        report.num_found += len(inside)
        if "prompt" in names:
            prompt_counts.update(table.column("prompt").to_pylist())
        if "prompt_tokens_truncated" in names:
            cut = [v for v in table.column("prompt_tokens_truncated").to_pylist() if v]
            report.truncated_prompts += len(cut)
            report.max_tokens_truncated = max([report.max_tokens_truncated, *cut])
        for col in ("class_label", "label"):
            if col in names:
                cl = features[col]
                class_counts.update(cl.int2str(v) for v in table.column(col).to_pylist())
        if "labels" in names:
            inner = features["labels"].feature
            for row in table.column("labels").to_pylist():
                label_counts.update(inner.int2str(v) for v in row) if row else label_counts.update(["(none)"])
    report.missing = _merge_ranges(report.missing)
    report.class_counts = dict(class_counts)
    report.prompt_counts = dict(prompt_counts) if config.get("mode") == "prompts" else {}
    report.label_counts = dict(label_counts)
    report.ok = not (report.missing or report.duplicates or report.misplaced or report.unexpected_files)
    return report


def _merge_ranges(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and out[-1][1] >= a:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return name
    return "10M<n<100M"


def write_dataset_card(out_dir: str | os.PathLike, quality: Mapping[str, Any] | None = None) -> Path:
    """Render ``README.md`` (YAML ``configs`` + ``dataset_info`` so ``load_dataset`` finds the
    shards, then provenance, counts, intended use) from ``model_cards/synthetic_dataset.md``."""
    import datasets

    from genssl_hf.core.cards import render_dataset_card

    out = Path(out_dir)
    config = read_json(out / CONFIG_NAME)
    ver_path = out / VERIFICATION_NAME
    report = VerificationReport(**read_json(ver_path)) if ver_path.is_file() else verify_dataset(out)
    features = _features_from_yaml(config["features"])
    info_yaml = {"features": _features_yaml(features)}
    info_yaml["splits"] = [{"name": SPLIT, "num_bytes": report.num_bytes, "num_examples": report.num_found}]
    info_yaml["download_size"] = report.num_bytes
    info_yaml["dataset_size"] = report.num_bytes
    report_mode = config["mode"] == "reports"
    card_data = {
        "license": config.get("license", "other"),
        "pretty_name": f"Synthetic chest X-rays ({config['generator_id']})",
        "tags": ["synthetic", "chest-x-ray", "medical-imaging", "genssl", "text-to-image"],
        "task_categories": ["image-classification"],
        "size_categories": [_size_category(report.num_found)],
        "configs": [{"config_name": "default", "data_files": [{"split": SPLIT, "path": config["data_files"]}]}],
        "dataset_info": info_yaml,
    }
    planned_prompt = config.get("planned_prompt_counts") or []
    prompt_rows = [
        {"text": p["text"], "disease": p["disease"], "existence": p["existence"], "class_label": p["class_label"],
         "planned": n, "realised": report.prompt_counts.get(p["text"], 0)}
        for p, n in zip(config.get("prompts") or [], planned_prompt)
    ]
    planned_class = dict(config.get("planned_class_counts") or [])  # insertion order = class order
    class_rows = [
        {"name": name, "planned": planned_class.get(name), "realised": report.class_counts.get(name, 0)}
        for name in [*planned_class, *sorted(set(report.class_counts) - set(planned_class))]
    ]
    card = render_dataset_card(
        CARD_TEMPLATE,
        card_data,
        config=config,
        report=report,
        report_mode=report_mode,
        prompt_rows=prompt_rows,
        class_rows=class_rows,
        label_counts=sorted(report.label_counts.items()),
        quality=dict(quality) if quality else None,
        columns=list(features),
    )
    path = out / "README.md"
    from genssl_hf.utils import atomic_write_text

    atomic_write_text(path, str(card))
    return path


def push_dataset_to_hub(
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    api: Any = None,
    token: str | None = None,
    files_per_commit: int = 500,
) -> str:
    """Upload a verified folder to a Hub dataset repo (private by default) with the same layout.

    Shards go first, in commits of at most ``files_per_commit`` files, and ``README.md`` last, so
    the repo never advertises shards that are not uploaded yet. Temporary files never leave.
    """
    out = Path(out_dir)
    if not (out / "README.md").is_file() or not (out / VERIFICATION_NAME).is_file():
        raise ValueError(f"{out} is not a finished generated dataset (no README.md / {VERIFICATION_NAME}); run generation first")
    report = verify_dataset(out)  # re-check now: files may have changed since generation
    if not report.ok:
        raise ValueError(f"{out} failed verification ({report.summary()}); refusing to push an incomplete dataset")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    shards = sorted(str(p.relative_to(out)) for p in (out / DATA_DIR).rglob("*.parquet"))
    for i in range(0, len(shards), files_per_commit):
        batch = shards[i : i + files_per_commit]
        api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(out),
            allow_patterns=batch,
            commit_message=f"Add shards {i + 1}-{i + len(batch)} of {len(shards)}",
        )
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(out),
        allow_patterns=["README.md", CONFIG_NAME, VERIFICATION_NAME],
        commit_message="Add dataset card and generation config",
    )
    return repo_id


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="generate_dataset.py",
        description="Generate chest X-rays with a text-to-image pipeline into a sharded, resumable Hugging Face "
        "dataset (parquet + card). Run under `accelerate launch` to split the work over processes.",
    )
    p.add_argument("--pipeline", required=True, help="diffusers pipeline folder, 'phantom', or 'package.module:factory'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompt set: shipped name (disease/heuristic/elaborated), folder, or JSON file")
    src.add_argument("--reports", help="report corpus (one image per report): save_to_disk folder, dataset folder, parquet/json(l)/csv")
    p.add_argument("--report-column", default="report", help="text column of the report corpus (default: report)")
    p.add_argument("--keep-prompt-text", action="store_true", help="report mode: also publish the report text (default: only its SHA-256)")
    p.add_argument("--num-images", type=int, default=None, help="N images (required with --prompts; default all reports)")
    p.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=50, help="inference steps")
    p.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance scale")
    p.add_argument("--image-size", type=int, default=None, help="square output size in px (default: the pipeline's)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="global seed; image i uses a seed derived from (seed, i)")
    p.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE, help="images per shard (e.g. 1000) or bytes (e.g. 256MB, default)")
    p.add_argument("--rows-per-checkpoint", type=int, default=DEFAULT_ROWS_PER_CHECKPOINT, help="images per crash-safe checkpoint chunk (and parquet row group)")
    p.add_argument("--generator-id", default=None, help="generator id stored in every row (default: folder name @ content hash)")
    p.add_argument("--pipeline-kwargs", default=None, help="JSON object of extra keyword arguments for the pipeline call")
    p.add_argument("--license", default="other", help="license in the dataset card (default: other)")
    p.add_argument("--quality-json", default=None, help="JSON file of image-quality numbers (FID, similarity) for the card")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the finished dataset to this Hub dataset repo")
    p.add_argument("--public", action="store_true", help="create the Hub repo public (default: private)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing output folder's content and start over")
    p.add_argument("--max-images-this-run", type=int, default=None, help="stop each process after about this many new images (resume later)")
    p.add_argument("--no-progress", action="store_true")
    return checked_parser(p)


def _launch_state() -> Any:
    """``accelerate.PartialState`` under a multi-process launch; a plain single-process context
    otherwise (so an in-process call never pins accelerate's global state for later code)."""
    from accelerate.utils import parse_flag_from_env

    use_cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("LOCAL_RANK") is not None
    if launched:
        from accelerate import PartialState

        # PartialState (unlike Accelerator) does not read ACCELERATE_USE_CPU itself; without it a
        # CPU-only multi-process launch would run as N independent single processes.
        return PartialState(cpu=use_cpu)
    device = None
    if not use_cpu:
        import torch

        device = torch.device("cuda") if torch.cuda.is_available() else None
    return _Dist(device=device)


def dist_is_main(state: Any) -> bool:
    return _dist_from(state).is_main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("genssl_hf").setLevel(logging.INFO)
    if args.image_size is not None and (args.height or args.width):
        raise SystemExit("give --image-size or --height/--width, not both")
    height = args.height or args.image_size
    width = args.width or args.image_size
    call_kwargs = json.loads(args.pipeline_kwargs) if args.pipeline_kwargs else None
    if call_kwargs is not None and not isinstance(call_kwargs, dict):
        raise SystemExit("--pipeline-kwargs must be a JSON object")
    quality = read_json(args.quality_json) if args.quality_json else None
    if quality is not None and not isinstance(quality, dict):
        raise SystemExit("--quality-json must hold a JSON object")
    # Validate before starting processes' collective state (cheap; generate_dataset re-checks).
    check_generator_spec(args.pipeline)
    state = _launch_state()
    result = generate_dataset(
        args.out,
        args.pipeline,
        prompts=args.prompts,
        reports=args.reports,
        report_column=args.report_column,
        num_images=args.num_images,
        seed=args.seed,
        batch_size=args.batch_size,
        shard_size=int(args.shard_size) if str(args.shard_size).isdigit() else args.shard_size,
        rows_per_checkpoint=args.rows_per_checkpoint,
        height=height,
        width=width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator_id=args.generator_id,
        call_kwargs=call_kwargs,
        keep_prompt_text=args.keep_prompt_text,
        license=args.license,
        quality=quality,
        push_to_hub=args.push_to_hub,
        private=not args.public,
        overwrite=args.overwrite,
        state=state,
        progress=not args.no_progress,
        command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        max_images_this_run=args.max_images_this_run,
    )
    if dist_is_main(state):
        msg = {
            "out": str(result.out_dir),
            "num_images": result.num_images,
            "num_shards": result.num_shards,
            "generated_by_main_process": result.generated,
            "verification": result.verification.summary() if result.verification else "not run (stopped early)",
            "encode_write_share": round(result.write_share, 4),
            "pushed_to": result.pushed_to,
        }
        print(json.dumps(msg))
        if result.verification:
            print(f"open it with: datasets.load_dataset({str(result.out_dir)!r}, split='train')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
