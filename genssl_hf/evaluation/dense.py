"""Dense downstream tasks on frozen encoders: segmentation (Dice / IoU per finding) and detection
(mAP over IoU 0.40-0.75), at label fractions, as MedSyn scores its pre-trained image encoders.

Protocol, for one encoder:

* the encoder is what fine-tuning and the probe start from
  (:func:`~genssl_hf.evaluation.frozen_features.load_frozen_encoder`: a model folder, or a preset for
  seeded random weights, with its input normalisation), frozen; its feature maps
  (:func:`~genssl_hf.models.dense_heads.backbone_feature_maps`) are computed once per image;
* per label fraction and seed: the training rows are fine-tuning's stratified subset
  (:func:`~genssl_hf.training.finetune_data.stratified_subset` on the finding labels), a fresh decoder
  (seeded by the seed) is trained on them (:mod:`genssl_hf.training.dense_fit`) and scored on the
  whole test split, next to the trivial baseline fitted on the same rows (the mean mask; fixed
  boxes) (:mod:`genssl_hf.evaluation.dense_metrics`);
* the encoder itself is the same for every seed (a preset's random weights are drawn with seed 0),
  so the spread over seeds is that of the labelled subset and the decoder.

Data: rows with ``image``, ``mask`` (bit ``i`` = finding ``i``) and ``objects`` (``bbox`` xyxy pixels,
``category``), as :func:`~genssl_hf.data.phantom_dense.phantom_dense_dataset` writes them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from genssl_hf.data.phantom_dense import decode_mask
from genssl_hf.evaluation.dense_metrics import coco_map, fixed_box_baseline, mean_mask_baseline, segmentation_scores
from genssl_hf.evaluation.frozen_features import FrozenEncoder, load_frozen_encoder
from genssl_hf.models.centernet import centernet_decode, centernet_targets, num_centernet_channels
from genssl_hf.models.dense_heads import backbone_feature_maps, build_dense_decoder
from genssl_hf.training.dense_fit import (
    DenseFitConfig,
    detection_loss,
    fit_dense_decoder,
    predict_dense,
    segmentation_loss,
)
from genssl_hf.training.finetune_data import stratified_subset

logger = logging.getLogger(__name__)

__all__ = ["DENSE_TASKS", "DenseData", "dense_data", "evaluate_dense", "summarise_dense"]

DENSE_TASKS = ("segmentation", "detection")
DETECTION_STRIDE = 4
SEGMENTATION_STRIDE = 2  # logits at half resolution, upsampled bilinearly


@dataclass
class DenseData:
    """A split as tensors at the encoder's input size: uint8 ``images`` (N, 1, S, S), bool ``masks``
    (N, C, S, S), per-image ``boxes`` (K, 4) xyxy pixels and ``labels`` (K,), multi-hot ``targets``."""

    images: torch.Tensor
    masks: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    targets: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def dense_data(dataset, image_size: int) -> DenseData:
    """Read a split with ``image``, ``mask`` and ``objects`` columns, resized to ``image_size``
    (images bilinear, masks nearest, boxes scaled)."""
    import torch.nn.functional as F

    missing = [c for c in ("image", "mask", "objects") if c not in dataset.column_names]
    if missing:
        raise KeyError(f"a dense dataset needs the columns image, mask and objects; missing {missing}")
    names = list(dataset.features["objects"]["category"].feature.names)
    images, masks, boxes, labels = [], [], [], []
    for row in dataset:
        image = torch.from_numpy(np.asarray(row["image"].convert("L"), dtype=np.uint8).copy())[None, None]
        mask = torch.from_numpy(decode_mask(row["mask"], len(names)))[None]
        scale = image_size / image.shape[-1]
        if image.shape[-1] != image_size or image.shape[-2] != image_size:
            image = F.interpolate(image.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
            image = image.round().clamp(0, 255).to(torch.uint8)
            mask = F.interpolate(mask.float(), size=(image_size, image_size), mode="nearest").bool()
        images.append(image)
        masks.append(mask)
        boxes.append(torch.tensor(row["objects"]["bbox"], dtype=torch.float32).reshape(-1, 4) * scale)
        labels.append(torch.tensor(row["objects"]["category"], dtype=torch.int64))
    masks_t = torch.cat(masks)
    return DenseData(
        torch.cat(images), masks_t, boxes, labels, masks_t.flatten(2).any(2).numpy().astype(np.float32), names
    )


@torch.no_grad()
def encoder_feature_maps(encoder: FrozenEncoder, images: torch.Tensor, batch_size: int = 64) -> list[torch.Tensor]:
    """The frozen encoder's feature maps for uint8 ``(N, 1, S, S)`` images, batched."""
    chunks = []
    for i in range(0, len(images), batch_size):
        x = encoder.normalizer(encoder.normalizer.resize(images[i : i + batch_size].float().div(255.0)))
        chunks.append(backbone_feature_maps(encoder.backbone, x))
    return [torch.cat([c[k] for c in chunks]).float() for k in range(len(chunks[0]))]


