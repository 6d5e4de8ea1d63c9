"""FID with a pluggable extractor and FAISS / numpy nearest-neighbour similarity."""

import numpy as np
import pytest
import torch

from genssl_hf.training.mae_init import apply_mae_init
from genssl_hf.evaluation.image_quality import (
    EncoderFeatureExtractor,
    compute_fid,
    dataset_similarity,
    faiss_available,
    frechet_distance,
    mean_nn_cosine_similarity,
)

torch.set_num_threads(1)


def test_frechet_distance_by_hand():
    # 1-D: a = [0, 2] (mean 1, var 2), b = [1, 5] (mean 3, var 8):
    # (1 - 3)^2 + 2 + 8 - 2 * sqrt(2 * 8) = 4 + 10 - 8 = 6
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(6.0)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # b = a S + m with diagonal S: C_b = S C S, and (C S C S)^(1/2) = C S
    b = a * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, -2.0])
    cov = np.cov(a, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2)
    scale = np.diag([1.0, 2.0, 0.5])
    expected += np.trace(cov + scale @ cov @ scale - 2 * (cov @ scale))  # sqrt(C S C S) = C S for diagonal S
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, a[:, :2])


def test_nearest_neighbour_similarity_by_hand_and_backends_agree():
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    r = np.array([[1.0, 1.0], [0.0, -1.0]])
    # q0's best: cos to (1, 1) = 0.7071; q1's best: cos to (1, 1) = 0.7071
    out = mean_nn_cosine_similarity(q, r, backend="numpy")
    assert out["mean_similarity"] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(500, 16))
    ref = mean_nn_cosine_similarity(a, b, backend="numpy")
    assert mean_nn_cosine_similarity(a, a, backend="numpy")["mean_similarity"] == pytest.approx(1.0, abs=1e-5)
    if faiss_available():
        fa = mean_nn_cosine_similarity(a, b, backend="faiss")
        assert fa["backend"] == "faiss"
        assert fa["mean_similarity"] == pytest.approx(ref["mean_similarity"], abs=1e-5)
    assert mean_nn_cosine_similarity(a, b)["backend"] == ("faiss" if faiss_available() else "numpy")


def test_encoder_extractor_from_a_local_mae_folder_is_named_in_every_result(tmp_path):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    folder = tmp_path / "my-mae"
    cfg = ViTMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    torch.manual_seed(0)
    apply_mae_init(ViTMAEForPreTraining(cfg)).save_pretrained(folder)
    extractor = EncoderFeatureExtractor(folder)
    assert "my-mae" in extractor.name and "mean pooling" in extractor.name
    g = torch.Generator().manual_seed(0)
    a = torch.rand(12, 1, 40, 40, generator=g)  # resized to 32 and replicated to 3 channels inside
    b = (a * 0.3 + 0.6).clamp(0, 1)
    feats = extractor(a)
    assert feats.shape == (12, 32)
    np.testing.assert_allclose(extractor(a), feats, rtol=1e-5, atol=1e-6)  # no random masking
    same = compute_fid(a, a, extractor, batch_size=5)
    diff = compute_fid(a, b, extractor, batch_size=5)
    assert same["fid"] == pytest.approx(0.0, abs=1e-4)
    assert diff["fid"] > same["fid"] + 1e-3
    assert same["extractor"] == extractor.name and diff["num_a"] == 12
    sim = dataset_similarity(a, a, extractor)
    assert sim["mean_similarity"] == pytest.approx(1.0, abs=1e-5) and sim["extractor"] == extractor.name

    # any callable with a name plugs in
    def pixels(x):
        return x.reshape(len(x), -1)[:, :8].numpy()

    pixels.name = "raw-pixels"
    assert compute_fid(a, b, pixels)["extractor"] == "raw-pixels"
    # uint8 arrays and PIL images are accepted too
    from PIL import Image

    pil = [Image.fromarray((a[i, 0].numpy() * 255).astype(np.uint8)) for i in range(12)]
    assert compute_fid(pil, pil, extractor)["fid"] == pytest.approx(0.0, abs=1e-4)
