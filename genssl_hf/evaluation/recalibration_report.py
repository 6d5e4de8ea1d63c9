"""``genssl evaluate --recalibration_method ...``: operating points re-chosen on a small labelled
sample of the evaluated site (:mod:`genssl_hf.evaluation.recalibration`), reported beside the
validation thresholds.

The sample is drawn stratified (``--recalibration_size``, ``--recalibration_seed``) from the
evaluated split itself, unless ``--recalibration_dataset`` / ``--recalibration_split`` name another
set of the same site. Drawn from the evaluated split, its images are removed before anything is
scored, so every operating point (the validation one too) is scored on the same remaining images.
Without ``--recalibration_method`` nothing here runs and the report is as before.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from genssl_hf.evaluation.calibration import calibration_metrics
from genssl_hf.evaluation.classification import _pct
from genssl_hf.evaluation.operating_point import decision_metrics
from genssl_hf.evaluation.recalibration import (
    SITE_NOTE,
    draw_calibration_sample,
    recalibrated_operating_point,
    recalibrated_probabilities,
)

__all__ = [
    "check_recalibration_request",
    "external_sample",
    "format_recalibration_table",
    "recalibration_results",
    "split_off_sample",
]


def _methods(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "recalibration_method", None) or [])


def _from_evaluated_rows(args: argparse.Namespace) -> bool:
    return args.recalibration_dataset in (None, args.dataset) and args.recalibration_split in (None, args.split)


def check_recalibration_request(args: argparse.Namespace) -> None:
    """Before any compute: the recalibration options make sense together."""
    methods = _methods(args)
    if not methods:
        if args.recalibration_dataset or args.recalibration_split:
            raise ValueError("--recalibration_dataset / --recalibration_split need --recalibration_method")
        return
    if len(set(methods)) != len(methods):
        raise ValueError(f"--recalibration_method lists a method twice: {methods}")
    if "keep_sensitivity" in methods and args.threshold is not None:
        raise ValueError(
            "--recalibration_method keep_sensitivity keeps the sensitivity of the validation threshold; a fixed "
            "--threshold has none (drop --threshold, or use youden / platt / temperature)"
        )
    if _from_evaluated_rows(args) and args.max_samples is not None and args.max_samples <= args.recalibration_size:
        raise ValueError(
            f"--recalibration_size {args.recalibration_size} images drawn from the evaluated split would leave "
            f"nothing of --max_samples {args.max_samples} to score"
        )


def split_off_sample(args: argparse.Namespace, images: torch.Tensor, targets: np.ndarray, probs: np.ndarray):
    """``(images, targets, probs, sample)``: when the sample comes from the evaluated rows, the rows
    left to score and the sample (``{"targets", "probs", "name", ...}``); otherwise the rows unchanged
    and None (the sample is read by :func:`external_sample`)."""
    if not _methods(args) or not _from_evaluated_rows(args):
        return images, targets, probs, None
    sample, rest = draw_calibration_sample(
        targets,
        args.recalibration_size,
        args.recalibration_seed,
        what=f"--recalibration_size from split {args.split!r}",
    )
    drawn = {
        "targets": targets[sample],
        "probs": probs[sample],
        "name": f"{args.dataset} split {args.split}, drawn stratified (seed {args.recalibration_seed})",
        "excluded_from_scoring": True,
    }
    return images[torch.from_numpy(rest)], targets[rest], probs[rest], drawn


def external_sample(args: argparse.Namespace, clf, predict_split) -> dict[str, Any]:
    """The sample drawn from ``--recalibration_dataset`` / ``--recalibration_split`` (another set of
    the evaluated site); ``predict_split(split) -> (targets, probs)``."""
    from genssl_hf.evaluation.report_inputs import load_eval_split

    dataset = args.recalibration_dataset or args.dataset
    split_name = args.recalibration_split or args.split
    split = load_eval_split(
        dataset,
        split_name,
        config=args.dataset_config,
        phantom_size=args.phantom_size,
        phantom_resolution=args.phantom_resolution,
        seed=args.seed + 7,  # a phantom stand-in for another set of the site: other images than the scored ones
        label_names=clf.label_names,
    )
    n = args.recalibration_size
    if n > len(split):
        raise ValueError(f"--recalibration_size {n}: {dataset} split {split_name} has only {len(split)} rows")
    targets, probs = predict_split(split)
    sample = np.arange(len(targets))
    if n < len(targets):
        sample, _ = draw_calibration_sample(targets, n, args.recalibration_seed, what="--recalibration_dataset")
    return {
        "targets": targets[sample],
        "probs": probs[sample],
        "name": f"{dataset} split {split_name}, drawn stratified (seed {args.recalibration_seed})",
        "excluded_from_scoring": False,
    }


def recalibration_results(
    args: argparse.Namespace,
    targets: np.ndarray,
    probs: np.ndarray,
    label_names: Sequence[str],
    source: Mapping[str, Any],
    sample: Mapping[str, Any],
) -> dict[str, Any]:
    """Per method: the re-chosen operating point and the decisions there on the scored rows (and,
    for platt / temperature, the calibration of the mapped probabilities)."""
    names = list(label_names)
    methods: dict[str, Any] = {}
    for method in _methods(args):
        op = recalibrated_operating_point(
            sample["targets"],
            sample["probs"],
            names,
            method,
            source,
            sample_name=sample["name"],
            seed=args.recalibration_seed,
        )
        m = decision_metrics(
            targets,
            probs,
            names,
            op,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
            calibration_bins=args.calibration_bins,
        )
        keep = {k: m[k] for k in ("operating_point", "per_class", "macro", "one_vs_rest", "ci") if k in m}
        mapped = recalibrated_probabilities(probs, op, names)
        if mapped is not None and (mapped.shape[1] == 2 or np.asarray(targets).ndim == 2):
            keep["calibration"] = calibration_metrics(targets, mapped, label_names=names, n_bins=args.calibration_bins)
        methods[method] = keep
    sample_targets = np.asarray(sample["targets"])
    onehot = sample_targets if sample_targets.ndim == 2 else np.eye(len(names), dtype=np.int64)[sample_targets]
    return {
        "note": SITE_NOTE,
        "sample": {
            "name": sample["name"],
            "num_samples": int(len(sample_targets)),
            "positives": {nm: int(onehot[:, j].sum()) for j, nm in enumerate(names)},
            "excluded_from_scoring": bool(sample["excluded_from_scoring"]),
        },
        "scored_rows": int(len(targets)),
        "methods": methods,
    }


def _decisions(m: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(per_class, its CIs) at the thresholds: one-vs-rest for a multi-class classifier."""
    part = m.get("one_vs_rest") or m
    return part["per_class"], (part.get("ci") or {}).get("per_class", {})


