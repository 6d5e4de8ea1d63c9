"""Retrieval recall of a dual encoder (``evaluation.vlp.retrieval_recall``) against hand-computed rankings
with duplicate reports, and its chance levels against random embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genssl_hf.evaluation.vlp import retrieval_recall


def test_hand_computed_rankings_with_a_duplicate_report():
    # distinct reports A, B, C (one-hot text embeddings); pairs (img0, A), (img1, A), (img2, B), (img3, C)
    a, b, c = [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]
    texts = torch.tensor([a, a, b, c])
    images = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # A > B > C: its report A at rank 1
            [0.1, 0.9, 0.5],  # B > C > A: A at rank 3
            [0.8, 0.6, 0.0],  # A > B > C: its report B at rank 2
            [0.0, 0.0, 1.0],
        ]
    )  # C first
    r = retrieval_recall(images, texts, np.array([7, 7, 3, 5]), ks=(1, 2, 3))
    assert r["num_pairs"] == 4 and r["num_distinct_reports"] == 3
    i2t, t2i = r["image_to_text"], r["text_to_image"]
    # image -> report: 4 queries over 3 distinct reports, ranks 1, 3, 2, 1
    assert (i2t["num_queries"], i2t["num_candidates"]) == (4, 3)
    assert [i2t["R@1"], i2t["R@2"], i2t["R@3"]] == pytest.approx([0.5, 0.75, 1.0])
    assert i2t["median_rank"] == 1.5
    assert [i2t["chance"][f"R@{k}"] for k in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # report -> image: 3 queries (A, B, C) over 4 images. A: img0 .9, img2 .8 -> img0 (its own) at rank 1;
    # B: img1 .9, img2 .6 -> img2 at rank 2; C: img3 at rank 1
    assert (t2i["num_queries"], t2i["num_candidates"]) == (3, 4)
    assert [t2i["R@1"], t2i["R@2"], t2i["R@3"]] == pytest.approx([2 / 3, 1.0, 1.0])
    assert t2i["median_rank"] == 1.0
    # chance of a random order of 4 images: A has 2 images (1 - C(2,k)/C(4,k)), B and C one each (k/4)
    assert [t2i["chance"][f"R@{k}"] for k in (1, 2, 3)] == pytest.approx(
        [(0.5 + 0.25 + 0.25) / 3, (5 / 6 + 0.5 + 0.5) / 3, (1.0 + 0.75 + 0.75) / 3]
    )


def test_a_perfect_encoder_is_perfect_even_when_many_reports_are_identical():
    groups = np.array([0] * 20 + list(range(1, 11)))  # 20 "normal" reports and 10 unique ones
    text = torch.nn.functional.normalize(torch.randn(11, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    r = retrieval_recall(text[groups] + 0.01, text[groups], groups)
    assert r["image_to_text"]["R@1"] == 1.0 and r["text_to_image"]["R@1"] == 1.0
    assert r["image_to_text"]["num_candidates"] == 11 and r["text_to_image"]["num_queries"] == 11
    # chance for image -> report is K / (distinct reports), whatever the duplicates
    assert r["image_to_text"]["chance"]["R@5"] == pytest.approx(5 / 11)


def test_chance_levels_match_random_embeddings():
    """Monte Carlo: the mean recall of random embeddings equals the reported chance level, both ways,
    with a report shared by 12 of 30 images."""
    groups = np.array([0] * 12 + list(range(1, 19)))
    gen = torch.Generator().manual_seed(0)
    recalls = {"image_to_text": [], "text_to_image": []}
    for _ in range(400):
        text = torch.randn(19, 8, generator=gen)[groups]
        r = retrieval_recall(torch.randn(30, 8, generator=gen), text, groups)
        for d in recalls:
            recalls[d].append([r[d][f"R@{k}"] for k in (1, 5, 10)])
    for d, values in recalls.items():
        chance = [r[d]["chance"][f"R@{k}"] for k in (1, 5, 10)]
        assert np.mean(values, axis=0) == pytest.approx(chance, abs=0.02), d
    assert r["image_to_text"]["chance"]["R@5"] == pytest.approx(5 / 19)


def test_mismatched_inputs_fail_clearly():
    with pytest.raises(ValueError, match="must match"):
        retrieval_recall(torch.zeros(3, 4), torch.zeros(2, 4), np.arange(3))


def test_bootstrap_intervals_bracket_the_recall():
    groups = np.array([0] * 10 + list(range(1, 31)))
    gen = torch.Generator().manual_seed(1)
    text = torch.randn(31, 8, generator=gen)[groups]
    r = retrieval_recall(text + 0.8 * torch.randn(40, 8, generator=gen), text, groups, n_bootstrap=200)
    for d in ("image_to_text", "text_to_image"):
        for k in ("R@1", "R@5", "R@10"):
            ci = r[d]["ci"][k]
            assert 0 <= ci["low"] <= r[d][k] <= ci["high"] <= 1 and ci["low"] < ci["high"], (d, k, ci)
    assert "ci" not in retrieval_recall(text, text, groups)["image_to_text"]
