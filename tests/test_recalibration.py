"""Issue 34, item 4: thresholds re-chosen / recalibrated on a small labelled target sample
(genssl_hf.evaluation.recalibration), against plain references, and a behaviour test on a shifted
score distribution."""

from __future__ import annotations

import numpy as np
import pytest

from genssl_hf.evaluation.operating_point import decision_metrics
from genssl_hf.evaluation.recalibration import (
    apply_platt,
    apply_temperature,
    draw_calibration_sample,
    fit_platt,
    fit_temperature,
    logit,
    recalibrated_operating_point,
    recalibrated_probabilities,
    recalibrated_thresholds,
)
from genssl_hf.training.thresholds import choose_thresholds

NAMES = ["NORMAL", "PNEUMONIA"]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _scores(rng, n, prevalence, neg_mean, pos_mean, sd=1.0):
    """Binary labels and a two-class softmax whose positive logit is N(mean, sd) per class."""
    y = (rng.random(n) < prevalence).astype(np.int64)
    z = rng.normal(np.where(y == 1, pos_mean, neg_mean), sd)
    p1 = _sigmoid(z)
    return y, np.stack([1 - p1, p1], axis=1)


def _newton_platt(y, p):
    """Reference: Newton's method on the weighted log-likelihood with Platt's smoothed targets."""
    z = logit(p)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = np.stack([z, np.ones_like(z)], axis=1)
    w = np.zeros(2)
    for _ in range(100):
        q = _sigmoid(x @ w)
        grad = x.T @ (t - q)
        hess = (x * (q * (1 - q))[:, None]).T @ x
        w = w + np.linalg.solve(hess, grad)
    return w


def _youden_brute(y, s):
    """Reference: the best J over every cut between (and beyond) the distinct scores."""
    u = np.unique(s)
    cuts = np.concatenate([[u[0] - 1], (u[:-1] + u[1:]) / 2, [u[-1] + 1]])
    js = [((s >= c) & (y == 1)).sum() / y.sum() - ((s >= c) & (y == 0)).sum() / (y == 0).sum() for c in cuts]
    return max(js)


def _sens_spec(y, s, thr):
    pred = s >= thr
    return (pred & (y == 1)).sum() / (y == 1).sum(), (~pred & (y == 0)).sum() / (y == 0).sum()


def test_platt_matches_a_hand_written_newton_fit():
    rng = np.random.default_rng(0)
    y, p = _scores(rng, 40, 0.3, -0.5, 1.0)
    fit = fit_platt(y, p[:, 1])
    a, b = _newton_platt(y, p[:, 1])
    assert fit["a"] == pytest.approx(a, abs=1e-5) and fit["b"] == pytest.approx(b, abs=1e-5)
    np.testing.assert_allclose(apply_platt(p[:, 1], fit), _sigmoid(a * logit(p[:, 1]) + b), atol=1e-6)


def test_platt_on_a_separable_sample_stays_finite_and_never_inverts():
    y = np.array([0] * 10 + [1] * 10)
    p = np.linspace(0.05, 0.95, 20)  # perfectly separated
    fit = fit_platt(y, p)
    assert np.isfinite(fit["a"]) and 0 < fit["a"] < 50
    inverted = fit_platt(y, p[::-1])  # the sample ranks the wrong way round: slope held at 0
    assert inverted["a"] == 0.0
    assert _sigmoid(inverted["b"]) == pytest.approx(0.5, abs=1e-9)  # smoothed base rate of a 10 / 10 sample


def test_temperature_matches_a_brute_force_grid_and_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(4000, 1))
    y = (rng.random((4000, 1)) < _sigmoid(z / 2.5)).astype(np.int64)  # true temperature 2.5
    p = _sigmoid(z)
    t = fit_temperature(y, p)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))

    def nll(temp):
        q = np.clip(_sigmoid(logit(p) / temp), 1e-15, 1 - 1e-15)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()

    best = grid[np.argmin([nll(g) for g in grid])]
    assert t == pytest.approx(best, rel=2e-3) and t == pytest.approx(2.5, rel=0.1)
    # a two-class softmax: the same fit on the positive column
    two = np.concatenate([1 - p, p], axis=1)
    assert fit_temperature(y[:, 0], two) == pytest.approx(t, rel=1e-6)
    # at a cut-off of 0.5 a temperature changes no decision
    assert np.array_equal(apply_temperature(p, t) >= 0.5, p >= 0.5)


