import json

import datasets
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from genssl_hf.data.export import export_parquet
from genssl_hf.data.phantom import (
    FINDING_SIDES,
    finding_gallery,
    findings_from_text,
    phantom_dataset,
    phantom_splits,
    render_grid,
    sample_phantom,
    write_report,
)
from genssl_hf.data.schema import CHEXPERT5, label_names_of


def test_deterministic_and_seed_dependent():
    a, b, c = sample_phantom(7, 96), sample_phantom(7, 96), sample_phantom(8, 96)
    assert np.array_equal(a.image, b.image) and a.report == b.report
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_any_resolution(size):
    s = sample_phantom(1, size)
    assert s.image.shape == (size, size) and s.image.dtype == np.uint8
    # A radiograph: dark air outside the body, bright mediastinum, darker lungs.
    assert s.image[1, 1] < 60 and s.image[1, -2] < 60
    assert s.image[size // 2, size // 2] > s.image[int(size * 0.4), int(size * 0.25)]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="size"):
        sample_phantom(0, 16)
    with pytest.raises(ValueError, match="unknown phantom finding"):
        sample_phantom(0, 64, {"Pneumothorax": {}})
    with pytest.raises(ValueError, match="side"):
        sample_phantom(0, 64, {"Edema": {"side": "left"}})
    with pytest.raises(ValueError, match="no side"):
        sample_phantom(0, 64, {"Cardiomegaly": {"side": "left"}})


def test_labels_report_and_params_agree():
    spec = {"Pleural Effusion": {"size": "big", "side": "left"}, "Cardiomegaly": {"size": "small"}}
    s = sample_phantom(3, 128, spec)
    assert s.labels.tolist() == [0, 1, 0, 0, 1]
    assert s.report.startswith("Small cardiomegaly. Big left-sided pleural effusion.")
    assert "No atelectasis." in s.report and "No edema." in s.report
    assert 0.55 <= s.findings["Cardiomegaly"]["cardiothoracic_ratio"] <= 0.60
    assert findings_from_text(s.report) == {
        "Cardiomegaly": {"size": "small"},
        "Pleural Effusion": {"size": "big", "side": "left"},
    }
    # Elaborated prompts: "X with <feature>" is the positive class, "X with no <feature>" the negative.
    assert findings_from_text("Edema with perihilar congestion") == {"Edema": {"size": "big", "side": "bilateral"}}
    assert findings_from_text("Edema with no perihilar congestion") == {}
    normal = sample_phantom(3, 64, {})
    assert normal.labels.sum() == 0 and normal.report.count("No ") == 5


def test_findings_change_the_image_where_expected():
    # Same seed, same anatomy: the left effusion brightens the image's right lower zone only.
    base = sample_phantom(11, 128, {}).image.astype(float)
    eff = sample_phantom(11, 128, {"Pleural Effusion": {"size": "big", "side": "left"}}).image.astype(float)
    diff = eff - base
    right_lower, left_lower = diff[70:100, 70:110].mean(), diff[70:100, 18:58].mean()
    assert right_lower > 10 and abs(left_lower) < 2


def test_heuristic_vocabulary_roundtrip():
    for name, sides in FINDING_SIDES.items():
        for size in ("small", "big"):
            for side in sides or (None,):
                spec = {name: {"size": size} | ({"side": side} if side else {})}
                assert findings_from_text(write_report(spec)) == spec


def test_dataset_schema_and_parquet_roundtrip_bit_identical(tmp_path):
    splits = phantom_splits({"train": 40, "test": 12}, size=64, seed=5, cache_dir=str(tmp_path / "cache"))
    assert set(splits["train"]["patient_id"]).isdisjoint(splits["test"]["patient_id"])
    assert label_names_of(splits["train"].features) == list(CHEXPERT5)
    row = splits["train"][0]
    assert row["image"].mode == "L" and row["image"].size == (64, 64)
    assert json.loads(row["findings"]).keys() == {CHEXPERT5[i] for i in row["labels"]}
    out = export_parquet(splits, tmp_path / "phantom", rows_per_shard=16)
    reloaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache2"))
    for split in ("train", "test"):
        assert reloaded[split].features == splits[split].features
        assert reloaded[split].data.table.equals(splits[split].data.table)
    streamed = next(iter(datasets.load_dataset(str(out), split="test", streaming=True)))
    assert streamed["report"] == splits["test"][0]["report"]
    with pytest.raises(FileExistsError):
        export_parquet(splits, out)


def test_dataset_is_reproducible(tmp_path):
    a = phantom_dataset(10, 64, seed=3, cache_dir=str(tmp_path / "a"))
    b = phantom_dataset(10, 64, seed=3, cache_dir=str(tmp_path / "b"))
    assert a.data.table.equals(b.data.table)
    with pytest.raises(ValueError, match="num_samples"):
        phantom_dataset(0)


def test_sample_grid_png(tmp_path):
    images, captions = finding_gallery(64, seed=0)
    assert len(images) == 1 + 6 + 2 + 6 + 2 + 6  # normal + the heuristic grid where sides exist
    path = render_grid(images, captions, tmp_path / "grid.png", ncols=6)
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300


@pytest.mark.slow
def test_phantoms_are_learnable():
    """A small CNN trained on 2k phantoms clearly beats a constant predictor on held-out phantoms."""
    import torch

    from genssl_hf.data.phantom_classifier import phantom_arrays, train_phantom_oracle

    torch.set_num_threads(1)
    oracle = train_phantom_oracle(num_train=2000, size=48, epochs=6, seed=0)
    x, y = phantom_arrays(400, 48, seed=0, split="test")
    probs = oracle.predict(x)
    aucs = [roc_auc_score(y[:, i], probs[:, i]) for i in range(len(CHEXPERT5))]
    # A constant predictor scores AUC 0.5 on every finding.
    assert min(aucs) > 0.75, dict(zip(CHEXPERT5, aucs))
    assert np.mean(aucs) > 0.88, dict(zip(CHEXPERT5, aucs))
