"""Classification metrics against hand-computed cases, bootstrap CIs, tables, the `evaluate` module."""

import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from genssl_hf.evaluation import METRIC_PATH, bootstrap_ci, classification_metrics, fast_auc
from genssl_hf.evaluation.classification import format_accuracy_table, format_auc_table


def test_binary_auc_hand_computed():
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: pairs won 1 + 0 + 1 + 1 -> 3 of 4
    y = np.array([[0], [0], [1], [1]])
    s = np.array([[0.1], [0.4], [0.35], [0.8]])
    m = classification_metrics(y, s, label_names=["A"])
    assert m["per_class"]["A"]["auc"] == pytest.approx(0.75)
    assert m["mean_auc"] == pytest.approx(0.75)


def test_auc_with_ties_counts_half():
    # positives {0.5, 0.9}, negatives {0.5, 0.2}: 0.5 (tie) + 1 + 1 + 1 = 3.5 of 4
    t = np.array([0, 1, 0, 1])
    s = np.array([0.5, 0.5, 0.2, 0.9])
    assert fast_auc(t, s)[0] == pytest.approx(0.875)
    assert classification_metrics(t[:, None], s[:, None])["mean_auc"] == pytest.approx(0.875)


def test_multilabel_sensitivity_specificity_and_accuracy_by_hand():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 0]])
    s = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.1], [0.2, 0.3], [0.8, 0.6]])
    m = classification_metrics(y, s, label_names=["A", "B"], threshold=0.5)
    # A: predictions 1,0,1,0,1 vs truth 1,1,0,0,1 -> TP 2, FN 1, TN 1, FP 1
    assert m["per_class"]["A"]["sensitivity"] == pytest.approx(2 / 3)
    assert m["per_class"]["A"]["specificity"] == pytest.approx(1 / 2)
    # B: predictions 0,1,0,0,1 vs truth 0,1,0,1,0 -> TP 1, FN 1, TN 2, FP 1
    assert m["per_class"]["B"]["sensitivity"] == pytest.approx(1 / 2)
    assert m["per_class"]["B"]["specificity"] == pytest.approx(2 / 3)
    # label-wise accuracy: A 3/5 correct, B 3/5 correct; both right only in row 0
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["subset_accuracy"] == pytest.approx(1 / 5)
    # A: positives {0.9, 0.4, 0.8} vs negatives {0.6, 0.2}: 2 + 1 + 2 = 5 of 6
    assert m["per_class"]["A"]["auc"] == pytest.approx(5 / 6)
    assert m["per_class"]["A"]["positives"] == 3 and m["per_class"]["A"]["negatives"] == 2


def test_absent_class_is_reported_not_averaged():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    s = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.6], [0.8, 0.3, 0.7], [0.3, 0.4, 0.8]])
    m = classification_metrics(y, s, label_names=["A", "B", "C"])
    assert m["per_class"]["B"]["auc"] is None
    assert "no positive" in m["per_class"]["B"]["auc_undefined_reason"]
    assert m["per_class"]["C"]["auc"] is None
    assert "no negative" in m["per_class"]["C"]["auc_undefined_reason"]
    assert m["undefined_auc"].keys() == {"B", "C"}
    assert m["mean_auc_classes"] == ["A"]
    assert m["mean_auc"] == pytest.approx(1.0)
    assert m["per_class"]["B"]["sensitivity"] is None  # no positives: undefined, not 0
    table = format_auc_table({"model": m}, with_ci=False)
    assert "n/a" in table and "AUC of B undefined" in table


def test_multiclass_accuracy_and_covid_sensitivity_by_hand():
    names = ["normal", "pneumonia", "COVID-19"]
    y = np.array([0, 1, 2, 2, 2, 0])
    s = np.array(
        [
            [0.7, 0.2, 0.1],  # -> normal (correct)
            [0.2, 0.5, 0.3],  # -> pneumonia (correct)
            [0.1, 0.2, 0.7],  # -> COVID (correct)
            [0.3, 0.5, 0.2],  # -> pneumonia (wrong)
            [0.2, 0.2, 0.6],  # -> COVID (correct)
            [0.3, 0.3, 0.4],  # -> COVID (wrong)
        ]
    )
    m = classification_metrics(y, s, label_names=names)
    assert m["task"] == "multi_class"
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["COVID-19"]["sensitivity"] == pytest.approx(2 / 3)
    # COVID specificity: of the 3 non-COVID rows, row 5 is called COVID -> 2/3
    assert m["per_class"]["COVID-19"]["specificity"] == pytest.approx(2 / 3)
    assert m["per_class"]["normal"]["sensitivity"] == pytest.approx(1 / 2)
    # one-vs-rest AUC for COVID: positives {0.7, 0.2, 0.6} vs negatives {0.1, 0.3, 0.4}
    # 0.7 beats 3, 0.2 beats 1, 0.6 beats 3 -> 7 of 9
    assert m["per_class"]["COVID-19"]["auc"] == pytest.approx(7 / 9)
    table = format_accuracy_table({"m": m}, sensitivity_classes=["COVID-19"], with_ci=False)
    assert "| m | 66.7 | 66.7 |" in table


def test_fast_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, size=(20, 50))
    s = rng.integers(0, 5, size=(20, 50)) / 4.0  # heavy ties
    ours = fast_auc(t, s)
    ref = [roc_auc_score(t[i], s[i]) for i in range(20)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(200, 3))
    s = np.clip(y * 0.3 + rng.random((200, 3)) * 0.7, 0, 1)
    a = bootstrap_ci(y, s, n_bootstrap=200, seed=3)
    b = bootstrap_ci(y, s, n_bootstrap=200, seed=3)
    c = bootstrap_ci(y, s, n_bootstrap=200, seed=4)
    assert a == b
    assert a["mean_auc"] != c["mean_auc"]
    point = classification_metrics(y, s)["mean_auc"]
    assert a["mean_auc"]["low"] < point < a["mean_auc"]["high"]
    assert a["mean_auc"]["valid_replicates"] == 200
    m = classification_metrics(y, s, n_bootstrap=50, seed=0)
    assert m["ci"]["confidence"] == 0.95 and "per_class" in m["ci"]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="rows"):
        classification_metrics(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(np.zeros((2, 1)), np.array([[np.nan], [0.1]]))
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.array([0, 3]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="label names"):
        classification_metrics(np.zeros((2, 2)), np.zeros((2, 2)), label_names=["a"])


def test_evaluate_module_loads_offline_by_path(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert os.path.isfile(os.path.join(METRIC_PATH, "cxr_classification.py"))
    metric = evaluate.load(METRIC_PATH, "multiclass")
    preds = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.5, 0.2]]
    refs = [0, 1, 2, 2]
    out = metric.compute(predictions=preds, references=refs, label_names=["normal", "pneumonia", "COVID-19"])
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["per_class"]["COVID-19"]["sensitivity"] == pytest.approx(0.5)
    ml = evaluate.load(METRIC_PATH, "multilabel")
    for p, r in zip([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [[1, 0], [0, 1], [1, 1]]):
        ml.add(prediction=p, reference=r)
    res = ml.compute()
    ref = classification_metrics(np.array([[1, 0], [0, 1], [1, 1]]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    assert res["mean_auc"] == pytest.approx(ref["mean_auc"])
