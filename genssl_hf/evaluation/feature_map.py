"""t-SNE maps of an encoder's frozen features, coloured by label (scikit-learn's ``TSNE``).

A qualitative companion of the kNN / linear-probe tables: images of one label should gather. Each
image gets one colour: its class (multi-class data) or, for multi-label data, its single finding,
"no finding", or "2+ findings". Features are standardised first (as for the probe); perplexity is
capped below the number of points; the seed fixes the map. Only labels and coordinates are drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["label_categories", "tsne_embedding", "tsne_figure"]


def label_categories(
    targets: np.ndarray, label_names: Sequence[str], multi_label: bool
) -> tuple[np.ndarray, list[str]]:
    """One category per image (see the module doc): (codes (N,), category names)."""
    targets = np.asarray(targets)
    if not multi_label:
        return targets.astype(int).reshape(-1), list(label_names)
    positives = targets.sum(axis=1)
    names = ["no finding", *label_names, "2+ findings"]
    codes = np.where(positives == 0, 0, np.where(positives > 1, len(names) - 1, 1 + targets.argmax(axis=1)))
    return codes.astype(int), names


def tsne_embedding(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(N, 2) t-SNE coordinates of standardised ``features`` (N, D), N >= 3."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"t-SNE needs (N >= 3, D) features, got shape {x.shape}")
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    perplexity = float(min(perplexity, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def tsne_figure(
    features: np.ndarray,
    targets: np.ndarray,
    label_names: Sequence[str],
    multi_label: bool,
    path: str | Path,
    *,
    title: str = "",
    seed: int = 0,
) -> Path:
    """Write the t-SNE map of ``features`` coloured by :func:`label_categories` to ``path`` (PNG, via a
    temporary file); returns the path."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes, names = label_categories(targets, label_names, multi_label)
    if len(codes) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(codes)} label rows")
    xy = tsne_embedding(features, seed=seed)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for c, name in enumerate(names):
        sel = codes == c
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=9, alpha=0.8, color=cmap(c % cmap.N), label=f"{name} ({sel.sum()})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of frozen features", fontsize=10)
    ax.legend(fontsize=7, markerscale=1.5, loc="best", framealpha=0.8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
