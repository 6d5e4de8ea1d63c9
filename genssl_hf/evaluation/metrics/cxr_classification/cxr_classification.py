"""Chest X-ray classification metrics (GEN-SSL paper) as a Hugging Face ``evaluate`` module.

Load it offline by path (it ships inside the genssl_hf package):

    import evaluate, genssl_hf.evaluation as ev
    metric = evaluate.load(ev.METRIC_PATH, "multilabel")   # or "multiclass"
    metric.compute(predictions=probs, references=targets, label_names=[...], n_bootstrap=1000)

The arithmetic lives in ``genssl_hf.evaluation.classification`` (one implementation, tested there).
"""

import datasets
import evaluate

from genssl_hf.evaluation.classification import classification_metrics

_DESCRIPTION = """
Per-class ROC AUC and mean AUC, accuracy, per-class sensitivity, specificity, PPV, NPV, F1 and
balanced accuracy (and their macro averages), and optional
seeded bootstrap confidence intervals, as reported in GEN-SSL (CheXpert / ChestX-ray14 mAUC,
COVIDx accuracy and COVID-19 sensitivity). A class with a single ground-truth value in the
evaluated set has no AUC: it is reported under `undefined_auc` with the reason and left out of
`mean_auc` (which lists the classes it averages in `mean_auc_classes`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per-sample list of C class probabilities (sigmoid for "multilabel", softmax for
        "multiclass").
    references: "multilabel": per-sample 0/1 list of length C; "multiclass": class index.
    label_names: optional list of C class names.
    threshold: multi-label decision threshold, one number or one per class (default 0.5; choose
        them on validation data, e.g. with genssl_hf.evaluation.choose_thresholds).
    n_bootstrap: number of bootstrap replicates for 95% CIs (0 = none).
    confidence: CI level (default 0.95).
    seed: bootstrap seed.
Returns:
    dict with task, num_samples, label_names, thresholds, per_class, macro, mean_auc,
    mean_auc_classes, undefined_auc, accuracy (and subset_accuracy for multilabel),
    balanced_accuracy, macro_f1, confusion_matrix (multiclass), ci (when n_bootstrap > 0).
Examples:
    >>> metric = evaluate.load(path, "multiclass")
    >>> r = metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])
    >>> r["accuracy"], r["mean_auc"]
    (1.0, 1.0)
"""

_CITATION = """
@article{genssl,
  title={Generative self-supervised learning for chest X-ray classification},
  note={GEN-SSL; metrics as reported in its Tables 1-8}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CxrClassification(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("multilabel", "multiclass", "default"):
            raise KeyError(f"config {self.config_name!r}: use 'multilabel' or 'multiclass'")
        reference = (
            datasets.Value("int32") if self.config_name == "multiclass" else datasets.Sequence(datasets.Value("int32"))
        )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": reference}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html#roc-metrics"],
        )

    def _compute(
        self,
        predictions,
        references,
        label_names=None,
        threshold=0.5,
        n_bootstrap=0,
        confidence=0.95,
        seed=0,
    ):
        return classification_metrics(
            references,
            predictions,
            label_names=label_names,
            threshold=threshold,
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
        )
