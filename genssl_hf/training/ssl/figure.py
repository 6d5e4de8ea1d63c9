"""The figure every pre-training run writes: what the network saw (the augmented views of a few
training images) and what it learned over time (loss, embedding std, kNN / rotation accuracy)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["ssl_figure"]

# The training curves drawn when the history has them.
CURVES = (
    "train/loss",
    "train/embedding_std",
    "train/feature_std",
    "eval/knn_accuracy",
    "eval/knn_mean_auc",
    "train/rotation_accuracy",
)


@torch.no_grad()
def ssl_figure(
    path: str | os.PathLike,
    views,
    ds: Any,
    image_column: str,
    image_size: int,
    history: list[dict[str, float]],
    method: str,
    backbone: str,
    num_views: int,
    n: int = 4,
    seed: int = 0,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genssl_hf.utils import atomic_write_bytes

    images, shown, titles = _augmented_views(views, ds, image_column, image_size, method, num_views, n, seed)
    curves = [k for k in CURVES if any(k in h for h in history)]
    ncols = 1 + len(shown)
    nrows = len(images)
    fig = plt.figure(figsize=(2.0 * ncols + 4.0, 2.0 * nrows))
    grid = fig.add_gridspec(nrows, ncols + 2)
    _draw_views(fig, grid, images, shown, titles, views.settings["image_mean"], views.settings["image_std"])
    # one panel per curve, stacked beside the image grid (more curves than image rows must not overlap)
    panels = grid[:, ncols:].subgridspec(max(1, len(curves)), 1, hspace=0.7) if curves else None
    for c, key in enumerate(curves):
        ax = fig.add_subplot(panels[c, 0])
        pts = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{method} on {backbone}: views and training curves", fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _augmented_views(
    views, ds: Any, image_column: str, image_size: int, method: str, num_views: int, n: int, seed: int
):
    """The first ``n`` training images, ``num_views`` augmented views of them (drawn after
    ``torch.manual_seed(seed)``; the four rotations for ``rotation``) and the views' titles."""
    from genssl_hf.processing.collate import ImageCollator
    from genssl_hf.training.ssl.transforms import rotate_batch_4way

    rows = []
    for row in ds:
        rows.append(row)
        if len(rows) >= n:
            break
    images = ImageCollator(image_size, image_column)(rows)
    torch.manual_seed(seed)
    device = next(iter(views.buffers()), torch.zeros(())).device
    shown = [views(images.to(device)).cpu() for _ in range(num_views)]
    titles = [f"view {i + 1}" for i in range(num_views)]
    if method == "rotation":
        rotated, _ = rotate_batch_4way(shown[0])
        shown = list(rotated.chunk(4))
        titles = ["0 deg", "90 deg", "180 deg", "270 deg"]
    return images, shown, titles


def _draw_views(fig, grid, images, shown, titles, m, s) -> None:
    """One row per image: the input, then each view (de-normalised with mean ``m`` and std ``s``)."""
    for i in range(len(images)):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(images[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        ax.axis("off")
        if i == 0:
            ax.set_title("input", fontsize=8)
        for j, v in enumerate(shown):
            ax = fig.add_subplot(grid[i, j + 1])
            ax.imshow((v[i, 0] * s + m).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
