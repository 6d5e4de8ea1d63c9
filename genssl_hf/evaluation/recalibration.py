"""Operating points for another site: thresholds re-chosen, or probabilities recalibrated, on a small
labelled sample of the target site (20-50 images).

Thresholds chosen on the source validation split are site-specific: on another hospital the score
distribution moves, and a validation threshold that kept 90 % sensitivity at 85 % specificity may keep
the sensitivity and lose half the specificity. Four ways to re-choose them from ``n`` labelled target
images, per class (one-vs-rest for a multi-class classifier, per finding for multi-label):

* ``youden``: the threshold maximising Youden's J on the sample (the rule of
  :func:`genssl_hf.training.thresholds.select_threshold`);
* ``keep_sensitivity``: the highest threshold whose sample sensitivity reaches the sensitivity the
  source threshold had on validation (the screening operating point, re-anchored on the site);
* ``platt``: Platt scaling (Platt 1999): ``p' = sigmoid(a * logit(p) + b)`` fitted by scikit-learn's
  ``LogisticRegression`` (no penalty: ``C=inf``) on the logit of the probability, with Platt's smoothed targets
  ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` (so a separable sample of 20 does not send the slope to
  infinity) and the slope kept >= 0 (recalibration never inverts a classifier; a negative fit falls back
  to the intercept alone, the constrained maximum). The decision keeps the source threshold as a cut-off
  on the *calibrated* probability, i.e. the same risk level, now measured with the site's calibration;
* ``temperature``: temperature scaling (Guo et al. 2017): one ``T > 0`` for all classes,
  ``p' = sigmoid(logit(p) / T)``, fitted by maximum likelihood; the source threshold stays a cut-off on
  ``p'``. With no intercept it cannot follow a change of prevalence, and at a cut-off of 0.5 it
  changes nothing; it is here because it is the usual first try. Binary (two-class softmax) and
  multi-label classifiers only: for more than two softmax classes one-vs-rest thresholds do not map
  through a shared temperature.

``platt`` and ``temperature`` take the source probabilities as calibrated on the source (the
classifier was trained with cross-entropy and its validation threshold is read as a risk level).
Every method returns thresholds on the classifier's own probability scale (positive iff ``p >= t``),
so AUC and the ranking are unchanged and the result is an operating-point record that
:func:`genssl_hf.evaluation.operating_point.decision_metrics` scores.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from genssl_hf.training.thresholds import select_threshold

__all__ = [
    "MIN_CALIBRATION_IMAGES",
    "SITE_NOTE",
    "RECALIBRATION_METHODS",
    "apply_platt",
    "apply_temperature",
    "draw_calibration_sample",
    "fit_platt",
    "fit_temperature",
    "logit",
    "recalibrated_operating_point",
    "recalibrated_probabilities",
    "recalibrated_thresholds",
]

RECALIBRATION_METHODS = ("platt", "temperature", "youden", "keep_sensitivity")
MIN_CALIBRATION_IMAGES = 10
_EPS = 1e-7
_NONE_POSITIVE = 1.0  # predict (almost) nothing: thresholds live in [0, 1], and only p == 1.0 reaches it
SITE_NOTE = (
    "Thresholds are site-specific: a threshold chosen on one site's validation split keeps its meaning only on "
    "data like it. On another site re-choose it (or recalibrate) on a labelled sample of that site."
)


def logit(p: Any) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[1e-7, 1 - 1e-7]`` (float64)."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _binary_inputs(y_true: Any, prob: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """1-D 0/1 labels and probabilities, checked: equal length, enough images, both classes."""
    y = np.asarray(y_true)
    p = np.asarray(prob, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"{what}: labels {y.shape} and probabilities {p.shape} must be 1-D and of equal length")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"{what}: probabilities must be finite and lie in [0, 1]")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what}: labels must be 0/1; got values {sorted(set(np.unique(y).tolist()))[:5]}")
    _check_sample(y.astype(np.int64), what)
    return y.astype(np.int64), p


def _check_sample(y: np.ndarray, what: str) -> None:
    if y.size < MIN_CALIBRATION_IMAGES:
        raise ValueError(
            f"{what}: {y.size} labelled target images; recalibration needs at least {MIN_CALIBRATION_IMAGES} "
            "(20-50 is the intended range)"
        )
    pos = int(y.sum())
    if pos == 0 or pos == y.size:
        only = "negative" if pos == 0 else "positive"
        raise ValueError(
            f"{what}: all {y.size} images of the calibration sample are {only}; it needs both classes "
            "(draw it stratified, or larger)"
        )


def fit_platt(y_true: Any, prob: Any, *, what: str = "platt") -> dict[str, float]:
    """Platt scaling of one class: ``{"a", "b"}`` of ``sigmoid(a * logit(p) + b)`` (see the module
    docstring: scikit-learn LogisticRegression, Platt's smoothed targets, slope >= 0)."""
    from sklearn.linear_model import LogisticRegression

    y, p = _binary_inputs(y_true, prob, what)
    z = logit(p)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    soft = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    # soft targets as two weighted copies of every image: weight soft as a positive, 1 - soft as a negative
    x = np.concatenate([z, z])[:, None]
    t = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    w = np.concatenate([soft, 1.0 - soft])
    lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x, t, sample_weight=w)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a < 0:  # the constrained maximum lies on a = 0: the (smoothed) base rate
        a, b = 0.0, float(logit(np.average(t, weights=w)))
    return {"a": a, "b": b}


