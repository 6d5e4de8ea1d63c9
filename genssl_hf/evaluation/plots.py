"""Plots of the evaluation report (matplotlib, Agg backend): ROC curves per class, reliability diagrams."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["plot_reliability_diagram", "plot_roc_curves"]


def _save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from genssl_hf.utils import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_roc_curves(
    y_true: Any,
    y_score: Any,
    path: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    title: str = "ROC curves",
) -> Path:
    """One ROC curve per class (one-vs-rest for multi-class) with its AUC in the legend; classes
    without both positives and negatives are listed as undefined. Writes a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from genssl_hf.evaluation.classification import prepare_targets

    t, s, names, multi_label = prepare_targets(y_true, y_score, label_names)
    if not multi_label:
        t = np.eye(s.shape[1], dtype=np.int64)[t]
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=110)
    for j, name in enumerate(names):
        if 0 < t[:, j].sum() < len(t):
            fpr, tpr, _ = roc_curve(t[:, j], s[:, j])
            ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(t[:, j], s[:, j]):.3f})")
        else:
            ax.plot([], [], " ", label=f"{name} (AUC undefined: one class only)")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    return _save_figure(fig, path)


def plot_reliability_diagram(
    calibration: dict[str, Any],
    path: str | os.PathLike,
    *,
    title: str = "Reliability diagram",
) -> Path:
    """Reliability diagram of :func:`genssl_hf.evaluation.calibration.calibration_metrics` output:
    observed frequency against mean predicted probability per bin (one line per class, plus the
    top-label line for multi-class tasks), the diagonal of perfect calibration, ECE in the legend,
    and below it the histogram of predicted probabilities (log scale), which shows where the
    probabilities actually lie. Writes a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.5, 6.4), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    curves = [(f"{name} (ECE {c['ece']:.3f})", c["bins"], 1.2, "o") for name, c in calibration["per_class"].items()]
    if "top_label" in calibration:
        curves.append(
            (f"top label (ECE {calibration['top_label']['ece']:.3f})", calibration["top_label"]["bins"], 2.4, "s")
        )
    edges = np.asarray(next(iter(calibration["per_class"].values()))["bins"]["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = (edges[1] - edges[0]) / (len(curves) + 1)
    for k, (label, bins, lw, marker) in enumerate(curves):
        pts = [(m, o) for m, o in zip(bins["mean_predicted"], bins["observed"]) if m is not None]
        xs, ys = (list(v) for v in zip(*pts)) if pts else ([], [])
        (line,) = ax.plot(xs, ys, marker=marker, ms=3.5, lw=lw, label=label)
        hist.bar(
            centres - (edges[1] - edges[0]) / 2 + (k + 0.5) * width,
            np.maximum(bins["count"], 0),
            width=width,
            align="edge",
            color=line.get_color(),
            alpha=0.8,
        )
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(
        f"{title}\n{calibration['ece_kind']}: ECE {calibration['ece']:.3f}, {calibration['n_bins']} equal-width bins",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=7)
    hist.set_yscale("log")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("cases per bin")
    return _save_figure(fig, path)
