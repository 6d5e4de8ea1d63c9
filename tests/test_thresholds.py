"""Operating points chosen on validation (never on test), decision metrics beside the AUCs,
calibration, and how they reach the report, the fine-tuned classifier and the pipeline table."""

import json
import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_curve,
)

from genssl_hf.data.schema import cxr_features
from genssl_hf.evaluation.calibration import calibration_bins, calibration_metrics, expected_calibration_error
from genssl_hf.evaluation.classification import classification_metrics
from genssl_hf.evaluation.operating_point import (
    decision_metrics,
    format_decision_table,
    format_operating_point_table,
    format_per_class_decision_table,
    prediction_caption,
    resolve_operating_point,
)
from genssl_hf.evaluation.plots import plot_reliability_diagram
from genssl_hf.training.thresholds import (
    THRESHOLDS_FILE,
    choose_thresholds,
    load_thresholds,
    save_thresholds,
    select_threshold,
    threshold_vector,
)

torch.set_num_threads(1)

# A finding whose classifier never reaches 0.5 (the demo's situation), fixed by hand.
# validation: positives {0.30, 0.35, 0.40, 0.20}, negatives {0.05, 0.10, 0.15, 0.25, 0.12, 0.08}
VAL_Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
VAL_S = np.array([0.30, 0.35, 0.40, 0.20, 0.05, 0.10, 0.15, 0.25, 0.12, 0.08])
# test: positives {0.18, 0.22, 0.10, 0.45, 0.30}, negatives {0.05, 0.19, 0.12, 0.02, 0.16}
TEST_Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
TEST_S = np.array([0.18, 0.22, 0.10, 0.45, 0.30, 0.05, 0.19, 0.12, 0.02, 0.16])


def test_half_predicts_nothing_and_the_validation_threshold_gives_the_hand_computed_sensitivity():
    at_half = classification_metrics(TEST_Y[:, None], TEST_S[:, None], label_names=["Effusion"], threshold=0.5)
    assert at_half["per_class"]["Effusion"]["sensitivity"] == 0.0  # no test score reaches 0.5
    assert at_half["per_class"]["Effusion"]["ppv"] is None  # nothing called positive: PPV undefined, not 0
    # Youden on validation: cut ">= 0.20" gives TPR 4/4, FPR 1/6 (only 0.25): J = 5/6, the best;
    # ">= 0.30" gives 3/4 - 0 = 0.75. Threshold = midpoint of 0.20 and the next lower score 0.15.
    record = choose_thresholds(VAL_Y[:, None], VAL_S[:, None], ["Effusion"])
    assert record["rule"] == "youden" and record["split"] == "validation"
    assert record["thresholds"]["Effusion"] == pytest.approx(0.175)
    op = record["rules"]["youden"]["Effusion"]
    assert op["sensitivity"] == 1.0 and op["specificity"] == pytest.approx(5 / 6)
    m = classification_metrics(
        TEST_Y[:, None], TEST_S[:, None], label_names=["Effusion"], threshold=threshold_vector(record, ["Effusion"])
    )
    pc = m["per_class"]["Effusion"]
    # test at 0.175: positives 0.18, 0.22, 0.45, 0.30 called (0.10 missed) -> 4/5;
    # negatives: 0.19 called -> specificity 4/5, PPV 4/5, NPV 4/5, F1 4/5, balanced accuracy 4/5
    assert pc["sensitivity"] == pytest.approx(4 / 5)
    assert pc["specificity"] == pytest.approx(4 / 5)
    assert (pc["tp"], pc["fp"], pc["tn"], pc["fn"]) == (4, 1, 4, 1)
    assert pc["ppv"] == pytest.approx(4 / 5) and pc["npv"] == pytest.approx(4 / 5)
    assert pc["f1"] == pytest.approx(4 / 5) and pc["balanced_accuracy"] == pytest.approx(4 / 5)
    assert m["thresholds"] == {"Effusion": pytest.approx(0.175)}


