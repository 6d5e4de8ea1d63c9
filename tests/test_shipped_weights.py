"""Issue 22, item 3: the weights shipped inside the package load offline by their
``genssl_hf/<name>`` names, carry cards with measured results (model-index), pass the leak guard,
and score what their cards say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genssl_hf
from genssl_hf.hub import shipped, shipped_cards
from genssl_hf.utils import PRETRAINED, pretrained_path

# What this checkout ships (the NIH pair exists only once scripts/package_pretrained.py has run).
SHIPPED = [n for n in PRETRAINED if shipped.shipped_folder(n).is_dir()]
GENERATORS = [n for n in SHIPPED if "ldm" in n]
ENCODERS = [n for n in SHIPPED if "mae" in n]
# encoders chosen under the real-data protocol: their card cites a benchmarks/results.json row
PROTOCOL_ENCODERS = [n for n in ENCODERS if (shipped.shipped_folder(n) / "protocol_release.json").is_file()]
RESULTS_JSON = Path(__file__).resolve().parents[1] / "benchmarks" / "results.json"


def test_the_phantom_generator_is_shipped():
    assert "phantom-ldm-64" in SHIPPED


def test_a_name_not_packaged_here_says_how_to_build_it(tmp_path, monkeypatch):
    import genssl_hf.utils as utils

    monkeypatch.setitem(utils.PRETRAINED, "not-built", "training/pretrained/not-built")
    with pytest.raises(FileNotFoundError, match="package_pretrained.py"):
        pretrained_path("genssl_hf/not-built")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_artifact_resolves_offline_and_has_a_card_with_results(name):
    folder = pretrained_path(f"genssl_hf/{name}")
    assert folder.is_dir() and folder == shipped.shipped_folder(name)
    results = shipped.card_results(folder / "README.md")
    assert results, f"{name}: the card has no model-index results"
    text = (folder / "README.md").read_text()
    assert "## Limits" in text or "Limitations" in text
    assert "not for diagnosis" in text.lower() or "not a medical device" in text.lower()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 20 * 2**20, f"{name}: {size / 2**20:.1f} MB is too big to ship in the package"


def test_unknown_names_are_refused_with_the_list():
    with pytest.raises(ValueError, match="genssl_hf/nih-ldm-64"):
        pretrained_path("genssl_hf/no-such-model")
    assert pretrained_path("some/other/folder") == __import__("pathlib").Path("some/other/folder")


@pytest.mark.parametrize("name", GENERATORS)
def test_shipped_generators_load_by_name_and_generate(name):
    from genssl_hf.generation import CXRLatentDiffusionPipeline

    pipe = CXRLatentDiffusionPipeline.from_pretrained(f"genssl_hf/{name}")
    prompt = "Effusion." if "nih" in name else "Big cardiomegaly."
    out = pipe([prompt], num_images_per_prompt=2, num_inference_steps=4, guidance_scale=3.0, seeds=[0, 1])
    images = [np.asarray(im.convert("L"), dtype=np.float32) for im in out.images]
    assert images[0].shape == (64, 64) and images[0].std() > 10 and not np.array_equal(images[0], images[1])


@pytest.mark.parametrize("name", ENCODERS)
def test_shipped_encoders_load_by_name_everywhere(name):
    from transformers import AutoImageProcessor, AutoModel, ViTMAEForPreTraining

    from genssl_hf.training.classifier import build_classifier
    from genssl_hf.training.mae_init import position_table_problems

    path = genssl_hf.pretrained_path(f"genssl_hf/{name}")
    mae = ViTMAEForPreTraining.from_pretrained(path)
    assert not position_table_problems(mae)  # trained with the sin-cos tables, not position-blind
    assert type(AutoImageProcessor.from_pretrained(path)).__name__ == "AdaINImageProcessor"
    vit, info = AutoModel.from_pretrained(path / "vit", output_loading_info=True)
    assert not [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    clf = build_classifier(f"genssl_hf/{name}", ["a", "b"], multi_label=True)
    torch.testing.assert_close(
        clf.vit.embeddings.patch_embeddings.projection.weight, mae.vit.embeddings.patch_embeddings.projection.weight
    )


@pytest.mark.realdata
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_artifacts_pass_the_leak_guard(name, shared_data):
    from genssl_hf.hub.leak import build_real_data_index, scan_files

    folder = pretrained_path(f"genssl_hf/{name}")
    index = build_real_data_index([str(shared_data / "nih-cxr14-1000-64px")])
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert not scan_files(folder, files, index)


@pytest.mark.realdata
@pytest.mark.parametrize("name", [n for n in GENERATORS if "nih" in n])
def test_shipped_nih_generator_scores_what_its_card_says(name, shared_data):
    from genssl_hf.generation import CXRLatentDiffusionPipeline

    folder = pretrained_path(f"genssl_hf/{name}")
    card = shipped.card_results(folder / "README.md")
    measured = shipped.measure_autoencoder(
        CXRLatentDiffusionPipeline.from_pretrained(folder), shipped.nih_test_images(shared_data / "nih-cxr14-1000-64px")
    )
    assert measured["autoencoder_l1"] == pytest.approx(card["autoencoder L1"], abs=2e-4)
    assert measured["image_mean_l1"] == pytest.approx(card["image-mean L1 (trivial baseline)"], abs=2e-4)
    assert measured["autoencoder_l1"] < measured["image_mean_l1"]  # better than the trivial baseline


@pytest.mark.realdata
@pytest.mark.parametrize("name", ENCODERS)
def test_shipped_encoder_scores_what_its_card_says(name, shared_data):
    folder = pretrained_path(f"genssl_hf/{name}")
    card = shipped.card_results(folder / "README.md")
    measured = shipped.measure_mae(folder, shipped.nih_test_images(shared_data / "nih-cxr14-1000-64px"))
    mask = json.loads((folder / "config.json").read_text())["mask_ratio"]
    assert measured["mae_loss"] == pytest.approx(card[f"MAE loss (mask {mask:g})"], abs=2e-4)
    assert measured["mean_patch_loss"] == pytest.approx(card["predict-the-mean loss (trivial baseline)"], abs=2e-4)
    assert measured["mae_loss"] < measured["mean_patch_loss"]  # it learned something that transfers to real images


def test_the_measurements_beat_their_trivial_baselines_on_phantoms(tmp_path):
    """The functions that fill the shipped cards' model-index, on data without patients: the shipped
    phantom autoencoder against each-image-as-its-mean, and an MAE folder's loss against the best
    constant (an untrained MAE does not beat it by much; the numbers must be finite and ordered)."""
    from genssl_hf.data import sample_phantom
    from genssl_hf.generation import CXRLatentDiffusionPipeline

    from _publish_artifacts import make_encoder

    images = np.stack([sample_phantom(seed=s, size=64).image for s in range(12)])
    ae = shipped.measure_autoencoder(CXRLatentDiffusionPipeline.from_pretrained("genssl_hf/phantom-ldm-64"), images)
    assert 0 < ae["autoencoder_l1"] < 0.5 * ae["image_mean_l1"]
    folder = make_encoder(tmp_path / "mae")
    small = np.stack([sample_phantom(seed=s, size=32).image for s in range(12)])
    first, again = shipped.measure_mae(folder, small), shipped.measure_mae(folder, small)
    assert first == again  # seeded masks: a card's number can be re-measured exactly
    assert np.isfinite(first["mae_loss"]) and first["mean_patch_loss"] > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_have_every_run_fact_filled_in(name):
    import re

    text = (pretrained_path(f"genssl_hf/{name}") / "README.md").read_text()
    assert not re.findall(r"\{[a-z_]+(?::[.0-9a-z]+)?\}", text)  # no placeholder left unfilled
    assert "/tmp/" not in text and "?" not in re.findall(r"(\S+) (?:optimiser )?steps", text)


def test_the_packager_reads_what_the_run_ran_and_writes_portable_commands(tmp_path):
    """The facts scripts/package_pretrained.py puts into the cards come from the run folder: the
    steps that ran (last checkpoint by number, or the training summary) and the run's settings."""
    import json

    from genssl_hf.utils import write_json

    run = tmp_path / "somewhere" / "run"
    for step in (150, 1000):  # numeric, not lexical, order of checkpoints
        write_json(run / "generator" / "ae" / f"checkpoint-{step}" / "train_state.json", {"global_step": step})
    write_json(run / "generator" / "ldm" / "checkpoint-600" / "train_state.json", {"global_step": 600})
    write_json(run / "mae_genssl" / "model" / "train_summary.json", {"global_step": 900})
    write_json(
        run / "pipeline_config.json",
        {
            "generation": {"num_images": 2000},
            "pretrain": {"args": {"num_train_epochs": 60, "per_device_train_batch_size": 128}},
            "finetune": {"args": {"num_train_epochs": 5, "max_train_samples": 1000}},
        },
    )
    facts = shipped_cards._run_facts(run)
    assert facts == {
        "ae_steps": "1000",
        "ldm_steps": "600",
        "mae_steps": "900",
        "num_images": "2,000",
        "mae_epochs": "60",
        "mae_batch": "128",
        "ft_epochs": "5",
        "ft_samples": "1,000",
    }
    # a run recorded before fine-tuning's options took transformers' names (--epochs) reads the same
    write_json(
        run / "pipeline_config.json",
        {
            "generation": {"num_images": 2000},
            "pretrain": {"args": {"num_train_epochs": 60, "per_device_train_batch_size": 128}},
            "finetune": {"args": {"epochs": 5, "max_train_samples": 1000}},
        },
    )
    assert shipped_cards._run_facts(run) == facts
    body = shipped_cards._fill(shipped_cards.ENCODER_BODY, facts)
    assert "900 optimiser steps (60 epochs over the 2,000 generated images, batch 128" in body
    with pytest.raises(FileNotFoundError, match="training steps"):
        shipped_cards._steps(tmp_path)

    # a command recorded in a run that was copied since: no interpreter path, run folder or checkout path
    repo = shipped.shipped_folder("phantom-ldm-64").parents[3]  # the checkout
    recorded = (
        f"/opt/venv/bin/python3 -m genssl_hf.training.generator ldm --dataset /old/run/generator/train_data "
        f"--init_from {repo}/genssl_hf/generation/pretrained/phantom-ldm-64 --output_dir /old/run/generator/ldm "
        f"--validation_prompts 'No finding.' Effusion."
    )
    assert shipped_cards._portable(recorded, run) == (
        "python -m genssl_hf.training.generator ldm --dataset outputs/nih-shipped/generator/train_data "
        "--init_from genssl_hf/generation/pretrained/phantom-ldm-64 --output_dir outputs/nih-shipped/generator/ldm "
        "--validation_prompts 'No finding.' Effusion."
    )
    # a pipeline stage's command reads its options from a config file: the card's command has them inline
    gen = run / "generator"
    write_json(
        gen / "ldm_config.json",
        {
            "dataset": str(gen / "train_data"),
            "model": f"{repo}/genssl_hf/generation/pretrained/phantom-ldm-64",
            "output_dir": str(gen / "ldm"),
            "overwrite_output_dir": True,
            "validation_prompts": ["No finding.", "Effusion."],
            "max_steps": 600,
        },
    )
    (gen / "ldm.txt").write_text(f"/opt/venv/bin/python3 -m genssl_hf train-generator ldm {gen / 'ldm_config.json'}\n")
    assert shipped.recorded_commands(gen, run)["ldm"] == (
        "python -m genssl_hf train-generator ldm --dataset outputs/nih-shipped/generator/train_data --max_steps 600 "
        "--model genssl_hf/generation/pretrained/phantom-ldm-64 --output_dir outputs/nih-shipped/generator/ldm "
        "--overwrite_output_dir --validation_prompts 'No finding.' Effusion."
    )
    with pytest.raises(SystemExit, match="pipeline_config.json"):
        shipped.main(["--run", str(tmp_path / "empty"), "--real-data", str(tmp_path)])
    assert json.loads((run / "pipeline_config.json").read_text())  # untouched


