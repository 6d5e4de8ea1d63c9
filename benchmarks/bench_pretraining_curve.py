"""Downstream quality against pre-training steps (issue 34 item 1): the frozen-feature linear probe and
kNN test AUC of every saved checkpoint of one or more MAE runs, beside the fine-tuned test AUC the
protocol measured at the lengths it fine-tuned; one figure, one table, one ``results.json`` row.

    python benchmarks/bench_pretraining_curve.py \\
        --run "GEN-SSL=/work/runs/kermany_long/model" --run "MAE on real images=/work/runs/kermany_long_real/model" \\
        --dataset /work/runs/kermany_base/real_data/dataset \\
        --finetuned "GEN-SSL=genssl@460,genssl_10k@10000" \\
        --finetuned "MAE on real images=real_mae@540,real_10k@10000" \\
        --pooled /work/runs/kermany_base/protocol_pooled_long.json --output-dir /work/runs/curve

A run is its final model folder; its checkpoints are the ``checkpoint-N`` folders beside it and the
copies in ``<run>/../snapshots/step_N`` (a trainer keeps only its newest checkpoints, so a long run's
earlier ones are copied there while it trains). Each checkpoint's weights are loaded into the final
folder's ``ViTMAEForPreTraining`` (strictly: every tensor must match) and saved as a model folder with
the run's image processor; step 0 is the ``tiny`` preset's seeded random weights behind the same
processor. Probe protocol: :func:`genssl_hf.evaluation.frozen_features.frozen_feature_table` (mean-pooled
last-layer tokens, logistic regression with C chosen on validation, the fine-tuning label subsets).
The probe points of a run trained with a cosine schedule over N steps are snapshots of that run, not
runs that were annealed at each length: only the last point of a run is a finished pre-training.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import finish, machine_info, print_machine, record_results  # noqa: E402

STEP_FOLDER = re.compile(r"^(?:checkpoint|step)[-_](\d+)$")


def checkpoint_weights(run: Path) -> dict[int, Path]:
    """Step -> weights file of every checkpoint of the run whose final folder is ``run``."""
    found: dict[int, Path] = {}
    for folder in [*run.glob("checkpoint-*"), *(run.parent / "snapshots").glob("step_*")]:
        m = STEP_FOLDER.match(folder.name)
        if m and (folder / "model.safetensors").is_file():
            found.setdefault(int(m.group(1)), folder / "model.safetensors")
    return dict(sorted(found.items()))


def final_step(run: Path) -> int:
    """The number of optimiser steps the final folder was trained for (its run config)."""
    cfg = json.loads((run / "run_config.json").read_text())
    args, derived = cfg.get("args", {}), cfg.get("derived", {})
    return int(args.get("max_steps") or derived["total_steps"])


def encoder_from_checkpoint(run: Path, weights: Path, out: Path) -> Path:
    """A model folder with the checkpoint's weights in the final folder's architecture and processor."""
    import torch
    from safetensors.torch import load_file
    from transformers import ViTMAEForPreTraining

    model = ViTMAEForPreTraining.from_pretrained(str(run))
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not fit {run} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.save_pretrained(str(out))
    shutil.copy(run / "preprocessor_config.json", out / "preprocessor_config.json")
    reloaded = ViTMAEForPreTraining.from_pretrained(str(out)).state_dict()
    if any(not torch.equal(reloaded[k], v) for k, v in model.state_dict().items()):
        raise RuntimeError(f"{out}: the saved encoder does not reload exactly")
    return out


def parse_named(text: str, option: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        parser.error(f"{option}: expected NAME=VALUE; got {text!r}")
    return name, value


def parse_finetuned(text: str, parser: argparse.ArgumentParser) -> list[tuple[str, int]]:
    """``ARM@STEPS,ARM@STEPS``: the protocol arms fine-tuned from this run's lengths."""
    points = []
    for item in text.split(","):
        arm, sep, steps = item.partition("@")
        if not sep or not arm or not steps.isdigit():
            parser.error(f"--finetuned: expected ARM@STEPS[,ARM@STEPS...]; got {text!r}")
        points.append((arm, int(steps)))
    return points


