"""CenterNet ("Objects as Points", Zhou et al. 2019): an anchor-free detection head's targets, loss
and decoding, on the maps a dense decoder (:mod:`genssl_hf.models.dense_heads`) gives at a stride.

The head predicts ``C + 4`` maps at stride ``s``: one centre heatmap per class (logits), the box
width and height in output cells, and the sub-cell offset of the centre. Targets put an elliptical
Gaussian at each box centre (TTFNet's shape-aware spread, sigma = side / 6 cells, at least 0.5);
the loss is CenterNet's penalty-reduced focal loss on the heatmaps plus L1 on size (weight 0.1)
and offset at the centres; decoding keeps the 3x3 local maxima and the ``top_k`` best.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["centernet_decode", "centernet_loss", "centernet_targets", "num_centernet_channels"]


def num_centernet_channels(num_classes: int) -> int:
    return int(num_classes) + 4


def centernet_targets(
    boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], num_classes: int, out_size: int, stride: int
) -> dict[str, torch.Tensor]:
    """Per image ``(K, 4)`` xyxy pixel boxes and ``(K,)`` class indices -> the head's target maps."""
    n = len(boxes)
    heat = torch.zeros(n, num_classes, out_size, out_size)
    size = torch.zeros(n, 2, out_size, out_size)
    offset = torch.zeros(n, 2, out_size, out_size)
    centre = torch.zeros(n, 1, out_size, out_size)
    grid = torch.arange(out_size, dtype=torch.float32)
    for i, (bx, lb) in enumerate(zip(boxes, labels)):
        for box, label in zip(torch.as_tensor(bx, dtype=torch.float32).reshape(-1, 4), lb):
            cx, cy = (box[0] + box[2]) / 2 / stride, (box[1] + box[3]) / 2 / stride
            w, h = (box[2] - box[0]) / stride, (box[3] - box[1]) / stride
            ix, iy = min(int(cx), out_size - 1), min(int(cy), out_size - 1)
            sx, sy = max(float(w) / 6, 0.5), max(float(h) / 6, 0.5)
            gx = torch.exp(-((grid - ix) ** 2) / (2 * sx**2))
            gy = torch.exp(-((grid - iy) ** 2) / (2 * sy**2))
            heat[i, int(label)] = torch.maximum(heat[i, int(label)], gy[:, None] * gx[None, :])
            size[i, :, iy, ix] = torch.stack([w, h])
            offset[i, :, iy, ix] = torch.stack([cx - ix, cy - iy])
            centre[i, 0, iy, ix] = 1.0
    return {"heatmap": heat, "size": size, "offset": offset, "centre": centre}


def centernet_loss(pred: torch.Tensor, targets: dict[str, torch.Tensor], size_weight: float = 0.1) -> torch.Tensor:
    """Penalty-reduced focal loss (alpha 2, beta 4) + L1 size and offset at the box centres."""
    num_classes = targets["heatmap"].shape[1]
    logits, size, offset = pred[:, :num_classes], pred[:, num_classes : num_classes + 2], pred[:, num_classes + 2 :]
    gt = targets["heatmap"]
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = gt.eq(1.0).float()
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * positive).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - gt) ** 4 * (1 - positive)).sum()
    num = positive.sum().clamp_min(1.0)
    centre = targets["centre"]
    n_centres = centre.sum().clamp_min(1.0)
    size_loss = (F.l1_loss(size, targets["size"], reduction="none") * centre).sum() / n_centres
    offset_loss = (F.l1_loss(offset, targets["offset"], reduction="none") * centre).sum() / n_centres
    return (pos_loss + neg_loss) / num + size_weight * size_loss + offset_loss


@torch.no_grad()
def centernet_decode(
    pred: torch.Tensor, num_classes: int, stride: int, top_k: int = 20
) -> list[dict[str, torch.Tensor]]:
    """Per image ``{"boxes": (K, 4) xyxy pixels, "scores": (K,), "labels": (K,)}``, best first."""
    heat = torch.sigmoid(pred[:, :num_classes])
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()
    n, _, h, w = heat.shape
    scores, index = peaks.reshape(n, -1).topk(min(top_k, num_classes * h * w), dim=1)
    labels, cell = index // (h * w), index % (h * w)
    ys, xs = (cell // w).float(), (cell % w).float()
    out = []
    for i in range(n):
        size = pred[i, num_classes : num_classes + 2].reshape(2, -1)[:, cell[i]].clamp_min(0.0)
        offset = pred[i, num_classes + 2 :].reshape(2, -1)[:, cell[i]]
        cx, cy = xs[i] + offset[0], ys[i] + offset[1]
        boxes = torch.stack([cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2], dim=1) * stride
        out.append({"boxes": boxes, "scores": scores[i], "labels": labels[i]})
    return out
