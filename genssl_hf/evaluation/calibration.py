"""Reliability of predicted probabilities: expected calibration error (ECE) and Brier score.

ECE (Naeini et al. 2015; Guo et al. 2017) bins the predicted probabilities into ``n_bins``
equal-width bins on [0, 1] and averages |observed frequency - mean predicted probability| over the
bins, weighted by the share of cases in each. Conventions:

* **multi-label**: per finding, the probability of the finding against its 0/1 label; the headline
  ``ece`` is the mean over findings (macro).
* **multi-class**: the headline ``ece`` is the top-label (confidence) ECE of Guo et al.: the arg-max
  probability against whether the arg-max is right; ``per_class`` holds the one-vs-rest ECEs.

The bins (counts, mean predicted probability, observed frequency) are returned too: they are the
points of the reliability diagram (:func:`genssl_hf.evaluation.plots.plot_reliability_diagram`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import brier_score_loss

from genssl_hf.evaluation.classification import prepare_targets

__all__ = ["calibration_bins", "calibration_metrics", "expected_calibration_error"]


def calibration_bins(y_true: Any, prob: Any, n_bins: int = 10) -> dict[str, list]:
    """Equal-width bins of ``prob`` (1-D, in [0, 1]) with 0/1 outcomes ``y_true``: per bin ``count``,
    ``mean_predicted`` and ``observed`` (None for an empty bin), and the ``edges``."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"y_true {y.shape} and prob {p.shape} must be non-empty and of equal length")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; bin 0 also holds 0 (the convention of sklearn's calibration_curve)
    which = np.clip(np.searchsorted(edges[1:-1], p, side="left"), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    sum_p = np.bincount(which, weights=p, minlength=n_bins)
    sum_y = np.bincount(which, weights=y, minlength=n_bins)
    nonempty = count > 0
    mean_p = np.where(nonempty, sum_p / np.maximum(count, 1), np.nan)
    observed = np.where(nonempty, sum_y / np.maximum(count, 1), np.nan)
    return {
        "edges": edges.tolist(),
        "count": count.astype(int).tolist(),
        "mean_predicted": [None if np.isnan(v) else float(v) for v in mean_p],
        "observed": [None if np.isnan(v) else float(v) for v in observed],
    }


def expected_calibration_error(y_true: Any, prob: Any, n_bins: int = 10) -> float:
    """ECE of 1-D probabilities against 0/1 outcomes (equal-width bins)."""
    bins = calibration_bins(y_true, prob, n_bins)
    count = np.asarray(bins["count"], dtype=np.float64)
    gaps = [abs(o - m) if c else 0.0 for o, m, c in zip(bins["observed"], bins["mean_predicted"], bins["count"])]
    return float((count * np.asarray(gaps)).sum() / count.sum())


def calibration_metrics(
    y_true: Any, y_score: Any, *, label_names: Sequence[str] | None = None, n_bins: int = 10
) -> dict[str, Any]:
    """``{"ece", "ece_kind", "n_bins", "per_class": {name: {"ece", "brier", "bins"}}, "top_label"?}``
    for multi-label ``(N, C)`` 0/1 or multi-class ``(N,)`` targets with ``(N, C)`` probabilities."""
    y, s, names, multi_label = prepare_targets(y_true, y_score, label_names)
    t = y if multi_label else np.eye(s.shape[1], dtype=np.int64)[y]
    per_class = {}
    for j, name in enumerate(names):
        per_class[name] = {
            "ece": expected_calibration_error(t[:, j], s[:, j], n_bins),
            "brier": float(brier_score_loss(t[:, j], s[:, j], pos_label=1)),
            "bins": calibration_bins(t[:, j], s[:, j], n_bins),
        }
    out: dict[str, Any] = {"n_bins": int(n_bins), "binning": "equal-width on [0, 1]", "per_class": per_class}
    if multi_label:
        out["ece"] = float(np.mean([v["ece"] for v in per_class.values()]))
        out["ece_kind"] = "mean over findings of the per-finding ECE"
        out["brier"] = float(np.mean([v["brier"] for v in per_class.values()]))
    else:
        confidence = s.max(axis=1)
        correct = (s.argmax(axis=1) == y).astype(np.int64)
        out["ece"] = expected_calibration_error(correct, confidence, n_bins)
        out["ece_kind"] = "top-label (confidence) ECE"
        out["top_label"] = {"ece": out["ece"], "bins": calibration_bins(correct, confidence, n_bins)}
        out["brier"] = float(((s - t) ** 2).sum(axis=1).mean())  # multi-class Brier score
    return out
