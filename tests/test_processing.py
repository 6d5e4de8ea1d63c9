"""AdaINImageProcessor, reference statistics and tensor augmentations."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import genssl_hf  # noqa: F401  (registers the processor with AutoImageProcessor)
from genssl_hf.processing import (
    AdaINImageProcessor,
    MAEAugment,
    ReferenceStatsAccumulator,
    RunningMoments,
    adain_batch,
    compute_reference_stats,
)

torch.set_num_threads(1)  # the test machine is shared: one thread avoids oversubscription stalls


def _images(n=6, h=48, w=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = np.linspace(20 + 10 * i, 200 - 5 * i, w)[None, :] * np.ones((h, 1))
        out.append(np.clip(base + rng.normal(0, 5 + 3 * i, (h, w)), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def phantoms():
    datasets = pytest.importorskip("datasets")
    try:
        from genssl_hf.data.phantom import phantom_dataset
    except ImportError:
        return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in _images(8)]})
    return phantom_dataset(8, size=64, seed=3)


def test_adain_output_matches_reference_stats():
    proc = AdaINImageProcessor(size=32, adain_mean=0.42, adain_std=0.17, do_normalize=False, num_channels=1)
    pv = proc(_images(), return_tensors="np")["pixel_values"]
    assert pv.shape == (6, 1, 32, 32) and pv.dtype == np.float32
    np.testing.assert_allclose(pv.mean(axis=(1, 2, 3)), 0.42, atol=1e-5)
    np.testing.assert_allclose(pv.std(axis=(1, 2, 3)), 0.17, atol=1e-5)
    # With normalisation and 3 channels: identical channels, affine map of the same values.
    proc3 = AdaINImageProcessor(size=32, adain_mean=0.42, adain_std=0.17, image_mean=[0.5], image_std=[0.25])
    pv3 = proc3(_images(), return_tensors="np")["pixel_values"]
    assert pv3.shape == (6, 3, 32, 32)
    np.testing.assert_allclose(pv3[:, 0], pv3[:, 2])
    np.testing.assert_allclose(pv3[:, :1] * 0.25 + 0.5, pv, atol=1e-5)


def test_adain_flat_image_and_off_switch():
    flat = np.full((20, 20), 77, np.uint8)
    proc = AdaINImageProcessor(size=16, do_normalize=False, num_channels=1, adain_mean=0.3, adain_std=0.1)
    pv = proc(flat, return_tensors="np")["pixel_values"]
    assert np.isfinite(pv).all()
    np.testing.assert_allclose(pv, 0.3, atol=1e-6)  # flat -> mu(Y), no division by zero
    off = AdaINImageProcessor(size=20, do_adain=False, do_normalize=False, num_channels=1)
    np.testing.assert_allclose(off(flat, return_tensors="np")["pixel_values"], 77 / 255, atol=1e-6)


def test_pil_numpy_torch_inputs_agree():
    proc = AdaINImageProcessor(size=24)
    gray = _images(1)[0]
    rgb = np.stack([gray, np.roll(gray, 3, 1), gray // 2], -1)
    for arr in (gray, rgb):
        ref = proc(Image.fromarray(arr), return_tensors="pt")["pixel_values"]
        variants = [arr, torch.from_numpy(arr)]
        if arr.ndim == 3:
            variants.append(torch.from_numpy(arr).permute(2, 0, 1))  # CHW torch layout
        for v in variants:
            out = proc(v, return_tensors="pt")["pixel_values"]
            torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    batch = proc([Image.fromarray(gray)] * 2 + [gray], return_tensors="pt")["pixel_values"]
    assert batch.shape == (3, 3, 24, 24)


def test_reference_stats_pooled_and_per_image(phantoms):
    arrays = [np.asarray(im.convert("L"), dtype=np.float64) / 255 for im in phantoms["image"]]
    pooled = np.concatenate([a.ravel() for a in arrays])
    s = compute_reference_stats(phantoms, statistic="pooled", dataset_name="phantom-test")
    assert s.num_images == len(arrays) and s.statistic == "pooled" and s.dataset_name == "phantom-test"
    assert s.mean == pytest.approx(pooled.mean(), abs=1e-9) and s.std == pytest.approx(pooled.std(), abs=1e-9)
    assert s.per_image_mean == pytest.approx(np.mean([a.mean() for a in arrays]), abs=1e-9)
    assert s.per_image_std == pytest.approx(np.mean([a.std() for a in arrays]), abs=1e-9)
    assert s.pooled_std >= s.per_image_std  # pooled adds between-image spread
    p = compute_reference_stats(phantoms, statistic="per_image")
    assert (p.mean, p.std) == (s.per_image_mean, s.per_image_std) and p.content_hash == s.content_hash
    # Streaming (IterableDataset) gives the same numbers and hash.
    it = compute_reference_stats(phantoms.to_iterable_dataset(num_shards=2), statistic="pooled")
    assert it.content_hash == s.content_hash and it.mean == pytest.approx(s.mean, abs=1e-12)


def test_running_moments_merge_is_exact():
    rng = np.random.default_rng(1)
    parts = [rng.normal(3, 2, n) for n in (1, 7, 1000, 13)]
    m = RunningMoments()
    for p in reversed(parts):
        m.merge(RunningMoments.of(p))
    allv = np.concatenate(parts)
    assert m.n == allv.size and m.mean == pytest.approx(allv.mean()) and m.std == pytest.approx(allv.std())
    a, b, whole = ReferenceStatsAccumulator(), ReferenceStatsAccumulator(), ReferenceStatsAccumulator()
    imgs = [x / 255.0 for x in _images(5)]
    for i, x in enumerate(imgs):
        (a if i < 2 else b).add(x)
        whole.add(x)
    merged = a.merge(b).result("per_image")
    ref = whole.result("per_image")
    assert merged.mean == pytest.approx(ref.mean) and merged.pooled_std == pytest.approx(ref.pooled_std)


def test_reference_stats_bad_input():
    datasets = pytest.importorskip("datasets")
    with pytest.raises(ValueError, match="empty"):
        compute_reference_stats(datasets.Dataset.from_dict({"image": []}))
    with pytest.raises(KeyError, match="no column 'image'"):
        compute_reference_stats(datasets.Dataset.from_dict({"pixels": [1]}))
    with pytest.raises(ValueError, match="statistic"):
        compute_reference_stats([np.zeros((4, 4))], statistic="median")


def test_save_load_with_provenance_and_auto_class(tmp_path, phantoms):
    from transformers import AutoImageProcessor

    stats = compute_reference_stats(phantoms, statistic="per_image", dataset_name="phantom-test", size=32)
    proc = AdaINImageProcessor.from_reference_stats(stats, size=32)
    proc.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert cfg["image_processor_type"] == "AdaINImageProcessor"
    assert cfg["adain_mean"] == pytest.approx(stats.per_image_mean)
    prov = cfg["reference_stats"]
    assert prov["dataset_name"] == "phantom-test" and prov["num_images"] == 8
    assert prov["statistic"] == "per_image" and len(prov["content_hash"]) == 64
    loaded = AutoImageProcessor.from_pretrained(tmp_path)  # no trust_remote_code
    assert type(loaded) is AdaINImageProcessor
    imgs = list(phantoms["image"][:3])
    np.testing.assert_array_equal(
        loaded(imgs, return_tensors="np")["pixel_values"], proc(imgs, return_tensors="np")["pixel_values"]
    )


def test_processor_rejects_bad_config():
    with pytest.raises(ValueError, match="num_channels"):
        AdaINImageProcessor(num_channels=2)
    with pytest.raises(ValueError, match="adain_std"):
        AdaINImageProcessor(adain_std=0.0)


def test_adain_batch_and_augment():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * torch.linspace(0.2, 1, 4).view(4, 1, 1, 1)
    y = adain_batch(x, 0.5, 0.2)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.full((4,), 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(1, 2, 3), correction=0), torch.full((4,), 0.2), atol=1e-5, rtol=0)
    assert torch.isfinite(adain_batch(torch.zeros(2, 1, 8, 8), 0.5, 0.2)).all()
    imgs = (torch.rand(5, 1, 40, 40) * 255).to(torch.uint8)
    aug = MAEAugment(32, adain_mode="after_crop", adain_mean=0.4, adain_std=0.1, image_mean=0.0, image_std=1.0)
    out = aug(imgs)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.full((5,), 0.4), atol=1e-4, rtol=0)
    before = MAEAugment(32, adain_mode="before_crop", image_mean=0.0, image_std=1.0, out_channels=1)(imgs)
    assert before.shape == (5, 1, 32, 32)
    torch.manual_seed(1)
    a = aug(imgs)
    torch.manual_seed(1)
    torch.testing.assert_close(aug(imgs), a)  # randomness comes from the seeded global RNG


def test_stats_command_line(tmp_path, phantoms):
    from genssl_hf.processing import stats as stats_mod

    phantoms.save_to_disk(str(tmp_path / "ds"))
    assert (
        stats_mod.main(
            [
                "--dataset",
                str(tmp_path / "ds"),
                "--output",
                str(tmp_path / "s.json"),
                "--statistic",
                "pooled",
                "--dataset_name",
                "phantom-test",
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["statistic"] == "pooled" and saved["num_images"] == 8 and saved["dataset_name"] == "phantom-test"
    assert AdaINImageProcessor.from_reference_stats(saved).adain_std == pytest.approx(saved["pooled_std"])
