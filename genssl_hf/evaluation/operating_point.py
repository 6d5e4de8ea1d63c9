"""Decisions at validation-chosen thresholds: which thresholds a classifier is evaluated at, the
metrics there (with calibration), the Markdown tables, and the captions of attention overlays.

The thresholds come, in this order, from a fixed ``--threshold`` (for comparisons only), from the
classifier folder's ``thresholds.json`` (written by fine-tuning from the validation predictions of
the selected model, :mod:`genssl_hf.training.thresholds`), or are chosen here on a validation
split. They are never chosen on the split being evaluated, so test labels cannot move them.

Multi-label tasks decide per finding at its threshold. Multi-class tasks keep the arg-max (accuracy
and per-class sensitivity from its confusion matrix); their one-vs-rest thresholds are reported
too, with the one-vs-rest decisions they give (``one_vs_rest``), e.g. for a COVID-19 screening
operating point.
"""

from __future__ import annotations

import textwrap
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from genssl_hf.evaluation.calibration import calibration_metrics
from genssl_hf.evaluation.classification import DECISION_METRICS, _pct, classification_metrics
from genssl_hf.training.thresholds import (
    THRESHOLD_RULES,
    THRESHOLDS_FILE,
    choose_thresholds,
    load_thresholds,
    threshold_vector,
)

__all__ = [
    "decision_metrics",
    "format_calibration_table",
    "format_decision_table",
    "format_operating_point_table",
    "format_per_class_decision_table",
    "prediction_caption",
    "resolve_operating_point",
    "saved_operating_point",
]

DECISION_LABELS = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
    "balanced_accuracy": "Balanced acc.",
}


def saved_operating_point(
    folder: Any,
    label_names: Sequence[str],
    *,
    evaluated_split: str,
    rule: str | None = None,
    target_sensitivity: float = 0.9,
) -> dict[str, Any] | None:
    """The operating point in the classifier folder's ``thresholds.json`` for ``rule`` (default: the
    saved rule), or None when there is none covering these classes, rule and target sensitivity."""
    if rule is not None and rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule {rule!r} is not one of {THRESHOLD_RULES}")
    names = list(label_names)
    saved = load_thresholds(folder)
    if saved is None or not _usable(saved, names, rule, target_sensitivity):
        return None
    if saved.get("split") in (evaluated_split, "test"):
        raise ValueError(
            f"{folder}/{THRESHOLDS_FILE} was chosen on split {saved.get('split')!r}; thresholds must "
            f"come from validation data, not from the evaluated split {evaluated_split!r}"
        )
    chosen = rule or saved["rule"]
    return saved | {
        "rule": chosen,
        "thresholds": dict(zip(names, threshold_vector(saved, names, chosen).tolist())),
        "source": f"{THRESHOLDS_FILE} saved with the classifier",
    }


def resolve_operating_point(
    folder: Any,
    label_names: Sequence[str],
    *,
    multi_label: bool,
    evaluated_split: str,
    validation_predictions: Callable[[], tuple[np.ndarray, np.ndarray]] | None,
    threshold_split: str = "validation",
    fixed_threshold: float | None = None,
    rule: str | None = None,
    target_sensitivity: float = 0.9,
) -> dict[str, Any]:
    """The operating point a classifier is evaluated at: ``{"rule", "thresholds" (class ->
    value), "source", "split", ...}`` (the thresholds.json record plus where it came from).

    In order: a fixed threshold; the folder's ``thresholds.json`` (:func:`saved_operating_point`);
    thresholds chosen on ``validation_predictions()``, the ``(targets, probs)`` of
    ``threshold_split`` (None: the dataset has no such split). A multi-class classifier without
    any of them is evaluated by its arg-max alone (``thresholds`` None); a multi-label one raises.
    Raises when the thresholds would come from the evaluated split."""
    names = list(label_names)
    if fixed_threshold is not None:
        if not 0.0 <= fixed_threshold <= 1.0:
            raise ValueError(f"--threshold must lie in [0, 1]; got {fixed_threshold}")
        return {
            "rule": "fixed",
            "source": "fixed --threshold (not chosen on data)",
            "split": None,
            "thresholds": {nm: float(fixed_threshold) for nm in names},
        }
    saved = saved_operating_point(
        folder, names, evaluated_split=evaluated_split, rule=rule, target_sensitivity=target_sensitivity
    )
    if saved is not None:
        return saved
    if threshold_split in (evaluated_split, "test"):
        raise ValueError(
            f"thresholds cannot be chosen on split {threshold_split!r}: it is the evaluated / test "
            "split (give --threshold_split validation)"
        )
    if validation_predictions is None:
        if not multi_label:
            return {
                "rule": "arg-max",
                "thresholds": None,
                "split": None,
                "source": f"no {THRESHOLDS_FILE} and no split {threshold_split!r}: arg-max only, "
                "no one-vs-rest operating points",
            }
        raise ValueError(
            f"{folder} has no usable {THRESHOLDS_FILE} and the dataset has no split {threshold_split!r} "
            "to choose thresholds on: give --threshold_split SPLIT or a fixed --threshold"
        )
    targets, probs = validation_predictions()
    record = choose_thresholds(
        targets, probs, names, rule=rule or "youden", target_sensitivity=target_sensitivity, split=threshold_split
    )
    return record | {"source": f"chosen at evaluation on split {threshold_split!r}"}


