"""Scores of dense predictions and their trivial baselines.

* Segmentation: per finding, the pooled Dice over all test pixels (the headline ``dice``: it also
  charges a mask drawn on an image without the finding), and the per-image Dice and IoU (MONAI
  ``DiceMetric`` / ``MeanIoU``) averaged over the test images that hold the finding (MONAI's
  ``ignore_empty``; ``dice_present`` / ``iou_present``: how well the shape is found where it is).
  Baseline: the mean training mask per finding on every image, binarised at the fraction of its
  peak that maximises the pooled Dice on the training masks.
* Detection: COCO mean average precision over IoU thresholds 0.40, 0.45, ..., 0.75 (MedSyn's range),
  all object sizes, up to 100 detections per image, computed by ``pycocotools`` ``COCOeval`` with its
  IoU thresholds replaced; per class too. Baseline: fixed boxes, for each class and image half the
  mean training box of that class there, scored by how often the class appears there in training.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "MEDSYN_IOU_THRESHOLDS",
    "coco_map",
    "fixed_box_baseline",
    "mean_mask_baseline",
    "segmentation_scores",
]

MEDSYN_IOU_THRESHOLDS = tuple(round(0.4 + 0.05 * k, 2) for k in range(8))


def segmentation_scores(pred: torch.Tensor, true: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """Dice / IoU per finding for ``(N, C, H, W)`` binary predictions and truths."""
    from monai.metrics import DiceMetric, MeanIoU

    pred, true = pred.float(), true.float()
    if pred.shape != true.shape or pred.shape[1] != len(names):
        raise ValueError(
            f"prediction {tuple(pred.shape)} and truth {tuple(true.shape)} must match (N, {len(names)}, H, W)"
        )
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(pred, true)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=True)(pred, true)
    inter = (pred * true).sum(dim=(0, 2, 3))
    pooled = 2 * inter / (pred.sum(dim=(0, 2, 3)) + true.sum(dim=(0, 2, 3))).clamp_min(1e-8)
    per_finding = {}
    for c, name in enumerate(names):
        present = ~torch.isnan(dice[:, c])
        if not present.any():
            continue  # no test image holds the finding: nothing to score
        per_finding[name] = {
            "dice": float(pooled[c]),
            "dice_present": float(dice[present, c].mean()),
            "iou_present": float(iou[present, c].mean()),
            "n_images": int(present.sum()),
        }
    keys = ("dice", "dice_present", "iou_present")
    means = {k: float(np.mean([v[k] for v in per_finding.values()])) if per_finding else float("nan") for k in keys}
    return {**means, "per_finding": per_finding}


def mean_mask_baseline(
    train_masks: torch.Tensor, grid: Sequence[float] = tuple(np.linspace(0.02, 0.9, 23))
) -> torch.Tensor:
    """``(C, H, W)`` bool: the mean training mask per finding, binarised at the fraction of its peak
    that maximises the pooled Dice on the training masks (the headline score)."""
    true = train_masks.float()
    mean = true.mean(dim=0)
    out = torch.zeros_like(mean, dtype=torch.bool)
    for c in range(true.shape[1]):
        if not true[:, c].any():
            continue
        area = true[:, c].sum()
        best, best_dice = None, -1.0
        for t in grid:
            cand = (mean[c] >= t * mean[c].max()).float()
            # pooled Dice of predicting ``cand`` on every training image
            d = float(2 * (true[:, c] * cand).sum() / (cand.sum() * true.shape[0] + area))
            if d > best_dice:
                best, best_dice = cand.bool(), d
        out[c] = best
    return out


def coco_map(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    num_classes: int,
    iou_thresholds: Sequence[float] = MEDSYN_IOU_THRESHOLDS,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """COCO mAP (``pycocotools``) over ``iou_thresholds``. Each prediction is ``{"boxes": (K, 4) xyxy,
    "scores": (K,), "labels": (K,)}``, each target ``{"boxes", "labels"}``, one per image."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:  # pragma: no cover - exercised only without the package
        raise ImportError("detection mAP needs pycocotools: pip install pycocotools") from err
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    names = list(names) if names is not None else [str(c) for c in range(num_classes)]
    images, annotations, results = [], [], []
    for image_id, (pred, true) in enumerate(zip(predictions, targets)):
        images.append({"id": image_id})
        for box, label in zip(_as_np(true["boxes"]).reshape(-1, 4), _as_np(true["labels"]).reshape(-1)):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        for box, score, label in zip(
            _as_np(pred["boxes"]).reshape(-1, 4), _as_np(pred["scores"]), _as_np(pred["labels"])
        ):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": names[c]} for c in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return {"map": 0.0, "per_class": {}, "iou_thresholds": list(iou_thresholds)}
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K): all areas, 100 detections
    per_class = {}
    for c in range(num_classes):
        valid = precision[:, :, c][precision[:, :, c] > -1]
        if valid.size:
            per_class[names[c]] = float(valid.mean())
    return {"map": float(max(evaluator.stats[0], 0.0)), "per_class": per_class, "iou_thresholds": list(iou_thresholds)}


def _as_np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def fixed_box_baseline(
    train_targets: Sequence[dict[str, Any]], image_size: int, num_images: int
) -> list[dict[str, torch.Tensor]]:
    """The same boxes on every image: per class and image half, the mean training box there,
    scored by the share of training images holding it."""
    groups: dict[tuple[int, int], list[np.ndarray]] = {}
    for t in train_targets:
        for box, label in zip(_as_np(t["boxes"]).reshape(-1, 4), _as_np(t["labels"]).reshape(-1)):
            half = int((box[0] + box[2]) / 2 >= image_size / 2)
            groups.setdefault((int(label), half), []).append(box)
    boxes = [np.mean(v, axis=0) for v in groups.values()]
    scores = [len(v) / max(1, len(train_targets)) for v in groups.values()]
    labels = [k[0] for k in groups]
    one = {
        "boxes": torch.tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    return [one] * num_images
