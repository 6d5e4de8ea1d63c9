"""Robustness to image corruptions (GEN-SSL paper, Table 8).

Five corruptions at five severities each, applied to grayscale or RGB images as float tensors
``(B, C, H, W)`` in ``[0, 1]`` *before* model normalisation. Sizes in pixels are defined for a
224-pixel image and scaled with the image side, so a severity means the same thing at 64 px.

=================  ==============================================  ==============================
corruption         parameter (severity 1 .. 5)                      implementation
=================  ==============================================  ==============================
gaussian_blur      sigma (px @224) 0.5, 1.0, 1.5, 2.0, 3.0          kornia ``gaussian_blur2d``
gaussian_noise     std (intensity) 0.02, 0.04, 0.06, 0.08, 0.10     seeded torch noise, clamped
jpeg               quality 80, 60, 40, 20, 10                       Pillow JPEG codec (8-bit)
contrast           factor 0.8, 0.6, 0.4, 0.3, 0.2                   (x - mean(x)) * f + mean(x)
motion_blur        kernel (px @224) 3, 5, 7, 9, 11; seeded angle     kornia ``motion_blur``
=================  ==============================================  ==============================

Every corruption is deterministic given ``seed`` (noise, motion angle). :func:`robustness_table`
evaluates a prediction function on the clean and corrupted sets and reports the metric per
corruption and severity, the mean over severities, and its drop from the clean value.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["CORRUPTIONS", "SEVERITY_PARAMS", "corrupt", "robustness_table", "format_robustness_table"]

SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_blur": (0.5, 1.0, 1.5, 2.0, 3.0),
    "gaussian_noise": (0.02, 0.04, 0.06, 0.08, 0.10),
    "jpeg": (80, 60, 40, 20, 10),
    "contrast": (0.8, 0.6, 0.4, 0.3, 0.2),
    "motion_blur": (3, 5, 7, 9, 11),
}
CORRUPTIONS = tuple(SEVERITY_PARAMS)
_REF_SIDE = 224.0


def _scaled_px(value: float, side: int) -> float:
    return float(value) * side / _REF_SIDE


def _gaussian_blur(x: torch.Tensor, sigma_224: float, gen: torch.Generator) -> torch.Tensor:
    import kornia

    sigma = max(_scaled_px(sigma_224, x.shape[-1]), 1e-3)
    k = 2 * int(np.ceil(3 * sigma)) + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def _gaussian_noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return (x + std * noise.to(x.device)).clamp(0.0, 1.0)


def _jpeg(x: torch.Tensor, quality: float, gen: torch.Generator) -> torch.Tensor:
    out = torch.empty_like(x)
    arr = (x.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    for i in range(arr.shape[0]):
        img = arr[i, 0] if arr.shape[1] == 1 else np.moveaxis(arr[i], 0, -1)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
        dec = dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)
        out[i] = torch.from_numpy(dec).to(x.device, x.dtype)
    return out


def _contrast(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0.0, 1.0)


def _motion_blur(x: torch.Tensor, kernel_224: float, gen: torch.Generator) -> torch.Tensor:
    import kornia

    k = int(round(_scaled_px(kernel_224, x.shape[-1])))
    k = max(3, k + (k + 1) % 2)  # odd, at least 3
    angle = torch.rand(x.shape[0], generator=gen) * 180.0
    direction = torch.zeros(x.shape[0])
    return kornia.filters.motion_blur(x, k, angle.to(x.device, x.dtype), direction.to(x.device, x.dtype))


_FUNCS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian_blur": _gaussian_blur,
    "gaussian_noise": _gaussian_noise,
    "jpeg": _jpeg,
    "contrast": _contrast,
    "motion_blur": _motion_blur,
}


def corrupt(images: torch.Tensor, corruption: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """Apply ``corruption`` at ``severity`` (1-5) to ``(B, C, H, W)`` floats in [0, 1]."""
    if corruption not in _FUNCS:
        raise KeyError(f"unknown corruption {corruption!r}; known: {list(CORRUPTIONS)}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1..5; got {severity}")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    gen = torch.Generator().manual_seed(int(seed) * 1009 + CORRUPTIONS.index(corruption) * 17 + int(severity))
    param = SEVERITY_PARAMS[corruption][int(severity) - 1]
    with torch.no_grad():
        return _FUNCS[corruption](images.float(), param, gen)


def robustness_table(
    predict: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor,
    y_true: Any,
    *,
    metric: Callable[[Any, np.ndarray], float] | None = None,
    metric_name: str = "mean_auc",
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Metric on clean images and under every (corruption, severity).

    ``predict(images_0_1) -> (B, C) probabilities``; it is called in batches of ``batch_size``.
    ``metric(y_true, scores) -> float`` defaults to the ``metric_name`` entry of
    :func:`genssl_hf.evaluation.classification.classification_metrics` (e.g. ``mean_auc`` or
    ``accuracy``). Returns ``{"clean", "metric", "severity_params", "table": {corruption:
    {"per_severity": {s: value}, "mean", "drop"}}, "average_drop"}``; drop = clean - mean.
    """
    from genssl_hf.evaluation.classification import classification_metrics

    if metric is None:

        def metric(t, s):
            return classification_metrics(t, s)[metric_name]

    for c in corruptions:
        if c not in _FUNCS:
            raise KeyError(f"unknown corruption {c!r}; known: {list(CORRUPTIONS)}")

    def run(x: torch.Tensor) -> float:
        scores = np.concatenate([np.asarray(predict(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])
        value = metric(y_true, scores)
        return float("nan") if value is None else float(value)

    clean = run(images)
    table: dict[str, Any] = {}
    for c in corruptions:
        per = {}
        for s in severities:
            batches = [
                corrupt(images[i : i + batch_size], c, s, seed=seed + i) for i in range(0, len(images), batch_size)
            ]
            per[int(s)] = run(torch.cat(batches))
        mean = float(np.mean(list(per.values())))
        table[c] = {"per_severity": per, "mean": mean, "drop": clean - mean}
    return {
        "metric": metric_name,
        "clean": clean,
        "seed": seed,
        "severity_params": {c: list(SEVERITY_PARAMS[c]) for c in corruptions},
        "table": table,
        "average_drop": float(np.mean([v["drop"] for v in table.values()])) if table else None,
    }


def format_robustness_table(result: dict[str, Any], *, percent: bool = True) -> str:
    """Markdown: one row per corruption, one column per severity, mean and drop from clean."""
    f = (lambda v: f"{100 * v:.1f}") if percent else (lambda v: f"{v:.4f}")
    sev = sorted({s for row in result["table"].values() for s in row["per_severity"]})
    lines = [
        f"Metric: {result['metric']}{' (percent)' if percent else ''}; clean: {f(result['clean'])}",
        "",
        "| Corruption | " + " | ".join(f"s{s}" for s in sev) + " | Mean | Drop |",
        "|" + "---|" * (len(sev) + 3),
    ]
    for c, row in result["table"].items():
        cells = [f(row["per_severity"][s]) for s in sev] + [f(row["mean"]), f(row["drop"])]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    mean_of_means = float(np.mean([row["mean"] for row in result["table"].values()]))
    lines.append(
        "| **average** | " + " | ".join("" for _ in sev) + f" | {f(mean_of_means)} | {f(result['average_drop'])} |"
    )
    return "\n".join(lines) + "\n"