def test_youden_and_keep_sensitivity_against_brute_force():
    rng = np.random.default_rng(2)
    y, p = _scores(rng, 30, 0.4, 0.0, 1.2)
    source = choose_thresholds(y, p, NAMES)  # stands in for a validation record
    yt = recalibrated_thresholds(y, p, NAMES, "youden", source)
    sens, spec = _sens_spec(y, p[:, 1], yt["thresholds"]["PNEUMONIA"])
    assert sens + spec - 1 == pytest.approx(_youden_brute(y, p[:, 1]))
    target = 0.75
    record = source | {"rules": {"youden": {nm: {"sensitivity": target} for nm in NAMES}}, "rule": "youden"}
    ks = recalibrated_thresholds(y, p, NAMES, "keep_sensitivity", record)
    thr = ks["thresholds"]["PNEUMONIA"]
    assert _sens_spec(y, p[:, 1], thr)[0] >= target
    lowest_called = p[:, 1][p[:, 1] >= thr].min()
    higher = [s for s in np.unique(p[:, 1]) if s > lowest_called]  # every higher cut loses the sensitivity
    assert all(_sens_spec(y, p[:, 1], c)[0] < target for c in higher)


def test_the_sample_is_stratified_disjoint_and_reproducible():
    y = np.array([1] * 30 + [0] * 70)
    sample, rest = draw_calibration_sample(y, 20, seed=3)
    assert len(sample) == 20 and y[sample].sum() == 6
    assert not set(sample) & set(rest) and len(sample) + len(rest) == 100
    assert np.array_equal(sample, draw_calibration_sample(y, 20, seed=3)[0])
    assert not np.array_equal(sample, draw_calibration_sample(y, 20, seed=4)[0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda y, p, s: recalibrated_thresholds(y[:6], p[:6], NAMES, "youden", s), "at least 10"),
        (lambda y, p, s: recalibrated_thresholds(np.zeros(20, int), p[:20], NAMES, "platt", s), "both classes"),
        (lambda y, p, s: recalibrated_thresholds(y[:20], p[:19], NAMES, "youden", s), "do not match"),
        (lambda y, p, s: recalibrated_thresholds(y, p[:, :1], NAMES, "youden", s), "do not match the 2 classes"),
        (lambda y, p, s: recalibrated_thresholds(y, p, NAMES, "isotonic", s), "not one of"),
        (lambda y, p, s: recalibrated_thresholds(y, p, NAMES, "keep_sensitivity", {"rule": "fixed"}), "sensitivity"),
        (lambda y, p, s: recalibrated_thresholds(y, p, NAMES, "platt", {"rule": "arg-max"}), "no threshold"),
        (lambda y, p, s: fit_temperature(y, np.full((len(y), 3), 1 / 3)), "3-class softmax"),
        (lambda y, p, s: draw_calibration_sample(y, len(y), 0), "nothing to score"),
        (lambda y, p, s: draw_calibration_sample(np.zeros(50, int), 20, 0), "single class"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(call, match):
    rng = np.random.default_rng(5)
    y, p = _scores(rng, 40, 0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match=match):
        call(y, p, choose_thresholds(y, p, NAMES))


def test_recalibrated_thresholds_recover_the_specificity_a_shifted_site_lost():
    """Source: logits N(-1.97, 1.5) for negatives and N(0.28, 1.5) for positives at prevalence 0.3,
    which makes the source probabilities calibrated posteriors (Platt and temperature read the source
    threshold as a risk level). The target site moves every score up by 2 (another scanner, other
    patients). The validation threshold keeps its sensitivity there but loses specificity; thresholds
    re-chosen on 40 target images win most of it back (median over 40 draws)."""
    rng = np.random.default_rng(6)
    yv, pv = _scores(rng, 600, 0.3, -1.972, 0.278, sd=1.5)
    source = choose_thresholds(yv, pv, NAMES, split="validation")
    yt, pt = _scores(rng, 2000, 0.3, 0.028, 2.278, sd=1.5)
    thr = source["thresholds"]["PNEUMONIA"]
    sens_v, spec_v = _sens_spec(yv, pv[:, 1], thr)
    sens_s, spec_s = _sens_spec(yt, pt[:, 1], thr)
    assert sens_s >= sens_v - 0.02 and spec_s < spec_v - 0.2  # the failure the external check found
    for method in ("platt", "youden", "keep_sensitivity"):
        specs, sens = [], []
        for draw in range(40):
            sample, rest = draw_calibration_sample(yt, 40, seed=draw)
            op = recalibrated_operating_point(yt[sample], pt[sample], NAMES, method, source, sample_name="t")
            se, sp = _sens_spec(yt[rest], pt[rest, 1], op["thresholds"]["PNEUMONIA"])
            specs.append(sp)
            sens.append(se)
        assert np.median(specs) > spec_s + 0.15, method
        assert np.median(sens) > 0.7, method  # not bought by calling nothing positive


def test_a_recalibrated_record_scores_like_any_operating_point():
    rng = np.random.default_rng(7)
    y, p = _scores(rng, 200, 0.3, 1.0, 3.0)
    source = choose_thresholds(*_scores(rng, 300, 0.3, 0.0, 2.0), NAMES)
    op = recalibrated_operating_point(y[:30], p[:30], NAMES, "platt", source, sample_name="site B sample", seed=0)
    m = decision_metrics(y[30:], p[30:], NAMES, op)
    assert m["operating_point"]["rule"] == "recalibrated: platt" and "one_vs_rest" in m
    q = recalibrated_probabilities(p, op, NAMES)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-9)
    # a Platt map is monotone: thresholding the calibrated probability at the source cut-off is the
    # same decision as the original probability at the returned threshold
    cut = source["thresholds"]["PNEUMONIA"]
    assert np.array_equal(q[:, 1] >= cut, p[:, 1] >= op["thresholds"]["PNEUMONIA"] - 1e-12)


def test_multi_label_findings_get_their_own_thresholds_and_one_shared_temperature():
    rng = np.random.default_rng(8)
    n, names = 400, ["Effusion", "Cardiomegaly"]
    y = (rng.random((n, 2)) < [0.3, 0.5]).astype(np.int64)
    z = rng.normal(np.where(y == 1, 1.5, -1.0), 1.0) + [[2.0, 0.0]]  # Effusion scores moved up on this site
    p = _sigmoid(z)
    source = choose_thresholds(y, _sigmoid(z - [[2.0, 0.0]]), names)  # the source site, before the move
    sample, rest = draw_calibration_sample(y, 50, seed=0)
    youden = recalibrated_thresholds(y[sample], p[sample], names, "youden", source)
    for j, nm in enumerate(names):
        sens, spec = _sens_spec(y[sample, j], p[sample, j], youden["thresholds"][nm])
        assert sens + spec - 1 == pytest.approx(_youden_brute(y[sample, j], p[sample, j]))
    assert youden["thresholds"]["Effusion"] > source["thresholds"]["Effusion"]  # follows the move
    temp = recalibrated_thresholds(y[sample], p[sample], names, "temperature", source)
    assert set(temp["params"]) == {"temperature"}  # one T for all findings (Guo et al.)
    mapped = apply_temperature(p, temp["params"]["temperature"])
    for nm, j in zip(names, range(2)):  # the threshold on p is the source cut-off on the mapped p
        cut = source["thresholds"][nm]
        assert np.array_equal(mapped[:, j] >= cut, p[:, j] >= temp["thresholds"][nm] - 1e-12)
    none_positive = y.copy()
    none_positive[:, 1] = 0
    with pytest.raises(ValueError, match="class 'Cardiomegaly'.*all 50 images"):
        recalibrated_thresholds(none_positive[sample], p[sample], names, "platt", source)