def _fit_and_score(
    task: str,
    encoder: FrozenEncoder,
    maps: tuple[list, list],
    train: DenseData,
    test: DenseData,
    rows: np.ndarray,
    config: DenseFitConfig,
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Train a decoder on ``rows`` of ``train``; the test scores, the baseline's and the predictions."""
    size = encoder.image_size
    num_classes = len(train.names)
    index = torch.as_tensor(rows)
    train_maps = [m[index] for m in maps[0]]
    torch.manual_seed(config.seed)
    if task == "segmentation":
        decoder = build_dense_decoder(
            encoder.backbone, size, num_classes, out_stride=SEGMENTATION_STRIDE, upsample_to_input=True
        )
        fit_dense_decoder(decoder, train_maps, {"masks": train.masks[index].float()}, segmentation_loss(), config)
        pred = predict_dense(decoder, maps[1]).sigmoid() >= 0.5
        scores = segmentation_scores(pred, test.masks, train.names)
        base = mean_mask_baseline(train.masks[index])
        baseline = segmentation_scores(base.expand_as(test.masks), test.masks, train.names)
        return scores, baseline, pred
    decoder = build_dense_decoder(
        encoder.backbone, size, num_centernet_channels(num_classes), out_stride=DETECTION_STRIDE
    )
    sub_boxes, sub_labels = [train.boxes[i] for i in rows], [train.labels[i] for i in rows]
    targets = centernet_targets(sub_boxes, sub_labels, num_classes, size // DETECTION_STRIDE, DETECTION_STRIDE)
    fit_dense_decoder(decoder, train_maps, targets, detection_loss(), config)
    pred = centernet_decode(predict_dense(decoder, maps[1]), num_classes, DETECTION_STRIDE)
    truth = [{"boxes": b, "labels": lb} for b, lb in zip(test.boxes, test.labels)]
    scores = coco_map(pred, truth, num_classes, names=train.names)
    base_pred = fixed_box_baseline(
        [{"boxes": b, "labels": lb} for b, lb in zip(sub_boxes, sub_labels)], size, len(test)
    )
    baseline = coco_map(base_pred, truth, num_classes, names=train.names)
    return scores, baseline, pred


def evaluate_dense(
    task: str,
    model: str,
    train_split,
    test_split,
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0,),
    config: DenseFitConfig | None = None,
    image_processor: str = "init",
) -> dict[str, Any]:
    """Score ``model``'s frozen encoder on ``task`` at each label fraction and seed (see the module
    docstring). Returns ``{"rows": [...], "summary": [...], "predictions": ...}``; ``predictions`` holds
    the first seed's test predictions at the largest fraction (for a figure)."""
    if task not in DENSE_TASKS:
        raise ValueError(f"--task must be one of {DENSE_TASKS}; got {task!r}")
    for f in fractions:
        if not 0.0 < float(f) <= 1.0:
            raise ValueError(f"--fractions: each label fraction must lie in (0, 1]; got {f}")
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    config = config or DenseFitConfig()
    start = time.time()
    encoder = load_frozen_encoder(model, image_processor=image_processor, seed=0)
    train, test = dense_data(train_split, encoder.image_size), dense_data(test_split, encoder.image_size)
    maps = (encoder_feature_maps(encoder, train.images), encoder_feature_maps(encoder, test.images))
    rows, figure_pred = [], None
    for fraction in fractions:
        for seed in seeds:
            subset = stratified_subset(train.targets, float(fraction), int(seed))
            cfg = DenseFitConfig(**{**asdict(config), "seed": int(seed)})
            scores, baseline, pred = _fit_and_score(task, encoder, maps, train, test, subset, cfg)
            rows.append(
                {
                    "fraction": float(fraction),
                    "seed": int(seed),
                    "n_train": int(len(subset)),
                    "scores": scores,
                    "baseline": baseline,
                }
            )
            logger.info("%s %s fraction %.2f seed %d: %s", task, model, fraction, seed, _headline(task, scores))
            if fraction == max(fractions) and seed == seeds[0]:
                figure_pred = pred
    return {
        "task": task,
        "model": str(model),
        "image_size": encoder.image_size,
        "normalizer": encoder.normalizer_source,
        "n_train": len(train),
        "n_test": len(test),
        "fit": asdict(config),
        "rows": rows,
        "summary": summarise_dense(task, rows),
        "seconds": round(time.time() - start, 1),
        "predictions": figure_pred,
        "test": test,
    }


def _headline(task: str, scores: Mapping[str, Any]) -> float:
    return float(scores["dice"] if task == "segmentation" else scores["map"])


def _mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean and a 95 % t-interval over seeds (none for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    out = {"mean": float(v.mean()), "n": int(v.size)}
    if v.size > 1:
        from scipy import stats

        half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def summarise_dense(task: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per label fraction: the headline score (Dice or mAP) and the baseline's, mean and CI over seeds."""
    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        sel = [r for r in rows if r["fraction"] == fraction]
        metric = "dice" if task == "segmentation" else "map"
        out.append(
            {
                "fraction": fraction,
                "metric": metric,
                "model": _mean_ci([_headline(task, r["scores"]) for r in sel]),
                "baseline": _mean_ci([_headline(task, r["baseline"]) for r in sel]),
            }
        )
    return out
