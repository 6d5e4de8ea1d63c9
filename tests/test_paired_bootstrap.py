import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from genssl_hf.evaluation import paired_bootstrap_auc_difference


def test_identical_models_differ_by_zero():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(80, 3))
    s = rng.random((80, 3))
    r = paired_bootstrap_auc_difference(y, s, s, n_bootstrap=200)
    assert r["difference"] == 0.0 and r["low"] == 0.0 and r["high"] == 0.0 and r["p_value"] == 1.0


def test_observed_difference_matches_sklearn_and_ci_excludes_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(200, 2))
    good = y + 0.5 * rng.random((200, 2))  # separates the classes well
    noise = rng.random((200, 2))
    r = paired_bootstrap_auc_difference(y, good, noise, n_bootstrap=300, seed=3)
    expected = np.mean([roc_auc_score(y[:, j], good[:, j]) - roc_auc_score(y[:, j], noise[:, j]) for j in range(2)])
    assert r["difference"] == pytest.approx(expected)
    assert 0 < r["low"] < r["difference"] < r["high"] and r["p_value"] < 0.01
    again = paired_bootstrap_auc_difference(y, good, noise, n_bootstrap=300, seed=3)
    assert again == r  # seeded


def test_multiclass_and_bad_shapes():
    y = np.array([0, 1, 2, 0, 1, 2])
    s = np.eye(3)[y] * 0.8 + 0.1
    r = paired_bootstrap_auc_difference(y, s, np.full_like(s, 1 / 3), n_bootstrap=50)
    assert r["difference"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ"):
        paired_bootstrap_auc_difference(y, s, s[:, :2])
    with pytest.raises(ValueError, match="undefined"):
        paired_bootstrap_auc_difference(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((5, 2)))


def test_evaluation_subsets_are_seeded_random_not_the_first_rows():
    """Splits are often sorted by label; a capped evaluation must not keep a single class."""
    from genssl_hf.evaluation.report import sample_indices

    assert sample_indices(10, None, 0).tolist() == list(range(10))
    assert sample_indices(10, 20, 0).tolist() == list(range(10))
    rows = sample_indices(1000, 200, seed=0)
    assert len(rows) == 200 == len(set(rows.tolist())) and (np.diff(rows) > 0).all()
    labels = np.r_[np.zeros(500), np.ones(500)]  # sorted by label
    assert 0.3 < labels[rows].mean() < 0.7
    assert (rows == sample_indices(1000, 200, seed=0)).all()