def _usable(saved: Mapping[str, Any], names: Sequence[str], rule: str | None, target_sensitivity: float) -> bool:
    """Whether a saved record covers these classes and this rule (and target sensitivity)."""
    rule = rule or saved.get("rule")
    per_class = saved.get("rules", {}).get(rule)
    if not per_class or any(nm not in per_class for nm in names):
        return False
    return rule != "sensitivity" or abs(float(saved.get("target_sensitivity", -1)) - target_sensitivity) < 1e-9


def decision_metrics(
    targets: Any,
    probs: Any,
    label_names: Sequence[str],
    operating_point: Mapping[str, Any],
    *,
    n_bootstrap: int = 0,
    seed: int = 0,
    calibration_bins: int = 10,
) -> dict[str, Any]:
    """:func:`classification_metrics` at the operating point's thresholds (multi-label) or the
    arg-max (multi-class, plus ``one_vs_rest`` at the thresholds), with ``calibration`` (ECE, Brier,
    bins) and the ``operating_point`` record."""
    names = list(label_names)
    given = operating_point.get("thresholds")
    thr = np.array([float(given[nm]) for nm in names]) if given else 0.5  # 0.5 unused: multi-class arg-max only
    t = np.asarray(targets)
    m = classification_metrics(t, probs, label_names=names, threshold=thr, n_bootstrap=n_bootstrap, seed=seed)
    if m["task"] == "multi_class" and given:
        ovr = classification_metrics(
            np.eye(len(names), dtype=np.int64)[t.astype(np.int64)],
            probs,
            label_names=names,
            threshold=thr,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        m["one_vs_rest"] = {k: ovr[k] for k in ("label_names", "thresholds", "per_class", "macro")}
        if "ci" in ovr:
            m["one_vs_rest"]["ci"] = {k: ovr["ci"][k] for k in ("per_class", "macro")}
    m["operating_point"] = dict(operating_point)
    m["calibration"] = calibration_metrics(t, probs, label_names=names, n_bins=calibration_bins)
    return m


# ------------------------------------------------------------------------------------------ tables
def _cell(m: Mapping[str, Any], key: str, ci: Mapping[str, Any] | None) -> str:
    return _pct(m.get(key), (ci or {}).get(key))


def format_operating_point_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per method: the rule, where the thresholds come from, and each class's threshold."""
    first = next(iter(results.values()))
    names = first["label_names"]
    lines = ["| Method | Rule | Chosen on | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 3)]
    for method, m in results.items():
        op = m["operating_point"]
        rule = op["rule"] + (f" (target {100 * op['target_sensitivity']:.0f}%)" if op["rule"] == "sensitivity" else "")
        split = f"{op['split']} (n={op['num_samples']})" if op.get("split") else "-"
        fallback = [nm for nm, v in op.get("rules", {}).get(op["rule"], {}).items() if "undefined_reason" in v]
        thresholds = op.get("thresholds") or {}
        cells = [f"{thresholds[nm]:.3f}" + ("*" if nm in fallback else "") if nm in thresholds else "-" for nm in names]
        lines.append(f"| {method} | {rule} | {split} | " + " | ".join(cells) + " |")
    notes = ["", "- Decision: positive iff probability >= threshold. Thresholds never see the evaluated split."]
    if first["task"] == "multi_class":
        notes.append("- Multi-class: predictions are the arg-max; the one-vs-rest thresholds serve screening use only.")
    if any("*" in line for line in lines[2:]):
        notes.append("- *: one label value only in the validation split; 0.5 used.")
    return "\n".join(lines + notes) + "\n"


def format_decision_table(results: Mapping[str, Mapping[str, Any]], *, with_ci: bool = True) -> str:
    """Macro-averaged decision metrics per method (percent, bootstrap CIs)."""
    lines = ["| Method | " + " | ".join(DECISION_LABELS.values()) + " |", "|" + "---|" * (len(DECISION_LABELS) + 1)]
    for method, m in results.items():
        ci = (m.get("ci") or {}).get("macro") if with_ci else None
        lines.append(f"| {method} | " + " | ".join(_cell(m["macro"], k, ci) for k in DECISION_METRICS) + " |")
    lines += [
        "",
        "- Macro average over classes; a rate without cases (e.g. PPV with no positive call) is n/a "
        "and left out of the average.",
    ]
    return "\n".join(lines) + "\n"


def format_per_class_decision_table(m: Mapping[str, Any], *, with_ci: bool = True) -> str:
    """One row per class (and the macro average) of one method: threshold and decision metrics."""
    ci = (m.get("ci") or {}) if with_ci else {}
    thresholds = m.get("thresholds") or {}
    lines = [
        "| Class | Threshold | Positives | " + " | ".join(DECISION_LABELS.values()) + " |",
        "|" + "---|" * (len(DECISION_LABELS) + 3),
    ]
    for nm in m["label_names"]:
        pc = m["per_class"][nm]
        thr = f"{thresholds[nm]:.3f}" if nm in thresholds else "arg-max"
        cells = [_cell(pc, k, ci.get("per_class", {}).get(nm)) for k in DECISION_METRICS]
        lines.append(f"| {nm} | {thr} | {pc['positives']} | " + " | ".join(cells) + " |")
    macro = [_cell(m["macro"], k, ci.get("macro")) for k in DECISION_METRICS]
    lines.append("| **macro** | | | " + " | ".join(macro) + " |")
    return "\n".join(lines) + "\n"


def format_calibration_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """ECE (and its kind) and Brier score per method, with the per-class ECE."""
    first = next(iter(results.values()))
    names = first["label_names"]
    lines = [
        "| Method | ECE | Brier | " + " | ".join(f"ECE {nm}" for nm in names) + " |",
        "|" + "---|" * (len(names) + 3),
    ]
    for method, m in results.items():
        cal = m["calibration"]
        cells = [f"{cal['per_class'][nm]['ece']:.3f}" for nm in names]
        lines.append(f"| {method} | {cal['ece']:.3f} | {cal['brier']:.3f} | " + " | ".join(cells) + " |")
    cal = first["calibration"]
    lines += [
        "",
        f"- ECE: {cal['ece_kind']}, {cal['n_bins']} equal-width bins; 0 is perfect calibration. "
        "Reliability diagrams: `reliability_<model>.png`.",
    ]
    return "\n".join(lines) + "\n"


def prediction_caption(
    target: Any, prob: Any, label_names: Sequence[str], multi_label: bool, thresholds: Mapping[str, float] | None
) -> str:
    """Overlay caption: the true findings, and the predicted ones at the chosen thresholds with their
    probabilities (multi-class: the arg-max class and its probability)."""
    prob = np.asarray(prob, dtype=np.float64)
    if multi_label:
        truth = [nm for nm, v in zip(label_names, target) if v >= 0.5] or ["none"]
        pred = [f"{nm} {p:.2f}" for nm, p in zip(label_names, prob) if p >= thresholds[nm]]
        if not pred:
            j = int(np.argmax(prob - np.array([thresholds[nm] for nm in label_names])))
            pred = [f"none (closest: {label_names[j]} {prob[j]:.2f} < {thresholds[label_names[j]]:.2f})"]
        return textwrap.fill(f"true: {', '.join(truth)}", 46) + "\n" + textwrap.fill(f"pred: {', '.join(pred)}", 46)
    j = int(np.argmax(prob))
    return f"true: {label_names[int(target)]}\npred: {label_names[j]} {prob[j]:.2f}"
