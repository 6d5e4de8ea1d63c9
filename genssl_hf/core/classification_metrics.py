"""Classification metrics of the GEN-SSL paper: per-class ROC AUC and mean AUC, accuracy, and at
an operating point per class sensitivity, specificity, PPV, NPV, F1 and balanced accuracy (per
class and macro-averaged), with seeded bootstrap confidence intervals.

Two task types, told apart by the shape of ``y_true``:

- **multi-label** (CheXpert 5, ChestX-ray14): ``y_true`` is an ``(N, C)`` 0/1 matrix and
  ``y_score`` an ``(N, C)`` matrix of per-class probabilities (sigmoid outputs). Decisions are
  ``y_score >= threshold`` with one threshold per finding (chosen on validation, see
  :mod:`genssl_hf.training.thresholds`; a fixed 0.5 makes an imbalanced task "predict nothing");
  ``accuracy`` is the label-wise accuracy and ``subset_accuracy`` the exact-match ratio;
  ``balanced_accuracy`` the mean over findings of (sensitivity + specificity) / 2.
- **multi-class** (COVIDx 3, Kermany): ``y_true`` is an ``(N,)`` vector of class indices and
  ``y_score`` an ``(N, C)`` matrix of class probabilities (softmax outputs). Predictions are the
  arg-max; per-class AUC is one-vs-rest; the per-class decision metrics come from the confusion
  matrix of the arg-max predictions (sensitivity of class c is its recall, the paper's "COVID-19
  sensitivity"); ``balanced_accuracy`` is the mean per-class recall.

A class whose ground truth takes a single value in the evaluated split (no positives, or no
negatives) has no ROC AUC. It is reported as undefined with the reason, and the mean AUC is the
mean over the classes that have one, with the excluded classes listed next to it
(``mean_auc_classes`` / ``undefined_auc``): never silently averaged.

Point estimates use scikit-learn (``roc_auc_score``, ``confusion_matrix``, ``balanced_accuracy_score``;
the per-class counts equal ``multilabel_confusion_matrix``'s and are tested against scikit-learn's metrics). A rate
whose denominator is zero (e.g. PPV when nothing is predicted positive) is ``None``, never 0, and
macro averages are over the classes where it is defined. The bootstrap uses a vectorised Mann-Whitney AUC with
mid-ranks,
which equals scikit-learn's ``roc_auc_score`` (ties included) and is tested against it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
)

__all__ = [
    "one_hot_labels",
    "DECISION_METRICS",
    "classification_metrics",
    "decision_rates",
    "bootstrap_ci",
    "fast_auc",
    "prepare_targets",
]


def prepare_targets(y_true: Any, y_score: Any, label_names: Sequence[str] | None = None):
    """Validate and convert inputs; returns ``(y_true, y_score, label_names, multi_label)``."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim == 1:
        y_score = y_score[:, None]
    if y_score.ndim != 2:
        raise ValueError(f"y_score must be (N, C); got shape {y_score.shape}")
    n, c = y_score.shape
    if n == 0:
        raise ValueError("y_score is empty: nothing to evaluate")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("y_score contains NaN or infinite values")
    if y_true.shape[0] != n:
        raise ValueError(f"y_true has {y_true.shape[0]} rows but y_score has {n}")
    if y_true.ndim == 2:
        multi_label = True
        if y_true.shape[1] != c:
            raise ValueError(f"y_true has {y_true.shape[1]} columns but y_score has {c}")
        if not np.isin(y_true, (0, 1)).all():
            raise ValueError("multi-label y_true must be a 0/1 matrix")
        y_true = y_true.astype(np.int64)
    elif y_true.ndim == 1:
        multi_label = False
        if c < 2:
            raise ValueError("multi-class y_score needs one column per class (at least 2)")
        y_true = y_true.astype(np.int64)
        if y_true.min() < 0 or y_true.max() >= c:
            raise ValueError(f"multi-class y_true holds indices outside [0, {c})")
    else:
        raise ValueError(f"y_true must be (N,) class indices or an (N, C) 0/1 matrix; got shape {y_true.shape}")
    names = list(label_names) if label_names is not None else [f"class_{i}" for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} label names for {c} score columns")
    return y_true, y_score, names, multi_label


def one_hot_labels(y: np.ndarray, c: int) -> np.ndarray:
    out = np.zeros((y.shape[0], c), dtype=np.int64)
    out[np.arange(y.shape[0]), y] = 1
    return out


def _auc_or_reason(t: np.ndarray, s: np.ndarray) -> tuple[float | None, str | None]:
    pos = int(t.sum())
    if pos == 0:
        return None, "no positive samples in this split"
    if pos == t.shape[0]:
        return None, "no negative samples in this split"
    return float(roc_auc_score(t, s)), None


DECISION_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy")
"""Per-class metrics at the operating point (each also macro-averaged over classes)."""


