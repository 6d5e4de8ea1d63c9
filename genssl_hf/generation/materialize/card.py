"""The dataset card (``README.md``, rendered from ``model_cards/synthetic_dataset.md``) and the
Hub upload of a verified folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from genssl_hf.utils import read_json

from .layout import CARD_TEMPLATE, CONFIG_NAME, DATA_DIR, SPLIT, VERIFICATION_NAME
from .rows import _features_from_yaml, _features_yaml
from .verify import VerificationReport, verify_dataset


def _size_category(n: int) -> str:
    for bound, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < bound:
            return name
    return "10M<n<100M"


def write_dataset_card(out_dir: str | os.PathLike, quality: Mapping[str, Any] | None = None) -> Path:
    """Render ``README.md`` (YAML ``configs`` + ``dataset_info`` so ``load_dataset`` finds the
    shards, then provenance, counts, intended use) from ``model_cards/synthetic_dataset.md``."""

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
        {
            "text": p["text"],
            "disease": p["disease"],
            "existence": p["existence"],
            "class_label": p["class_label"],
            "planned": n,
            "realised": report.prompt_counts.get(p["text"], 0),
        }
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
        raise ValueError(
            f"{out} is not a finished generated dataset (no README.md / {VERIFICATION_NAME}); run generation first"
        )
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
