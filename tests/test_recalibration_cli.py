"""``genssl evaluate --recalibration_method ...`` (issue 34, item 4): the labelled target sample is drawn
stratified and left out of the scores, every operating point names its threshold source, the output
says thresholds are site-specific, and nothing changes without the options."""

import json

import datasets
import numpy as np
import pytest
import torch

from genssl_hf.data.schema import cxr_features
from genssl_hf.evaluation.report import main
from genssl_hf.training.classifier import build_classifier
from genssl_hf.training.finetune_data import InputNormalizer

NAMES = ["NORMAL", "PNEUMONIA"]
METHODS = ["platt", "temperature", "youden", "keep_sensitivity"]
torch.set_num_threads(1)


def _binary(n: int, seed: int, size: int = 32) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(int)  # a third positive
    images = [(rng.random((size, size)) * 120 + 80 * k).astype(np.uint8) for k in labels]
    return datasets.Dataset.from_dict(
        {
            "image": images,
            "label": labels.tolist(),
            "patient_id": [f"p{seed}_{i}" for i in range(n)],
            "study_id": [""] * n,
            "view": ["PA"] * n,
            "source": ["synthetic"] * n,
        },
        features=cxr_features(NAMES, multi_label=False),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recal")
    data = root / "site"
    splits = {"validation": _binary(45, 1), "test": _binary(60, 2), "train": _binary(30, 0)}
    datasets.DatasetDict(splits).save_to_disk(str(data))
    torch.manual_seed(0)
    model = build_classifier("tiny", NAMES, multi_label=False, image_size=32, pooling="mean")
    folder = root / "clf"
    model.save_pretrained(folder)
    InputNormalizer(image_size=32, num_channels=3).to_processor().save_pretrained(folder)
    return data, folder, root


def _run(setup, name, *extra):
    data, folder, root = setup
    base = ["--model", f"clf={folder}", "--dataset", str(data), "--split", "test", "--output_dir", str(root / name)]
    return main(base + ["--n_bootstrap", "20", "--attention", "0", "--device", "cpu", *extra])


def test_the_sample_is_left_out_and_every_operating_point_names_its_source(setup):
    _, _, root = setup
    res = _run(setup, "with", "--recalibration_method", *METHODS, "--recalibration_size", "21")
    m = res["models"]["clf"]
    assert m["num_samples"] == 60 - 21  # every score, the validation one too, on the rows left
    rec = m["recalibration"]
    assert rec["sample"]["num_samples"] == 21 and rec["sample"]["positives"]["PNEUMONIA"] == 7  # stratified
    assert rec["sample"]["excluded_from_scoring"] and rec["scored_rows"] == 39
    assert "site-specific" in rec["note"]
    assert m["operating_point"]["source"].startswith("chosen at evaluation on split 'validation'")
    for method in METHODS:
        op = rec["methods"][method]["operating_point"]
        assert op["rule"] == f"recalibrated: {method}" and "21 labelled target images" in op["source"]
        assert (
            set(op["thresholds"]) == set(NAMES)
            and "sensitivity" in rec["methods"][method]["one_vs_rest"]["ci"]["per_class"]["NORMAL"]
        )
    assert "calibration" in rec["methods"]["platt"] and "calibration" not in rec["methods"]["youden"]
    # keep_sensitivity holds the validation sensitivity as its target
    ks = rec["methods"]["keep_sensitivity"]["operating_point"]["recalibration"]["per_class"]["PNEUMONIA"]
    val = m["operating_point"]["rules"]["youden"]["PNEUMONIA"]["sensitivity"]
    assert ks["target_sensitivity"] == pytest.approx(val) and ks["sensitivity"] >= val - 1e-12
    tables = (root / "with" / "tables.md").read_text()
    assert "Thresholds are site-specific" in tables and "recalibrated: temperature" in tables
    assert "left out of every score above; 39 images scored" in tables
    assert (
        json.loads((root / "with" / "metrics.json").read_text())["models"]["clf"]["recalibration"]["scored_rows"] == 39
    )


def test_a_sample_from_another_split_leaves_the_scored_rows_whole_and_the_output_is_unchanged_without(setup):
    _, _, root = setup
    other = _run(
        setup,
        "other",
        "--recalibration_method",
        "youden",
        "--recalibration_split",
        "validation",
        "--recalibration_size",
        "45",
    )
    m = other["models"]["clf"]
    assert m["num_samples"] == 60 and m["recalibration"]["sample"]["num_samples"] == 45  # the whole split
    assert not m["recalibration"]["sample"]["excluded_from_scoring"]
    plain = _run(setup, "plain")["models"]["clf"]
    plain_tables = (root / "plain" / "tables.md").read_text()
    assert "recalibration" not in plain and "re-chosen" not in plain_tables
    assert "Thresholds are site-specific" in plain_tables  # every operating-point table says so
    # the scores at the validation thresholds are those of the plain run (same rows, same thresholds)
    assert plain["one_vs_rest"]["per_class"] == m["one_vs_rest"]["per_class"]


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        (["--recalibration_method", "keep_sensitivity", "--threshold", "0.5"], ValueError, "fixed --threshold"),
        (["--recalibration_split", "validation"], ValueError, "need --recalibration_method"),
        (["--recalibration_method", "youden", "youden"], ValueError, "twice"),
        (
            ["--recalibration_method", "youden", "--max_samples", "40", "--recalibration_size", "40"],
            ValueError,
            "nothing",
        ),
        (["--recalibration_method", "isotonic"], SystemExit, None),
        (["--recalibration_method", "youden", "--recalibration_size", "5"], SystemExit, None),
    ],
)
def test_bad_recalibration_options_fail_before_work(setup, extra, error, match):
    with pytest.raises(error, match=match):
        _run(setup, "bad", *extra)
    assert not (setup[2] / "bad").exists()