def confusion_counts(t: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class (tp, fp, tn, fn) of 0/1 targets and predictions ``(..., N, C)``, counted over N (the
    one-vs-rest confusion matrices of scikit-learn's ``multilabel_confusion_matrix``, also for
    batches of bootstrap replicates)."""
    t, pred = t.astype(bool), pred.astype(bool)
    return ((pred & t).sum(axis=-2), (pred & ~t).sum(axis=-2), (~pred & ~t).sum(axis=-2), (~pred & t).sum(axis=-2))


def decision_rates(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV, F1 and balanced accuracy from confusion counts (arrays of
    any equal shape); NaN where a denominator is zero."""
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))

    def ratio(a, b):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)

    sens = ratio(tp, tp + fn)
    spec = ratio(tn, tn + fp)
    return {
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": (sens + spec) / 2.0,
    }


def _nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over the defined (finite) entries; NaN where none is."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(axis=axis), np.where(ok, v, 0.0).sum(axis=axis) / ok.sum(axis=axis), np.nan)


def _none_if_nan(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def threshold_array(threshold: Any, c: int) -> np.ndarray:
    """A scalar or per-class threshold as a ``(C,)`` array in [0, 1]."""
    t = np.asarray(threshold, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(c, float(t))
    if t.shape != (c,):
        raise ValueError(f"threshold must be a number or one value per class ({c}); got shape {t.shape}")
    if not np.all((t >= 0.0) & (t <= 1.0)):
        raise ValueError(f"thresholds must lie in [0, 1]; got {t.tolist()}")
    return t


def _predictions(y_true: np.ndarray, y_score: np.ndarray, multi_label: bool, thr: np.ndarray):
    """(one-hot / 0-1 targets, 0-1 predictions), both (N, C)."""
    c = y_score.shape[1]
    if multi_label:
        return y_true, (y_score >= thr).astype(np.int64)
    return one_hot_labels(y_true, c), one_hot_labels(y_score.argmax(axis=1), c)


def _class_row(t_j, score_j, threshold, tp, fp, tn, fn, rates, j: int) -> dict[str, Any]:
    """Class ``j``'s entry of ``per_class``: its AUC (or why it is undefined), threshold, counts
    and decision rates."""
    auc, reason = _auc_or_reason(t_j, score_j)
    return {
        "auc": auc,
        "auc_undefined_reason": reason,
        "threshold": threshold,
        "tp": int(tp[j]),
        "fp": int(fp[j]),
        "tn": int(tn[j]),
        "fn": int(fn[j]),
        **{k: _none_if_nan(rates[k][j]) for k in DECISION_METRICS},
        "positives": int(tp[j] + fn[j]),
        "negatives": int(tn[j] + fp[j]),
    }


def classification_metrics(
    y_true: Any,
    y_score: Any,
    *,
    label_names: Sequence[str] | None = None,
    threshold: Any = 0.5,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one prediction set; see the module docstring for conventions.

    ``threshold``: a number or one value per class (multi-label decisions; multi-class tasks use
    the arg-max and ignore it). Returns a JSON-serialisable dict with ``task``, ``num_samples``,
    ``label_names``, ``thresholds`` (class -> threshold; None for multi-class), ``per_class``
    (auc / auc_undefined_reason / threshold / tp / fp / tn / fn / sensitivity / specificity / ppv /
    npv / f1 / balanced_accuracy / positives / negatives), ``macro`` (each decision metric averaged
    over the classes where it is defined), ``mean_auc`` (over ``mean_auc_classes``),
    ``undefined_auc`` (class -> reason), ``accuracy`` (plus ``subset_accuracy`` for multi-label),
    ``balanced_accuracy``, ``macro_f1``, ``confusion_matrix`` (multi-class), and ``ci`` when
    ``n_bootstrap > 0``.
    """
    y_true, y_score, names, multi_label = prepare_targets(y_true, y_score, label_names)
    n, c = y_score.shape
    thr = threshold_array(threshold, c)
    t, pred = _predictions(y_true, y_score, multi_label, thr)
    tp, fp, tn, fn = confusion_counts(t, pred)
    rates = decision_rates(tp, fp, tn, fn)
    per_class = {
        name: _class_row(t[:, j], y_score[:, j], float(thr[j]) if multi_label else None, tp, fp, tn, fn, rates, j)
        for j, name in enumerate(names)
    }
    undefined = {nm: row["auc_undefined_reason"] for nm, row in per_class.items() if row["auc"] is None}
    defined_aucs = [(nm, row["auc"]) for nm, row in per_class.items() if row["auc"] is not None]
    macro = {k: _none_if_nan(_nanmean(rates[k])) for k in DECISION_METRICS}
    out: dict[str, Any] = {
        "task": "multi_label" if multi_label else "multi_class",
        "num_samples": int(n),
        "label_names": names,
        "threshold": (float(thr[0]) if np.all(thr == thr[0]) else None) if multi_label else None,
        "thresholds": {nm: float(thr[j]) for j, nm in enumerate(names)} if multi_label else None,
        "per_class": per_class,
        "macro": macro,
        "mean_auc": float(np.mean([a for _, a in defined_aucs])) if defined_aucs else None,
        "mean_auc_classes": [nm for nm, _ in defined_aucs],
        "undefined_auc": undefined,
        "macro_f1": macro["f1"],
    }
    if multi_label:
        out["accuracy"] = float((pred == t).mean())
        out["subset_accuracy"] = float(accuracy_score(t, pred))
        out["balanced_accuracy"] = macro["balanced_accuracy"]
    else:
        arg = y_score.argmax(axis=1)
        out["accuracy"] = float(accuracy_score(y_true, arg))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class absent from y_true: sklearn warns and averages the rest
            out["balanced_accuracy"] = _none_if_nan(balanced_accuracy_score(y_true, arg))
        out["confusion_matrix"] = confusion_matrix(y_true, arg, labels=list(range(c))).tolist()
    if n_bootstrap > 0:
        out["ci"] = bootstrap_ci(
            y_true,
            y_score,
            label_names=names,
            threshold=thr,
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
        )
    return out


def fast_auc(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC of ``(B, N)`` 0/1 targets and scores via mid-rank Mann-Whitney U.

    Equal to ``sklearn.metrics.roc_auc_score`` per row (ties get half credit in both); rows with
    a single target value give NaN.
    """
    t = np.atleast_2d(t).astype(np.float64)
    s = np.atleast_2d(s)
    ranks = rankdata(s, axis=1)  # mid-ranks for ties
    n_pos = t.sum(axis=1)
    n_neg = t.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (ranks * t).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
        auc = u / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def bootstrap_ci(
    y_true: Any,
    y_score: Any,
    *,
    label_names: Sequence[str] | None = None,
    threshold: Any = 0.5,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int | None = None,
) -> dict[str, Any]:
    """Percentile bootstrap CIs (resampling cases with replacement, ``numpy`` generator ``seed``) of
    the AUCs, accuracy, balanced accuracy, macro F1 and every decision metric per class and macro;
    ``threshold`` as in :func:`classification_metrics` (fixed: it is not re-chosen per replicate).

    A replicate in which a class has a single target value gives no AUC for that class; it is left
    out of that class's interval (``valid_replicates`` says how many were used). The replicate's
    mean AUC averages the classes defined in the full split, so a replicate missing one of them is
    left out of the mean-AUC interval too.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1; got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    y_true, y_score, names, multi_label = prepare_targets(y_true, y_score, label_names)
    n, c = y_score.shape
    t, pred = _predictions(y_true, y_score, multi_label, threshold_array(threshold, c))
    full_defined = np.array([0 < t[:, j].sum() < n for j in range(c)])

    # Replicates are drawn in chunks so memory stays near a few tens of MB whatever N is.
    chunk = chunk or max(1, min(n_bootstrap, 2_000_000 // max(1, n * c)))
    rng = np.random.default_rng(seed)
    aucs = np.empty((n_bootstrap, c))
    rates = {k: np.empty((n_bootstrap, c)) for k in DECISION_METRICS}
    acc = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        tb = t[idx]  # (b, n, c)
        pb = pred[idx]
        for j in range(c):
            aucs[start : start + b, j] = fast_auc(tb[:, :, j], y_score[idx, j])
        for k, v in decision_rates(*confusion_counts(tb, pb)).items():
            rates[k][start : start + b] = v
        if multi_label:
            acc[start : start + b] = (pb == tb).mean(axis=(1, 2))
        else:
            acc[start : start + b] = (pb == tb).all(axis=2).mean(axis=1)

    alpha = (1.0 - confidence) / 2.0

    def interval(values: np.ndarray) -> dict[str, Any]:
        v = values[np.isfinite(values)]
        if v.size == 0:
            return {"low": None, "high": None, "valid_replicates": 0}
        lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
        return {"low": float(lo), "high": float(hi), "valid_replicates": int(v.size)}

    mean_auc = aucs[:, full_defined].mean(axis=1) if full_defined.any() else np.full(n_bootstrap, np.nan)
    macro = {k: _nanmean(v, axis=1) for k, v in rates.items()}
    # multi-class balanced accuracy is the mean per-class recall (scikit-learn's definition)
    balanced = macro["sensitivity"] if not multi_label else macro["balanced_accuracy"]
    return {
        "method": "percentile bootstrap over cases",
        "n_bootstrap": int(n_bootstrap),
        "confidence": float(confidence),
        "seed": int(seed),
        "mean_auc": interval(mean_auc),
        "accuracy": interval(acc),
        "balanced_accuracy": interval(balanced),
        "macro_f1": interval(macro["f1"]),
        "macro": {k: interval(v) for k, v in macro.items()},
        "per_class": {
            name: {"auc": interval(aucs[:, j]), **{k: interval(rates[k][:, j]) for k in DECISION_METRICS}}
            for j, name in enumerate(names)
        },
    }
