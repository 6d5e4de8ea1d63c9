"""``masked_reconstruction_losses`` against a plain numpy reference written here (patches, masks from the
noise, the two trivial baselines), and its basic properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genssl_hf.evaluation.reconstruction import masked_reconstruction_losses
from genssl_hf.training.mae_init import apply_mae_init

SIZE, PATCH, MASK = 32, 8, 0.75


def _tiny_mae(norm_pix_loss: bool = False):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    cfg = ViTMAEConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SIZE,
        patch_size=PATCH,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        mask_ratio=MASK,
        norm_pix_loss=norm_pix_loss,
    )
    torch.manual_seed(0)
    return apply_mae_init(ViTMAEForPreTraining(cfg)).eval()


def _np_patches(pixels: np.ndarray, norm: bool) -> np.ndarray:
    """(N, C, H, W) -> (N, patches, PATCH * PATCH * C): patches row by row, pixels row by row inside a
    patch, channels last (the MAE's own order)."""
    n, c, h, w = pixels.shape
    out = np.zeros((n, (h // PATCH) * (w // PATCH), PATCH * PATCH * c))
    for i in range(n):
        k = 0
        for r in range(0, h, PATCH):
            for q in range(0, w, PATCH):
                out[i, k] = pixels[i, :, r : r + PATCH, q : q + PATCH].transpose(1, 2, 0).reshape(-1)
                k += 1
    if norm:
        mean = out.mean(-1, keepdims=True)
        var = out.var(-1, ddof=1, keepdims=True)
        out = (out - mean) / np.sqrt(var + 1e-6)
    return out


def _np_reference(model, pixels: torch.Tensor, reference: torch.Tensor, seed: int, batch_size: int) -> dict:
    norm = model.config.norm_pix_loss
    target = _np_patches(pixels.double().numpy(), norm)
    ref = _np_patches(reference.double().numpy(), norm)
    mean_image = ref.mean(0)
    constant = ref.mean((0, 1))
    n_patches = target.shape[1]
    keep = int(n_patches * (1 - MASK))
    g = torch.Generator().manual_seed(seed)
    masks, model_losses = [], []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size]
        noise = torch.rand(len(batch), n_patches, generator=g)
        m = np.ones((len(batch), n_patches))
        for i, order in enumerate(np.argsort(noise.numpy(), axis=1, kind="stable")):
            m[i, order[:keep]] = 0  # the lowest noise is kept visible
        masks.append(m)
        with torch.no_grad():
            model_losses.append(float(model(pixel_values=batch, noise=noise).loss) * len(batch))
    mask = np.concatenate(masks)

    def loss(prediction):
        return float(((((prediction - target) ** 2).mean(-1)) * mask).sum() / mask.sum())

    return {
        "model": sum(model_losses) / len(pixels),
        "best_constant_patch": loss(constant),
        "mean_image": loss(mean_image),
    }


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_losses_match_the_numpy_reference(norm_pix_loss):
    model = _tiny_mae(norm_pix_loss)
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(12, 3, SIZE, SIZE, generator=g) * 2 - 1
    reference = torch.rand(20, 3, SIZE, SIZE, generator=g) * 2 - 1
    got = masked_reconstruction_losses(model, pixels, reference, seed=5, batch_size=4)
    want = _np_reference(model, pixels, reference, seed=5, batch_size=4)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-4), key
    assert got["model_over_mean_image"] == pytest.approx(got["model"] / got["mean_image"])


def test_mean_image_is_the_stronger_baseline_on_aligned_images():
    """Images that share a layout (a bright square in one place) and differ by noise: the mean image
    beats the best constant patch; identical images are reconstructed exactly by it."""
    model = _tiny_mae()
    g = torch.Generator().manual_seed(2)
    layout = -torch.ones(3, SIZE, SIZE)
    layout[:, 8:24, 4:12] = 1.0
    pixels = layout + 0.1 * torch.randn(16, 3, SIZE, SIZE, generator=g)
    losses = masked_reconstruction_losses(model, pixels)
    assert losses["mean_image"] < 0.1 * losses["best_constant_patch"]
    same = masked_reconstruction_losses(model, layout.expand(6, -1, -1, -1).clone())
    assert same["mean_image"] == pytest.approx(0.0, abs=1e-10)
    assert same["best_constant_patch"] > 0.1


def test_bootstrap_interval_of_the_ratio_holds_the_point_and_repeats():
    model = _tiny_mae()
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(24, 3, SIZE, SIZE, generator=g) * 2 - 1
    a = masked_reconstruction_losses(model, pixels, seed=1, n_bootstrap=500)
    b = masked_reconstruction_losses(model, pixels, seed=1, n_bootstrap=500)
    low, high = a["model_over_mean_image_ci"]
    assert low < a["model_over_mean_image"] < high
    assert a == b
    assert "model_over_mean_image_ci" not in masked_reconstruction_losses(model, pixels, seed=1)


def test_model_mode_is_restored_and_bad_shapes_are_named():
    model = _tiny_mae().train()
    pixels = torch.zeros(2, 3, SIZE, SIZE)
    masked_reconstruction_losses(model, pixels)
    assert model.training
    with pytest.raises(ValueError, match="pixel_values"):
        masked_reconstruction_losses(model, torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="reference_pixel_values"):
        masked_reconstruction_losses(model, pixels, torch.zeros(2, 1, SIZE, SIZE))
