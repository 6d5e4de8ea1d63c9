"""Provenance of an artifact, read from its own files (never from the caller's say-so): AdaIN
statistics, model dimensions, prompt-set fingerprint, generator id, generation config, corpora."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils import read_json, sha256_file
from .artifacts import _check_kind


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
        out["AdaIN reference mean / std"] = (
            f"{_fmt(cfg.get('adain_mean'))} / {_fmt(cfg.get('adain_std'))} (grayscale on [0, 1])"
        )
    rs = cfg.get("reference_stats") or {}
    for key, label in (
        ("dataset_name", "reference statistics dataset"),
        ("statistic", "reference statistic"),
        ("num_images", "reference images"),
        ("image_size", "reference image size"),
        ("content_hash", "reference set content hash"),
    ):
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
        dims = [
            f"{k} {cfg[k]}"
            for k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
            if k in cfg
        ]
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
    name = idx.get("_class_name", "?")
    out: dict[str, Any] = {"pipeline": name[-1] if isinstance(name, list) else name}
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
        out["scoring corpus"] = (
            f"{corpus.get('name')} ({corpus.get('num_reports')} reports, sha256 {corpus.get('sha256')})"
        )
    for key in ("threshold", "variant"):
        if meta.get(key) is not None:
            out[key] = meta[key]
    return {k: v for k, v in out.items() if v is not None}


def _dataset_provenance(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = folder / "generation_config.json"
    if gen.is_file():
        cfg = read_json(gen)
        for key, label in (
            ("generator_id", "generator id"),
            ("prompt_set_hash", "prompt set hash"),
            ("corpus_hash", "report corpus hash"),
            ("mode", "conditioning"),
            ("num_images", "images"),
            ("seed", "seed"),
            ("height", "height"),
            ("width", "width"),
            ("num_inference_steps", "inference steps"),
            ("guidance_scale", "guidance scale"),
        ):
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
    for key, label in (
        ("name", "training report corpus"),
        ("license", "training corpus licence"),
        ("corpus_hash", "training corpus hash"),
        ("generator_id", "image generator"),
        ("section", "report section"),
    ):
        if corpus.get(key):
            out[label] = corpus[key]
    model = run.get("model") or {}
    for key, label in (
        ("init_from", "encoder initialised from"),
        ("decoder", "decoder"),
        ("weights", "decoder weights"),
    ):
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
    for key, label in (
        ("source", "pre-training pairs"),
        ("corpus_name", "report corpus"),
        ("corpus_hash", "report corpus sha256"),
        ("corpus_license", "report corpus licence"),
        ("generator_id", "image generator id"),
        ("section", "report section"),
        ("num_pairs", "image-report pairs"),
    ):
        if pairs.get(key) is not None:
            out[label] = pairs[key]
    if trunc:
        out["reports truncated"] = (
            f"{trunc.get('num_truncated')} of {trunc.get('num_texts')} at {trunc.get('max_length')} tokens"
        )
    if loss:
        out["loss"] = (
            f"{loss.get('name')}: temperature {loss.get('temperature')} "
            f"({'learnable' if loss.get('learnable_temperature') else 'fixed'}), "
            f"lambda {loss.get('image_to_text_weight')}"
        )
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
