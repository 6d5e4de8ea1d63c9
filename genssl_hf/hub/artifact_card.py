"""The README card a publication ships: the folder's own card (or a generic one) with merged Hub
metadata, ``model-index`` results from a metrics JSON, and a regenerated managed section
(provenance, intended use, limitations, data sources, leak statement, citation)."""

from __future__ import annotations

import json
import re
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from . import card_text
from .artifacts import REPO_TYPES, _check_kind
from .card_metadata import tidy_metadata
from .provenance import _fmt, collect_provenance

MANAGED_BEGIN = "<!-- genssl_hf:publish:begin -->"
MANAGED_END = "<!-- genssl_hf:publish:end -->"


_KIND_META: dict[str, dict[str, Any]] = {
    "encoder": {
        "library_name": "transformers",
        "pipeline_tag": "image-feature-extraction",
        "tags": ["vit-mae", "masked-autoencoder", "self-supervised", "chest-x-ray", "medical-imaging"],
    },
    "classifier": {
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "tags": ["vit", "image-classification", "chest-x-ray", "medical-imaging"],
    },
    "generator": {
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "tags": ["latent-diffusion", "monai", "text-to-image", "synthetic-data", "chest-x-ray", "medical-imaging"],
    },
    "prompt_set": {"tags": ["prompt-set", "text-to-image", "chest-x-ray"]},
    "dataset": {"tags": ["synthetic", "chest-x-ray", "medical-imaging", "image-classification"]},
    "report_generator": {
        "library_name": "transformers",
        "pipeline_tag": "image-to-text",
        "tags": ["vision-encoder-decoder", "report-generation", "chest-x-ray", "medical-imaging"],
    },
    "dual_encoder": {
        "library_name": "transformers",
        "pipeline_tag": "zero-shot-image-classification",
        "tags": ["vision-text-dual-encoder", "contrastive", "zero-shot", "chest-x-ray", "medical-imaging"],
    },
}
_COMMON_TAGS = ["genssl_hf", "genssl", "research-only"]


_SKIP_METRIC_KEYS = {
    "num_samples",
    "num_examples",
    "step",
    "epoch",
    "global_step",
    "seed",
    "runtime",
    "samples_per_second",
}
_METRIC_TYPES = {
    "mean_auc": ("roc_auc", "mean AUC"),
    "auc": ("roc_auc", "AUC"),
    "macro_auc": ("roc_auc", "macro AUC"),
    "accuracy": ("accuracy", "accuracy"),
    "f1": ("f1", "F1"),
    "macro_f1": ("f1", "macro F1"),
}


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
    nested = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, Mapping) and any(isinstance(x, (int, float)) for x in v.values())
    }
    splits = nested or {"test": metrics}
    out: list[EvalResult] = []
    for split, values in splits.items():
        for key, value in values.items():
            if key in _SKIP_METRIC_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            mtype, mname = _METRIC_TYPES.get(key, (key, key.replace("_", " ")))
            out.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=dtype,
                    dataset_name=name,
                    dataset_split=split,
                    metric_type=mtype,
                    metric_name=mname,
                    metric_value=float(value),
                )
            )
        per_class = values.get("per_class")
        if isinstance(per_class, Mapping):
            for label, m in per_class.items():
                if isinstance(m, Mapping) and isinstance(m.get("auc"), (int, float)):
                    out.append(
                        EvalResult(
                            task_type=task_type,
                            dataset_type=dtype,
                            dataset_name=name,
                            dataset_split=split,
                            metric_type="roc_auc",
                            metric_name=f"AUC ({label})",
                            metric_config=str(label),
                            metric_value=float(m["auc"]),
                        )
                    )
    return out


def _strip_managed(body: str) -> str:
    while MANAGED_BEGIN in body and MANAGED_END in body:
        a = body.index(MANAGED_BEGIN)
        b = body.index(MANAGED_END, a) + len(MANAGED_END)
        body = body[:a].rstrip() + "\n" + body[b:].lstrip("\n")
    return body.rstrip() + "\n"


