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
