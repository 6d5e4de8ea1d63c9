"""SimSiam's stop-gradient is what prevents collapse (Chen & He 2021, Fig. 2): on small phantom
data, without it the std of the normalised embeddings falls to ~0; with it, it stays near
1/sqrt(D)."""

import math

import pytest
import torch

from genssl_hf.models import build_backbone
from genssl_hf.training.ssl.methods import build_method
from genssl_hf.training.ssl.optim import build_ssl_optimizer
from genssl_hf.training.ssl.transforms import SSLViews


@pytest.fixture(scope="module")
def phantom_images():
    from genssl_hf.data.phantom import phantom_dataset
    from genssl_hf.processing.collate import ImageCollator

    return ImageCollator(32)(list(phantom_dataset(128, size=32, seed=3)))


def _std_trace(images, stop_gradient: bool, steps: int = 150) -> list[float]:
    torch.manual_seed(0)
    model = build_method("simsiam", build_backbone("tiny", image_size=32), "tiny", stop_gradient=stop_gradient)
    opt = build_ssl_optimizer(model, "adamw", 3e-3, 0.05, fixed_lr_prefixes=("predictor.",))
    views = SSLViews(32)
    trace = []
    for _ in range(steps):
        x = images[torch.randint(0, len(images), (32,))]
        loss, metrics = model([views(x), views(x)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        trace.append(metrics["embedding_std"].item())
    return trace


@pytest.mark.slow
def test_simsiam_collapses_without_stop_gradient_and_not_with_it(phantom_images):
    torch.set_num_threads(1)
    dim = 128  # the tiny projector's output width
    healthy = 1 / math.sqrt(dim)
    with_sg = _std_trace(phantom_images, stop_gradient=True)
    without_sg = _std_trace(phantom_images, stop_gradient=False)
    assert with_sg[0] == pytest.approx(without_sg[0])  # same start
    assert min(without_sg) < 0.1 * healthy, f"no collapse without stop-gradient: min std {min(without_sg):.4f}"
    late = len(with_sg) // 2
    med_with = sorted(with_sg[late:])[len(with_sg[late:]) // 2]
    med_without = sorted(without_sg[late:])[len(without_sg[late:]) // 2]
    # with stop-gradient the std stays of the order of 1/sqrt(D) (single batches dip, the run does not)
    assert med_with > 0.5 * healthy, f"collapse with stop-gradient: median std over the second half {med_with:.4f}"
    assert med_without < med_with
