#!/usr/bin/env python
"""Operating points under shift (issue 34, item 4): sensitivity / specificity of a Kermany-trained
pneumonia classifier on the NIH ChestX-ray14 subset, at the thresholds chosen on Kermany validation
against thresholds re-chosen or recalibrated on a small labelled NIH sample
(:mod:`genssl_hf.evaluation.recalibration`).

1. ``real_data``: the protocol's Kermany split (validation 15 %, test 20 %, patient-disjoint, seed 0;
   the stage of ``bench_genssl_realdata.py``).
2. ``finetune``: the shipped ``genssl_hf/nih-genssl-mae-64`` encoder fine-tuned by the protocol's
   chosen recipe ``blr3e-3_light`` at 10 % labels, seed 0 (250 optimiser steps at batch 64, model
   and thresholds selected on validation).
3. ``target``: the NIH subset (all 1,000 images; the classifier never saw NIH) as a binary
   NORMAL / PNEUMONIA set: positives are images with Pneumonia, Consolidation or Infiltration (the
   NIH findings of air-space opacity a pneumonia classifier is meant to call), negatives are
   "No Finding"; images with only other findings are left out (neither normal nor pneumonia).
4. the table: sensitivity / specificity at the validation threshold on Kermany validation / test and
   on NIH (all, the valid + test rows no part of the model saw, PA, AP), and over ``--draws``
   stratified draws of n = 20 / 50 NIH images per method, scored on the NIH images left out
   (:func:`recalibrated_rows`); the ROC figure ``operating_points.png``;
5. ``genssl evaluate --recalibration_method ...`` on the NIH set (the command's own path, one draw).

    OMP_NUM_THREADS=1 python benchmarks/bench_operating_points.py --out /work/runs/recal34/op

Data: ../shared/data (Kermany et al. 2018, CC BY 4.0; NIH Clinical Center, Wang et al. 2017). The
run folder stays local; no figure shows real images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import finish, machine_info, print_machine, record_results  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
ENCODER = "genssl_hf/nih-genssl-mae-64"
PNEUMONIA_FINDINGS = ("Pneumonia", "Consolidation", "Infiltration")
# the protocol's few-shot recipe chosen for GEN-SSL at 10 % (BENCHMARKS, issue 21 session 5)
FINETUNE_ARGS = {
    "recipe": "tiny",
    "image_size": 64,
    "label_fraction": 0.1,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 64,
    "min_steps": 250,
    "selection_metric": "mean_auc",
    "base_learning_rate": 3e-3,
    "randaug_n": 0,
    "crop_scale": [0.8, 1.0],
    "mixed_precision": "bf16",
    "n_bootstrap": 0,
    "test_split": "none",
    "seed": 0,
}


def _cli(*words: str) -> list[str]:
    return [sys.executable, "-m", "genssl_hf", *words]


def _options(opts: dict) -> list[str]:
    out: list[str] = []
    for k, v in opts.items():
        out.append(f"--{k}")
        out.extend(str(x) for x in (v if isinstance(v, list) else [v]))
    return out


def prepare_kermany(out: Path) -> Path:
    """The protocol's Kermany split (the real_data stage of ``bench_genssl_realdata``)."""
    from benchmarks.bench_genssl_realdata import config
    from genssl_hf.pipeline.stages import run_stage
    from genssl_hf.pipeline.steps import stage_real_data

    run_stage(out, stage_real_data(config(False, SHARED)), print)
    return out / "real_data" / "dataset"


def finetune(out: Path, dataset: Path) -> Path:
    """The classifier: the shipped encoder fine-tuned at 10 % labels (skipped when already there)."""
    run = out / "finetune"
    if not (run / "best" / "thresholds.json").is_file():
        opts = {"model": ENCODER, "dataset": str(dataset), "output_dir": str(run), "overwrite_output_dir": True}
        subprocess.run(_cli("finetune", *_options(opts | FINETUNE_ARGS)), check=True)
    return run / "best"


