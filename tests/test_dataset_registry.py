"""The one registry of dataset names (genssl_hf.data.registry), and scoring a saved classifier on a
plain folder of class sub-folders (``imagefolder:ROOT``) through fine-tuning and evaluation."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genssl_hf.data import registry
from genssl_hf.data.registry import DATASET_SCHEMES, open_labelled_dataset
from genssl_hf.training.finetune_data import load_dataset_spec

torch.set_num_threads(1)


def _disc_image(rng: np.random.Generator, disc: bool, size: int = 32) -> np.ndarray:
    """Noise, plus a bright disc somewhere for the positive class."""
    img = rng.normal(0.35, 0.05, (size, size))
    if disc:
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < (0.18 * size) ** 2] = 0.9
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_class_folders(root: Path, n_per_class: int, seed: int, names=("Clear", "Disc")) -> Path:
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(_disc_image(rng, disc=k == 1)).save(root / name / f"{i:03d}.png")
    return root


def test_every_scheme_is_registered_and_the_old_name_is_the_same_function():
    assert {"kermany", "nih-subset", "nih14", "chexpert", "covidx", "mimic", "imagefolder"} <= set(DATASET_SCHEMES)
    assert load_dataset_spec is open_labelled_dataset
    assert "mimic:ROOT" in registry.describe_schemes()


def test_scheme_dispatch_passes_the_root(monkeypatch):
    seen = []
    monkeypatch.setitem(DATASET_SCHEMES, "mimic", (lambda root, names: seen.append(root) or {"train": "x"}, "m"))
    assert open_labelled_dataset("mimic:/data/mimic-cxr-jpg") == {"train": "x"}
    assert seen == ["/data/mimic-cxr-jpg"]
    with pytest.raises(ValueError, match="needs a folder"):
        open_labelled_dataset("kermany:")


def test_imagefolder_single_split_follows_the_model_classes(tmp_path):
    root = write_class_folders(tmp_path / "held_out", 3, 0, names=("clear", "disc"))
    dd = open_labelled_dataset(f"imagefolder:{root}")
    assert list(dd) == ["test"] and dd["test"].features["label"].names == ["clear", "disc"]
    # matched case-insensitively and ordered as the model's classes
    dd = open_labelled_dataset(f"imagefolder:{root}", label_names=["DISC", "CLEAR"])
    test = dd["test"]
    assert test.features["label"].names == ["DISC", "CLEAR"]
    by_path = {row["path"].split("/")[0]: row["label"] for row in test}
    assert by_path == {"disc": 0, "clear": 1}
    with pytest.raises(ValueError, match=r"\['clear'\] are not among"):
        open_labelled_dataset(f"imagefolder:{root}", label_names=["DISC", "OTHER"])
    with pytest.raises(FileNotFoundError, match="imagefolder"):
        open_labelled_dataset(f"imagefolder:{tmp_path / 'missing'}")


def test_imagefolder_with_split_folders(tmp_path):
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        write_class_folders(tmp_path / "ds" / split, 2, seed)
    dd = open_labelled_dataset(f"imagefolder:{tmp_path / 'ds'}")
    assert sorted(dd) == ["test", "train", "validation"]
    assert all(len(dd[s]) == 4 for s in dd)


@pytest.mark.slow
def test_finetune_and_evaluate_score_a_plain_class_folder(tmp_path):
    """Train on one class-folder dataset, score the selected model on a user's held-out folder (other
    spellings of the class names) during fine-tuning and again with the evaluation script: both beat
    chance by far and agree exactly."""
    from genssl_hf.evaluation.report import main as evaluate_main
    from genssl_hf.training.finetune import main as finetune_main

    for split, n, seed in (("train", 48, 0), ("validation", 12, 1)):
        write_class_folders(tmp_path / "train_data" / split, n, seed)
    held_out = write_class_folders(tmp_path / "held_out", 20, 2, names=("CLEAR", "disc"))
    out = tmp_path / "run"
    result = finetune_main(
        [
            "--model",
            "tiny",
            "--dataset",
            f"imagefolder:{tmp_path / 'train_data'}",
            "--test_dataset",
            f"imagefolder:{held_out}",
            "--image_size",
            "32",
            "--num_train_epochs",
            "6",
            "--warmup_epochs",
            "1",
            "--base_learning_rate",
            "2e-3",
            "--randaug_n",
            "0",
            "--crop_scale",
            "0.8",
            "1.0",
            "--per_device_train_batch_size",
            "32",
            "--per_device_eval_batch_size",
            "64",
            "--num_workers",
            "0",
            "--mixed_precision",
            "no",
            "--logging_steps",
            "5",
            "--seed",
            "0",
            "--n_bootstrap",
            "50",
            "--output_dir",
            str(out),
        ]
    )
    assert result["label_names"] == ["Clear", "Disc"] and result["test"]["num_samples"] == 40
    auc_finetune = result["test"]["per_class"]["Disc"]["auc"]
    assert auc_finetune > 0.9, auc_finetune
    metrics = evaluate_main(
        [
            "--model",
            f"clf={out / 'best'}",
            "--dataset",
            f"imagefolder:{held_out}",
            "--output_dir",
            str(tmp_path / "eval"),
            "--n_bootstrap",
            "20",
            "--attention",
            "0",
        ]
    )
    m = metrics["models"]["clf"]
    assert m["num_samples"] == 40
    assert m["per_class"]["Disc"]["auc"] == pytest.approx(auc_finetune, abs=1e-6)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["dataset"] == f"imagefolder:{held_out}"
    with pytest.raises(ValueError, match="not among the model's classes"):
        wrong = write_class_folders(tmp_path / "wrong", 2, 3, names=("Clear", "Effusion"))
        evaluate_main(
            ["--model", str(out / "best"), "--dataset", f"imagefolder:{wrong}", "--output_dir", str(tmp_path / "eval2")]
        )
