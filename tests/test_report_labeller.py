"""The CheXpert labeller (negation, uncertainty, phantom ground truth) and the report metrics
against hand-computed values."""

import math

import numpy as np
import pytest

from genssl_hf.data.phantom import sample_phantom
from genssl_hf.data.schema import CHEXPERT5, CHEXPERT14
from genssl_hf.evaluation.report_metrics import bleu_scores, clinical_efficacy, language_metrics, rouge_l
from genssl_hf.evaluation.report_generation import constant_report, nearest_neighbour_reports
from genssl_hf.prompts.labeller import ABSENT, PRESENT, UNCERTAIN, label_report, label_reports


@pytest.mark.parametrize(
    "text, expected",
    [
        ("No pleural effusion.", {"Pleural Effusion": ABSENT}),
        ("Small left pleural effusion.", {"Pleural Effusion": PRESENT}),
        ("No evidence of pneumothorax or pleural effusion.", {"Pneumothorax": ABSENT, "Pleural Effusion": ABSENT}),
        (
            "No focal consolidation, pneumothorax, or large pleural effusion.",
            {"Consolidation": ABSENT, "Pneumothorax": ABSENT, "Pleural Effusion": ABSENT},
        ),
        ("The lungs are free of consolidation.", {"Consolidation": ABSENT}),
        ("Pneumothorax has resolved.", {"Pneumothorax": ABSENT}),  # post-negation, backward scope
        (
            "No pneumothorax, but there is a right pleural effusion.",
            {"Pneumothorax": ABSENT, "Pleural Effusion": PRESENT},
        ),
        ("No change in the small right pleural effusion.", {"Pleural Effusion": PRESENT}),  # pseudo-negation
        ("No edema. Cardiomegaly.", {"Edema": ABSENT, "Cardiomegaly": PRESENT}),  # scope ends at the sentence
        ("The heart is not enlarged.", {"Cardiomegaly": ABSENT}),
        ("Heart size is normal.", {"Cardiomegaly": ABSENT}),
        ("Mildly enlarged heart.", {"Cardiomegaly": PRESENT}),
        ("Pericardial effusion.", {"Pleural Effusion": None}),  # excluded phrase
        (
            "The lungs are clear of focal airspace disease, pneumothorax, or pleural effusion.",
            {"Lung Opacity": ABSENT, "Pneumothorax": ABSENT, "Pleural Effusion": ABSENT},
        ),
        ("A pleural effusion is not present.", {"Pleural Effusion": ABSENT}),
    ],
)
def test_negation(text, expected):
    lab = label_report(text)
    for obs, value in expected.items():
        assert lab[obs] == value, (text, obs, lab[obs])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Possible left lower lobe pneumonia.", {"Pneumonia": UNCERTAIN}),
        ("Pneumonia cannot be excluded.", {"Pneumonia": UNCERTAIN}),
        ("Pneumonia cannot be ruled out.", {"Pneumonia": UNCERTAIN}),  # uncertainty wins over "ruled out"
        ("Atelectasis versus consolidation at the left base.", {"Atelectasis": UNCERTAIN, "Consolidation": UNCERTAIN}),
        ("Findings may represent mild edema.", {"Edema": UNCERTAIN}),
        ("Borderline cardiomegaly.", {"Cardiomegaly": UNCERTAIN}),
        ("Possible atelectasis. Definite pleural effusion.", {"Atelectasis": UNCERTAIN, "Pleural Effusion": PRESENT}),
        ("Possible small effusion. Large right pleural effusion.", {"Pleural Effusion": PRESENT}),  # present wins
    ],
)
def test_uncertainty(text, expected):
    lab = label_report(text)
    for obs, value in expected.items():
        assert lab[obs] == value, (text, obs, lab[obs])


