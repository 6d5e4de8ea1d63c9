"""Publish genssl_hf artifacts to the Hugging Face Hub, or write exactly what would be uploaded.

Five kinds of artifact folder, each checked with its own loader before and after staging:

=============  ============  =====================================================================
kind           repo type     loader used for validation
=============  ============  =====================================================================
``encoder``    model         ``ViTMAEForPreTraining`` + ``AutoImageProcessor`` (an AdaINImageProcessor)
``classifier`` model         ``ViTForImageClassification`` (or genssl_hf's subclass named in
                             ``config.architectures``) + ``AutoImageProcessor``
``generator``  model         ``genssl_hf.generation.CXRLatentDiffusionPipeline.from_pretrained``
``prompt_set`` dataset       ``genssl_hf.prompts.PromptSet.from_pretrained``
``dataset``    dataset       ``datasets.load_dataset(folder)`` (parquet shards + README ``configs``)
``report_``    model         ``VisionEncoderDecoderModel`` + ``AutoProcessor`` (a ReportGeneratorProcessor);
``generator``                the card's licence follows the training report corpus (non-commercial
                             terms inherited) and the leak guard checks every file and the card's
                             example outputs for report text
``dual_encoder`` model       ``VisionTextDualEncoderModel`` + ``AutoImageProcessor`` + ``AutoTokenizer``
=============  ============  =====================================================================

:func:`publish` (or ``publish_<kind>``) then

1. selects the files to ship (weights, configs, card, figures; never checkpoints, logs, caches or
   hidden files),
2. refreshes the README card through huggingface_hub ``ModelCard`` / ``DatasetCard``: metadata
   (license, tags, datasets, base_model, ``model-index`` eval results from a metrics JSON), and a
   managed section with provenance read from the artifact's own files (AdaIN statistics from
   ``preprocessor_config.json``, prompt-set fingerprint, generator id, generation config),
   intended use and limitations, data sources and citation,
3. runs the leak guard (:mod:`genssl_hf.hub.leak`) over every outgoing file and the new card
   *before anything is written or uploaded*,
4. stages the folder (hard links where possible), reloads it with the kind's loader, and either
   renames it into place (``dry_run=DIR``, atomic) or uploads it with
   ``HfApi.create_repo(private=True by default, exist_ok=True)`` + ``HfApi.upload_folder``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData

from ..validation import checked_parser
from ..utils import atomic_dir, read_json, sha256_file
from . import card_text
from .export import export_plain_classifier, export_vit_encoder, is_native_classifier
from .leak import LeakError, RealDataIndex, build_real_data_index, check_text, describe_index, scan_files

__all__ = [
    "KINDS",
    "REPO_TYPES",
    "ArtifactError",
    "PublishResult",
    "publish",
    "publish_artifact",
    "publish_encoder",
    "publish_classifier",
    "publish_generator",
    "publish_prompt_set",
    "publish_dataset",
    "publish_all",
    "validate_artifact",
    "export_plain_classifier",
    "select_files",
    "collect_provenance",
    "build_card",
    "eval_results_from_metrics",
    "DEFAULT_RUN_LAYOUT",
    "DEFAULT_REPO_NAMES",
    "REAL_DATA_ENV",
    "main",
]

logger = logging.getLogger(__name__)

KINDS = ("encoder", "classifier", "generator", "prompt_set", "dataset", "report_generator", "dual_encoder")
REPO_TYPES = {"encoder": "model", "classifier": "model", "generator": "model", "prompt_set": "dataset", "dataset": "dataset",
              "report_generator": "model", "dual_encoder": "model"}
REAL_DATA_ENV = "GENSSL_REAL_DATA"  # os.pathsep-separated real-data paths for the leak guard
METRICS_FILES = ("eval_results.json", "metrics.json")  # looked up in model folders when metrics=None
MANAGED_BEGIN = "<!-- genssl_hf:publish:begin -->"
MANAGED_END = "<!-- genssl_hf:publish:end -->"

# Sub-folders of a pipeline run folder that hold each artifact (override with ``layout=``).
DEFAULT_RUN_LAYOUT = {
    "prompt_set": "prompt_set",
    "generator": "generator",
    "dataset": "generated_dataset",
    "encoder": "mae",
    "classifier": "classifier",
    "dual_encoder": "dual_encoder",
}
DEFAULT_REPO_NAMES = {
    "prompt_set": "genssl-prompts",
    "generator": "genssl-cxr-generator",
    "dataset": "genssl-synthetic-cxr",
    "encoder": "genssl-mae-encoder",
    "classifier": "genssl-classifier",
    "dual_encoder": "genssl-dual-encoder",
}

# Never shipped: training state, logs, caches, temporary and hidden files.
IGNORE_PATTERNS = (
    "checkpoint-*", "checkpoints", "logs", "runs", "wandb", "tensorboard", "__pycache__", ".*", "*.tmp", "*.tmp-*",
    "*.lock", "optimizer.*", "scheduler.pt", "rng_state*", "training_args.bin", "train_state.json", "*.pyc",
)

_KIND_META: dict[str, dict[str, Any]] = {
    "encoder": {"library_name": "transformers", "pipeline_tag": "image-feature-extraction",
                "tags": ["vit-mae", "masked-autoencoder", "self-supervised", "chest-x-ray", "medical-imaging"]},
    "classifier": {"library_name": "transformers", "pipeline_tag": "image-classification",
                   "tags": ["vit", "image-classification", "chest-x-ray", "medical-imaging"]},
    "generator": {"library_name": "diffusers", "pipeline_tag": "text-to-image",
                  "tags": ["latent-diffusion", "monai", "text-to-image", "synthetic-data", "chest-x-ray", "medical-imaging"]},
    "prompt_set": {"tags": ["prompt-set", "text-to-image", "chest-x-ray"]},
    "dataset": {"tags": ["synthetic", "chest-x-ray", "medical-imaging", "image-classification"]},
    "report_generator": {"library_name": "transformers", "pipeline_tag": "image-to-text",
                         "tags": ["vision-encoder-decoder", "report-generation", "chest-x-ray", "medical-imaging"]},
    "dual_encoder": {"library_name": "transformers", "pipeline_tag": "zero-shot-image-classification",
                     "tags": ["vision-text-dual-encoder", "contrastive", "zero-shot", "chest-x-ray", "medical-imaging"]},
}
_COMMON_TAGS = ["genssl_hf", "genssl", "research-only"]
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".svg", ".pdf")


class ArtifactError(ValueError):
    """An artifact folder is missing, incomplete, or does not reload with its own loader."""


@dataclass
class PublishResult:
    """What :func:`publish` did. ``folder`` is the dry-run folder (or the temporary staging folder,
    gone after an upload); ``files`` the relative paths shipped; ``commit`` the upload's CommitInfo."""

    kind: str
    source: Path
    repo_id: str | None
    repo_type: str
    private: bool
    dry_run: bool
    folder: Path | None
    files: list[str] = field(default_factory=list)
    url: str | None = None
    commit: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "source": str(self.source), "repo_id": self.repo_id, "repo_type": self.repo_type,
            "private": self.private, "dry_run": self.dry_run, "folder": str(self.folder) if self.folder else None,
            "files": self.files, "url": self.url,
        }


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")
    return kind