@pytest.mark.skipif(not PROTOCOL_ENCODERS, reason="no encoder chosen under the protocol is shipped in this checkout")
@pytest.mark.parametrize("name", PROTOCOL_ENCODERS)
def test_shipped_protocol_encoder_cards_give_the_results_row_they_cite(name):
    """Every pooled AUC in the card's model-index and every difference with its CI in its text is the
    benchmarks/results.json row's (4 places there; 1 decimal of a percent in the text)."""
    from genssl_hf.hub.shipped_protocol import cited_numbers
    from genssl_hf.hub.shipped_protocol_card import auc_text, difference_text

    folder = shipped.shipped_folder(name)
    release = json.loads((folder / "protocol_release.json").read_text())
    rows = [r for r in json.loads(RESULTS_JSON.read_text())["results"] if r["name"] == release["results_row"]]
    assert rows, f"{name}: its card cites results.json row {release['results_row']!r}, which is absent"
    pooled = rows[-1]["pooled"]
    for key, entry, value in cited_numbers(release["pooled"], release["chosen"]):
        recorded = pooled[key]["mean"] if entry == "mean" else pooled[key][entry[:-3]][int(entry[-2])]
        assert recorded == pytest.approx(value, abs=5.1e-5), f"{name}: {key} {entry}"
    card = shipped.card_results(folder / "README.md")
    text = (folder / "README.md").read_text()
    for label, found in release["pooled"].items():
        for arm, summary in found["arms"].items():
            assert summary["mean"] == pytest.approx(pooled[f"{label} {arm}"]["mean"], abs=5.1e-5)
            who = "" if arm == release["chosen"] else f" of {summary['title']} ({arm})"
            metric = f"mean AUC at {label} labels{who}, {len(summary['seeds'])} seeds"
            assert card[metric] == pytest.approx(pooled[f"{label} {arm}"]["mean"], abs=5.1e-5), metric
            assert auc_text(summary) in text
        for c in found["comparisons"]:
            assert difference_text(c) in text
    assert release["chosen"] in text and "validation" in text
