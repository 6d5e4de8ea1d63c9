"""Every published card parses with huggingface_hub and says only what a Hub reader can trust:
licence (with name and link where ``other``), ``base_model`` where fine-tuned, ``datasets`` as
names, top-level ``metrics``, a model-index of measured metrics (differences go to the text); a
prompt set loads with ``load_dataset`` as one row per prompt with its scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, ModelCard

sys.path.insert(0, str(Path(__file__).parent))
from _publish_artifacts import make_classifier, make_dataset, make_encoder, make_prompt_set  # noqa: E402

from genssl_hf.hub import publish as pub  # noqa: E402
from genssl_hf.hub.card_metadata import LICENSE_FILE, is_repo_name  # noqa: E402
from genssl_hf.utils import pretrained_path  # noqa: E402


def _scored_prompt_set(d: Path) -> Path:
    make_prompt_set(d)
    data = json.loads((d / "prompts.json").read_text())
    for i, p in enumerate(data["prompts"]):
        p["scores"] = {"paper": 0.1 * (i % 7), "negation_aware": 0.05 * (i % 5)}
    (d / "prompts.json").write_text(json.dumps(data))
    return d


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cards")
    run = tmp / "run"
    make_encoder(run / "mae")
    make_classifier(run / "classifier")
    make_dataset(run / "generated_dataset")
    card = DatasetCard.load(run / "generated_dataset" / "README.md")
    card.data.license = "other"  # what the generation stage writes for data derived from a generator
    card.save(str(run / "generated_dataset" / "README.md"))
    _scored_prompt_set(run / "prompt_set")
    metrics = {
        "classifier": {
            "test": {"mean_auc": 0.81, "accuracy": 0.7, "auc_difference_vs_random_init": 0.19},
            "dataset": "phantom-test",
        }
    }
    pub.publish_all(run, "me", dry_run=tmp / "hub", allow_unchecked=True, metrics=metrics)
    return tmp / "hub"


def _check_card(card, folder: Path) -> None:
    d = card.data
    assert d.license, folder
    if d.license == "other":
        assert d.license_name and d.license_link, folder
        assert (folder / d.license_link).is_file() or d.license_link.startswith("https://"), folder
    for name in d.to_dict().get("datasets") or []:
        assert is_repo_name(name), f"{folder}: datasets entry {name!r} is a description, not a name"
    results = getattr(d, "eval_results", None) or []
    for r in results:
        assert "difference" not in (r.metric_name or "").lower(), f"{folder}: {r.metric_name}"
    if results:
        assert set(d.metrics) == {r.metric_type for r in results}, folder


@pytest.mark.parametrize("kind", ["encoder", "classifier", "prompt_set", "dataset"])
def test_published_cards_parse_and_carry_trustworthy_metadata(published, kind):
    folder = published / kind
    cls = DatasetCard if kind in ("prompt_set", "dataset") else ModelCard
    # ignore_metadata_errors=False: invalid YAML or a malformed model-index raises here
    card = cls.load(folder / "README.md", ignore_metadata_errors=False)
    _check_card(card, folder)
    if kind == "classifier":
        assert card.data.base_model == "me/genssl-mae-encoder"
        assert card.data.datasets == ["me/genssl-synthetic-cxr"]
        assert {r.metric_name for r in card.data.eval_results} == {"mean AUC", "accuracy"}
        assert card.data.metrics == ["accuracy", "roc_auc"]
        assert "auc difference vs random init" in card.text.lower()  # the difference is in the text
    if kind == "dataset":
        assert card.data.license == "other" and card.data.license_name == "genssl-research-only"
        assert card.data.license_link == LICENSE_FILE and (folder / LICENSE_FILE).is_file()
        assert "https://github.com/)" not in card.text


def test_a_prompt_set_loads_as_one_row_per_prompt_with_scores(published):
    import datasets

    from genssl_hf.prompts import PromptSet

    folder = published / "prompt_set"
    ps = PromptSet.from_pretrained(folder)
    ds = datasets.load_dataset(str(folder), split="train")
    assert len(ds) == len(ps) > 1
    assert ds[0]["text"] == ps[0].text and ds[3]["score_paper"] == pytest.approx(0.3)
    assert {"disease", "existence", "class_label", "score_negation_aware"} <= set(ds.column_names)


@pytest.mark.parametrize("name", ["nih-ldm-64", "phantom-ldm-64", "nih-genssl-mae-64"])
def test_shipped_cards_follow_the_same_rules(name):
    folder = pretrained_path(f"genssl_hf/{name}")
    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)
    _check_card(card, folder)
    if name == "nih-ldm-64":  # fine-tuned from the phantom generator
        assert card.data.base_model == "genssl_hf/phantom-ldm-64"