def _managed_section(
    kind: str,
    provenance: Mapping[str, Any],
    body: str,
    sources: Sequence[str],
    leak_checked: Mapping[str, Any] | None,
    notes: Sequence[str] = (),
) -> str:
    lines = [MANAGED_BEGIN, "", "## Publication provenance", "", "| item | value |", "| --- | --- |"]
    lines.append(f"| artifact kind | {kind} |")
    for k, v in provenance.items():
        lines.append(f"| {k} | {_fmt(v).replace('|', '/')} |")
    if notes:  # what the YAML header must not say (descriptions, differences)
        lines += ["", *[f"- {n}" for n in notes]]
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
        lines += ["Data this artifact derives from (attribution):", ""] + [
            f"- {card_text.DATA_SOURCES[s]}" for s in sources
        ]
    else:
        lines += ["No real data source is named in this artifact's provenance."]
    if leak_checked is not None:
        checked = ", ".join(f"`{s}`" for s in leak_checked.get("sources", [])) or "none"
        lines += [
            "",
            card_text.LEAK_STATEMENT,
            "",
            f"Real data checked against: {checked} ({leak_checked.get('reports', 0)} report texts, "
            f"{leak_checked.get('images', 0)} images).",
        ]
    lines += ["", "## Citation", "", "```bibtex", card_text.GENSSL_CITATION, "```", "", MANAGED_END, ""]
    return "\n".join(lines)


def _default_body(kind: str, title: str) -> str:
    use = {
        "encoder": "```python\nimport genssl_hf\nfrom transformers import AutoImageProcessor, ViTMAEForPreTraining\n"
        'mae = ViTMAEForPreTraining.from_pretrained("REPO")\n'
        'processor = AutoImageProcessor.from_pretrained("REPO")\n```',
        "classifier": "```python\nimport genssl_hf  # the AdaINImageProcessor (pip install genssl_hf)\n"
        "from transformers import pipeline\n"
        'classify = pipeline("image-classification", model="REPO", function_to_apply="sigmoid", top_k=None)\n```\n\n'
        "The weights load exactly with plain transformers (`AutoModelForImageClassification`); "
        "the processor (AdaIN alignment, grayscale) needs `genssl_hf`.",
        "generator": "```python\nfrom diffusers import DiffusionPipeline  # needs genssl_hf installed\n"
        'pipe = DiffusionPipeline.from_pretrained("REPO", trust_remote_code=True)\n```',
        "prompt_set": '```python\nfrom genssl_hf.prompts import PromptSet\nps = PromptSet.from_pretrained("REPO")\n```',
        "dataset": '```python\nfrom datasets import load_dataset\nds = load_dataset("REPO")\n```',
        "report_generator": "```python\nimport genssl_hf\n"
        "from transformers import AutoProcessor, VisionEncoderDecoderModel\n"
        'model = VisionEncoderDecoderModel.from_pretrained("REPO")\n'
        'processor = AutoProcessor.from_pretrained("REPO")\n```',
        "dual_encoder": "```python\nimport genssl_hf\nfrom transformers import VisionTextDualEncoderModel, pipeline\n"
        'model = VisionTextDualEncoderModel.from_pretrained("REPO")\n'
        'clf = pipeline("zero-shot-image-classification", model="REPO")\n```',
    }[kind]
    return f"# {title}\n\nA genssl_hf ({kind.replace('_', ' ')}) artifact.\n\n## Use\n\n{use}\n"


# The first argument of the loads in a card's code blocks: a placeholder, or the folder the card was
# written in (a run path), replaced by the repo the card is published with.
_LOAD_TARGET = re.compile(r'((?:\.from_pretrained|load_dataset)\(\s*|\bmodel=)"[^"\n]*"')


def _point_snippets(body: str, repo_id: str | None) -> str:
    """Every load in the card's code blocks names ``repo_id`` (the folder itself, ``.``, in a dry run
    without one), never a local path or a placeholder."""
    target = repo_id or "."
    parts = body.split("```")
    for i in range(1, len(parts), 2):  # the odd parts are inside code fences
        parts[i] = _LOAD_TARGET.sub(lambda m: f'{m.group(1)}"{target}"', parts[i])
    return "```".join(parts)


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
    body = _point_snippets(body, repo_id)
    notes = tidy_metadata(d, is_dataset=is_dataset)
    provenance.update({f"related {k} repo": v for k, v in (related or {}).items() if v})
    sources = card_text.data_sources_for(json.dumps(provenance, default=str) + body)
    content = (
        f"---\n{d.to_yaml()}\n---\n\n{body.strip()}\n\n"
        f"{_managed_section(kind, provenance, body, sources, leak_checked, notes)}"
    )
    return card_cls(content)
