"""Masked-patch reconstruction of an MAE against its two trivial baselines.

- **best constant patch**: one patch for every position of every image (the reference set's mean
  target patch). A model that cannot place patches converges to it.
- **mean image**: the reference set's average image, patch by patch. A model that places patches but
  reads nothing from the visible ones converges to it. For aligned images such as chest X-rays this
  baseline is much stronger than the constant one. An MAE below it has learnt more than the average
  layout of the images.

Every loss is the MAE's own: the mean over masked patches of the per-patch MSE on the model's target
(pixels, or per-patch normalised pixels with ``norm_pix_loss``). All three losses use the same masks.
"""

from __future__ import annotations

from typing import Any

import torch


def _targets(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    target = model.patchify(pixel_values)
    if model.config.norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return target


def _check_pixels(model: Any, pixel_values: torch.Tensor, name: str) -> None:
    size, channels = model.config.image_size, model.config.num_channels
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (channels, size, size):
        raise ValueError(
            f"{name}: expected a batch of shape (N, {channels}, {size}, {size}) for this MAE, "
            f"got {tuple(pixel_values.shape)}"
        )
    if len(pixel_values) == 0:
        raise ValueError(f"{name}: no images")


@torch.no_grad()
def masked_reconstruction_losses(
    model: Any,
    pixel_values: torch.Tensor,
    reference_pixel_values: torch.Tensor | None = None,
    *,
    seed: int = 0,
    batch_size: int = 64,
    n_bootstrap: int = 0,
) -> dict[str, Any]:
    """``{"model", "best_constant_patch", "mean_image", "model_over_mean_image"}`` on ``pixel_values``
    (already processed by the MAE's image processor). With ``n_bootstrap`` > 0, also
    ``"model_over_mean_image_ci"``: the 95 % percentile interval of the ratio over images resampled
    with replacement (the ratio moves with which images are evaluated, not only with the masks).

    The baselines come from ``reference_pixel_values`` (e.g. the training images; default: the
    evaluated images themselves, which flatters the baselines). The masks are drawn from ``seed``,
    one batch at a time.
    """
    if reference_pixel_values is None:
        reference_pixel_values = pixel_values
    _check_pixels(model, pixel_values, "pixel_values")
    _check_pixels(model, reference_pixel_values, "reference_pixel_values")
    was_training = model.training
    model.eval()
    try:
        # Baselines from the reference set, accumulated batch by batch (a large set need not fit twice).
        total, count = None, 0
        for start in range(0, len(reference_pixel_values), batch_size):
            t = _targets(model, reference_pixel_values[start : start + batch_size].float())
            total = t.sum(dim=0) if total is None else total + t.sum(dim=0)
            count += len(t)
        mean_image = total / count  # (patches, values)
        constant = mean_image.mean(dim=0, keepdim=True)  # (1, values)

        n_patches = mean_image.shape[0]
        generator = torch.Generator().manual_seed(seed)
        per_image: dict[str, list[torch.Tensor]] = {"model": [], "best_constant_patch": [], "mean_image": []}
        masked = []
        for start in range(0, len(pixel_values), batch_size):
            pixels = pixel_values[start : start + batch_size].float()
            noise = torch.rand(len(pixels), n_patches, generator=generator)
            out = model(pixel_values=pixels, noise=noise)
            target, mask = _targets(model, pixels), out.mask
            for key, prediction in (
                ("model", out.logits),
                ("best_constant_patch", constant),
                ("mean_image", mean_image),
            ):
                per_patch = ((prediction - target) ** 2).mean(dim=-1)
                per_image[key].append((per_patch * mask).sum(dim=1).double())
            masked.append(mask.sum(dim=1).double())
    finally:
        model.train(was_training)
    sums = {key: torch.cat(value) for key, value in per_image.items()}
    counts = torch.cat(masked)
    losses: dict[str, Any] = {key: float(value.sum() / counts.sum()) for key, value in sums.items()}
    losses["model_over_mean_image"] = _ratio(sums["model"].sum(), sums["mean_image"].sum())
    if n_bootstrap > 0:
        rows = torch.randint(len(counts), (n_bootstrap, len(counts)), generator=torch.Generator().manual_seed(seed))
        ratios = sums["model"][rows].sum(dim=1) / sums["mean_image"][rows].sum(dim=1).clamp_min(1e-30)
        losses["model_over_mean_image_ci"] = [
            float(torch.quantile(ratios, 0.025)),
            float(torch.quantile(ratios, 0.975)),
        ]
    return losses


def _ratio(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a / b) if float(b) > 0 else float("inf")
