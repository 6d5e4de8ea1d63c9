"""Jigsaw, context restoration and the multi-task pretext: their building blocks against plain
references, bad options, both backbone families, pretext accuracy above chance after a short run on
phantoms, and ``genssl pretrain --method jigsaw`` end to end (the encoder loads with AutoModel).
That each beats random-init features under a linear probe is tests/test_ssl_beats_baseline.py."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from genssl_hf.models import build_backbone
from genssl_hf.training.ssl.methods import METHODS, build_method, method_hparams
from genssl_hf.training.ssl.pretext import (
    PixelDecoder,
    feature_grid_scale,
    hamming_permutations,
    shuffle_tiles,
    spatial_features,
    swap_patches,
)

PRETEXT = ("jigsaw", "context_restoration", "multitask")
SIZE = 32


def test_hamming_permutation_set_is_greedy_max_min_and_fixed():
    perms = np.array(hamming_permutations(9, 30))
    assert len({tuple(p) for p in perms}) == 30 and all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert hamming_permutations(9, 30) == hamming_permutations(9, 30)
    # greedy max-min: member k is as far (in min Hamming distance) from members < k as any permutation is
    every = np.array(list(itertools.permutations(range(9))))
    for k in (1, 5, 12):
        best = (every[:, None, :] != perms[None, :k, :]).sum(axis=2).min(axis=1).max()
        assert (perms[k][None, :] != perms[:k]).sum(axis=1).min() == best
    assert sorted(hamming_permutations(4, 24)) == sorted(itertools.permutations(range(4)))
    with pytest.raises(ValueError, match="--jigsaw_permutations"):
        hamming_permutations(4, 25)


def test_shuffle_tiles_matches_a_loop_reference():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 13, 13)  # 13 = 3 x 4 + a 1-pixel border that stays in place
    perms = torch.tensor(hamming_permutations(9, 5))
    labels = torch.tensor([0, 3, 4])
    got = shuffle_tiles(x, 3, perms, labels)
    want = x.clone()
    for b in range(3):
        for slot in range(9):
            src = int(perms[labels[b], slot])
            r, c, sr, sc = slot // 3, slot % 3, src // 3, src % 3
            want[b, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = x[b, :, 4 * sr : 4 * sr + 4, 4 * sc : 4 * sc + 4]
    assert torch.equal(got, want)
    identity = torch.arange(9)[None]
    assert torch.equal(shuffle_tiles(x, 3, identity, torch.zeros(3, dtype=torch.long)), x)


def test_swap_patches_moves_pixels_without_changing_them():
    x = torch.rand(4, 1, 32, 32)
    y = swap_patches(x, 4, 6, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(x, y)
    for i in range(4):  # a swap permutes pixels: the same values, elsewhere
        assert torch.equal(x[i].flatten().sort().values, y[i].flatten().sort().values)
    with pytest.raises(ValueError, match="--restoration_patch_fraction"):
        swap_patches(x, 17, 1)


@pytest.mark.parametrize("backbone", ["tiny", "resnet-tiny"])
def test_spatial_features_and_pixel_decoder_tile_the_image(backbone):
    torch.manual_seed(0)
    net = build_backbone(backbone, image_size=SIZE)
    scale = feature_grid_scale(net, SIZE)
    grid = spatial_features(net, torch.randn(2, 3, SIZE, SIZE))
    assert grid.shape[-1] * scale == SIZE
    assert PixelDecoder(grid.shape[1], 16, scale)(grid).shape == (2, 1, SIZE, SIZE)


@pytest.mark.parametrize("method", PRETEXT)
@pytest.mark.parametrize("backbone", ["tiny", "resnet-tiny"])
def test_methods_run_on_both_backbone_families(method, backbone):
    torch.manual_seed(0)
    model = build_method(method, build_backbone(backbone, image_size=SIZE), "tiny")
    loss, metrics = model([torch.randn(4, 3, SIZE, SIZE)])
    loss.backward()
    assert torch.isfinite(loss) and "feature_std" in metrics and "embedding_std" in metrics
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def test_bad_pretext_options_fail_by_name():
    with pytest.raises(ValueError, match="--jigsaw_grid"):
        method_hparams("jigsaw", "tiny", jigsaw_grid=7)
    with pytest.raises(ValueError, match="--jigsaw_permutations"):
        method_hparams("jigsaw", "tiny", jigsaw_grid=2, jigsaw_permutations=30)
    with pytest.raises(ValueError, match="--restoration_patch_fraction"):
        method_hparams("context_restoration", "tiny", restoration_patch_fraction=0.8)
    with pytest.raises(ValueError, match="--restoration_swaps"):
        method_hparams("multitask", "tiny", restoration_swaps=0)
    with pytest.raises(ValueError, match="not all 0"):
        method_hparams("multitask", "tiny", rotation_weight=0.0, jigsaw_weight=0.0, restoration_weight=0.0)


@pytest.fixture(scope="module")
def phantom_images():
    from genssl_hf.data.phantom import phantom_dataset
    from genssl_hf.processing.collate import ImageCollator

    return ImageCollator(SIZE)(list(phantom_dataset(256, size=SIZE, seed=5)))


@pytest.mark.parametrize(
    "method", ["jigsaw", "context_restoration", pytest.param("multitask", marks=pytest.mark.slow)]
)  # multi-task: 6 forward passes per step
def test_pretext_beats_chance_after_a_short_run(method, phantom_images):
    """80 steps of 32 phantoms on resnet-tiny; then, on a fresh batch in eval mode, every permutation
    / rotation accuracy is well above chance and the restoration error below the mean image's."""
    from genssl_hf.training.ssl.optim import build_ssl_optimizer
    from genssl_hf.training.ssl.transforms import SSLViews

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_method(method, build_backbone("resnet-tiny", image_size=SIZE), "tiny")
    opt = build_ssl_optimizer(model, "adamw", METHODS[method].recipes["tiny"]["base_learning_rate"], 0.05)
    views = SSLViews(SIZE, **{k: v for k, v in METHODS[method].view_overrides.items() if k != "crop_scale_min"})
    for _ in range(80):
        _, _ = loss_and_step(model, opt, views(phantom_images[torch.randint(0, len(phantom_images), (32,))]))
    model.eval()
    with torch.no_grad():
        _, m = model([views(phantom_images[:64])])
    chance = {"rotation_accuracy": 1 / 4, "jigsaw_accuracy": 1 / model.hparams.get("jigsaw_permutations", 1)}
    checked = [k for k in chance if k in m]
    for k in checked:
        assert m[k] > 3 * chance[k], (k, float(m[k]))
    if "restoration_mse" in m:
        checked.append("restoration_mse")
        assert m["restoration_mse"] < 0.7 * m["mean_image_mse"], {k: float(v) for k, v in m.items()}
    assert checked, m


def loss_and_step(model, opt, x):
    loss, metrics = model([x])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss, metrics


def test_genssl_pretrain_jigsaw_writes_an_automodel_encoder(tmp_path):
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from transformers import AutoModel

    from genssl_hf.cli.pretrain import main as pretrain_main
    from genssl_hf.data.phantom import phantom_dataset

    data = tmp_path / "train"
    phantom_dataset(32, size=40, seed=1).save_to_disk(str(data))
    out = tmp_path / "jigsaw"
    argv = ["--method", "jigsaw", "--model", "tiny", "--image_size", "32", "--max_steps", "3"]
    argv += ["--per_device_train_batch_size", "8", "--dataset", str(data), "--output_dir", str(out), "--figure", "off"]
    try:
        assert pretrain_main(argv) == 0
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
    encoder = AutoModel.from_pretrained(out)
    assert type(encoder).__name__ == "ViTModel"
    config = json.loads((out / "run_config.json").read_text())
    assert config["method"] == "jigsaw" and config["method_hparams"]["jigsaw_permutations"] == 24