def finetuned_points(pooled: list[dict], spec: dict[str, list[tuple[str, int]]]) -> list[dict]:
    """The protocol's pooled rows of the named arms, as (run, steps, fraction, mean, min, max, seeds)."""
    by_key = {(r["arm"], r["fraction"]): r for r in pooled}
    points = []
    for run, arms in spec.items():
        for arm, steps in arms:
            rows = [r for (a, _), r in by_key.items() if a == arm]
            if not rows:
                raise ValueError(f"--finetuned {run}: arm {arm!r} is in none of the --pooled files")
            for r in rows:
                points.append(
                    {
                        "run": run,
                        "arm": arm,
                        "steps": steps,
                        "fraction": r["fraction"],
                        "mean": r["mean"],
                        "min": r["min"],
                        "max": r["max"],
                        "seeds": len(r["seeds"]),
                    }
                )
    return points


def probe_rows(table: dict, titles: dict[str, tuple[str, int]]) -> list[dict]:
    """Mean over seeds of the probe and kNN AUC per (run, steps, fraction)."""
    import numpy as np

    grouped: dict[tuple[str, int, float], list[dict]] = {}
    for row in table["rows"]:
        run, steps = titles[row["encoder"]]
        grouped.setdefault((run, steps, row["fraction"]), []).append(row)
    return [
        {
            "run": run,
            "steps": steps,
            "fraction": fraction,
            "probe_auc": float(np.mean([r["probe_auc"] for r in rows])),
            "probe_auc_min": float(np.min([r["probe_auc"] for r in rows])),
            "probe_auc_max": float(np.max([r["probe_auc"] for r in rows])),
            "knn_auc": float(np.mean([r["knn_auc"] for r in rows])),
            "seeds": len(rows),
        }
        for (run, steps, fraction), rows in sorted(grouped.items())
    ]


