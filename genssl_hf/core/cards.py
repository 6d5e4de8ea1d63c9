"""Cards for every artifact, rendered from the Jinja templates in the top-level ``model_cards/``
folder through huggingface_hub's ``ModelCard`` / ``DatasetCard``. On the ground floor because every
stage writes a card next to what it saves, while only ``hub`` publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

# ``templates`` is a symbolic link to the top-level ``model_cards/`` folder, so the templates are
# edited in one place and still ship inside the wheel as package data.
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

DISCLAIMER = "Research use only. Not a medical device and not for diagnosis, treatment or any clinical decision."


def template_path(name: str) -> Path:
    """Path of ``model_cards/<name>.md``; a clear error when it is missing."""
    path = TEMPLATE_DIR / (name if name.endswith(".md") else f"{name}.md")
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.md"))
        raise FileNotFoundError(f"card template {name!r} not found at {path}; known templates: {known}")
    return path


def render_model_card(template: str, card_data: dict[str, Any] | ModelCardData, **variables: Any) -> ModelCard:
    """A ``ModelCard`` from ``model_cards/<template>.md``; ``card_data`` becomes the YAML header."""
    data = card_data if isinstance(card_data, ModelCardData) else ModelCardData(**card_data)
    return ModelCard.from_template(data, template_path=str(template_path(template)), disclaimer=DISCLAIMER, **variables)


def render_dataset_card(template: str, card_data: dict[str, Any] | DatasetCardData, **variables: Any) -> DatasetCard:
    """A ``DatasetCard`` from ``model_cards/<template>.md``; ``card_data`` becomes the YAML header
    (put the ``configs`` / ``dataset_info`` keys there so ``load_dataset`` finds the files)."""
    data = card_data if isinstance(card_data, DatasetCardData) else DatasetCardData(**card_data)
    return DatasetCard.from_template(
        data, template_path=str(template_path(template)), disclaimer=DISCLAIMER, **variables
    )
