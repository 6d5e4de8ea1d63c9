"""A prompt set as published: a dataset whose rows are its prompts with their scores.

``PromptSet.save_pretrained`` writes one ``prompts.json`` (what ``PromptSet.from_pretrained`` reads);
``datasets.load_dataset`` would see it as one row holding the whole file. The published folder adds
``data/prompts.parquet`` (``PromptSet.to_dataset``: one row a prompt with text, disease, existence,
strategy, class label, feature and its ``score_paper`` / ``score_negation_aware``) and the card's
``configs`` entry that points ``load_dataset`` at it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["PROMPT_ROWS", "needs_prompt_rows", "export_prompt_rows"]

PROMPT_ROWS = "data/prompts.parquet"


def needs_prompt_rows(folder: str | os.PathLike) -> bool:
    return (Path(folder) / "prompts.json").is_file() and not (Path(folder) / PROMPT_ROWS).is_file()


def export_prompt_rows(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy the prompt-set folder to ``out``, add :data:`PROMPT_ROWS` and the card's ``configs``."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from genssl_hf.prompts import PromptSet

    folder, out = Path(folder), Path(out)
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    (out / PROMPT_ROWS).parent.mkdir(parents=True, exist_ok=True)
    PromptSet.from_pretrained(folder).to_dataset().to_parquet(str(out / PROMPT_ROWS))
    readme = out / "README.md"
    if readme.is_file():
        card = DatasetCard.load(readme, ignore_metadata_errors=True)
    else:
        card = DatasetCard(f"---\n{DatasetCardData().to_yaml()}\n---\n")
    card.data.configs = [{"config_name": "default", "data_files": [{"split": "train", "path": PROMPT_ROWS}]}]
    card.save(str(readme))
    return out
