"""scripts/evaluate.py: the results folder (metrics JSON, paper tables, ROC, robustness, attention, FID)."""

import json
import runpy
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from genssl_hf.data.schema import COVIDX3, cxr_features
from genssl_hf.evaluation.report import main
from genssl_hf.training.classifier import build_classifier
from genssl_hf.training.finetune_data import InputNormalizer

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _multiclass_dataset(n: int, seed: int, size: int = 32) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = [(rng.random((size, size)) * 60 + 60 * k).astype(np.uint8) for k in labels]
    return datasets.Dataset.from_dict(
        {
            "image": images,
            "label": labels.tolist(),
            "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [""] * n,
            "view": ["PA"] * n,
            "source": ["synthetic"] * n,
        },
        features=cxr_features(COVIDX3, multi_label=False),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "covidx-like"
    datasets.DatasetDict({"train": _multiclass_dataset(30, 0), "test": _multiclass_dataset(36, 1)}).save_to_disk(
        str(data)
    )
    torch.manual_seed(0)
    model = build_classifier("tiny", list(COVIDX3), multi_label=False, image_size=32, pooling="mean")
    folder = root / "clf"
    model.save_pretrained(folder)
    InputNormalizer(image_size=32, num_channels=3).to_processor().save_pretrained(folder)
    return data, folder, root


def test_results_folder_has_metrics_tables_plots_robustness_attention_and_quality(setup):
    data, folder, root = setup
    out = root / "results"
    results = main(
        [
            "--model",
            f"GEN-SSL={folder}",
            "--model",
            f"copy={folder}",
            "--dataset",
            str(data),
            "--split",
            "test",
            "--output_dir",
            str(out),
            "--n_bootstrap",
            "30",
            "--robustness",
            "--corruptions",
            "jpeg",
            "contrast",
            "--severities",
            "1",
            "5",
            "--attention",
            "2",
            "--sensitivity_classes",
            "COVID-19",
            "--quality_a",
            str(data),
            "--quality_b",
            str(data),
            "--quality_split",
            "test",
            "--extractor",
            str(folder),
            "--quality_max_images",
            "20",
            "--device",
            "cpu",
        ]
    )
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for f in (
        "metrics.json",
        "tables.md",
        "run_config.json",
        "roc_GEN-SSL.png",
        "roc_copy.png",
        "robustness.json",
        "image_quality.json",
        "predictions_GEN-SSL.npz",
        "attention/GEN-SSL/attention_000.png",
        "attention/GEN-SSL/attention_001.png",
    ):
        assert f in files, f
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["models"]["GEN-SSL"]
    assert m["task"] == "multi_class" and m["num_samples"] == 36 and m["ci"]["n_bootstrap"] == 30
    assert m == metrics["models"]["copy"] | {"model_folder": m["model_folder"]}
    preds = np.load(out / "predictions_GEN-SSL.npz")
    assert preds["probs"].shape == (36, 3)
    tables = (out / "tables.md").read_text()
    assert "| Method | normal | pneumonia | COVID-19 | mAUC |" in tables
    assert "| Method | Accuracy | Sensitivity (COVID-19) |" in tables
    assert "| GEN-SSL |" in tables and "| copy |" in tables
    assert "| jpeg |" in tables and "| contrast |" in tables
    quality = json.loads((out / "image_quality.json").read_text())
    assert quality["fid"]["fid"] == pytest.approx(0.0, abs=1e-3)  # same set against itself
    assert quality["fid"]["extractor"] in tables and "clf" in quality["fid"]["extractor"]
    assert quality["similarity"]["mean_similarity"] == pytest.approx(1.0, abs=1e-4)
    rob = results["robustness"]["GEN-SSL"]
    assert rob["metric"] == "accuracy" and set(rob["table"]) == {"jpeg", "contrast"}
    with Image.open(out / "roc_GEN-SSL.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    # an existing results folder is never overwritten silently
    with pytest.raises(FileExistsError):
        main(
            [
                "--model",
                str(folder),
                "--dataset",
                str(data),
                "--output_dir",
                str(out),
                "--attention",
                "0",
                "--n_bootstrap",
                "0",
            ]
        )


def test_bad_arguments_fail_before_work(setup, tmp_path):
    data, folder, _ = setup
    with pytest.raises(FileNotFoundError):
        main(["--model", str(tmp_path / "nope"), "--dataset", str(data), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="nothing to do"):
        main(["--output_dir", str(tmp_path / "o")])
    with pytest.raises(KeyError, match="no split"):
        main(
            [
                "--model",
                str(folder),
                "--dataset",
                str(data),
                "--split",
                "validation",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    assert not (tmp_path / "o").exists()


def test_scripts_run_as_files(monkeypatch, capsys):
    # in-process (runpy) so the test does not pay a fresh interpreter's torch import
    for script in ("finetune.py", "evaluate.py"):
        monkeypatch.setattr(sys, "argv", [script, "--help"])
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        assert exc.value.code == 0
        assert "--output_dir" in capsys.readouterr().out


@pytest.mark.realdata
def test_finetune_and_evaluate_on_the_real_nih_subset(shared_data, tmp_path):
    """The NIH ChestX-ray14 subset through its adapter: a short fine-tune, then the report; rare
    findings absent from the 200-image test split are reported as undefined, not averaged."""
    from genssl_hf.training.finetune import main as finetune_main

    root = shared_data / "nih-cxr14-1000-64px"
    if not (root / "labels.csv").is_file():
        pytest.skip("NIH subset not present")
    run = tmp_path / "nih"
    result = finetune_main(
        [
            "--model",
            "tiny",
            "--dataset",
            f"nih-subset:{root}",
            "--image_size",
            "32",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "64",
            "--max_train_samples",
            "192",
            "--randaug_n",
            "0",
            "--num_workers",
            "0",
            "--mixed_precision",
            "no",
            "--output_dir",
            str(run),
        ]
    )
    assert len(result["label_names"]) == 14 and result["test"]["num_samples"] == 200
    report = main(
        [
            "--model",
            f"tiny={run / 'best'}",
            "--dataset",
            f"nih-subset:{root}",
            "--split",
            "test",
            "--output_dir",
            str(tmp_path / "report"),
            "--n_bootstrap",
            "0",
            "--attention",
            "1",
        ]
    )
    m = report["models"]["tiny"]
    for name, reason in m["undefined_auc"].items():
        assert m["per_class"][name]["auc"] is None and reason
    assert len(m["mean_auc_classes"]) + len(m["undefined_auc"]) == 14
    assert (tmp_path / "report" / "attention" / "tiny" / "attention_000.png").is_file()
