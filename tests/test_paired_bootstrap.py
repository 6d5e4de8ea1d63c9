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
    from genssl_hf.evaluation.report_inputs import sample_indices

    assert sample_indices(10, None, 0).tolist() == list(range(10))
    assert sample_indices(10, 20, 0).tolist() == list(range(10))
    rows = sample_indices(1000, 200, seed=0)
    assert len(rows) == 200 == len(set(rows.tolist())) and (np.diff(rows) > 0).all()
    labels = np.r_[np.zeros(500), np.ones(500)]  # sorted by label
    assert 0.3 < labels[rows].mean() < 0.7
    assert (rows == sample_indices(1000, 200, seed=0)).all()


def _reference_over_seeds(y, runs_a, runs_b, n_bootstrap, seed):
    """Loop-by-loop reference with sklearn, drawing the same cases and seeds as the library."""
    rng = np.random.default_rng(seed)
    n, k = len(y), len(runs_a)
    cases = rng.integers(0, n, size=(n_bootstrap, n))
    picks = rng.integers(0, k, size=(n_bootstrap, k))

    def mauc(t, s):
        return np.mean([roc_auc_score(t[:, j], s[:, j]) for j in range(t.shape[1])])

    diffs = []
    for rep in range(n_bootstrap):
        idx = cases[rep]
        d = [mauc(y[idx], runs_a[r][idx]) - mauc(y[idx], runs_b[r][idx]) for r in range(k)]
        diffs.append(np.mean([d[r] for r in picks[rep]]))
    return np.quantile(diffs, [0.025, 0.975])


def test_pooled_over_seeds_matches_a_plain_reference_and_covers_seed_variation():
    from genssl_hf.evaluation.classification import paired_bootstrap_over_seeds

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=(60, 2))
    # three runs of A: one good, one mediocre, one at chance (seed variation); B is noise
    runs_a = [y + w * rng.random((60, 2)) for w in (0.6, 2.0, 50.0)]
    runs_b = [rng.random((60, 2)) for _ in range(3)]
    r = paired_bootstrap_over_seeds(y, runs_a, runs_b, n_bootstrap=120, seed=7)
    per_seed = [
        np.mean([roc_auc_score(y[:, j], a[:, j]) - roc_auc_score(y[:, j], b[:, j]) for j in range(2)])
        for a, b in zip(runs_a, runs_b)
    ]
    assert r["per_seed"] == pytest.approx(per_seed)
    assert r["difference"] == pytest.approx(np.mean(per_seed)) and r["median"] == pytest.approx(np.median(per_seed))
    lo, hi = _reference_over_seeds(y, runs_a, runs_b, 120, 7)
    assert (r["low"], r["high"]) == pytest.approx((lo, hi))
    cases_only = paired_bootstrap_over_seeds(y, runs_a, runs_b, n_bootstrap=120, seed=7, resample_seeds=False)
    assert cases_only["difference"] == r["difference"]
    assert (r["high"] - r["low"]) > (cases_only["high"] - cases_only["low"])  # seeds disagree: wider
    same = paired_bootstrap_over_seeds(y, runs_a, runs_a, n_bootstrap=50)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    with pytest.raises(ValueError, match="same number"):
        paired_bootstrap_over_seeds(y, runs_a, runs_b[:2])