def _rows(name: str, label: str, source: str, m: Mapping[str, Any], with_ci: bool) -> list[str]:
    per_class, ci = _decisions(m)
    thresholds = m["operating_point"].get("thresholds") or {}
    out = []
    for cls, pc in per_class.items():
        c = ci.get(cls) if with_ci else None
        thr = f"{thresholds[cls]:.3f}" if cls in thresholds else "arg-max"
        sens, spec = (
            _pct(pc.get("sensitivity"), (c or {}).get("sensitivity")),
            _pct(pc.get("specificity"), (c or {}).get("specificity")),
        )
        out.append(f"| {name} | {label} | {source} | {cls} | {thr} | {sens} | {spec} |")
    return out


def format_recalibration_table(metrics_by_model: Mapping[str, Mapping[str, Any]], *, with_ci: bool = True) -> str:
    """Per model and class: sensitivity / specificity at the validation thresholds and at each
    recalibrated operating point, on the same scored rows, with where each threshold came from."""
    lines = [
        "| Model | Operating point | Threshold source | Class | Threshold | Sensitivity | Specificity |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, m in metrics_by_model.items():
        rec = m.get("recalibration")
        if not rec:
            continue
        op = m["operating_point"]
        lines += _rows(name, f"validation ({op['rule']})", op["source"], m, with_ci)
        for method, r in rec["methods"].items():
            lines += _rows(name, f"recalibrated: {method}", r["operating_point"]["source"], r, with_ci)
        s = rec["sample"]
        where = "left out of every score above" if s["excluded_from_scoring"] else "a separate set, not scored"
        notes.append(
            f"- {name}: the sample is {s['num_samples']} labelled images of {s['name']} (positives {s['positives']}), "
            f"{where}; {rec['scored_rows']} images scored."
        )
    return (
        "\n".join(
            lines
            + [""]
            + notes
            + [
                f"- {SITE_NOTE}",
                "- Recalibration moves thresholds (monotone maps of the probability): AUC and the ranking stay.",
            ]
        )
        + "\n"
    )