def test_target_sensitivity_and_prevalence_rules_by_hand():
    # target 0.7 of 4 positives needs 3: the highest cut reaching it is ">= 0.30" (next lower 0.25)
    sens = select_threshold(VAL_Y, VAL_S, "sensitivity", target_sensitivity=0.7)
    assert sens["threshold"] == pytest.approx(0.275) and sens["sensitivity"] == 0.75
    # target 0.9 needs all 4: ">= 0.20"
    assert select_threshold(VAL_Y, VAL_S, "sensitivity", target_sensitivity=0.9)["threshold"] == pytest.approx(0.175)
    # prevalence 4/10: call the top 4 (0.40, 0.35, 0.30, 0.25), cut between 0.25 and 0.20
    prev = select_threshold(VAL_Y, VAL_S, "prevalence")
    assert prev["threshold"] == pytest.approx(0.225) and prev["predicted_positive_rate"] == pytest.approx(0.4)


def test_rules_are_optimal_over_every_cut_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.clip(0.15 * y + rng.beta(2, 5, 300), 0, 1).round(2)  # ties included
    fpr, tpr, cuts = roc_curve(y, s)
    j = tpr - fpr
    t = select_threshold(y, s, "youden")["threshold"]
    pred = s >= t
    assert recall_score(y, pred) - (1 - recall_score(1 - y, 1 - pred)) == pytest.approx(j.max())
    t90 = select_threshold(y, s, "sensitivity", target_sensitivity=0.9)["threshold"]
    assert recall_score(y, s >= t90) >= 0.9
    cut = s[s >= t90].min()  # the lowest score called positive
    assert recall_score(y, s >= s[s > cut].min()) < 0.9  # the next higher cut misses the target
    tp = select_threshold(y, s, "prevalence")["threshold"]
    rates = [(s >= c).mean() for c in np.unique(s)]
    assert abs((s >= tp).mean() - y.mean()) == pytest.approx(min(abs(r - y.mean()) for r in rates))


def test_test_labels_never_move_the_thresholds():
    """Thresholds are a function of validation data only: shuffling (or replacing) the test labels
    leaves every rule's thresholds unchanged, while the test metrics do change."""
    rng = np.random.default_rng(1)
    names = ["A", "B", "C"]
    val_y = rng.integers(0, 2, (80, 3))
    val_s = np.clip(0.3 * val_y + 0.6 * rng.random((80, 3)), 0, 1)
    test_y = rng.integers(0, 2, (60, 3))
    test_s = np.clip(0.3 * test_y + 0.6 * rng.random((60, 3)), 0, 1)
    shuffled = test_y[rng.permutation(60)]

    def evaluate(test_labels):
        op = resolve_operating_point(
            "/nonexistent",
            names,
            multi_label=True,
            evaluated_split="test",
            validation_predictions=lambda: (val_y, val_s),
        )
        return op, decision_metrics(test_labels, test_s, names, op)

    op1, m1 = evaluate(test_y)
    op2, m2 = evaluate(shuffled)
    assert op1 == op2 and m1["thresholds"] == m2["thresholds"]
    assert m1["per_class"] != m2["per_class"]  # the test labels did change the test metrics
    with pytest.raises(ValueError, match="never on the test split"):
        choose_thresholds(test_y, test_s, names, split="test")
    with pytest.raises(ValueError, match="evaluated / test"):
        resolve_operating_point(
            "/nonexistent",
            names,
            multi_label=True,
            evaluated_split="test",
            threshold_split="test",
            validation_predictions=lambda: (test_y, test_s),
        )


