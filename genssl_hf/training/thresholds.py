"""Decision thresholds chosen on the validation split, saved with the classifier.

A sigmoid classifier trained on an imbalanced multi-label task rarely puts a test case above 0.5:
at a fixed 0.5 it "predicts nothing", and accuracy becomes the share of negatives. The operating
point is part of model selection, so it is fitted here, on validation predictions of the selected
model, and never on the test split.

Rules (per finding for multi-label, per class one-vs-rest for multi-class):

* ``youden`` (default): maximise Youden's J = sensitivity + specificity - 1;
* ``sensitivity``: the highest threshold whose validation sensitivity reaches ``target_sensitivity``
  (a screening operating point, e.g. 0.9);
* ``prevalence``: predict as many validation positives as there are (predicted-positive rate =
  prevalence).

A case is positive when ``score >= threshold``. Each rule picks a cut between two neighbouring
distinct validation scores; the threshold is their midpoint (as pROC does), so it does not sit on a
validation score. A class with a single label value in the validation split has no ROC: it gets
0.5 and the reason is recorded. The record of every rule is written as ``thresholds.json`` next to
``config.json`` (:func:`save_thresholds`); ``genssl_hf.evaluation`` reads it with
:func:`load_thresholds`.

This module sits in the training layer (it is part of model selection, and training never imports
evaluation); evaluation imports it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_curve

from genssl_hf.utils import read_json, write_json

__all__ = [
    "DEFAULT_RULE",
    "THRESHOLDS_FILE",
    "THRESHOLD_RULES",
    "choose_thresholds",
    "load_thresholds",
    "save_thresholds",
    "select_threshold",
    "threshold_vector",
]

THRESHOLDS_FILE = "thresholds.json"
THRESHOLD_RULES = ("youden", "sensitivity", "prevalence")
DEFAULT_RULE = "youden"
FALLBACK_THRESHOLD = 0.5


def _check_rule(rule: str, target_sensitivity: float) -> None:
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule {rule!r} is not one of {THRESHOLD_RULES}")
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must lie in (0, 1]; got {target_sensitivity}")


def select_threshold(
    y_true: Any, y_score: Any, rule: str = DEFAULT_RULE, *, target_sensitivity: float = 0.9
) -> dict[str, Any]:
    """One binary threshold: ``{"threshold", "sensitivity", "specificity", "predicted_positive_rate"}``
    on the given (validation) cases, or ``{"threshold": 0.5, "undefined_reason": ...}`` when the
    labels take a single value."""
    _check_rule(rule, target_sensitivity)
    t = np.asarray(y_true).astype(np.int64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if t.shape != s.shape or t.size == 0:
        raise ValueError(f"y_true {t.shape} and y_score {s.shape} must be non-empty and of equal length")
    if not np.all(np.isfinite(s)):
        raise ValueError("y_score contains NaN or infinite values")
    pos = int(t.sum())
    if pos == 0 or pos == t.size:
        reason = "no positive" if pos == 0 else "no negative"
        return {"threshold": FALLBACK_THRESHOLD, "undefined_reason": f"{reason} cases in the split; 0.5 used"}
    # cuts[i]: predict positive iff score >= cuts[i] (cuts[0] = inf predicts nothing)
    fpr, tpr, cuts = roc_curve(t, s, drop_intermediate=False)
    candidates = np.arange(1, len(cuts))
    if rule == "youden":
        i = candidates[np.argmax((tpr - fpr)[1:])]  # first maximum: the highest such threshold
    elif rule == "sensitivity":
        i = candidates[np.argmax(tpr[1:] >= target_sensitivity - 1e-12)]  # tpr reaches 1 at the last cut
    else:
        prevalence = pos / t.size
        rate = (tpr * pos + fpr * (t.size - pos)) / t.size
        i = candidates[np.argmin(np.abs(rate[1:] - prevalence))]
    cut = float(cuts[i])
    threshold = 0.5 * (cut + float(cuts[i + 1])) if i + 1 < len(cuts) else cut
    return {
        "threshold": threshold,
        "sensitivity": float(tpr[i]),
        "specificity": float(1.0 - fpr[i]),
        "predicted_positive_rate": float((s >= threshold).mean()),
    }


def _one_vs_rest(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    if y_true.ndim == 2:
        return y_true.astype(np.int64)
    out = np.zeros((y_true.shape[0], num_classes), dtype=np.int64)
    out[np.arange(y_true.shape[0]), y_true.astype(np.int64)] = 1
    return out


def choose_thresholds(
    y_true: Any,
    y_score: Any,
    label_names: Sequence[str],
    *,
    rule: str = DEFAULT_RULE,
    target_sensitivity: float = 0.9,
    split: str = "validation",
) -> dict[str, Any]:
    """Thresholds of every rule for every class, from ``split`` predictions (never the test split).

    ``y_true``: ``(N, C)`` 0/1 (multi-label) or ``(N,)`` class indices (multi-class, one-vs-rest);
    ``y_score``: ``(N, C)`` probabilities. Returns the JSON record saved as ``thresholds.json``:
    ``rule`` (the default one), ``thresholds`` (class -> threshold of that rule), ``rules`` (every
    rule's per-class threshold and validation operating point), ``split``, ``num_samples``,
    ``positives`` per class, ``task``.
    """
    if split == "test":
        raise ValueError("thresholds are chosen on validation data, never on the test split")
    _check_rule(rule, target_sensitivity)
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    names = list(label_names)
    if s.ndim != 2 or s.shape[1] != len(names) or y.shape[0] != s.shape[0] or y.ndim not in (1, 2):
        raise ValueError(f"y_true {y.shape} / y_score {s.shape} do not match {len(names)} label names")
    onehot = _one_vs_rest(y, len(names))
    rules: dict[str, Any] = {}
    for r in THRESHOLD_RULES:
        rules[r] = {
            nm: select_threshold(onehot[:, j], s[:, j], r, target_sensitivity=target_sensitivity)
            for j, nm in enumerate(names)
        }
    return {
        "rule": rule,
        "target_sensitivity": float(target_sensitivity),
        "thresholds": {nm: rules[rule][nm]["threshold"] for nm in names},
        "rules": rules,
        "split": split,
        "num_samples": int(s.shape[0]),
        "positives": {nm: int(onehot[:, j].sum()) for j, nm in enumerate(names)},
        "task": "multi_label" if y.ndim == 2 else "multi_class (one-vs-rest; predictions stay arg-max)",
        "decision": "positive iff probability >= threshold",
    }


def threshold_vector(record: Mapping[str, Any], label_names: Sequence[str], rule: str | None = None) -> np.ndarray:
    """The ``(C,)`` thresholds of ``rule`` (default: the record's rule) in ``label_names`` order."""
    rule = rule or record["rule"]
    if rule not in record.get("rules", {}):
        raise KeyError(f"thresholds record has no rule {rule!r} (has {sorted(record.get('rules', {}))})")
    per_class = record["rules"][rule]
    missing = [nm for nm in label_names if nm not in per_class]
    if missing:
        raise KeyError(f"thresholds record has no threshold for {missing} (has {sorted(per_class)})")
    values = np.array([float(per_class[nm]["threshold"]) for nm in label_names])
    if not all(0.0 <= v <= 1.0 and math.isfinite(v) for v in values):
        raise ValueError(f"thresholds must lie in [0, 1]; got {values.tolist()}")
    return values


def save_thresholds(folder: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``<folder>/thresholds.json`` (atomically)."""
    path = Path(folder) / THRESHOLDS_FILE
    write_json(path, dict(record))
    return path


def load_thresholds(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The classifier folder's thresholds record, or None when it has none."""
    path = Path(folder) / THRESHOLDS_FILE
    return read_json(path) if path.is_file() else None
