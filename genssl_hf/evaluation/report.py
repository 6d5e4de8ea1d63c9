"""The evaluation report behind ``scripts/evaluate.py``: one results folder per run with

* ``metrics.json``: every model's metrics on the split (per-class AUC, mAUC, accuracy; at the
  thresholds chosen on validation: sensitivity, specificity, PPV, NPV, F1, balanced accuracy per
  class and macro; calibration; bootstrap CIs), the operating point it used, and run provenance;
* ``tables.md``: Markdown tables in the paper's layout (per-class AUC + mAUC; accuracy +
  sensitivity), the operating points, decision metrics and calibration, the robustness table and
  the image-quality numbers with their extractor;
* ``roc_<model>.png``: ROC curves; ``reliability_<model>.png``: reliability diagrams;
  ``attention/<model>/attention_###.png``: CLS attention overlays captioned with the predicted
  findings at the chosen thresholds;
* ``robustness.json``, ``image_quality.json``, ``predictions_<model>.npz``, ``run_config.json``.

The folder is written to a temporary path and renamed at the end (nothing half-written).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.evaluation.report_args import build_parser
from genssl_hf.evaluation.attention import saliency_maps, save_attention_overlays
from genssl_hf.evaluation.classification import format_accuracy_table, format_auc_table
from genssl_hf.evaluation.image_quality import EncoderFeatureExtractor, compute_fid, dataset_similarity
from genssl_hf.evaluation.operating_point import (
    decision_metrics,
    format_calibration_table,
    format_decision_table,
    format_operating_point_table,
    format_per_class_decision_table,
    prediction_caption,
    resolve_operating_point,
    saved_operating_point,
)
from genssl_hf.evaluation.plots import plot_reliability_diagram, plot_roc_curves
from genssl_hf.evaluation.recalibration import SITE_NOTE
from genssl_hf.evaluation.recalibration_report import (
    check_recalibration_request,
    external_sample,
    format_recalibration_table,
    recalibration_results,
    split_off_sample,
)
from genssl_hf.evaluation.report_inputs import (
    LoadedClassifier,
    _images_and_targets,
    load_classifier,
    load_eval_split,
    predictions_path,
    safe_file_name,
    sample_indices,
)
from genssl_hf.evaluation.robustness import format_robustness_table, robustness_table
from genssl_hf.utils import atomic_dir, write_json, writer_lock

logger = logging.getLogger(__name__)

__all__ = [
    "safe_file_name",
    "LoadedClassifier",
    "load_classifier",
    "load_eval_split",
    "predictions_path",
    "build_parser",
    "run_evaluation",
    "main",
]


def _parse_models(items: Sequence[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for item in items:
        name, _, path = item.partition("=") if "=" in item else (Path(item).name, "", item)
        if name in models:
            raise ValueError(f"model name {name!r} given twice; name them with NAME=PATH")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--model {item!r}: {path} is not a folder")
        models[name] = path
    return models


def _check_request(args: argparse.Namespace) -> tuple[dict[str, str], Path]:
    """Before any compute: (name -> classifier folder, output folder); something to do, and the inputs it needs."""
    models = _parse_models(args.model)
    if models and not args.dataset:
        raise ValueError("--model needs --dataset")
    if not models and not (args.quality_a and args.quality_b):
        raise ValueError("nothing to do: give --model with --dataset, and/or --quality_a/--quality_b with --extractor")
    if (args.quality_a or args.quality_b) and not (args.quality_a and args.quality_b and args.extractor):
        raise ValueError("image quality needs --quality_a, --quality_b and --extractor")
    check_recalibration_request(args)
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not args.overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")
    return models, out_dir


def _evaluate_classifier(
    args: argparse.Namespace, name: str, clf: LoadedClassifier, folder: str, split, threshold_split, tmp: Path
) -> tuple[dict[str, Any], Any]:
    """One classifier on the split: predictions, operating point, metrics, ROC / reliability plots and
    (when asked) its robustness table and attention overlays. Returns (metrics, robustness or None)."""
    images, targets, label_names, multi_label = _images_and_targets(
        split, clf.image_size, args.image_column, args.max_samples, seed=args.seed
    )
    if label_names != clf.label_names:
        raise ValueError(f"model {name!r} predicts {clf.label_names} but the dataset has {label_names}")
    probs = np.concatenate(
        [
            clf.predict(images[i : i + args.per_device_eval_batch_size])
            for i in range(0, len(images), args.per_device_eval_batch_size)
        ]
    )
    # a labelled target sample drawn from these rows is left out of every score below
    images, targets, probs, sample = split_off_sample(args, images, targets, probs)
    operating_point = resolve_operating_point(
        folder,
        label_names,
        evaluated_split=args.split,
        fixed_threshold=args.threshold,
        rule=args.threshold_rule,
        target_sensitivity=args.target_sensitivity,
        multi_label=multi_label,
        threshold_split=args.threshold_split,
        validation_predictions=_predictor(args, clf, threshold_split),
    )
    m = decision_metrics(
        targets,
        probs,
        label_names,
        operating_point,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        calibration_bins=args.calibration_bins,
    )
    if getattr(args, "recalibration_method", None):
        sample = sample or external_sample(args, clf, lambda ds: _predictor(args, clf, ds, "--recalibration_split")())
        m["recalibration"] = recalibration_results(args, targets, probs, label_names, operating_point, sample)
    m["model_folder"] = str(Path(folder).resolve())
    _save_predictions_and_plots(args, name, targets, probs, label_names, m, tmp)
    robustness = None
    if args.robustness:
        sub = torch.from_numpy(sample_indices(len(images), args.robustness_max_samples, args.seed + 1))
        metric_name = "mean_auc" if multi_label else "accuracy"
        robustness = robustness_table(
            clf.predict,
            images[sub],
            targets[sub.numpy()],
            metric_name=metric_name,
            corruptions=args.corruptions,
            severities=args.severities,
            seed=args.seed,
            batch_size=args.per_device_eval_batch_size,
        )
    if args.attention > 0:
        k = min(args.attention, len(images))
        x = clf.model_input(images[:k])
        maps = saliency_maps(clf.model, x)  # CLS attention (ViT) or Grad-CAM (ResNet)
        pred = probs[:k]
        titles = [
            prediction_caption(targets[i], pred[i], label_names, multi_label, operating_point["thresholds"])
            for i in range(k)
        ]
        boxes = None
        if args.boxes_column:
            boxes = _boxes(split, args.boxes_column, k, clf.image_size, args.image_column)
        save_attention_overlays(images[:k], maps, tmp / "attention" / safe_file_name(name), boxes=boxes, titles=titles)
    return m, robustness


def _save_predictions_and_plots(
    args: argparse.Namespace, name: str, targets, probs, label_names, m: dict[str, Any], tmp: Path
) -> None:
    """``predictions_<model>.npz``, the ROC curves and the reliability diagram of one classifier."""
    np.savez_compressed(predictions_path(tmp, name), probs=probs, targets=targets)
    plot_roc_curves(
        targets,
        probs,
        tmp / f"roc_{safe_file_name(name)}.png",
        label_names=label_names,
        title=f"ROC - {name} ({args.split}, n={len(targets)})",
    )
    plot_reliability_diagram(
        m["calibration"],
        tmp / f"reliability_{safe_file_name(name)}.png",
        title=f"Reliability - {name} ({args.split}, n={len(targets)})",
    )


def _classification_tables(args: argparse.Namespace, metrics_by_model: dict[str, dict[str, Any]]) -> list[str]:
    """The classification sections of ``tables.md``: AUC, accuracy / sensitivity, operating points,
    decisions, per-class decisions and calibration."""
    with_ci = args.n_bootstrap > 0
    first = next(iter(metrics_by_model.values()))
    tables = [f"## Classification ({args.dataset}, split {args.split}, n={first['num_samples']})\n"]
    tables.append("### AUC (percent)\n\n" + format_auc_table(metrics_by_model, with_ci=with_ci))
    tables.append(
        "### Accuracy and sensitivity (percent)\n\n"
        + format_accuracy_table(metrics_by_model, sensitivity_classes=args.sensitivity_classes, with_ci=with_ci)
    )
    tables.append(
        "### Operating points (thresholds chosen on validation)\n\n"
        + format_operating_point_table(metrics_by_model)
        + f"\n{SITE_NOTE}\n"
    )
    tables.append(
        "### Decisions at the operating points, macro average (percent)\n\n"
        + format_decision_table(metrics_by_model, with_ci=with_ci)
    )
    for name, m in metrics_by_model.items():
        tables.append(f"#### {name}: per class (percent)\n\n" + format_per_class_decision_table(m, with_ci=with_ci))
        if "one_vs_rest" in m:
            tables.append(
                f"#### {name}: one-vs-rest at the validation thresholds (percent)\n\n"
                + format_per_class_decision_table(m["one_vs_rest"], with_ci=with_ci)
            )
    tables.append("### Calibration\n\n" + format_calibration_table(metrics_by_model))
    if any("recalibration" in m for m in metrics_by_model.values()):
        tables.append(
            "### Operating points on this site: validation thresholds against thresholds re-chosen on a labelled "
            "sample of it (percent)\n\n" + format_recalibration_table(metrics_by_model, with_ci=with_ci)
        )
    return tables


def _robustness_tables(robustness_by_model: dict[str, Any]) -> list[str]:
    tables = ["## Robustness (paper Table 8)\n"]
    for name, r in robustness_by_model.items():
        tables.append(f"### {name}\n\n" + format_robustness_table(r))
    params = next(iter(robustness_by_model.values()))["severity_params"]
    tables.append(
        "Severity parameters (sizes in pixels at 224 px, scaled with the image): "
        + "; ".join(f"{c}: {v}" for c, v in params.items())
        + "\n"
    )
    return tables


def _quality_table(args: argparse.Namespace, quality: dict[str, Any]) -> str:
    return (
        "## Generated-image quality\n\n"
        f"Feature extractor: `{quality['fid']['extractor']}` (FID compares only under the same extractor)\n\n"
        "| A | B | FID | mean NN cosine similarity (A -> B) | backend |\n|---|---|---|---|---|\n"
        f"| {args.quality_a} | {args.quality_b} | {quality['fid']['fid']:.3f} | "
        f"{quality['similarity']['mean_similarity']:.4f} | {quality['similarity']['backend']} |\n"
    )


def run_evaluation(args: argparse.Namespace) -> dict[str, Any]:
    """Run everything requested by ``args`` and write the results folder; returns the metrics dict."""
    models, out_dir = _check_request(args)
    loaded = {name: LoadedClassifier(path, args.device) for name, path in models.items()}  # fail early
    split, threshold_split = None, None
    if models:
        split = load_eval_split(
            args.dataset,
            args.split,
            config=args.dataset_config,
            phantom_size=args.phantom_size,
            phantom_resolution=args.phantom_resolution,
            seed=args.seed,
            label_names=next(iter(loaded.values())).label_names,
        )
        if args.image_column not in split.features:
            raise KeyError(f"split {args.split!r} has no column {args.image_column!r}: {list(split.features)}")
        threshold_split = _threshold_split(args, models, loaded)
    results: dict[str, Any] = {"models": {}, "dataset": args.dataset, "split": args.split}
    tables: list[str] = []
    with atomic_dir(out_dir, overwrite=args.overwrite) as tmp:
        write_json(tmp / "run_config.json", {k: v for k, v in vars(args).items()})
        metrics_by_model: dict[str, dict[str, Any]] = {}
        robustness_by_model: dict[str, Any] = {}
        for name, clf in loaded.items():
            metrics_by_model[name], robustness = _evaluate_classifier(
                args, name, clf, models[name], split, threshold_split, tmp
            )
            if robustness is not None:
                robustness_by_model[name] = robustness
        if metrics_by_model:
            results["models"] = metrics_by_model
            tables.extend(_classification_tables(args, metrics_by_model))
        if robustness_by_model:
            write_json(tmp / "robustness.json", robustness_by_model)
            results["robustness"] = robustness_by_model
            tables.extend(_robustness_tables(robustness_by_model))
        if args.quality_a and args.quality_b:
            quality = _image_quality(args)
            write_json(tmp / "image_quality.json", quality)
            results["image_quality"] = quality
            tables.append(_quality_table(args, quality))
        write_json(tmp / "metrics.json", results)
        (tmp / "tables.md").write_text("# Evaluation results\n\n" + "\n".join(tables))
    return results


def _threshold_split(args: argparse.Namespace, models: dict[str, str], loaded: dict[str, LoadedClassifier]):
    """The ``--threshold_split`` dataset when some classifier needs thresholds chosen on it (no
    fixed ``--threshold``, no usable thresholds.json), else None. Fails before any compute when a
    multi-label classifier needs it and the dataset lacks it."""
    if args.threshold is not None:
        return None
    needs = [
        name
        for name, clf in loaded.items()
        if saved_operating_point(
            models[name],
            clf.label_names,
            evaluated_split=args.split,
            rule=args.threshold_rule,
            target_sensitivity=args.target_sensitivity,
        )
        is None
    ]
    if not needs:
        return None
    if args.threshold_split in (args.split, "test"):
        raise ValueError(
            f"--threshold_split {args.threshold_split!r}: thresholds are never chosen on the evaluated / "
            f"test split (models without thresholds.json: {needs})"
        )
    try:
        return load_eval_split(
            args.dataset,
            args.threshold_split,
            config=args.dataset_config,
            phantom_size=args.phantom_size,
            phantom_resolution=args.phantom_resolution,
            seed=args.seed,
        )
    except KeyError:
        multi = [n for n in needs if loaded[n].multi_label]
        if multi:
            raise ValueError(
                f"models {multi} have no thresholds.json and dataset {args.dataset!r} has no split "
                f"{args.threshold_split!r} to choose thresholds on: give --threshold_split or a fixed "
                "--threshold"
            ) from None
        return None


def _predictor(args: argparse.Namespace, clf: LoadedClassifier, split, option: str = "--threshold_split"):
    """``() -> (targets, probs)`` of the threshold split (or the split ``option`` names) for this
    classifier (None without one)."""
    if split is None:
        return None

    def predict() -> tuple[np.ndarray, np.ndarray]:
        images, targets, names, _ = _images_and_targets(split, clf.image_size, args.image_column, seed=args.seed)
        if names != clf.label_names:
            raise ValueError(f"{option}: the split has classes {names}, the model {clf.label_names}")
        probs = np.concatenate(
            [
                clf.predict(images[i : i + args.per_device_eval_batch_size])
                for i in range(0, len(images), args.per_device_eval_batch_size)
            ]
        )
        return targets, probs

    return predict


def _boxes(ds, column: str, k: int, size: int, image_column: str):
    if column not in ds.features:
        raise KeyError(f"--boxes_column {column!r} is not a column: {list(ds.features)}")
    out = []
    for i in range(k):
        row = ds[i]
        w, h = (
            row[image_column].size if hasattr(row[image_column], "size") else np.asarray(row[image_column]).shape[::-1]
        )
        sx, sy = size / w, size / h
        out.append([(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in (row[column] or [])])
    return out


def _image_quality(args: argparse.Namespace) -> dict[str, Any]:
    extractor = EncoderFeatureExtractor(args.extractor, pooling=args.extractor_pooling, device=args.device)

    def images(spec: str):
        ds = load_eval_split(
            spec,
            args.quality_split,
            phantom_size=args.quality_max_images,
            phantom_resolution=args.phantom_resolution,
            seed=args.seed,
        )
        n = min(len(ds), args.quality_max_images)
        for i in range(n):
            yield ds[i][args.image_column]

    fid = compute_fid(images(args.quality_a), images(args.quality_b), extractor)
    sim = dataset_similarity(images(args.quality_a), images(args.quality_b), extractor)
    return {
        "fid": fid,
        "similarity": sim,
        "extractor_folder": extractor.source,
        "a": args.quality_a,
        "b": args.quality_b,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    with writer_lock(args.output_dir, "--output_dir", beside=True):  # one evaluation per folder at a time
        results = run_evaluation(args)
    out = Path(args.output_dir)
    print((out / "tables.md").read_text())
    print(f"results: {out.resolve()}")
    return results


if __name__ == "__main__":
    main()
