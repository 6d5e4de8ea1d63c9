"""Plots of the evaluation report (matplotlib, Agg backend): ROC curves per class."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["plot_roc_curves"]


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
    from genssl_hf.utils import atomic_write_bytes

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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
