"""Classification metrics of the GEN-SSL paper: per-class ROC AUC and mean AUC, accuracy,
per-class sensitivity / specificity, and seeded bootstrap confidence intervals.

Two task types, told apart by the shape of ``y_true``:

- **multi-label** (CheXpert 5, ChestX-ray14): ``y_true`` is an ``(N, C)`` 0/1 matrix and
  ``y_score`` an ``(N, C)`` matrix of per-class probabilities (sigmoid outputs). Sensitivity and
  specificity use ``y_score >= threshold``; ``accuracy`` is the label-wise accuracy and
  ``subset_accuracy`` the exact-match ratio.
- **multi-class** (COVIDx 3, Kermany): ``y_true`` is an ``(N,)`` vector of class indices and
  ``y_score`` an ``(N, C)`` matrix of class probabilities (softmax outputs). Predictions are the
  arg-max; per-class AUC is one-vs-rest; sensitivity of class c is its recall (the paper's
  "COVID-19 sensitivity").

A class whose ground truth takes a single value in the evaluated split (no positives, or no
negatives) has no ROC AUC. It is reported as undefined with the reason, and the mean AUC is the
mean over the classes that have one, with the excluded classes listed next to it
(``mean_auc_classes`` / ``undefined_auc``): never silently averaged.

Point estimates use scikit-learn. The bootstrap uses a vectorised Mann-Whitney AUC with mid-ranks,
which equals scikit-learn's ``roc_auc_score`` (ties included) and is tested against it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, roc_auc_score

__all__ = [
    "classification_metrics",
    "bootstrap_ci",
    "fast_auc",
    "format_auc_table",
    "format_accuracy_table",
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


def _one_hot(y: np.ndarray, c: int) -> np.ndarray:
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


def _safe_div(a: float, b: float) -> float | None:
    return float(a) / float(b) if b > 0 else None


def classification_metrics(
    y_true: Any,
    y_score: Any,
    *,
    label_names: Sequence[str] | None = None,
    threshold: float = 0.5,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one prediction set; see the module docstring for conventions.

    Returns a JSON-serialisable dict with ``task``, ``num_samples``, ``label_names``,
    ``per_class`` (auc / auc_undefined_reason / sensitivity / specificity / positives / negatives),
    ``mean_auc`` (over ``mean_auc_classes``), ``undefined_auc`` (class -> reason), ``accuracy``
    (plus ``subset_accuracy`` for multi-label), and ``ci`` when ``n_bootstrap > 0``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1); got {threshold}")
    y_true, y_score, names, multi_label = prepare_targets(y_true, y_score, label_names)
    n, c = y_score.shape
    if multi_label:
        t = y_true
        pred = (y_score >= threshold).astype(np.int64)
    else:
        t = _one_hot(y_true, c)
        pred = _one_hot(y_score.argmax(axis=1), c)

    per_class: dict[str, dict[str, Any]] = {}
    undefined: dict[str, str] = {}
    defined_aucs = []
    for j, name in enumerate(names):
        auc, reason = _auc_or_reason(t[:, j], y_score[:, j])
        tp = int(((pred[:, j] == 1) & (t[:, j] == 1)).sum())
        fn = int(((pred[:, j] == 0) & (t[:, j] == 1)).sum())
        tn = int(((pred[:, j] == 0) & (t[:, j] == 0)).sum())
        fp = int(((pred[:, j] == 1) & (t[:, j] == 0)).sum())
        per_class[name] = {
            "auc": auc,
            "auc_undefined_reason": reason,
            "sensitivity": _safe_div(tp, tp + fn),
            "specificity": _safe_div(tn, tn + fp),
            "positives": tp + fn,
            "negatives": tn + fp,
        }
        if auc is None:
            undefined[name] = reason
        else:
            defined_aucs.append((name, auc))

    out: dict[str, Any] = {
        "task": "multi_label" if multi_label else "multi_class",
        "num_samples": int(n),
        "label_names": names,
        "threshold": float(threshold) if multi_label else None,
        "per_class": per_class,
        "mean_auc": float(np.mean([a for _, a in defined_aucs])) if defined_aucs else None,
        "mean_auc_classes": [nm for nm, _ in defined_aucs],
        "undefined_auc": undefined,
    }
    if multi_label:
        out["accuracy"] = float((pred == t).mean())
        out["subset_accuracy"] = float(accuracy_score(t, pred))
    else:
        out["accuracy"] = float(accuracy_score(y_true, y_score.argmax(axis=1)))
    if n_bootstrap > 0:
        out["ci"] = bootstrap_ci(
            y_true, y_score, label_names=names, threshold=threshold, n_bootstrap=n_bootstrap,
            confidence=confidence, seed=seed,
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
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int | None = None,
) -> dict[str, Any]:
    """Percentile bootstrap CIs (resampling cases with replacement, ``numpy`` generator ``seed``).

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
    t = y_true if multi_label else _one_hot(y_true, c)
    pred = (y_score >= threshold).astype(np.int64) if multi_label else _one_hot(y_score.argmax(1), c)
    full_defined = np.array([0 < t[:, j].sum() < n for j in range(c)])

    # Replicates are drawn in chunks so memory stays near a few tens of MB whatever N is.
    chunk = chunk or max(1, min(n_bootstrap, 2_000_000 // max(1, n * c)))
    rng = np.random.default_rng(seed)
    aucs = np.empty((n_bootstrap, c))
    sens = np.empty((n_bootstrap, c))
    spec = np.empty((n_bootstrap, c))
    acc = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        tb = t[idx]  # (b, n, c)
        pb = pred[idx]
        for j in range(c):
            aucs[start:start + b, j] = fast_auc(tb[:, :, j], y_score[idx, j])
        pos = tb.sum(axis=1)
        neg = n - pos
        tp = ((pb == 1) & (tb == 1)).sum(axis=1)
        tn = ((pb == 0) & (tb == 0)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens[start:start + b] = np.where(pos > 0, tp / pos, np.nan)
            spec[start:start + b] = np.where(neg > 0, tn / neg, np.nan)
        if multi_label:
            acc[start:start + b] = (pb == tb).mean(axis=(1, 2))
        else:
            acc[start:start + b] = (y_score[idx].argmax(axis=2) == y_true[idx]).mean(axis=1)

    alpha = (1.0 - confidence) / 2.0

    def interval(values: np.ndarray) -> dict[str, Any]:
        v = values[np.isfinite(values)]
        if v.size == 0:
            return {"low": None, "high": None, "valid_replicates": 0}
        lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
        return {"low": float(lo), "high": float(hi), "valid_replicates": int(v.size)}

    mean_auc = aucs[:, full_defined].mean(axis=1) if full_defined.any() else np.full(n_bootstrap, np.nan)
    return {
        "method": "percentile bootstrap over cases",
        "n_bootstrap": int(n_bootstrap),
        "confidence": float(confidence),
        "seed": int(seed),
        "mean_auc": interval(mean_auc),
        "accuracy": interval(acc),
        "per_class": {
            name: {
                "auc": interval(aucs[:, j]),
                "sensitivity": interval(sens[:, j]),
                "specificity": interval(spec[:, j]),
            }
            for j, name in enumerate(names)
        },
    }


# ----------------------------------------------------------------------------------------------
# Markdown tables in the paper's layout (values in percent, one decimal)
# ----------------------------------------------------------------------------------------------

def _pct(value: float | None, ci: dict | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.1f}"
    if ci and ci.get("low") is not None:
        text += f" ({100 * ci['low']:.1f}-{100 * ci['high']:.1f})"
    return text


def format_auc_table(results: dict[str, dict[str, Any]], *, with_ci: bool = True) -> str:
    """Paper layout: one row per method, one column per class AUC, then mAUC (percent).

    ``results`` maps a method name to the output of :func:`classification_metrics`. Undefined
    AUCs print as ``n/a`` and are explained under the table.
    """
    if not results:
        raise ValueError("results is empty")
    first = next(iter(results.values()))
    names = first["label_names"]
    lines = ["| Method | " + " | ".join(names) + " | mAUC |", "|" + "---|" * (len(names) + 2)]
    notes = []
    for method, m in results.items():
        ci = m.get("ci", {}) if with_ci else {}
        cells = [_pct(m["per_class"][nm]["auc"], ci.get("per_class", {}).get(nm, {}).get("auc")) for nm in names]
        cells.append(_pct(m["mean_auc"], ci.get("mean_auc")))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
        for nm, reason in m.get("undefined_auc", {}).items():
            notes.append(f"- {method}: AUC of {nm} undefined ({reason}); mAUC over {len(m['mean_auc_classes'])} classes.")
    if with_ci and any("ci" in m for m in results.values()):
        conf = next(m["ci"]["confidence"] for m in results.values() if "ci" in m)
        notes.append(f"- AUC in percent; brackets: {100 * conf:.0f}% bootstrap confidence interval.")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def format_accuracy_table(
    results: dict[str, dict[str, Any]], *, sensitivity_classes: Sequence[str] | None = None, with_ci: bool = True
) -> str:
    """Paper layout for multi-class tasks (COVIDx): Accuracy, then sensitivity per class (percent).

    ``sensitivity_classes`` picks the columns (e.g. ``["COVID-19"]``); default: every class.
    """
    if not results:
        raise ValueError("results is empty")
    first = next(iter(results.values()))
    names = list(sensitivity_classes) if sensitivity_classes else first["label_names"]
    for nm in names:
        if nm not in first["per_class"]:
            raise KeyError(f"sensitivity class {nm!r} not among {first['label_names']}")
    header = "| Method | Accuracy | " + " | ".join(f"Sensitivity ({nm})" for nm in names) + " |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for method, m in results.items():
        ci = m.get("ci", {}) if with_ci else {}
        cells = [_pct(m["accuracy"], ci.get("accuracy"))]
        cells += [
            _pct(m["per_class"][nm]["sensitivity"], ci.get("per_class", {}).get(nm, {}).get("sensitivity"))
            for nm in names
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_bootstrap_auc_difference(
    y_true: Any,
    score_a: Any,
    score_b: Any,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean-AUC difference ``A - B`` of two models scored on the *same* cases, with a paired
    percentile bootstrap (both models see the same resampled cases in every replicate, so the
    interval reflects the difference, not two independent intervals). Multi-label targets
    ``(N, C)`` or multi-class labels ``(N,)`` with ``(N, C)`` scores; ``p_value`` is the share of
    replicates on the other side of zero (two-sided)."""
    a = np.asarray(score_a, dtype=np.float64)
    b = np.asarray(score_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"score_a {a.shape} and score_b {b.shape} differ: they must score the same cases")
    y = np.asarray(y_true)
    t = y.astype(np.float64) if y.ndim == 2 else _one_hot(y.astype(np.int64), a.shape[1]).astype(np.float64)
    if t.shape != a.shape:
        raise ValueError(f"targets {t.shape} do not match scores {a.shape}")
    n, c = a.shape
    defined = np.array([0 < t[:, j].sum() < n for j in range(c)])
    if not defined.any():
        raise ValueError("no class has both positive and negative cases: AUC is undefined")

    def mean_auc(tt: np.ndarray, ss: np.ndarray) -> np.ndarray:
        return np.nanmean(np.stack([fast_auc(tt[..., j], ss[..., j]) for j in np.flatnonzero(defined)], -1), -1)

    observed = float(mean_auc(t[None], a[None])[0] - mean_auc(t[None], b[None])[0])
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_bootstrap)
    chunk = max(1, min(n_bootstrap, 2_000_000 // max(1, n * c)))
    for start in range(0, n_bootstrap, chunk):
        k = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(k, n))
        diffs[start:start + k] = mean_auc(t[idx], a[idx]) - mean_auc(t[idx], b[idx])
    diffs = diffs[np.isfinite(diffs)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    p = 2.0 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return {"difference": observed, "low": float(lo), "high": float(hi), "p_value": float(min(1.0, p)),
            "n_bootstrap": int(n_bootstrap), "valid_replicates": int(diffs.size), "seed": int(seed),
            "classes": int(defined.sum())}