# ------------------------------------------------------------------------------ file selection
def _ignored(rel: str, patterns: Sequence[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(p, pat) for p in parts for pat in patterns) or any(fnmatch.fnmatch(rel, pat) for pat in patterns)


def select_files(
    kind: str, folder: str | os.PathLike, ignore_patterns: Sequence[str] = (), include_images: bool | None = None
) -> list[str]:
    """The relative paths of ``folder`` that a publication of ``kind`` ships (README included
    when present; it is replaced by the refreshed card).

    ``include_images`` (default: off for ``encoder`` / ``classifier``, on otherwise): ship image
    files. Figures of trained models (MAE reconstructions, attention maps) are drawn from the
    training or test images, which may be real, and composites (grids, overlays) are beyond what
    the leak guard can match tile by tile, so they stay home unless asked for."""
    _check_kind(kind)
    folder = Path(folder)
    if include_images is None:
        include_images = kind not in ("encoder", "classifier", "report_generator", "dual_encoder")
    patterns = (*IGNORE_PATTERNS, *ignore_patterns, *(() if include_images else [f"*{e}" for e in _IMAGE_EXTS]))
    files = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.is_symlink() and not p.resolve().is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if _ignored(rel, patterns):
            continue
        if kind == "prompt_set" and rel not in ("prompts.json", "README.md"):
            continue
        if kind == "dataset" and "/" in rel and not rel.startswith("data/"):
            continue  # only the shards below data/, plus top-level config / card / figures
        files.append(rel)
    return files


# ------------------------------------------------------------------------------ validation
def _need(folder: Path, *names: str) -> None:
    for n in names:
        if not (folder / n).is_file():
            raise ArtifactError(f"{folder} has no {n}: not a complete artifact folder")


def _load_processor(folder: Path, kind: str):
    import genssl_hf  # noqa: F401  (registers AdaINImageProcessor with AutoImageProcessor)
    from transformers import AutoImageProcessor

    _need(folder, "preprocessor_config.json")
    try:
        return AutoImageProcessor.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(f"{kind} folder {folder}: the image processor does not reload: {e}") from e


def _check_loading_info(folder: Path, cls_name: str, info: Mapping[str, Any]) -> None:
    missing = list(info.get("missing_keys") or [])
    unexpected = list(info.get("unexpected_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ArtifactError(
            f"{folder} does not reload as {cls_name}: missing weights {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, mismatched {mismatched[:5]}"
        )
    if unexpected:
        logger.warning("%s: weights not used by %s: %s", folder, cls_name, unexpected[:5])


def _validate_encoder(folder: Path) -> dict[str, Any]:
    from transformers import ViTMAEForPreTraining

    _need(folder, "config.json")
    if (folder / "encoder_info.json").is_file():
        return _validate_neutral_encoder(folder)
    try:
        model, info = ViTMAEForPreTraining.from_pretrained(str(folder), output_loading_info=True)
    except Exception as e:
        raise ArtifactError(f"encoder folder {folder} does not reload as ViTMAEForPreTraining: {e}") from e
    _check_loading_info(folder, "ViTMAEForPreTraining", info)
    proc = _load_processor(folder, "encoder")
    if type(proc).__name__ != "AdaINImageProcessor":
        raise ArtifactError(f"encoder folder {folder}: processor is {type(proc).__name__}, expected AdaINImageProcessor")
    return {"model_class": type(model).__name__, "processor_class": type(proc).__name__,
            "parameters": sum(p.numel() for p in model.parameters())}


def _validate_neutral_encoder(folder: Path) -> dict[str, Any]:
    """A method-neutral encoder export (SimCLR, MoCo v2, SimSiam, rotation; ``genssl_hf.models.save_encoder``):
    it must reload exactly with ``AutoModel`` and into the stock classification class."""
    from genssl_hf.models import verify_encoder_folder

    try:
        checked = verify_encoder_folder(folder)
    except Exception as e:
        raise ArtifactError(f"encoder folder {folder} does not reload exactly: {e}") from e
    proc = _load_processor(folder, "encoder")
    if type(proc).__name__ != "AdaINImageProcessor":
        raise ArtifactError(f"encoder folder {folder}: processor is {type(proc).__name__}, expected AdaINImageProcessor")
    return {"model_class": checked["auto_model"], "classifier_class": checked["classifier"],
            "processor_class": type(proc).__name__, "method": read_json(folder / "encoder_info.json").get("method")}


def _classifier_class(folder: Path):
    cfg = read_json(folder / "config.json")
    if cfg.get("model_type") == "resnet":  # the CNN slot
        from transformers import ResNetForImageClassification

        return ResNetForImageClassification
    archs = cfg.get("architectures") or []
    if "GenSSLViTForImageClassification" in archs:
        from genssl_hf.training.classifier import GenSSLViTForImageClassification

        return GenSSLViTForImageClassification
    if "BeitForImageClassification" in archs:  # a mean-pooled classifier exported for plain transformers
        from transformers import BeitForImageClassification

        return BeitForImageClassification
    from transformers import ViTForImageClassification

    return ViTForImageClassification


def _validate_classifier(folder: Path) -> dict[str, Any]:
    _need(folder, "config.json")
    cls = _classifier_class(folder)
    try:
        model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    except Exception as e:
        raise ArtifactError(f"classifier folder {folder} does not reload as {cls.__name__}: {e}") from e
    _check_loading_info(folder, cls.__name__, info)
    if not getattr(model.config, "id2label", None):
        raise ArtifactError(f"classifier folder {folder}: config has no id2label")
    proc = _load_processor(folder, "classifier")
    return {"model_class": cls.__name__, "processor_class": type(proc).__name__,
            "labels": [model.config.id2label[i] for i in sorted(model.config.id2label)],
            "parameters": sum(p.numel() for p in model.parameters())}


def _pipeline_class():
    try:
        from genssl_hf.generation import CXRLatentDiffusionPipeline
    except ImportError:
        from genssl_hf.generation.pipeline import CXRLatentDiffusionPipeline
    return CXRLatentDiffusionPipeline


def _validate_generator(folder: Path) -> dict[str, Any]:
    _need(folder, "model_index.json")
    cls = _pipeline_class()
    try:
        pipe = cls.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(f"generator folder {folder} does not reload as {cls.__name__}: {e}") from e
    return {"pipeline_class": type(pipe).__name__, "image_size": int(pipe.config.image_size)}


def _validate_prompt_set(folder: Path) -> dict[str, Any]:
    from genssl_hf.prompts import PromptSet

    _need(folder, "prompts.json")
    try:
        ps = PromptSet.from_pretrained(folder)
    except Exception as e:
        raise ArtifactError(f"prompt set folder {folder} does not reload with PromptSet.from_pretrained: {e}") from e
    return {"num_prompts": len(ps), "fingerprint": ps.fingerprint, "strategy": ps.strategy}


def _validate_dataset(folder: Path) -> dict[str, Any]:
    import datasets

    if not any(folder.glob("data/**/*.parquet")) and not any(folder.glob("*.parquet")):
        raise ArtifactError(f"dataset folder {folder} has no parquet shards")
    _need(folder, "README.md")  # its YAML configs tell load_dataset (and the Hub) where the shards are
    try:
        # Streaming reads the README configs and the first rows of every split: checks the layout
        # and the Features without converting GBs of shards into an arrow cache.
        dd = datasets.load_dataset(str(folder), streaming=True)
        splits = {}
        for name, split in dd.items():
            first = next(iter(split), None)
            if first is None:
                raise ArtifactError(f"dataset folder {folder}: split {name!r} is empty")
            splits[name] = sorted(first)
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"dataset folder {folder} does not reload with datasets.load_dataset: {e}") from e
    return {"splits": splits}


def _validate_report_generator(folder: Path) -> dict[str, Any]:
    import genssl_hf  # noqa: F401  (registers ReportGeneratorProcessor with AutoProcessor)
    from transformers import AutoProcessor, VisionEncoderDecoderModel

    _need(folder, "config.json", "processor_config.json")
    try:
        model, info = VisionEncoderDecoderModel.from_pretrained(str(folder), output_loading_info=True)
    except Exception as e:
        raise ArtifactError(f"report_generator folder {folder} does not reload as VisionEncoderDecoderModel: {e}") from e
    _check_loading_info(folder, "VisionEncoderDecoderModel", info)
    try:
        proc = AutoProcessor.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(f"report_generator folder {folder}: the processor does not reload: {e}") from e
    return {"model_class": type(model).__name__, "processor_class": type(proc).__name__,
            "parameters": sum(p.numel() for p in model.parameters())}
def _validate_dual_encoder(folder: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer, VisionTextDualEncoderModel

    _need(folder, "config.json")
    try:
        model, info = VisionTextDualEncoderModel.from_pretrained(str(folder), output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(f"dual-encoder folder {folder} does not reload as VisionTextDualEncoderModel + tokenizer: {e}") from e
    _check_loading_info(folder, "VisionTextDualEncoderModel", info)
    proc = _load_processor(folder, "dual_encoder")
    return {"model_class": type(model).__name__, "processor_class": type(proc).__name__,
            "tokenizer_class": type(tokenizer).__name__, "parameters": sum(p.numel() for p in model.parameters())}


_VALIDATORS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "encoder": _validate_encoder,
    "classifier": _validate_classifier,
    "generator": _validate_generator,
    "prompt_set": _validate_prompt_set,
    "dataset": _validate_dataset,
    "report_generator": _validate_report_generator,
    "dual_encoder": _validate_dual_encoder,
}


def validate_artifact(kind: str, folder: str | os.PathLike) -> dict[str, Any]:
    """Reload ``folder`` with the loader of ``kind``; raise :class:`ArtifactError` naming the folder
    when it does not. Returns a small summary (model class, labels, splits...)."""
    _check_kind(kind)
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{kind} folder {folder} does not exist or is not a folder")
    return _VALIDATORS[kind](folder)


# ------------------------------------------------------------------------------ provenance
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def _adain_provenance(folder: Path) -> dict[str, Any]:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    cfg = read_json(path)
    out: dict[str, Any] = {"image processor": cfg.get("image_processor_type", "?")}
    if "do_adain" in cfg:
        out["AdaIN"] = "on" if cfg.get("do_adain") else "off (ablation)"
        out["AdaIN reference mean / std"] = f"{_fmt(cfg.get('adain_mean'))} / {_fmt(cfg.get('adain_std'))} (grayscale on [0, 1])"
    rs = cfg.get("reference_stats") or {}
    for key, label in (("dataset_name", "reference statistics dataset"), ("statistic", "reference statistic"),
                       ("num_images", "reference images"), ("image_size", "reference image size"),
                       ("content_hash", "reference set content hash")):
        if rs.get(key) is not None:
            out[label] = rs[key]
    if "image_mean" in cfg:
        out["normalisation mean / std"] = f"{_fmt(cfg.get('image_mean'))} / {_fmt(cfg.get('image_std'))}"
    return out


def _model_provenance(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if cfg:
        out["architecture"] = ", ".join(cfg.get("architectures") or [cfg.get("model_type", "?")])
        dims = [f"{k} {cfg[k]}" for k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads") if k in cfg]
        if dims:
            out["dimensions"] = ", ".join(dims)
        if "mask_ratio" in cfg and cfg.get("model_type") == "vit_mae":
            out["mask ratio"] = cfg["mask_ratio"]
    run = read_json(folder / "run_config.json") if (folder / "run_config.json").is_file() else {}
    for key in ("dataset", "seed", "preset"):
        if isinstance(run.get(key), (str, int, float)):
            out[f"run {key}"] = Path(run[key]).name if key == "dataset" and "/" in str(run[key]) else run[key]
    init = run.get("init") if isinstance(run.get("init"), dict) else {}
    if init.get("init_from"):
        out["initialised from"] = init["init_from"]
    summary = read_json(folder / "train_summary.json") if (folder / "train_summary.json").is_file() else {}
    if summary.get("global_step") is not None:
        out["optimiser steps"] = summary["global_step"]
    out.update(_adain_provenance(folder))
    weights = sorted(folder.glob("*.safetensors"))
    if len(weights) == 1:
        out["weights sha256"] = sha256_file(weights[0])
    return out


def _generator_id(folder: Path) -> str | None:
    try:
        from genssl_hf.generation.materialize import default_generator_id
    except ImportError:
        return None
    try:
        return str(default_generator_id(str(folder)))
    except Exception:  # the id is provenance, not a precondition
        return None


def _generator_provenance(folder: Path) -> dict[str, Any]:
    idx = read_json(folder / "model_index.json")
    out: dict[str, Any] = {"pipeline": idx.get("_class_name", "?")}
    for key in ("image_size", "scale_factor", "max_text_length", "text_encoder_source"):
        if idx.get(key) is not None:
            out[key.replace("_", " ")] = idx[key]
    gid = _generator_id(folder)
    if gid:
        out["generator id (as datasets generated from this folder record it)"] = gid
    return out


def _prompt_set_provenance(folder: Path) -> dict[str, Any]:
    meta = read_json(folder / "prompts.json").get("metadata", {})
    out: dict[str, Any] = {
        "prompt set fingerprint (sha256 of the ordered texts)": meta.get("fingerprint"),
        "strategy": meta.get("strategy"),
        "prompts": meta.get("num_prompts"),
        "builder version": meta.get("builder_version"),
    }
    corpus = meta.get("corpus") or {}
    if corpus:
        out["scoring corpus"] = f"{corpus.get('name')} ({corpus.get('num_reports')} reports, sha256 {corpus.get('sha256')})"
    for key in ("threshold", "variant"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    return {k: v for k, v in out.items() if v is not None}


def _dataset_provenance(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = folder / "generation_config.json"
    if gen.is_file():
        cfg = read_json(gen)
        for key, label in (("generator_id", "generator id"), ("prompt_set_hash", "prompt set hash"),
                           ("corpus_hash", "report corpus hash"), ("mode", "conditioning"), ("num_images", "images"),
                           ("seed", "seed"), ("height", "height"), ("width", "width"),
                           ("num_inference_steps", "inference steps"), ("guidance_scale", "guidance scale")):
            if cfg.get(key) is not None:
                out[label] = cfg[key]
    shards = sorted(folder.glob("data/**/*.parquet"))
    out["parquet shards"] = len(shards)
    import pyarrow.parquet as pq

    names: set[str] = set()
    rows = 0
    for f in shards:
        pf = pq.ParquetFile(f)
        rows += pf.metadata.num_rows
        if "source" in pf.schema_arrow.names:  # the schema's per-row origin ("genssl_hf-generated", phantom...)
            names.update(str(x) for x in pf.read(columns=["source"]).column(0).unique().to_pylist())
    out["rows"] = rows
    if names:
        out["row sources"] = ", ".join(sorted(names))
    return out


def _report_generator_provenance(folder: Path) -> dict[str, Any]:
    """Model provenance plus the training corpus (name, licence, hash, generator) and generation settings."""
    out = _model_provenance(folder)
    run = read_json(folder / "run_config.json") if (folder / "run_config.json").is_file() else {}
    corpus = run.get("corpus") or {}
    for key, label in (("name", "training report corpus"), ("license", "training corpus licence"),
                       ("corpus_hash", "training corpus hash"), ("generator_id", "image generator"),
                       ("section", "report section")):
        if corpus.get(key):
            out[label] = corpus[key]
    model = run.get("model") or {}
    for key, label in (("init_from", "encoder initialised from"), ("decoder", "decoder"), ("weights", "decoder weights")):
        if model.get(key):
            out[label] = model[key]
    gen = read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    for key in ("num_beams", "no_repeat_ngram_size", "length_penalty", "max_new_tokens"):
        if key in gen:
            out[f"generation {key.replace('_', ' ')}"] = gen[key]
    out["memorisation"] = "a language model can memorise and reproduce training reports"
    return out


def _report_generator_license(folder: Path) -> str | None:
    """Hub licence id inherited from the training corpus (``run_config.json``), e.g. cc-by-nc-nd-4.0."""
    import re

    run = read_json(folder / "run_config.json") if (folder / "run_config.json").is_file() else {}
    text = str((run.get("corpus") or {}).get("license") or "").lower()
    m = re.search(r"cc[ -]by((?:-(?:nc|nd|sa))*)[ -](\d\.\d)", text)
    return f"cc-by{m.group(1)}-{m.group(2)}" if m else None


def _dual_encoder_provenance(folder: Path) -> dict[str, Any]:
    """Model provenance plus the pre-training pairs of ``vlp_config.json`` (corpus name, hash and
    licence, generator id, section, truncation): identifiers only, never report text."""
    out = _model_provenance(folder)
    vlp = read_json(folder / "vlp_config.json") if (folder / "vlp_config.json").is_file() else {}
    pairs, trunc, loss = vlp.get("pairs") or {}, vlp.get("truncation") or {}, vlp.get("loss") or {}
    for key, label in (("source", "pre-training pairs"), ("corpus_name", "report corpus"), ("corpus_hash", "report corpus sha256"),
                       ("corpus_license", "report corpus licence"), ("generator_id", "image generator id"),
                       ("section", "report section"), ("num_pairs", "image-report pairs")):
        if pairs.get(key) is not None:
            out[label] = pairs[key]
    if trunc:
        out["reports truncated"] = f"{trunc.get('num_truncated')} of {trunc.get('num_texts')} at {trunc.get('max_length')} tokens"
    if loss:
        out["loss"] = f"{loss.get('name')}: temperature {loss.get('temperature')} ({'learnable' if loss.get('learnable_temperature') else 'fixed'}), lambda {loss.get('image_to_text_weight')}"
    return out


_PROVENANCE = {
    "encoder": _model_provenance,
    "classifier": _model_provenance,
    "generator": _generator_provenance,
    "prompt_set": _prompt_set_provenance,
    "dataset": _dataset_provenance,
    "report_generator": _report_generator_provenance,
    "dual_encoder": _dual_encoder_provenance,
}


def collect_provenance(kind: str, folder: str | os.PathLike) -> dict[str, Any]:
    """Provenance read from the artifact's own files (never from the caller's say-so)."""
    _check_kind(kind)
    return _PROVENANCE[kind](Path(folder))


# ------------------------------------------------------------------------------ metrics
_SKIP_METRIC_KEYS = {"num_samples", "num_examples", "step", "epoch", "global_step", "seed", "runtime", "samples_per_second"}
_METRIC_TYPES = {"mean_auc": ("roc_auc", "mean AUC"), "auc": ("roc_auc", "AUC"), "macro_auc": ("roc_auc", "macro AUC"),
                 "accuracy": ("accuracy", "accuracy"), "f1": ("f1", "F1"), "macro_f1": ("f1", "macro F1")}


def eval_results_from_metrics(
    metrics: Mapping[str, Any],
    *,
    dataset_name: str | None = None,
    dataset_type: str | None = None,
    task_type: str = "image-classification",
) -> list[EvalResult]:
    """``model-index`` entries from a metrics JSON: either ``{split: {metric: value, ...}, ...}``
    (the classifier's ``metrics.json``; ``per_class`` AUCs are added per label) or a flat
    ``{metric: value}`` taken as the test split. ``dataset`` in the JSON names the data."""
    name = dataset_name or str(metrics.get("dataset") or "evaluation data")
    dtype = dataset_type or (name if "/" in name else "custom")
    nested = {k: v for k, v in metrics.items() if isinstance(v, Mapping) and any(isinstance(x, (int, float)) for x in v.values())}
    splits = nested or {"test": metrics}
    out: list[EvalResult] = []
    for split, values in splits.items():
        for key, value in values.items():
            if key in _SKIP_METRIC_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            mtype, mname = _METRIC_TYPES.get(key, (key, key.replace("_", " ")))
            out.append(EvalResult(task_type=task_type, dataset_type=dtype, dataset_name=name, dataset_split=split,
                                  metric_type=mtype, metric_name=mname, metric_value=float(value)))
        per_class = values.get("per_class")
        if isinstance(per_class, Mapping):
            for label, m in per_class.items():
                if isinstance(m, Mapping) and isinstance(m.get("auc"), (int, float)):
                    out.append(EvalResult(task_type=task_type, dataset_type=dtype, dataset_name=name, dataset_split=split,
                                          metric_type="roc_auc", metric_name=f"AUC ({label})", metric_config=str(label),
                                          metric_value=float(m["auc"])))
    return out


# ------------------------------------------------------------------------------ cards
def _strip_managed(body: str) -> str:
    while MANAGED_BEGIN in body and MANAGED_END in body:
        a = body.index(MANAGED_BEGIN)
        b = body.index(MANAGED_END, a) + len(MANAGED_END)
        body = body[:a].rstrip() + "\n" + body[b:].lstrip("\n")
    return body.rstrip() + "\n"


def _managed_section(kind: str, provenance: Mapping[str, Any], body: str, sources: Sequence[str], leak_checked: Mapping[str, Any] | None) -> str:
    lines = [MANAGED_BEGIN, "", "## Publication provenance", "", "| item | value |", "| --- | --- |"]
    lines.append(f"| artifact kind | {kind} |")
    for k, v in provenance.items():
        lines.append(f"| {k} | {_fmt(v).replace('|', '/')} |")
    # Templates of other stages may already say this; do not repeat their sections.
    headings = [ln.lower() for ln in body.splitlines() if ln.lstrip().startswith("#")]
    if not any("intended use" in h for h in headings):
        lines += ["", "## Intended use", "", card_text.INTENDED_USE]
    elif card_text.DISCLAIMER.lower() not in body.lower() and "not for diagnosis" not in body.lower():
        lines += ["", f"> {card_text.DISCLAIMER}"]
    if not any("limitation" in h for h in headings):
        lines += ["", "## Limitations", "", card_text.LIMITATIONS]
    lines += ["", "## Data sources", ""]
    if sources:
        lines += ["Data this artifact derives from (attribution):", ""] + [f"- {card_text.DATA_SOURCES[s]}" for s in sources]
    else:
        lines += ["No real data source is named in this artifact's provenance."]
    if leak_checked is not None:
        checked = ", ".join(f"`{s}`" for s in leak_checked.get("sources", [])) or "none"
        lines += ["", card_text.LEAK_STATEMENT, "",
                  f"Real data checked against: {checked} ({leak_checked.get('reports', 0)} report texts, "
                  f"{leak_checked.get('images', 0)} images)."]
    lines += ["", "## Citation", "", "```bibtex", card_text.GENSSL_CITATION, "```", "", MANAGED_END, ""]
    return "\n".join(lines)


def _default_body(kind: str, title: str) -> str:
    use = {
        "encoder": "```python\nimport genssl_hf\nfrom transformers import AutoImageProcessor, ViTMAEForPreTraining\n"
                   "mae = ViTMAEForPreTraining.from_pretrained(\"REPO\")\nprocessor = AutoImageProcessor.from_pretrained(\"REPO\")\n```",
        "classifier": "```python\nimport genssl_hf  # the AdaINImageProcessor (pip install genssl_hf)\n"
                      "from transformers import pipeline\n"
                      "classify = pipeline(\"image-classification\", model=\"REPO\", function_to_apply=\"sigmoid\", top_k=None)\n```\n\n"
                      "The weights load exactly with plain transformers (`AutoModelForImageClassification`); "
                      "the processor (AdaIN alignment, grayscale) needs `genssl_hf`.",
        "generator": "```python\nfrom genssl_hf.generation import CXRLatentDiffusionPipeline\n"
                     "pipe = CXRLatentDiffusionPipeline.from_pretrained(\"REPO\")\n```",
        "prompt_set": "```python\nfrom genssl_hf.prompts import PromptSet\nps = PromptSet.from_pretrained(\"REPO\")\n```",
        "dataset": "```python\nfrom datasets import load_dataset\nds = load_dataset(\"REPO\")\n```",
        "report_generator": "```python\nimport genssl_hf\nfrom transformers import AutoProcessor, VisionEncoderDecoderModel\n"
                            "model = VisionEncoderDecoderModel.from_pretrained(\"REPO\")\n"
                            "processor = AutoProcessor.from_pretrained(\"REPO\")\n```",
        "dual_encoder": "```python\nimport genssl_hf\nfrom transformers import VisionTextDualEncoderModel, pipeline\n"
                        "model = VisionTextDualEncoderModel.from_pretrained(\"REPO\")\n"
                        "clf = pipeline(\"zero-shot-image-classification\", model=\"REPO\")\n```",
    }[kind]
    return f"# {title}\n\nA genssl_hf ({kind.replace('_', ' ')}) artifact.\n\n## Use\n\n{use}\n"


def _merge_list(existing: Any, extra: Iterable[str]) -> list[str]:
    items = [existing] if isinstance(existing, str) else list(existing or [])
    for x in extra:
        if x and x not in items:
            items.append(x)
    return items


def build_card(
    kind: str,
    folder: str | os.PathLike,
    *,
    provenance: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
    base_model: str | Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    eval_dataset: str | None = None,
    leak_checked: Mapping[str, Any] | None = None,
    related: Mapping[str, str] | None = None,
) -> ModelCard | DatasetCard:
    """The refreshed README card of ``folder``: its existing card (or a generic one) with merged
    metadata and a regenerated managed section (provenance, intended use, limitations, data
    sources, citation). Idempotent: refreshing a refreshed card gives the same card."""
    _check_kind(kind)
    folder = Path(folder)
    is_dataset = REPO_TYPES[kind] == "dataset"
    card_cls = DatasetCard if is_dataset else ModelCard
    readme = folder / "README.md"
    title = (repo_id or folder.name).split("/")[-1]
    if readme.is_file():
        card = card_cls.load(readme, ignore_metadata_errors=True)
    else:
        data = DatasetCardData() if is_dataset else ModelCardData()
        card = card_cls(f"---\n{data.to_yaml()}\n---\n\n{_default_body(kind, title)}")
    provenance = dict(provenance if provenance is not None else collect_provenance(kind, folder))
    meta = _KIND_META[kind]
    d = card.data
    d.license = license or getattr(d, "license", None) or "apache-2.0"
    d.tags = _merge_list(getattr(d, "tags", None), [*_COMMON_TAGS, *meta["tags"], *tags])
    if not is_dataset:
        d.library_name = getattr(d, "library_name", None) or meta.get("library_name")
        d.pipeline_tag = getattr(d, "pipeline_tag", None) or meta.get("pipeline_tag")
        if datasets:
            d.datasets = _merge_list(d.datasets, datasets)
        if base_model:
            d.base_model = base_model if isinstance(base_model, str) else list(base_model)
        if metrics:
            d.model_name = title
            d.eval_results = eval_results_from_metrics(metrics, dataset_name=eval_dataset)
    else:
        if datasets:
            d.source_datasets = _merge_list(getattr(d, "source_datasets", None), datasets)
    body = _strip_managed(card.text)
    if not body.strip():
        body = _default_body(kind, title)
    provenance.update({f"related {k} repo": v for k, v in (related or {}).items() if v})
    sources = card_text.data_sources_for(json.dumps(provenance, default=str) + body)
    content = f"---\n{d.to_yaml()}\n---\n\n{body.strip()}\n\n{_managed_section(kind, provenance, body, sources, leak_checked)}"
    return card_cls(content)


# ------------------------------------------------------------------------------ the publisher
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


def _stage(source: Path, files: Sequence[str], card_text_: str, dest: Path, *, link: bool = False) -> None:
    """Write the outgoing folder. ``link``: hard-link instead of copying (for the short-lived
    upload staging only: a dry-run folder must not change when the source is rewritten in place)."""
    for rel in files:
        if rel == "README.md":
            continue
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


def publish(
    kind: str,
    folder: str | os.PathLike,
    repo_id: str | None = None,
    **kwargs: Any,
) -> PublishResult:
    """Validate, card, leak-check and then upload ``folder`` as ``repo_id`` (see :func:`_publish_folder`
    for the arguments). A genssl_hf classifier (own ``model_type`` ``genssl_hf_vit``) is first
    exported with :func:`export_plain_classifier`, so what is published loads exactly with plain
    transformers (``AutoModelForImageClassification``) and never silently as a wrong head."""
    source = Path(folder)
    export = None
    if kind == "classifier" and source.is_dir() and is_native_classifier(source):
        export = export_plain_classifier
    elif (kind == "encoder" and (source / "config.json").is_file() and not (source / "vit" / "config.json").exists()
          and read_json(source / "config.json").get("model_type") == "vit_mae"):
        # A ViTMAE folder gets vit/: its encoder as a plain ViTModel for AutoModelForImageClassification.
        # The method-neutral encoders of the other methods (ViTModel, ResNetModel) already load as they are.
        export = export_vit_encoder
    if export is None:
        return _publish_folder(kind, folder, repo_id, **kwargs)
    dry_run = kwargs.get("dry_run")
    if dry_run is not None and Path(dry_run).resolve() == source.resolve():
        raise ValueError(f"dry-run folder {dry_run} is the artifact folder itself; pick another path")
    validate_artifact(kind, source)
    with tempfile.TemporaryDirectory(prefix=f"genssl-export-{kind}-") as tmpd:
        result = _publish_folder(kind, export(source, Path(tmpd) / source.name), repo_id, **kwargs)
    result.source = source
    return result


def _publish_folder(
    kind: str,
    folder: str | os.PathLike,
    repo_id: str | None = None,
    *,
    dry_run: str | os.PathLike | None = None,
    private: bool = True,
    token: str | None = None,
    real_data: Any = None,
    allow_unchecked: bool = False,
    metrics: str | os.PathLike | Mapping[str, Any] | None = None,
    eval_dataset: str | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
    base_model: str | Sequence[str] | None = None,
    related: Mapping[str, str] | None = None,
    ignore_patterns: Sequence[str] = (),
    include_images: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    api: HfApi | None = None,
) -> PublishResult:
    """Validate, card, leak-check and then upload ``folder`` as ``repo_id`` (or, with
    ``dry_run=DIR``, write exactly the folder that would be uploaded to ``DIR`` and reload it).

    ``real_data``: paths (images, folders, IU report archives, parquet) or a built
    :class:`~genssl_hf.hub.leak.RealDataIndex`; defaults to ``$GENSSL_REAL_DATA``. Without it the
    call fails unless ``allow_unchecked=True``. ``metrics``: a metrics JSON (path or dict) that
    becomes the card's ``model-index``; for model folders ``eval_results.json`` / ``metrics.json``
    beside the weights is used when not given. ``private`` is True unless you say otherwise.
    """
    _check_kind(kind)
    source = Path(folder)
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
    if metrics is None and kind in ("encoder", "classifier", "report_generator"):
        # the fine-tuning stage writes its selected model's metrics beside the weights
        metrics = next((source / n for n in METRICS_FILES if (source / n).is_file()), None)
    metrics_data = _read_metrics(metrics)
    if kind == "report_generator" and license is None:
        license = _report_generator_license(source)  # the training corpus's terms carry over to the model
    index = _resolve_index(real_data, allow_unchecked)

    # 1. the source reloads with its own loader (before any work)
    validate_artifact(kind, source)
    files = select_files(kind, source, ignore_patterns, include_images)
    if not files:
        raise ArtifactError(f"{kind} folder {source} has no files to publish")
    provenance = collect_provenance(kind, source)
    card = build_card(kind, source, provenance=provenance, repo_id=repo_id, license=license, tags=tags,
                      datasets=datasets, base_model=base_model, metrics=metrics_data, eval_dataset=eval_dataset,
                      leak_checked=describe_index(index) if index is not None else None, related=related)
    text = str(card)

    # 2. leak guard over every outgoing file and the new card, before anything is written
    if index is not None:
        findings = scan_files(source, [f for f in files if f != "README.md"], index)
        if findings:
            raise LeakError(findings, source)
        check_text(text, index, name="README.md")
    shipped = sorted({*files, "README.md"})

    result = PublishResult(kind=kind, source=source, repo_id=repo_id, repo_type=REPO_TYPES[kind], private=private,
                           dry_run=dry_run is not None, folder=None, files=shipped, provenance=provenance)
    # 3. stage, reload, then rename into place or upload
    if dry_run is not None:
        dest = Path(dry_run)
        with atomic_dir(dest, overwrite=overwrite) as tmp:
            _stage(source, files, text, tmp)
            validate_artifact(kind, tmp)
        result.folder = dest
        logger.info("dry run: wrote %s (%d files) for %s", dest, len(shipped), repo_id or kind)
        return result

    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix=f"genssl-publish-{kind}-") as tmpd:
        staged = Path(tmpd) / "upload"
        _stage(source, files, text, staged, link=True)
        validate_artifact(kind, staged)
        repo = api.create_repo(repo_id, repo_type=REPO_TYPES[kind], private=private, exist_ok=True)
        result.commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(staged), repo_type=REPO_TYPES[kind], revision=revision,
            commit_message=commit_message or f"Upload genssl_hf {kind.replace('_', ' ')}",
        )
        result.url = str(getattr(repo, "url", repo) or "") or None
        result.folder = None
    logger.info("uploaded %s to %s (%s, %s)", source, repo_id, REPO_TYPES[kind], "private" if private else "public")
    return result


publish_artifact = publish  # the name exported by ``genssl_hf.hub``


def publish_encoder(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a ViTMAE folder with its AdaINImageProcessor (see :func:`publish`)."""
    return publish("encoder", folder, repo_id, **kwargs)


def publish_classifier(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a ViT classifier folder with its processor (see :func:`publish`)."""
    return publish("classifier", folder, repo_id, **kwargs)


def publish_generator(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a ``CXRLatentDiffusionPipeline`` folder (see :func:`publish`)."""
    return publish("generator", folder, repo_id, **kwargs)


def publish_prompt_set(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a saved ``PromptSet`` folder as a dataset repo (see :func:`publish`)."""
    return publish("prompt_set", folder, repo_id, **kwargs)


def publish_dataset(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a generated dataset folder (parquet shards + README ``configs``) (see :func:`publish`)."""
    return publish("dataset", folder, repo_id, **kwargs)


def publish_all(
    artifacts: Mapping[str, str | os.PathLike] | str | os.PathLike,
    namespace: str | None = None,
    *,
    dry_run: str | os.PathLike | None = None,
    repo_names: Mapping[str, str] | None = None,
    layout: Mapping[str, str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    real_data: Any = None,
    allow_unchecked: bool = False,
    private: bool = True,
    token: str | None = None,
    overwrite: bool = False,
    api: HfApi | None = None,
    **kwargs: Any,
) -> dict[str, PublishResult]:
    """Publish every artifact of a pipeline run, linking their cards (the encoder lists the
    synthetic dataset, the classifier names the encoder as ``base_model``...).

    ``artifacts``: a mapping kind -> folder, or a run folder whose sub-folders follow ``layout``
    (default :data:`DEFAULT_RUN_LAYOUT`; kinds whose folder is absent are skipped). ``metrics``:
    kind -> metrics JSON (path or dict). With ``dry_run=DIR`` each kind goes to ``DIR/<kind>``.
    The real-data index is built once and every artifact is checked before any is uploaded.
    """
    if isinstance(artifacts, (str, os.PathLike)):
        run_dir = Path(artifacts)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run folder {run_dir} does not exist")
        lay = {**DEFAULT_RUN_LAYOUT, **(layout or {})}
        found = {k: run_dir / sub for k, sub in lay.items() if (run_dir / sub).is_dir()}
        if not found:
            raise ArtifactError(f"run folder {run_dir} holds none of the artifact folders {lay}")
    else:
        found = {k: Path(v) for k, v in artifacts.items()}
    for k in found:
        _check_kind(k)
    if dry_run is None and not namespace:
        raise ValueError("pass namespace (user or organisation to upload to) or dry_run=DIR")
    names = {**DEFAULT_REPO_NAMES, **(repo_names or {})}
    repo_ids = {k: f"{namespace}/{names[k]}" if namespace else names[k] for k in found}
    index = _resolve_index(real_data, allow_unchecked)
    metrics = metrics or {}
    links: dict[str, dict[str, Any]] = {
        "generator": {"datasets": [repo_ids[k] for k in ("prompt_set",) if k in found]},
        "dataset": {"datasets": [repo_ids[k] for k in ("prompt_set",) if k in found],
                    "related": {k: repo_ids[k] for k in ("generator",) if k in found}},
        "encoder": {"datasets": [repo_ids[k] for k in ("dataset",) if k in found]},
        "classifier": {"base_model": repo_ids.get("encoder"), "datasets": [repo_ids[k] for k in ("dataset",) if k in found]},
        "prompt_set": {"related": {k: repo_ids[k] for k in ("generator", "dataset") if k in found}},
        "dual_encoder": {"datasets": [repo_ids[k] for k in ("dataset",) if k in found]},
    }
    order = [k for k in KINDS if k in found]
    # Dry-run every artifact first (validation, cards, leak guard): nothing is uploaded unless all pass.
    results: dict[str, PublishResult] = {}
    with tempfile.TemporaryDirectory(prefix="genssl-publish-all-") as tmpd:
        base = Path(dry_run) if dry_run is not None else Path(tmpd)
        for k in order:
            results[k] = publish(k, found[k], repo_ids[k], dry_run=base / k, private=private, real_data=index,
                                 allow_unchecked=True, metrics=metrics.get(k), overwrite=overwrite,
                                 **{**links.get(k, {}), **kwargs})
        if dry_run is not None:
            return results
        api = api or HfApi(token=token)
        for k in order:
            staged = results[k].folder
            repo = api.create_repo(repo_ids[k], repo_type=REPO_TYPES[k], private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_ids[k], folder_path=str(staged), repo_type=REPO_TYPES[k],
                                       commit_message=f"Upload genssl_hf {k.replace('_', ' ')}")
            results[k] = PublishResult(kind=k, source=found[k], repo_id=repo_ids[k], repo_type=REPO_TYPES[k], private=private,
                                       dry_run=False, folder=None, files=results[k].files, url=str(getattr(repo, "url", repo)),
                                       commit=commit, provenance=results[k].provenance)
    return results


# ------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="publish",
        description="Publish a genssl_hf artifact folder to the Hugging Face Hub (private by default), "
        "or write exactly the folder that would be uploaded (--dry-run DIR). Every outgoing file is "
        "checked for report text and pixels of the real data given with --real-data.",
    )
    p.add_argument("--kind", choices=[*KINDS, "all"], required=True,
                   help="artifact kind; 'all' publishes every artifact of a run folder given as --folder")
    p.add_argument("--folder", required=True, help="the artifact folder (or the run folder with --kind all)")
    p.add_argument("--repo-id", help="namespace/name of the repo (with --kind all: the namespace)")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True, help="private repo (default)")
    vis.add_argument("--public", dest="private", action="store_false", help="public repo")
    p.add_argument("--dry-run", metavar="DIR", help="write the folder that would be uploaded to DIR, check it reloads, upload nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dry-run folder")
    p.add_argument("--token", help="Hub token (default: the logged-in token / HF_TOKEN)")
    p.add_argument("--metrics", help="metrics JSON for the card's model-index (classifier); with --kind all: applies to the classifier")
    p.add_argument("--eval-dataset", help="name of the evaluation dataset in the model-index")
    p.add_argument("--real-data", nargs="+", metavar="PATH",
                   help=f"real images / folders / report archives / parquet the artifact must not contain (default: ${REAL_DATA_ENV})")
    p.add_argument("--no-leak-check", action="store_true", help="skip the real-data leak check (not recommended)")
    p.add_argument("--license", help="license id for the card (default: keep the card's, else apache-2.0)")
    p.add_argument("--tag", action="append", default=[], help="extra card tag (repeatable)")
    p.add_argument("--dataset", action="append", default=[], help="dataset repo id to list in the card (repeatable)")
    p.add_argument("--base-model", help="base model repo id for the card")
    p.add_argument("--include-images", action="store_true", default=None,
                   help="ship image files of encoder / classifier folders (figures; checked by the leak guard, but "
                   "grids and overlays of real images are not matched tile by tile)")
    p.add_argument("--commit-message")
    p.add_argument("-v", "--verbose", action="store_true")
    return checked_parser(p)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.dry_run is None and not args.repo_id:
        print("error: pass --repo-id to upload, or --dry-run DIR", file=sys.stderr)
        return 2
    try:
        if args.kind == "all":
            res = publish_all(args.folder, args.repo_id, dry_run=args.dry_run, real_data=args.real_data,
                              allow_unchecked=args.no_leak_check, private=args.private, token=args.token,
                              overwrite=args.overwrite, metrics={"classifier": args.metrics} if args.metrics else None)
            out = {k: r.to_dict() for k, r in res.items()}
        else:
            r = publish(args.kind, args.folder, args.repo_id, dry_run=args.dry_run, private=args.private, token=args.token,
                        real_data=args.real_data, allow_unchecked=args.no_leak_check, metrics=args.metrics,
                        eval_dataset=args.eval_dataset, license=args.license, tags=args.tag, datasets=args.dataset,
                        base_model=args.base_model, commit_message=args.commit_message, overwrite=args.overwrite,
                        include_images=args.include_images)
            out = r.to_dict()
    except (LeakError, ArtifactError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def publish_after_training(kind: str, folder: str | os.PathLike, repo_id: str) -> str:
    """What the training scripts' ``--push_to_hub`` does once training has finished: publish the
    folder through :func:`publish` (validation, card, the leak guard against the real data named in
    ``$GENSSL_REAL_DATA``) to a private repo. Returns the repo URL. Training modules never import
    this: the scripts hand it to their ``main(publish=...)``."""
    result = publish(kind, folder, repo_id, private=True)
    return result.url or repo_id