def nih_pneumonia_target(out: Path) -> tuple[Path, dict]:
    """The NIH subset as a NORMAL / PNEUMONIA ``save_to_disk`` dataset (one ``test`` split)."""
    import datasets

    from genssl_hf.data.adapters import load_nih_subset
    from genssl_hf.data.schema import NIH14

    folder = out / "nih_pneumonia"
    dd = load_nih_subset(SHARED / "nih-cxr14-1000-64px", None)
    # the NIH split of each row travels along: the shipped encoder's generator (nih-ldm-64) was trained
    # on the NIH train split, so the valid + test rows are the ones no part of the classifier has seen
    ds = datasets.concatenate_datasets([dd[k].add_column("nih_split", [k] * len(dd[k])) for k in dd])
    positive = {NIH14.index(f) for f in PNEUMONIA_FINDINGS}
    label = [1 if positive & set(r) else (0 if not r else -1) for r in ds["labels"]]
    keep = [i for i, v in enumerate(label) if v >= 0]
    ds = ds.select(keep).select_columns(["image", "view", "age", "nih_split"])
    ds = ds.add_column("label", [label[i] for i in keep])
    ds = ds.cast_column("label", datasets.ClassLabel(names=["NORMAL", "PNEUMONIA"]))
    counts = {"n": len(ds), "positives": int(sum(ds["label"])), "left_out_other_findings": label.count(-1)}
    if not (folder / "dataset_dict.json").is_file():
        datasets.DatasetDict({"test": ds}).save_to_disk(str(folder))
    return folder, counts


def predictions(model: Path, dataset: str, split: str) -> tuple:
    """(targets, probs) of ``model`` on one split, in rows' order (one thread, batches of 128)."""
    import numpy as np

    from genssl_hf.evaluation.report_inputs import LoadedClassifier, _images_and_targets, load_eval_split

    clf = LoadedClassifier(model, "cpu")
    ds = load_eval_split(dataset, split, label_names=clf.label_names)
    images, targets, names, _ = _images_and_targets(ds, clf.image_size, "image")
    assert names == clf.label_names, (names, clf.label_names)
    probs = np.concatenate([clf.predict(images[i : i + 128]) for i in range(0, len(images), 128)])
    return targets, probs


def _rates(y, s, thr):
    import numpy as np

    pred = s >= thr
    return float(np.mean(pred[y == 1])), float(np.mean(~pred[y == 0]))


def _bootstrap_rates(y, s, thr, rng, n_boot: int):
    """95 % bootstrap intervals of (sensitivity, specificity) at ``thr``."""
    import numpy as np

    reps = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        reps.append(_rates(y[i], s[i], thr))
    lo, hi = np.percentile(np.array(reps), [2.5, 97.5], axis=0)
    return lo.tolist(), hi.tolist()


def recalibrated_rows(y, probs, source: dict, sizes, draws: int, seed: int = 0) -> list[dict]:
    """Per (method, n): over ``draws`` stratified calibration samples, the sensitivity / specificity
    of PNEUMONIA on the images left out of the sample. The point is the median over draws; the 95 %
    interval combines the draw and a bootstrap of the scored images (one replicate per draw)."""
    import numpy as np

    from genssl_hf.evaluation.recalibration import (
        RECALIBRATION_METHODS,
        draw_calibration_sample,
        recalibrated_operating_point,
    )

    rng = np.random.default_rng(seed)
    names = ["NORMAL", "PNEUMONIA"]
    rows = []
    for method in RECALIBRATION_METHODS:
        for n in sizes:
            point, spread, thresholds, gain = [], [], [], []
            for d in range(draws):
                sample, rest = draw_calibration_sample(y, n, seed=d)
                op = recalibrated_operating_point(y[sample], probs[sample], names, method, source, sample_name="nih")
                thr = op["thresholds"]["PNEUMONIA"]
                yr, sr = (y[rest] == 1).astype(int), probs[rest, 1]
                point.append(_rates(yr, sr, thr))
                base = _rates(yr, sr, source["thresholds"]["PNEUMONIA"])  # the validation threshold, same rows
                gain.append(sum(point[-1]) - sum(base))  # Youden's J recalibrated minus J at validation
                b = rng.integers(0, len(rest), len(rest))
                spread.append(_rates(yr[b], sr[b], thr))
                thresholds.append(thr)
            point, spread = np.array(point), np.array(spread)
            lo, hi = np.percentile(spread, [2.5, 97.5], axis=0)
            rows.append(
                {
                    "method": method,
                    "n": n,
                    "sensitivity": float(np.median(point[:, 0])),
                    "specificity": float(np.median(point[:, 1])),
                    "sensitivity_ci": [float(lo[0]), float(hi[0])],
                    "specificity_ci": [float(lo[1]), float(hi[1])],
                    "j_gain_median": float(np.median(gain)),
                    "j_gain_range": np.percentile(gain, [2.5, 97.5]).tolist(),
                    "share_draws_j_better": float(np.mean(np.array(gain) > 0)),
                    "threshold_median": float(np.median(thresholds)),
                    "threshold_range": [float(np.percentile(thresholds, 2.5)), float(np.percentile(thresholds, 97.5))],
                    "draws": draws,
                }
            )
            r = rows[-1]
            print(f"  {method} n={n}: sens {r['sensitivity']:.3f} spec {r['specificity']:.3f}", flush=True)
    return rows