def test_no_finding_and_not_mentioned():
    lab = label_report("Lungs are clear. Heart size is normal. Left PICC line in place.")
    assert lab["No Finding"] == PRESENT and lab["Support Devices"] == PRESENT
    assert lab["Pneumothorax"] is None and lab["Cardiomegaly"] == ABSENT
    assert label_report("Possible pneumonia.")["No Finding"] == ABSENT  # uncertain pathology is not "no finding"
    arr = label_reports(["No edema.", "Edema."], ["Edema", "Fracture"])
    assert arr[0, 0] == 0 and arr[1, 0] == 1 and np.isnan(arr).sum() == 2
    with pytest.raises(ValueError, match="unknown observations"):
        label_reports(["x"], ["Nodule"])
    with pytest.raises(TypeError, match="report 1"):
        label_reports(["x", None])


def test_labeller_reproduces_phantom_ground_truth():
    for seed in range(200):
        s = sample_phantom(seed, size=32)
        lab = label_report(s.report)
        for i, name in enumerate(CHEXPERT5):
            assert lab[name] == (PRESENT if s.labels[i] > 0.5 else ABSENT), (s.report, name)
        assert lab["No Finding"] == (PRESENT if s.labels.sum() == 0 else ABSENT)
        assert all(lab[o] is None for o in CHEXPERT14 if o not in CHEXPERT5 and o != "No Finding")


def test_bleu_and_rouge_hand_computed():
    hyp, ref = ["the cat sat on the mat"], ["the cat is on the mat"]
    b = bleu_scores(hyp, ref)
    # unigram precision 5/6, bigram 3/5, trigram 1/4, no 4-gram match; equal lengths: no brevity penalty
    assert b["bleu1"] == pytest.approx(5 / 6)
    assert b["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert b["bleu4"] == 0.0
    # brevity penalty: hypothesis of 3 tokens against 6: exp(1 - 6/3), unigram precision 1
    assert bleu_scores(["the cat sat"], ["the cat sat on the mat"])["bleu1"] == pytest.approx(math.exp(1 - 2))
    # ROUGE-L: LCS "the cat on the mat" = 5 of 6 tokens on both sides
    assert rouge_l(hyp, ref) == pytest.approx(5 / 6)
    m = language_metrics(hyp, ref)
    assert "meteor" in m or m["meteor_skipped"].startswith("METEOR skipped")
    with pytest.raises(ValueError, match="2 generated reports but 1"):
        bleu_scores(["a", "b"], ["a"])


def test_clinical_efficacy_hand_computed():
    gen = ["Big cardiomegaly. No edema.", "No cardiomegaly. Small bilateral edema.", "Possible edema."]
    ref = ["Big cardiomegaly. Small bilateral edema.", "No cardiomegaly. No edema.", "Edema."]
    ce = clinical_efficacy(gen, ref, ["Cardiomegaly", "Edema"])
    # stated (present) pairs: generated {(0,C), (1,E)}; reference {(0,C), (0,E), (2,E)} -> TP 1, FP 1, FN 2
    assert ce["precision_micro"] == pytest.approx(1 / 2)
    assert ce["recall_micro"] == pytest.approx(1 / 3)
    assert ce["f1_micro"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert ce["per_observation"]["Cardiomegaly"]["f1"] == 1.0 and ce["per_observation"]["Edema"]["f1"] == 0.0
    # uncertain counted as stated: generated "Possible edema" now matches reference 2
    assert clinical_efficacy(gen, ref, ["Edema"], uncertain_as="positive")["recall_micro"] == pytest.approx(1 / 2)


def test_baselines():
    assert constant_report(["b", "a", "b", "a", "c"]) == "a"  # tie broken deterministically
    tr = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    te = np.array([[0.9, 0.1], [0.1, 2.0]])
    assert nearest_neighbour_reports(tr, ["x", "y", "z"], te) == ["x", "y"]
    with pytest.raises(ValueError, match="feature shapes"):
        nearest_neighbour_reports(tr, ["x", "y", "z"], np.zeros((1, 3)))