def test_single_valued_class_falls_back_and_says_why(tmp_path):
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.2], [0.1, 0.4]])
    record = choose_thresholds(y, s, ["A", "B"])
    assert record["thresholds"]["B"] == 0.5 and "no positive" in record["rules"]["youden"]["B"]["undefined_reason"]
    assert record["positives"] == {"A": 2, "B": 0}
    save_thresholds(tmp_path, record)
    assert load_thresholds(tmp_path) == json.loads(json.dumps(record))
    assert load_thresholds(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="rule"):
        choose_thresholds(y, s, ["A", "B"], rule="f1")


def test_decision_metrics_match_scikit_learn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (120, 3))
    s = np.clip(0.25 * y + 0.7 * rng.random((120, 3)), 0, 1)
    thr = np.array([0.4, 0.5, 0.6])
    m = classification_metrics(y, s, label_names=["a", "b", "c"], threshold=thr)
    for j, nm in enumerate("abc"):
        pred = s[:, j] >= thr[j]
        pc = m["per_class"][nm]
        assert pc["sensitivity"] == pytest.approx(recall_score(y[:, j], pred))
        assert pc["specificity"] == pytest.approx(recall_score(1 - y[:, j], 1 - pred))
        assert pc["ppv"] == pytest.approx(precision_score(y[:, j], pred))
        assert pc["npv"] == pytest.approx(precision_score(1 - y[:, j], 1 - pred))
        assert pc["f1"] == pytest.approx(f1_score(y[:, j], pred))
        assert pc["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[:, j], pred))
        assert pc["threshold"] == thr[j]
    assert m["macro_f1"] == pytest.approx(f1_score(y, s >= thr, average="macro"))
    assert m["macro"]["sensitivity"] == pytest.approx(recall_score(y, s >= thr, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([m["per_class"][n]["balanced_accuracy"] for n in "abc"]))
    # multi-class: arg-max, per-class rates from the confusion matrix
    yc = rng.integers(0, 3, 90)
    sc = rng.dirichlet([1, 1, 1], 90) + np.eye(3)[yc] * 0.3
    sc /= sc.sum(1, keepdims=True)
    mc = classification_metrics(yc, sc, label_names=["n", "p", "c"])
    arg = sc.argmax(1)
    assert mc["confusion_matrix"] == confusion_matrix(yc, arg).tolist()
    assert mc["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(yc, arg))
    assert mc["macro_f1"] == pytest.approx(f1_score(yc, arg, average="macro"))
    assert mc["per_class"]["c"]["ppv"] == pytest.approx(precision_score(yc == 2, arg == 2))
    assert mc["thresholds"] is None


def test_bootstrap_covers_every_decision_metric():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (150, 2))
    s = np.clip(0.3 * y + 0.6 * rng.random((150, 2)), 0, 1)
    m = classification_metrics(y, s, label_names=["a", "b"], threshold=[0.45, 0.5], n_bootstrap=200, seed=0)
    ci = m["ci"]
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy"):
        assert ci["macro"][key]["low"] <= m["macro"][key] <= ci["macro"][key]["high"], key
        assert ci["per_class"]["a"][key]["low"] <= m["per_class"]["a"][key] <= ci["per_class"]["a"][key]["high"]
    assert ci["balanced_accuracy"]["low"] <= m["balanced_accuracy"] <= ci["balanced_accuracy"]["high"]
    assert ci["macro_f1"]["valid_replicates"] == 200
    assert classification_metrics(y, s, threshold=[0.45, 0.5], n_bootstrap=200, seed=0)["ci"]["macro"] == ci["macro"]
    with pytest.raises(ValueError, match="one value per class"):
        classification_metrics(y, s, threshold=[0.5, 0.5, 0.5])


def test_ece_by_hand_and_bins_match_scikit_learn(tmp_path):
    # bins of width 0.5: {0.1, 0.2, 0.3} (labels 0, 0, 1) and {0.8, 0.9} (labels 1, 0)
    y = np.array([0, 0, 1, 1, 0])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    # |1/3 - 0.2| * 3/5 + |1/2 - 0.85| * 2/5 = 0.08 + 0.14
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.22)
    rng = np.random.default_rng(4)
    pr = rng.random(4000)
    yr = (rng.random(4000) < pr).astype(int)  # calibrated by construction
    assert expected_calibration_error(yr, pr) < 0.03
    assert expected_calibration_error(yr, pr**3) > 0.1
    bins = calibration_bins(yr, pr, 10)
    prob_true, prob_pred = calibration_curve(yr, pr, n_bins=10)
    np.testing.assert_allclose([o for o in bins["observed"] if o is not None], prob_true)
    np.testing.assert_allclose([m for m in bins["mean_predicted"] if m is not None], prob_pred)
    # multi-class: top-label ECE, one-vs-rest per class
    yc = rng.integers(0, 3, 300)
    sc = rng.dirichlet([2, 2, 2], 300)
    cal = calibration_metrics(yc, sc, label_names=["x", "y", "z"])
    correct = (sc.argmax(1) == yc).astype(int)
    assert cal["ece"] == pytest.approx(expected_calibration_error(correct, sc.max(1)))
    assert cal["ece_kind"].startswith("top-label") and set(cal["per_class"]) == {"x", "y", "z"}


def test_reliability_diagram_is_a_real_figure(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (400, 2))
    s = np.clip(0.35 * y + 0.3 * rng.random((400, 2)), 0, 1)  # under-confident for positives
    cal = calibration_metrics(y, s, label_names=["Edema", "Atelectasis"])
    path = plot_reliability_diagram(cal, tmp_path / "reliability.png", title="Reliability - test")
    with Image.open(path) as im:
        px = np.asarray(im.convert("L"), dtype=np.float64)
    assert im.size[0] > 400 and px.std() > 20  # not a blank or flat figure


def test_caption_names_findings_at_their_thresholds_with_probabilities():
    names = ["Atelectasis", "Cardiomegaly"]
    thr = {"Atelectasis": 0.3, "Cardiomegaly": 0.2}
    cap = prediction_caption([0, 1], [0.1, 0.42], names, True, thr)
    assert cap.splitlines()[0] == "true: Cardiomegaly" and "pred: Cardiomegaly 0.42" in cap
    none = prediction_caption([1, 0], [0.25, 0.1], names, True, thr)
    assert "none (closest: Atelectasis 0.25 < 0.30)" in none.replace("\n", " ")
    assert prediction_caption(1, [0.2, 0.8], names, False, None) == "true: Cardiomegaly\npred: Cardiomegaly 0.80"


def test_tables_show_thresholds_and_macro_decisions():
    names = ["Effusion"]
    op = resolve_operating_point(
        "/nonexistent",
        names,
        multi_label=True,
        evaluated_split="test",
        validation_predictions=lambda: (VAL_Y[:, None], VAL_S[:, None]),
    )
    m = decision_metrics(TEST_Y[:, None], TEST_S[:, None], names, op, n_bootstrap=20)
    assert "| GEN-SSL | youden | validation (n=10) | 0.175 |" in format_operating_point_table({"GEN-SSL": m})
    assert "| GEN-SSL | 80.0 (" in format_decision_table({"GEN-SSL": m})
    assert "| Effusion | 0.175 | 5 | 80.0 (" in format_per_class_decision_table(m)
    assert m["calibration"]["ece"] >= 0 and m["operating_point"]["source"].startswith("chosen at evaluation")
    fixed = resolve_operating_point(
        "/nonexistent",
        names,
        multi_label=True,
        evaluated_split="test",
        validation_predictions=None,
        fixed_threshold=0.5,
    )
    assert fixed["rule"] == "fixed" and fixed["thresholds"] == {"Effusion": 0.5}
    with pytest.raises(ValueError, match="no split 'validation'"):
        resolve_operating_point(
            "/nonexistent", names, multi_label=True, evaluated_split="test", validation_predictions=None
        )


# ------------------------------------------------------------------ report and fine-tuning, end to end
def _multilabel_dataset(n: int, seed: int, size: int = 32, shuffle_labels: bool = False) -> datasets.Dataset:
    """Rare findings (~15 %): a bright disc top ('Top') or bottom ('Bottom')."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for _ in range(n):
        img = rng.normal(0.35, 0.05, (size, size))
        lab = []
        for k, (lo, hi) in enumerate([(0.15, 0.35), (0.65, 0.85)]):
            if rng.random() < 0.15:
                cy, cx = rng.uniform(lo, hi) * size, rng.uniform(0.25, 0.75) * size
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < (0.15 * size) ** 2] = 0.9
                lab.append(k)
        images.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
        labels.append(lab)
    if shuffle_labels:
        labels = [labels[i] for i in rng.permutation(n)]
    return datasets.Dataset.from_dict(
        {
            "image": images,
            "labels": labels,
            "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [""] * n,
            "view": ["PA"] * n,
            "source": ["synthetic"] * n,
        },
        features=cxr_features(["Top", "Bottom"]),
    )


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("operating_points")
    splits = {"train": _multilabel_dataset(160, 0), "validation": _multilabel_dataset(64, 1)}
    plain, shuffled = root / "data", root / "data_shuffled_test"
    datasets.DatasetDict(splits | {"test": _multilabel_dataset(64, 2)}).save_to_disk(str(plain))
    datasets.DatasetDict(splits | {"test": _multilabel_dataset(64, 2, shuffle_labels=True)}).save_to_disk(str(shuffled))
    return root, plain, shuffled


def test_report_chooses_on_validation_and_ignores_test_labels(data_dirs):
    from genssl_hf.evaluation.report import main
    from genssl_hf.training.classifier import build_classifier
    from genssl_hf.training.finetune_data import InputNormalizer

    root, plain, shuffled = data_dirs
    torch.manual_seed(0)
    folder = root / "clf"
    build_classifier("tiny", ["Top", "Bottom"], multi_label=True, image_size=32, pooling="mean").save_pretrained(folder)
    InputNormalizer(image_size=32, num_channels=3).to_processor().save_pretrained(folder)
    common = ["--model", f"m={folder}", "--split", "test", "--n_bootstrap", "20", "--attention", "1", "--device", "cpu"]
    a = main(common + ["--dataset", str(plain), "--output_dir", str(root / "a")])["models"]["m"]
    b = main(common + ["--dataset", str(shuffled), "--output_dir", str(root / "b")])["models"]["m"]
    assert a["operating_point"]["split"] == "validation" and a["operating_point"]["num_samples"] == 64
    assert a["operating_point"] == b["operating_point"] and a["thresholds"] == b["thresholds"]
    assert a["per_class"] != b["per_class"]
    for f in ("reliability_m.png", "tables.md", "attention/m/attention_000.png"):
        assert (root / "a" / f).is_file(), f
    tables = (root / "a" / "tables.md").read_text()
    assert "### Operating points" in tables and "| m | youden | validation (n=64) |" in tables
    assert "Balanced acc." in tables and "### Calibration" in tables
    # a thresholds.json saved with the classifier takes precedence over re-choosing
    record = choose_thresholds(np.array([[0, 1], [1, 0]]), np.array([[0.2, 0.7], [0.6, 0.1]]), ["Top", "Bottom"])
    save_thresholds(folder, record)
    c = main(common + ["--dataset", str(plain), "--output_dir", str(root / "c")])["models"]["m"]
    assert c["thresholds"] == record["thresholds"] and THRESHOLDS_FILE in c["operating_point"]["source"]
    (folder / THRESHOLDS_FILE).unlink()
    # no validation split to choose on, no sidecar: a clear error before any output
    test_only = root / "test_only"
    datasets.DatasetDict({"test": _multilabel_dataset(20, 3)}).save_to_disk(str(test_only))
    with pytest.raises(ValueError, match="no split 'validation'"):
        main(common + ["--dataset", str(test_only), "--output_dir", str(root / "d")])
    assert not (root / "d").exists()
    with pytest.raises(ValueError, match="never chosen on the evaluated"):
        main(common + ["--dataset", str(plain), "--output_dir", str(root / "e"), "--threshold_split", "test"])


def test_finetune_chooses_thresholds_from_validation_labels_only_and_saves_them(data_dirs, monkeypatch):
    """Every threshold choice during fine-tuning sees the validation labels and nothing else (two
    runs are not bit-identical on CPU, so this checks the inputs rather than comparing runs); the
    saved thresholds reproduce from the saved best model's validation predictions."""
    import genssl_hf.training.finetune as ft

    root, plain, _ = data_dirs
    seen = []
    real_choose = ft.choose_thresholds
    monkeypatch.setattr(
        ft, "choose_thresholds", lambda y, s, names, **kw: seen.append(np.array(y)) or real_choose(y, s, names, **kw)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ft.main(
            [
                "--model",
                "tiny",
                "--num_train_epochs",
                "2",
                "--warmup_epochs",
                "1",
                "--base_learning_rate",
                "2e-3",
                "--per_device_train_batch_size",
                "32",
                "--per_device_eval_batch_size",
                "64",
                "--num_workers",
                "0",
                "--image_size",
                "32",
                "--mixed_precision",
                "no",
                "--logging_steps",
                "2",
                "--seed",
                "0",
                "--randaug_n",
                "0",
                "--dataset",
                str(plain),
                "--output_dir",
                str(root / "ft"),
            ]
        )
    splits = datasets.load_from_disk(str(plain))
    val_targets = np.zeros((64, 2), dtype=np.int64)
    for i, labels in enumerate(splits["validation"]["labels"]):
        val_targets[i, labels] = 1
    assert seen and all(np.array_equal(y, val_targets) for y in seen)
    saved = load_thresholds(root / "ft" / "best")
    assert saved["split"] == "validation" and saved["num_samples"] == 64 and saved["rule"] == "youden"
    assert saved["selected_at_step"] == result["best"]["step"] and result["thresholds"] == saved
    assert set(saved["rules"]) == {"youden", "sensitivity", "prevalence"}
    assert result["test"]["thresholds"] == saved["thresholds"]  # test metrics at the validation thresholds
    from genssl_hf.evaluation.report_inputs import LoadedClassifier, _images_and_targets

    clf = LoadedClassifier(root / "ft" / "best")
    images, targets, names, _ = _images_and_targets(splits["validation"], clf.image_size, "image")
    again = choose_thresholds(targets, clf.predict(images), names)
    np.testing.assert_allclose(threshold_vector(again, names), threshold_vector(saved, names), atol=1e-4)


def test_pipeline_table_has_balanced_accuracy_and_macro_f1_beside_mauc(tmp_path):
    from genssl_hf.evaluation.report_inputs import safe_file_name
    from genssl_hf.pipeline.results import build_results
    from genssl_hf.utils import write_json

    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, (80, 2))
    models = {}
    for title, signal in (("Random init", 0.1), ("GEN-SSL (AdaIN)", 0.4)):
        s = np.clip(signal * y + 0.5 * rng.random((80, 2)), 0, 1)
        op = {"rule": "youden", "thresholds": {"a": 0.3, "b": 0.3}, "split": "validation", "num_samples": 40}
        models[title] = decision_metrics(y, s, ["a", "b"], op, n_bootstrap=50)
        np.savez_compressed(tmp_path / f"predictions_{safe_file_name(title)}.npz", probs=s, targets=y)
    write_json(tmp_path / "metrics.json", {"models": models})
    out = build_results(tmp_path, {"random_init": "Random init", "genssl": "GEN-SSL (AdaIN)"}, {}, n_bootstrap=50)
    table = (tmp_path / "results.md").read_text()
    assert "| Variant | Test mAUC (95% CI) | Balanced accuracy (95% CI) | Macro F1 (95% CI) |" in table
    ba = models["GEN-SSL (AdaIN)"]["balanced_accuracy"]
    assert f"{100 * ba:.1f} (" in table and "chosen on the validation split (youden)" in table
    assert out["rows"][1]["balanced_accuracy"]["value"] == pytest.approx(ba)


def test_multiclass_keeps_argmax_and_adds_one_vs_rest_operating_points():
    names = ["normal", "pneumonia", "COVID-19"]
    rng = np.random.default_rng(7)
    val_y, test_y = rng.integers(0, 3, 60), rng.integers(0, 3, 50)
    val_s, test_s = (rng.dirichlet([1, 1, 1], n) + 0.5 * np.eye(3)[y] for n, y in ((60, val_y), (50, test_y)))
    val_s, test_s = val_s / val_s.sum(1, keepdims=True), test_s / test_s.sum(1, keepdims=True)
    op = resolve_operating_point(
        "/nonexistent", names, multi_label=False, evaluated_split="test", validation_predictions=lambda: (val_y, val_s)
    )
    m = decision_metrics(test_y, test_s, names, op, n_bootstrap=20)
    assert m["accuracy"] == pytest.approx((test_s.argmax(1) == test_y).mean())  # arg-max, not thresholds
    assert m["per_class"]["COVID-19"]["sensitivity"] == pytest.approx(recall_score(test_y == 2, test_s.argmax(1) == 2))
    covid_t = op["thresholds"]["COVID-19"]
    assert covid_t == choose_thresholds(val_y, val_s, names)["thresholds"]["COVID-19"]
    ovr = m["one_vs_rest"]["per_class"]["COVID-19"]
    assert ovr["sensitivity"] == pytest.approx(recall_score(test_y == 2, test_s[:, 2] >= covid_t))
    assert "| COVID-19 | " in format_per_class_decision_table(m["one_vs_rest"])
    assert "arg-max" in format_per_class_decision_table(m)
    # without thresholds or a validation split: arg-max only, no one-vs-rest block
    plain = resolve_operating_point(
        "/nonexistent", names, multi_label=False, evaluated_split="test", validation_predictions=None
    )
    assert plain["thresholds"] is None and "one_vs_rest" not in decision_metrics(test_y, test_s, names, plain)


def test_mauc_bar_chart_greys_only_the_baseline_and_names_the_fraction(tmp_path, monkeypatch):
    """A protocol evaluation has no ``random_init`` row: no bar is grey there (it was always the first
    bar); the title carries the evaluation's label fraction and seed."""
    import matplotlib.axes

    from genssl_hf.pipeline import results as results_mod

    seen = {}
    real_bar, real_title = matplotlib.axes.Axes.bar, matplotlib.axes.Axes.set_title

    def bar(self, *args, color=None, **kwargs):
        seen["colours"] = list(color)
        return real_bar(self, *args, color=color, **kwargs)

    def set_title(self, text, *args, **kwargs):
        seen["title"] = text
        return real_title(self, text, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", set_title)
    rows = [
        {"variant": v, "title": v, "mean_auc": 0.9, "low": 0.85, "high": 0.95}
        for v in ("random_init_adain", "genssl", "real_mae")
    ]
    results_mod._plot(rows, tmp_path / "a.png", "random_init", "0.1 of the labelled training split (seed 2)")
    assert seen["colours"] == ["#3b7dd8"] * 3 and "0.1 of the labelled training split (seed 2)" in seen["title"]
    results_mod._plot(rows[::-1], tmp_path / "b.png", "random_init_adain")
    assert seen["colours"] == ["#3b7dd8", "#3b7dd8", "#999999"] and (tmp_path / "b.png").stat().st_size > 0