def auc_ci(y, s, rng, n_boot: int = 2000) -> list[float]:
    """AUC and its 95 % bootstrap interval."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    reps = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            reps.append(roc_auc_score(y[i], s[i]))
    return [float(roc_auc_score(y, s)), *np.percentile(reps, [2.5, 97.5]).tolist()]


def source_rows(sets: dict, thr: float, rng) -> dict:
    """Per scored set: sensitivity / specificity at the validation threshold (bootstrap CIs), AUC."""
    out = {}
    for name, (y, probs) in sets.items():
        yb, s = (y == 1).astype(int), probs[:, 1]
        sens, spec = _rates(yb, s, thr)
        lo, hi = _bootstrap_rates(yb, s, thr, rng, 2000)
        out[name] = {
            "n": int(len(y)),
            "positives": int(yb.sum()),
            "sensitivity": sens,
            "specificity": spec,
            "sensitivity_ci": [lo[0], hi[0]],
            "specificity_ci": [lo[1], hi[1]],
            "auc": auc_ci(yb, s, rng),
        }
    return out


def _pct(v, ci=None) -> str:
    return f"{100 * v:.1f}" + (f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")


def markdown(source: dict, recal: dict, thr: float) -> str:
    lines = [
        "| Scored set | Threshold | Chosen on | Sensitivity | Specificity | AUC | J gain (draws with J up) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in source.items():
        lines.append(
            f"| {name} (n={r['n']}, {r['positives']} pos.) | {thr:.3f} | Kermany validation (Youden) | "
            f"{_pct(r['sensitivity'], r['sensitivity_ci'])} | {_pct(r['specificity'], r['specificity_ci'])} | "
            f"{_pct(r['auc'][0], r['auc'][1:])} | - |"
        )
    for subset, rows in recal.items():
        for r in rows:
            lines.append(
                f"| {subset}, less the sample | {r['threshold_median']:.3f} ({r['threshold_range'][0]:.3f}-"
                f"{r['threshold_range'][1]:.3f}) | {r['method']}, n={r['n']} NIH images | "
                f"{_pct(r['sensitivity'], r['sensitivity_ci'])} | {_pct(r['specificity'], r['specificity_ci'])} | "
                f"unchanged | {100 * r['j_gain_median']:+.1f} ({100 * r['j_gain_range'][0]:+.1f} to "
                f"{100 * r['j_gain_range'][1]:+.1f}; {100 * r['share_draws_j_better']:.0f} %) |"
            )
    return "\n".join(lines) + "\n"


def figure(sets: dict, thr: float, recal_rows: list[dict], path: Path) -> None:
    """ROC curves (Kermany test, NIH) with the validation operating point and the recalibrated ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for (name, (y, probs)), color in zip(sets.items(), ("tab:blue", "tab:gray", "tab:red")):
        fpr, tpr, _ = roc_curve((y == 1).astype(int), probs[:, 1])
        ax.plot(fpr, tpr, color=color, lw=1.2, label=f"ROC {name}")
        sens, spec = _rates((y == 1).astype(int), probs[:, 1], thr)
        ax.plot(1 - spec, sens, "s", color=color, ms=8, mec="k", label=f"validation threshold on {name}")
    markers = {"platt": "o", "temperature": "v", "youden": "D", "keep_sensitivity": "^"}
    for r in recal_rows:
        spec, sens = r["specificity"], r["sensitivity"]
        xerr = [[spec - r["specificity_ci"][0]], [r["specificity_ci"][1] - spec]]  # specificity CI -> FPR CI
        yerr = [[sens - r["sensitivity_ci"][0]], [r["sensitivity_ci"][1] - sens]]
        filled = r["n"] == 50
        ax.errorbar(
            1 - spec,
            sens,
            xerr=xerr[::-1],
            yerr=yerr,
            fmt=markers[r["method"]],
            color="tab:red",
            mfc="tab:red" if filled else "white",
            ms=6,
            lw=0.7,
            capsize=2,
            label=f"NIH, recalibrated: {r['method']}, n={r['n']}",
        )
    ax.plot([0, 1], [0, 1], ":", color="0.6", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity (pneumonia)", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("Operating points under shift: Kermany-trained classifier on NIH", fontsize=10)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def cli_demo(out: Path, model: Path, target: Path) -> str:
    """The command's own path: ``genssl evaluate`` on the NIH set with every method, n=50, seed 0."""
    run = out / "evaluate_nih"
    cmd = _cli(
        "evaluate", "--model", f"genssl-kermany10={model}", "--dataset", str(target), "--split", "test",
        "--output_dir", str(run), "--overwrite", "--device", "cpu", "--attention", "0",
        "--recalibration_method", "platt", "temperature", "youden", "keep_sensitivity",
        "--recalibration_size", "50", "--recalibration_seed", "0",
    )  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    text = (run / "tables.md").read_text()
    return text[text.index("### Operating points on this site") :]


def main() -> None:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/work/runs/recal34/op"))
    p.add_argument("--draws", type=int, default=200)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info(peaks=False)
    print_machine(info)
    start = time.perf_counter()
    dataset = prepare_kermany(args.out)
    model = finetune(args.out, dataset)
    target, counts = nih_pneumonia_target(args.out)
    source = json.loads((model / "thresholds.json").read_text())
    thr = source["thresholds"]["PNEUMONIA"]
    sets = {
        "Kermany validation": predictions(model, str(dataset), "validation"),
        "Kermany test": predictions(model, str(dataset), "test"),
        "NIH": predictions(model, str(target), "test"),
    }
    import datasets

    rows = datasets.load_from_disk(str(target))["test"]
    views, nih_split = np.array(rows["view"]), np.array(rows["nih_split"])
    rng = np.random.default_rng(0)
    src = source_rows(sets, thr, rng)
    y, probs = sets["NIH"]
    recal = {"NIH": recalibrated_rows(y, probs, source, (20, 50), args.draws)}
    subsets = {
        "NIH valid + test (unseen by the generator)": nih_split != "train",
        "NIH PA": views == "PA",
        "NIH AP": views == "AP",
    }
    for name, keep in subsets.items():
        src[name] = source_rows({name: (y[keep], probs[keep])}, thr, rng)[name]
        recal[name] = recalibrated_rows(y[keep], probs[keep], source, (50,), args.draws)
    table = markdown(src, recal, thr)
    figure(sets, thr, recal["NIH"], args.out / "operating_points.png")
    demo = cli_demo(args.out, model, target)
    seconds = time.perf_counter() - start
    print(table)
    print(demo)
    finish(info)
    row = {
        "name": "operating_points_under_shift",
        "classifier": f"{ENCODER} fine-tuned on Kermany, 10 % labels, recipe blr3e-3_light, seed 0",
        "threshold_rule": "youden on Kermany validation (= sensitivity 90 % here)",
        "validation_threshold": thr,
        "target": {
            "set": "NIH ChestX-ray14 subset, 64 px",
            "positive_findings": list(PNEUMONIA_FINDINGS),
            "negatives": "No Finding",
            **counts,
        },
        "at_validation_threshold": src,
        "recalibrated": recal,
        "seconds": round(seconds, 1),
        "machine": info,
    }
    write = args.out / "operating_points.json"
    write.write_text(json.dumps(row, indent=1))
    (args.out / "operating_points.md").write_text(table + "\n" + demo)
    record_results([row])
    print(f"{seconds:.0f} s; figure {args.out / 'operating_points.png'}")


if __name__ == "__main__":
    main()