def apply_platt(prob: Any, params: Mapping[str, float]) -> np.ndarray:
    """Platt-calibrated probabilities."""
    return _sigmoid(params["a"] * logit(prob) + params["b"])


def _platt_threshold(cutoff: float, params: Mapping[str, float]) -> float:
    """The probability ``t`` with ``apply_platt(t) == cutoff`` (positive iff ``p >= t``)."""
    a, b = params["a"], params["b"]
    if a <= 0:  # constant calibrated probability: all positive or none
        return 0.0 if _sigmoid(np.float64(b)) >= cutoff else _NONE_POSITIVE
    return float(_sigmoid((logit(cutoff) - b) / a))


def _temperature_columns(y_true: Any, prob: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) 0/1 targets and probabilities whose logits a temperature divides: the columns of a
    multi-label classifier, or the positive column of a two-class softmax."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2:
        raise ValueError(f"{what}: probabilities must be (N, C); got shape {p.shape}")
    if y.ndim == 1:  # multi-class indices
        if p.shape[1] != 2:
            raise ValueError(
                f"{what}: temperature scaling of a {p.shape[1]}-class softmax does not give one-vs-rest "
                "thresholds; use platt, youden or keep_sensitivity"
            )
        if y.shape[0] != p.shape[0]:
            raise ValueError(f"{what}: {y.shape[0]} labels for {p.shape[0]} predictions")
        return (y == 1).astype(np.int64)[:, None], p[:, 1:]
    if y.shape != p.shape:
        raise ValueError(f"{what}: labels {y.shape} and probabilities {p.shape} must have the same shape")
    return y.astype(np.int64), p


