"""Image-report pre-training on phantoms: retrieval and zero-shot far above chance; the exported folder
loads with the stock classes and runs in the zero-shot pipeline; no report text in any output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genssl_hf.data.pairs import phantom_pairs
from genssl_hf.training.dual_encoder import build_dual_encoder
from genssl_hf.training.vlp import pretrain_vlp
from genssl_hf.training.vlp_args import build_parser

SIZE = 32


# The CI recipe (verified 2026-12-01 on 1 thread: 155 CPU-seconds for training + evaluation): frozen
# all-MiniLM-L6-v2 text tower (cached once per distinct report; its pooler and the projections train),
# tiny ViT at 32 px, ConVIRT loss, 1,500 steps of 64 pairs over 1,024 phantoms, milder crops (0.8-1)
# than the default. Measured on the 300 held-out phantoms (133 distinct reports): image->report R@5
# 0.877 (chance 0.038), report->image R@5 0.774 (chance 0.035), zero-shot mean AUC 0.740 (every
# finding 0.71-0.78). The loss sits on the ln(64) plateau for ~200 steps and falls to ~1.5 by the end;
# 300-600 steps (earlier recipes, with a random tiny BERT too) stayed near chance for zero-shot.
CI_RECIPE = [
    "--pairs",
    "phantom:1024",
    "--model",
    "tiny",
    "--image_size",
    str(SIZE),
    "--text_tower",
    "minilm",
    "--freeze_text_layers",
    "6",
    "--per_device_train_batch_size",
    "64",
    "--max_steps",
    "1500",
    "--learning_rate",
    "1e-3",
    "--warmup_ratio",
    "0.1",
    "--crop_scale_min",
    "0.8",
    "--logging_steps",
    "20",
    "--checkpointing_steps",
    "0",
    "--num_threads",
    "1",
]


@pytest.fixture(scope="module")
def trained(cached_training):
    """The CI recipe's dual encoder, through the per-tree cache of tests/conftest.py: ``(folder, summary)``."""
    torch.set_num_threads(1)
    return cached_training(
        "vlp_ci_recipe",
        CI_RECIPE,
        lambda out: pretrain_vlp(build_parser().parse_args(CI_RECIPE + ["--output_dir", str(out)])),
    )


@pytest.mark.slow
def test_phantom_retrieval_and_zero_shot_far_above_chance(trained, tmp_path):
    from genssl_hf.evaluation.vlp import evaluate_dual_encoder

    out, summary = trained
    curve = [v for _, v in summary["loss_curve"]]
    assert curve[-1] < curve[0] - 1.0, curve  # far below the uniform ln(64) = 4.16 plateau
    test = phantom_pairs(300, size=SIZE, split="test")
    result = evaluate_dual_encoder(out, pairs=test, output_dir=tmp_path / "eval", n_bootstrap=100)
    r = result["retrieval"]
    for direction in ("image_to_text", "text_to_image"):
        # far above chance: at least 10x the recall@5 of a random ranking (measured ~22x both ways)
        assert r[direction]["R@5"] >= 10 * r[direction]["chance"]["R@5"], r
        assert r[direction]["ci"]["R@5"]["low"] > 5 * r[direction]["chance"]["R@5"], r
    zs = result["zero_shot"]["metrics"]
    assert zs["mean_auc"] >= 0.7, zs["per_class"]  # measured 0.740
    assert min(v["auc"] for v in zs["per_class"].values()) >= 0.6, zs["per_class"]  # every finding learned (min 0.708)
    saved = json.loads((tmp_path / "eval" / "vlp_metrics.json").read_text())
    assert saved["zero_shot"]["prompts"]["classes"]["Pleural Effusion"]["negative"][0] == "No pleural effusion."
    assert (out / "similarity.png").is_file()
    assert json.loads((out / "run_config.json").read_text())["derived"]["cached_text_features"] > 0


@pytest.mark.slow
def test_export_loads_exactly_and_runs_in_zero_shot_pipeline(trained):
    import genssl_hf  # noqa: F401 - registers AdaINImageProcessor
    from transformers import AutoImageProcessor, AutoTokenizer, VisionTextDualEncoderModel, pipeline

    out, _ = trained
    model, info = VisionTextDualEncoderModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(AutoImageProcessor.from_pretrained(out)).__name__ == "AdaINImageProcessor"
    AutoTokenizer.from_pretrained(out)
    clf = pipeline("zero-shot-image-classification", model=str(out))
    sample = phantom_pairs(4, size=SIZE, split="test")
    image = sample.images[0]["image"]
    preds = clf(image, candidate_labels=["big cardiomegaly", "no cardiomegaly"], hypothesis_template="{}.")
    assert {p["label"] for p in preds} == {"big cardiomegaly", "no cardiomegaly"}
    assert sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-4)
    card = (out / "README.md").read_text()
    assert "corpus SHA-256" in card and "truncat" in card


