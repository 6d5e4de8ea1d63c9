"""Classification metrics as reported: markdown tables in the paper's layout and the paired bootstrap
that compares two models on the same cases. The scores themselves (AUC, decision rates, bootstrap CIs)
live on the ground floor, :mod:`genssl_hf.core.classification_metrics`, because model selection in
``training`` must compute them exactly as ``evaluation`` reports them; they are re-exported here."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from genssl_hf.core.classification_metrics import (  # noqa: F401  (the public API of this module)
    DECISION_METRICS,
    bootstrap_ci,
    classification_metrics,
    confusion_counts,
    decision_rates,
    fast_auc,
    prepare_targets,
    threshold_array,
)
from genssl_hf.core.classification_metrics import one_hot_labels  # noqa: F401

__all__ = [
    "DECISION_METRICS",
    "classification_metrics",
    "decision_rates",
    "bootstrap_ci",
    "fast_auc",
    "format_auc_table",
    "format_accuracy_table",
    "paired_bootstrap_auc_difference",
    "paired_bootstrap_over_seeds",
    "prepare_targets",
]


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
            notes.append(
                f"- {method}: AUC of {nm} undefined ({reason}); mAUC over {len(m['mean_auc_classes'])} classes."
            )
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
    return paired_bootstrap_over_seeds(
        y_true, [score_a], [score_b], n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, resample_seeds=False
    )


def _targets_and_defined(y_true: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    t = y.astype(np.float64) if y.ndim == 2 else one_hot_labels(y.astype(np.int64), shape[1]).astype(np.float64)
    if t.shape != shape:
        raise ValueError(f"targets {t.shape} do not match scores {shape}")
    n = shape[0]
    defined = np.array([0 < t[:, j].sum() < n for j in range(shape[1])])
    if not defined.any():
        raise ValueError("no class has both positive and negative cases: AUC is undefined")
    return t, defined


def paired_bootstrap_over_seeds(
    y_true: Any,
    scores_a: Sequence[Any],
    scores_b: Sequence[Any],
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> dict[str, Any]:
    """Mean-AUC difference ``A - B`` averaged over paired runs (seed ``k`` of A against seed ``k`` of
    B: the same label subset), all scored on the same test cases, with a two-level paired bootstrap:
    every replicate resamples the test cases (the same cases for every run of both models) and,
    with ``resample_seeds``, the seeds. The interval so covers both sources of variation (which
    cases were tested, which label subset / initialisation was drawn), which a per-seed interval
    does not. ``difference`` is the mean over seeds of the per-seed differences; the per-seed
    values and their median are returned too. Targets and scores as in
    :func:`paired_bootstrap_auc_difference`."""
    a = [np.asarray(x, dtype=np.float64) for x in scores_a]
    b = [np.asarray(x, dtype=np.float64) for x in scores_b]
    if not a or len(a) != len(b):
        raise ValueError(f"need the same number (>= 1) of runs of A and B; got {len(a)} and {len(b)}")
    shape = a[0].shape
    for k, (x, z) in enumerate(zip(a, b)):
        if x.shape != shape or z.shape != shape:
            raise ValueError(
                f"run {k}: scores {x.shape} / {z.shape} differ from {shape}: every run must score the same cases"
            )
    t, defined = _targets_and_defined(y_true, shape)
    n, c = shape
    cols = np.flatnonzero(defined)

    def mean_auc(tt: np.ndarray, ss: np.ndarray) -> np.ndarray:
        return np.nanmean(np.stack([fast_auc(tt[..., j], ss[..., j]) for j in cols], -1), -1)

    per_seed = np.array([mean_auc(t[None], x[None])[0] - mean_auc(t[None], z[None])[0] for x, z in zip(a, b)])
    rng = np.random.default_rng(seed)
    runs = len(a)
    per_rep = np.empty((n_bootstrap, runs))  # per replicate, each run's difference on the resampled cases
    chunk = max(1, min(n_bootstrap, 2_000_000 // max(1, n * c)))
    for start in range(0, n_bootstrap, chunk):
        k = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(k, n))
        for r in range(runs):
            per_rep[start : start + k, r] = mean_auc(t[idx], a[r][idx]) - mean_auc(t[idx], b[r][idx])
    if resample_seeds and runs > 1:
        pick = rng.integers(0, runs, size=(n_bootstrap, runs))
        diffs = np.take_along_axis(per_rep, pick, axis=1).mean(axis=1)
    else:
        diffs = per_rep.mean(axis=1)
    diffs = diffs[np.isfinite(diffs)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    p = 2.0 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    out = {
        "difference": float(per_seed.mean()),
        "low": float(lo),
        "high": float(hi),
        "p_value": float(min(1.0, p)),
        "n_bootstrap": int(n_bootstrap),
        "valid_replicates": int(diffs.size),
        "seed": int(seed),
        "classes": int(defined.sum()),
    }
    if runs > 1:
        out.update(
            {
                "runs": runs,
                "per_seed": [float(x) for x in per_seed],
                "median": float(np.median(per_seed)),
                "resample_seeds": bool(resample_seeds),
            }
        )
    return out