def fit_temperature(y_true: Any, prob: Any, *, what: str = "temperature") -> float:
    """Temperature ``T`` minimising the binary cross-entropy of ``sigmoid(logit(p) / T)`` over every
    class of ``prob`` ((N, C) multi-label with (N, C) 0/1 targets, or a two-class softmax with (N,)
    indices), searched on ``log T`` in [log 0.05, log 20]."""
    from scipy.optimize import minimize_scalar

    y, p = _temperature_columns(y_true, prob, what)
    for j in range(y.shape[1]):
        _binary_inputs(y[:, j], p[:, j], f"{what}, class column {j}")
    z = logit(p)

    def nll(log_t: float) -> float:
        q = np.clip(_sigmoid(z / np.exp(log_t)), 1e-15, 1 - 1e-15)
        return float(-(y * np.log(q) + (1 - y) * np.log1p(-q)).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def apply_temperature(prob: Any, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)`` elementwise (a two-class softmax: apply to both columns alike)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    return _sigmoid(logit(prob) / temperature)


def draw_calibration_sample(targets: Any, n: int, seed: int, *, what: str = "calibration sample"):
    """``(sample, rest)`` row indices: ``n`` rows drawn stratified by class (multi-class) or by "any
    finding" (multi-label), and the other rows, which are the ones to score."""
    from sklearn.model_selection import train_test_split

    t = np.asarray(targets)
    strata = t if t.ndim == 1 else (t.sum(axis=1) > 0).astype(np.int64)
    if n < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"{what}: n={n}; recalibration needs at least {MIN_CALIBRATION_IMAGES} labelled images")
    if n >= len(t):
        raise ValueError(f"{what}: n={n} leaves nothing to score out of {len(t)} rows")
    _, counts = np.unique(strata, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        raise ValueError(f"{what}: the rows hold a single class (or one image of a class): class counts {counts}")
    rows = np.arange(len(t))
    sample, rest = train_test_split(rows, train_size=n, stratify=strata, random_state=seed)
    return np.sort(sample), np.sort(rest)


def _class_columns(targets: np.ndarray, probs: np.ndarray, names: Sequence[str], what: str):
    """Per class: (name, 0/1 column, probability column), checking shapes first."""
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(f"{what}: probabilities of shape {probs.shape} do not match the {len(names)} classes {names}")
    if targets.shape[0] != probs.shape[0] or targets.ndim not in (1, 2):
        raise ValueError(f"{what}: targets of shape {targets.shape} do not match probabilities {probs.shape}")
    if targets.ndim == 2 and targets.shape != probs.shape:
        raise ValueError(f"{what}: multi-label targets {targets.shape} and probabilities {probs.shape} differ")
    onehot = targets if targets.ndim == 2 else np.eye(len(names), dtype=np.int64)[targets.astype(np.int64)]
    return [(nm, onehot[:, j].astype(np.int64), probs[:, j]) for j, nm in enumerate(names)]


def _source_values(source: Mapping[str, Any], names: Sequence[str], key: str) -> dict[str, float]:
    """Per class ``key`` ("threshold" or "sensitivity") of the source operating point."""
    if key == "threshold":
        given = source.get("thresholds") or {}
        missing = [nm for nm in names if nm not in given]
        if missing:
            raise ValueError(
                f"the source operating point ({source.get('rule')}) has no threshold for {missing}: "
                "recalibration needs validation thresholds (a thresholds.json or --threshold_split)"
            )
        return {nm: float(given[nm]) for nm in names}
    per_class = (source.get("rules") or {}).get(source.get("rule"), {})
    missing = [nm for nm in names if per_class.get(nm, {}).get("sensitivity") is None]
    if missing:
        raise ValueError(
            f"keep_sensitivity: the source operating point ({source.get('rule')}, {source.get('source')}) records "
            f"no validation sensitivity for {missing}; it needs thresholds chosen on validation data"
        )
    return {nm: float(per_class[nm]["sensitivity"]) for nm in names}


def recalibrated_thresholds(
    targets: Any, probs: Any, label_names: Sequence[str], method: str, source: Mapping[str, Any]
) -> dict[str, Any]:
    """Thresholds on the classifier's probability scale re-chosen with ``method`` from a labelled
    target sample (``targets`` (N,) class indices or (N, C) 0/1, ``probs`` (N, C)), given the
    ``source`` operating point (its ``thresholds``, and for keep_sensitivity its validation
    sensitivities in ``rules``). Returns ``{"thresholds", "per_class": {name: details}, "params"}``."""
    if method not in RECALIBRATION_METHODS:
        raise ValueError(f"recalibration method {method!r} is not one of {RECALIBRATION_METHODS}")
    t, p = np.asarray(targets), np.asarray(probs, dtype=np.float64)
    what = f"recalibration ({method})"
    columns = _class_columns(t, p, label_names, what)
    for nm, y, s in columns:
        _binary_inputs(y, s, f"{what}, class {nm!r}")
    names = list(label_names)
    per_class: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {}
    if method == "temperature":
        temp = fit_temperature(t, p, what=what)
        params = {"temperature": temp}
        for nm, cut in _source_values(source, names, "threshold").items():
            per_class[nm] = {"threshold": float(_sigmoid(temp * logit(cut))), "calibrated_cutoff": cut}
    elif method == "platt":
        cuts = _source_values(source, names, "threshold")
        for nm, y, s in columns:
            fit = fit_platt(y, s, what=f"{what}, class {nm!r}")
            params[nm] = fit
            per_class[nm] = {"threshold": _platt_threshold(cuts[nm], fit), "calibrated_cutoff": cuts[nm]}
    else:
        targets_sens = _source_values(source, names, "sensitivity") if method == "keep_sensitivity" else {}
        for nm, y, s in columns:
            rule = "sensitivity" if method == "keep_sensitivity" else "youden"
            chosen = select_threshold(y, s, rule, target_sensitivity=targets_sens.get(nm, 0.9))
            per_class[nm] = chosen | ({"target_sensitivity": targets_sens[nm]} if targets_sens else {})
    return {"thresholds": {nm: per_class[nm]["threshold"] for nm in names}, "per_class": per_class, "params": params}


def recalibrated_operating_point(
    targets: Any,
    probs: Any,
    label_names: Sequence[str],
    method: str,
    source: Mapping[str, Any],
    *,
    sample_name: str,
    seed: int | None = None,
) -> dict[str, Any]:
    """An operating-point record (as :func:`~genssl_hf.evaluation.operating_point.resolve_operating_point`
    returns) for thresholds re-chosen on the labelled target sample ``sample_name`` by ``method``."""
    fit = recalibrated_thresholds(targets, probs, label_names, method, source)
    t = np.asarray(targets)
    onehot = t if t.ndim == 2 else np.eye(len(label_names), dtype=np.int64)[t.astype(np.int64)]
    return {
        "rule": f"recalibrated: {method}",
        "thresholds": fit["thresholds"],
        "split": sample_name,
        "num_samples": int(t.shape[0]),
        "positives": {nm: int(onehot[:, j].sum()) for j, nm in enumerate(label_names)},
        "source": f"re-chosen by {method} on {t.shape[0]} labelled target images (site-specific)",
        "recalibration": {
            "method": method,
            "seed": seed,
            "params": fit["params"],
            "per_class": fit["per_class"],
            "source_thresholds": dict(source.get("thresholds") or {}),
            "source_rule": source.get("rule"),
            "source_split": source.get("split"),
        },
    }


def recalibrated_probabilities(probs: Any, operating_point: Mapping[str, Any], label_names: Sequence[str]):
    """The probabilities after the record's Platt / temperature map (None for youden /
    keep_sensitivity, which move thresholds only). A two-class softmax keeps rows summing to 1."""
    rec = operating_point.get("recalibration") or {}
    p = np.asarray(probs, dtype=np.float64)
    if rec.get("method") == "temperature":
        return apply_temperature(p, rec["params"]["temperature"])
    if rec.get("method") == "platt":
        out = np.stack([apply_platt(p[:, j], rec["params"][nm]) for j, nm in enumerate(label_names)], axis=1)
        if out.shape[1] == 2 and np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
            out = np.stack([1.0 - out[:, 1], out[:, 1]], axis=1)  # the positive class's map decides
        return out
    return None