def test_build_dual_encoder_towers_and_temperature():
    model, tok, rec = build_dual_encoder("tiny", "tiny-bert", image_size=SIZE, projection_dim=32, temperature=0.1)
    assert not model.logit_scale.requires_grad and float(model.logit_scale.exp()) == pytest.approx(10.0)
    model, _, rec = build_dual_encoder(
        "cnn-tiny", "tiny-bert", image_size=SIZE, projection_dim=32, temperature=0.07, learnable_temperature=True
    )
    assert model.logit_scale.requires_grad and rec["kind"] == "convnext"
    out = model(
        pixel_values=torch.randn(2, 3, SIZE, SIZE),
        **tok(["No edema.", "Big cardiomegaly."], padding=True, return_tensors="pt"),
    )
    assert out.logits_per_image.shape == (2, 2)
    with pytest.raises(FileNotFoundError, match="text tower"):
        build_dual_encoder("tiny", "/nonexistent/bert")
    with pytest.raises(ValueError, match="temperature"):
        build_dual_encoder("tiny", "tiny-bert", temperature=0)


def test_bad_arguments_fail_before_training(tmp_path):
    args = build_parser().parse_args(["--pairs", "generated:/nope", "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="corpus"):
        pretrain_vlp(args)
    args = build_parser().parse_args(
        ["--pairs", "phantom:8", "--per_device_train_batch_size", "1", "--output_dir", str(tmp_path / "o")]
    )
    with pytest.raises(ValueError, match="negatives"):
        pretrain_vlp(args)


def test_results_table_gains_a_zero_shot_row(tmp_path):
    """The pipeline's results table scores the zero-shot predictions like a fine-tuned model, with a
    paired bootstrap against random init on the same test cases."""
    from genssl_hf.evaluation.report_inputs import safe_file_name
    from genssl_hf.pipeline.results import build_results
    from genssl_hf.pipeline.config import load_preset
    from genssl_hf.pipeline.variants import VLP_TITLE
    from genssl_hf.utils import write_json

    rng = np.random.default_rng(0)
    targets = (rng.random((200, 3)) < 0.4).astype(np.int64)
    random_probs = rng.random((200, 3))
    zero_shot = np.clip(targets * 0.5 + rng.random((200, 3)) * 0.6, 0, 1)
    write_json(tmp_path / "metrics.json", {"models": {"Random init": {"classification": {"mean_auc": 0.5}}}})
    np.savez(tmp_path / f"predictions_{safe_file_name('Random init')}.npz", targets=targets, probs=random_probs)
    np.savez(tmp_path / "zs.npz", targets=targets, probs=zero_shot)
    out = build_results(
        tmp_path,
        {"random_init": "Random init"},
        {"run": "test"},
        n_bootstrap=200,
        extra_predictions={VLP_TITLE: tmp_path / "zs.npz"},
    )
    row = out["rows"][-1]
    assert row["title"] == VLP_TITLE and row["mean_auc"] > 0.8 and row["vs_baseline"]["low"] > 0
    table = (tmp_path / "results.md").read_text()
    assert VLP_TITLE in table and f"| {VLP_TITLE} | {100 * row['mean_auc']:.1f}" in table
    np.savez(tmp_path / "other.npz", targets=targets[:10], probs=zero_shot[:10])
    with pytest.raises(ValueError, match="same test cases"):
        build_results(
            tmp_path,
            {"random_init": "Random init"},
            {},
            n_bootstrap=10,
            extra_predictions={"x": tmp_path / "other.npz"},
        )
    assert load_preset("demo")["vlp"]["args"]["loss"] == "convirt"


def test_cached_frozen_text_features_equal_the_full_forward():
    """A fully frozen text tower is cached once per distinct report; the step's embeddings then equal
    the stock forward's (eval mode: a frozen tower runs without dropout in both paths)."""
    from genssl_hf.training.dual_encoder import FrozenTextFeatures, dual_encoder_embeddings, text_tower_fully_frozen
    from genssl_hf.training.vlp_loss import text_group_ids

    torch.manual_seed(0)
    model, tok, rec = build_dual_encoder("tiny", "tiny-bert", image_size=SIZE, projection_dim=32, freeze_text_layers=2)
    assert text_tower_fully_frozen(model) and rec["frozen_text_parameters"] > 0
    assert not text_tower_fully_frozen(
        build_dual_encoder("tiny", "tiny-bert", image_size=SIZE, freeze_text_layers=1)[0]
    )
    texts = ["No edema. Big cardiomegaly.", "No edema.", "No edema. Big cardiomegaly.", "Small left-sided atelectasis."]
    cache = FrozenTextFeatures(model.text_model, tok, texts, max_length=32)
    assert len(cache) == 3
    model.eval()
    pixels = torch.randn(4, 3, SIZE, SIZE)
    inputs = dict(tok(texts, padding=True, return_tensors="pt"))
    full = dual_encoder_embeddings(model, pixels, inputs)
    cached = dual_encoder_embeddings(model, pixels, inputs, cache, text_group_ids(texts))
    for a, b in zip(full, cached):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # gradients reach the trainable text pooler and projection through the cache
    cached[1].sum().backward()
    assert model.text_model.pooler.dense.weight.grad is not None and model.text_projection.weight.grad is not None
