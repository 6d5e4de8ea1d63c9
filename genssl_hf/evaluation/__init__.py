"""genssl_hf.evaluation: the paper's evaluation suite.

* :func:`classification_metrics` — per-class ROC AUC and mean AUC (undefined classes reported, not
  averaged), accuracy, and at per-class thresholds sensitivity / specificity / PPV / NPV / F1 /
  balanced accuracy per class and macro, seeded bootstrap CIs (scikit-learn);
* :func:`choose_thresholds` (from ``genssl_hf.training.thresholds``: Youden / target sensitivity /
  prevalence on validation), :func:`resolve_operating_point`, :func:`decision_metrics` — decisions
  at validation-chosen operating points; :func:`calibration_metrics` — ECE and Brier score,
  :func:`plot_reliability_diagram`;
  :func:`format_auc_table` / :func:`format_accuracy_table` — Markdown in the paper's layout;
  ``METRIC_PATH`` — the same metrics as an ``evaluate`` module: ``evaluate.load(METRIC_PATH, "multilabel")``.
* :func:`recalibrated_operating_point` (``fit_platt``, ``fit_temperature``, Youden / keep-sensitivity),
  :func:`draw_calibration_sample` — thresholds re-chosen on a small labelled sample of another site.
* :func:`corrupt`, :func:`robustness_table` — Gaussian blur / noise, JPEG, contrast, motion blur at 5 severities.
* :func:`compute_fid`, :func:`dataset_similarity`, :class:`EncoderFeatureExtractor` — image quality with
  a pluggable, always-named feature extractor; FAISS nearest-neighbour cosine similarity.
* :func:`cls_attention_maps`, :func:`save_attention_overlays` — DINO-style last-layer CLS attention PNGs.
* :func:`masked_reconstruction_losses` — an MAE's masked-patch loss beside the best constant patch and
  the mean image of a reference set (an MAE above the mean image has learnt only the average layout).
* :func:`plot_roc_curves`; :func:`run_evaluation` (``scripts/evaluate.py``) — the results folder.
"""

from pathlib import Path

from genssl_hf.training.thresholds import THRESHOLD_RULES, choose_thresholds, load_thresholds

from .attention import cls_attention_maps, save_attention_overlays
from .calibration import calibration_metrics, expected_calibration_error
from .classification import (
    bootstrap_ci,
    classification_metrics,
    fast_auc,
    format_accuracy_table,
    format_auc_table,
    paired_bootstrap_auc_difference,
)
from .image_quality import (
    EncoderFeatureExtractor,
    compute_fid,
    dataset_similarity,
    extract_features,
    faiss_available,
    frechet_distance,
    mean_nn_cosine_similarity,
)
from .operating_point import decision_metrics, resolve_operating_point
from .plots import plot_reliability_diagram, plot_roc_curves
from .recalibration import (
    RECALIBRATION_METHODS,
    draw_calibration_sample,
    fit_platt,
    fit_temperature,
    recalibrated_operating_point,
)
from .reconstruction import masked_reconstruction_losses
from .robustness import CORRUPTIONS, SEVERITY_PARAMS, corrupt, format_robustness_table, robustness_table

METRIC_PATH = str(Path(__file__).resolve().parent / "metrics" / "cxr_classification")
"""Folder of the ``evaluate`` metric module (``evaluate.load(METRIC_PATH, "multilabel" | "multiclass")``)."""


def run_evaluation(args):
    """See :func:`genssl_hf.evaluation.report.run_evaluation` (imported lazily: it pulls in training code)."""
    from .report import run_evaluation as _run

    return _run(args)


__all__ = [
    "CORRUPTIONS",
    "EncoderFeatureExtractor",
    "METRIC_PATH",
    "RECALIBRATION_METHODS",
    "SEVERITY_PARAMS",
    "THRESHOLD_RULES",
    "calibration_metrics",
    "choose_thresholds",
    "decision_metrics",
    "draw_calibration_sample",
    "fit_platt",
    "fit_temperature",
    "recalibrated_operating_point",
    "expected_calibration_error",
    "load_thresholds",
    "masked_reconstruction_losses",
    "plot_reliability_diagram",
    "resolve_operating_point",
    "bootstrap_ci",
    "paired_bootstrap_auc_difference",
    "classification_metrics",
    "cls_attention_maps",
    "compute_fid",
    "corrupt",
    "dataset_similarity",
    "extract_features",
    "faiss_available",
    "fast_auc",
    "format_accuracy_table",
    "format_auc_table",
    "format_robustness_table",
    "frechet_distance",
    "mean_nn_cosine_similarity",
    "plot_roc_curves",
    "robustness_table",
    "run_evaluation",
    "save_attention_overlays",
]