def draw(probes: list[dict], finetuned: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({r["fraction"] for r in probes})
    runs = list(dict.fromkeys(r["run"] for r in probes))
    colours = dict(zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, len(fractions), figsize=(5.5 * len(fractions), 4.2), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        for run in runs:
            rows = [r for r in probes if r["run"] == run and r["fraction"] == fraction]
            xs = [r["steps"] for r in rows]
            ax.plot(xs, [100 * r["probe_auc"] for r in rows], "-o", ms=3, color=colours[run], label=f"{run}: probe")
            ax.fill_between(
                xs,
                [100 * r["probe_auc_min"] for r in rows],
                [100 * r["probe_auc_max"] for r in rows],
                color=colours[run],
                alpha=0.15,
            )
            ft = sorted(
                (p for p in finetuned if p["run"] == run and p["fraction"] == fraction), key=lambda p: p["steps"]
            )
            if ft:
                ax.errorbar(
                    [p["steps"] for p in ft],
                    [100 * p["mean"] for p in ft],
                    yerr=[
                        [100 * (p["mean"] - p["min"]) for p in ft],
                        [100 * (p["max"] - p["mean"]) for p in ft],
                    ],
                    fmt="s--",
                    ms=7,
                    capsize=4,
                    color=colours[run],
                    label=f"{run}: fine-tuned",
                )
        ax.set_title(f"Kermany test AUC at {fraction:.0%} labels")
        ax.set_xlabel("pre-training steps (batch 128)")
        ax.set_ylabel("test AUC (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Frozen linear probe (line, seed min-max band) and fine-tuned (squares, seed min-max) against steps\n"
        "in-split test; absolute AUCs drop on other sites",
        fontsize=9,
    )
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def markdown(probes: list[dict], finetuned: list[dict]) -> str:
    lines = [
        "| Run | Steps | Fraction | Probe AUC (seed min-max) | kNN AUC | Fine-tuned AUC (seed min-max) |",
        "|---|---|---|---|---|---|",
    ]
    ft = {(p["run"], p["steps"], p["fraction"]): p for p in finetuned}
    for r in probes:
        p = ft.get((r["run"], r["steps"], r["fraction"]))
        cell = f"{100 * p['mean']:.1f} ({100 * p['min']:.1f}-{100 * p['max']:.1f})" if p else ""
        lines.append(
            f"| {r['run']} | {r['steps']} | {r['fraction']:.0%} | {100 * r['probe_auc']:.1f} "
            f"({100 * r['probe_auc_min']:.1f}-{100 * r['probe_auc_max']:.1f}) | {100 * r['knn_auc']:.1f} | {cell} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FINAL_MODEL_FOLDER")
    parser.add_argument("--dataset", required=True, help="the labelled real dataset (train / validation / test)")
    parser.add_argument("--finetuned", action="append", default=[], metavar="NAME=ARM@STEPS[,ARM@STEPS]")
    parser.add_argument("--pooled", action="append", default=[], help="protocol_pooled*.json files to read")
    parser.add_argument("--fractions", default="0.01,0.1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--every", type=int, default=1, help="probe every k-th checkpoint (the last always)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--record-name", default="genssl_realdata_kermany_long_curve")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    runs = dict(parse_named(t, "--run", parser) for t in args.run)
    for name, folder in runs.items():
        if not (Path(folder) / "run_config.json").is_file():
            parser.error(f"--run {name}: {folder} is not a finished run folder (no run_config.json)")
    finetuned = {}
    for text in args.finetuned:
        name, value = parse_named(text, "--finetuned", parser)
        if name not in runs:
            parser.error(f"--finetuned {name}: no --run of that name; runs: {list(runs)}")
        finetuned[name] = parse_finetuned(value, parser)
    if finetuned and not args.pooled:
        parser.error("--finetuned needs --pooled (the protocol's pooled results)")
    pooled = [row for f in args.pooled for row in json.loads(Path(f).read_text())]
    ft_points = finetuned_points(pooled, finetuned)  # fails on an unknown arm before any compute
    fractions = [float(x) for x in args.fractions.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.every < 1:
        parser.error(f"--every must be >= 1; got {args.every}")
    import datasets

    from genssl_hf.evaluation.frozen_features import frozen_feature_table

    dataset = datasets.load_dataset(args.dataset)
    info = machine_info()
    print_machine(info)
    start = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoders, titles = {}, {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".encoders-") as tmp:
        for name, folder in runs.items():
            run = Path(folder)
            last, weights = final_step(run), checkpoint_weights(run)
            steps = [s for s in weights if s < last][args.every - 1 :: args.every]
            title = f"{name} @ 0"
            encoders[title], titles[title] = {"init": "tiny", "image_processor": str(run)}, (name, 0)
            for s in steps:
                title = f"{name} @ {s}"
                folder_s = encoder_from_checkpoint(run, weights[s], Path(tmp) / f"{len(encoders)}")
                encoders[title], titles[title] = str(folder_s), (name, s)
            title = f"{name} @ {last}"
            encoders[title], titles[title] = str(run), (name, last)
        table = frozen_feature_table(encoders, dataset, fractions=fractions, seeds=seeds)
    probes = probe_rows(table, titles)
    (out / "curve.json").write_text(json.dumps({"probes": probes, "finetuned": ft_points}, indent=1))
    text = markdown(probes, ft_points)
    (out / "curve.md").write_text(text + "\n")
    draw(probes, ft_points, out / "pretraining_curve.png")
    print(text)
    record = {
        "name": args.record_name,
        "unit": "Kermany test AUC (frozen linear probe and kNN, mean over seeds; fine-tuned from the protocol)",
        "runs": {name: str(Path(folder).resolve()) for name, folder in runs.items()},
        "probes": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in probes],
        "finetuned": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()} for p in ft_points],
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": finish(info),
    }
    print(json.dumps(record))
    if not args.no_record:
        record_results([record])
    return 0


if __name__ == "__main__":
    sys.exit(main())
