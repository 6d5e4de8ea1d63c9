"""MedSyn's three tables on phantoms (issue 32, item 7, first part).

ConVIRT and GLoRIA image towers are pre-trained on (a) real-domain phantom image-report pairs and
(b) images generated from **the same reports** by the shipped phantom text-to-image generator
(``generate_dataset(..., reports=...)``, joined back by SHA-256: ``--pairs generated:DIR --reports``).
Each frozen image tower, a random-init tower (the same initial weights: one step at learning rate 0)
and a quick MAE encoder are then scored by ``genssl probe`` (linear-probe AUC), ``genssl segment``
(Dice) and ``genssl detect`` (mAP over IoU 0.40-0.75) at 1 / 10 / 100 % labels over seeds.

Every stage skips work whose output exists, so an interrupted run resumes. One torch thread per
process; segmentation and detection run as two processes side by side (``--parallel_dense``).

    python benchmarks/medsyn_tables.py [--out outputs/medsyn] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REAL_DOMAIN = {"exposure": [1.2, 1.6], "gamma": [1.15, 1.4]}
VLP_RUNS = ("convirt-real", "convirt-generated", "gloria-real", "gloria-generated")
ENCODERS = ("random-init", *VLP_RUNS, "mae")  # the order the evaluation runs them in


def _cli(argv: list[str]) -> None:
    """One ``genssl`` command in a child process at one thread (a fresh process per stage: no state leaks)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = "import sys, torch; torch.set_num_threads(1); from genssl_hf.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *argv], check=True, env=env)


def generate(out: Path, n: int) -> None:
    """The real-domain phantom pairs' reports, and one generated image per report."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genssl_hf.data.phantom import PhantomConfig, phantom_dataset
    from genssl_hf.generation.materialize import generate_dataset, load_report_corpus
    from genssl_hf.generation.pretrained import PHANTOM_GENERATOR_DIR

    real = phantom_dataset(n, size=64, seed=0, config=PhantomConfig(**REAL_DOMAIN), split="train")
    reports = out / "phantom-reports.parquet"
    if not reports.is_file():
        pq.write_table(pa.table({"report": real["report"]}), str(reports) + ".tmp")
        os.replace(str(reports) + ".tmp", reports)
    target = out / "gen-phantom-reports"
    if not (target / "README.md").is_file():
        corpus = load_report_corpus(real.select_columns(["report"]), "report", name="phantom-real-domain-train")
        generate_dataset(
            target,
            str(PHANTOM_GENERATOR_DIR),
            reports=corpus,
            seed=0,
            batch_size=32,
            height=64,
            width=64,
            num_inference_steps=15,
            guidance_scale=3.0,
            call_kwargs={"dtype": "bfloat16"},
            overwrite=True,
            progress=False,
        )
    mae_data = out / "mae-images"
    if not mae_data.is_dir():  # the same real-domain images, without their reports, for MAE
        real.select_columns(["image"]).save_to_disk(str(mae_data) + ".tmp")
        os.replace(str(mae_data) + ".tmp", mae_data)


def pairs_figure(out: Path, n: int, shown: int = 6) -> Path:
    """Real-domain phantoms (top) and the images generated from the same reports (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genssl_hf.data.pairs import load_pairs

    real = load_pairs(f"phantom:{n}", phantom_config=REAL_DOMAIN)
    generated = load_pairs(f"generated:{out / 'gen-phantom-reports'}", corpus=str(out / "phantom-reports.parquet"))
    by_text = {generated[i]["text"]: generated[i]["image"] for i in range(len(generated))}
    fig, axes = plt.subplots(2, shown, figsize=(2 * shown, 4.6))
    for col in range(shown):
        row = real[col]
        for ax, image in zip(axes[:, col], (row["image"], by_text[row["text"]])):
            ax.imshow(image, cmap="gray")
            ax.set_axis_off()
        axes[0, col].set_title(row["text"][:40], fontsize=6)
    axes[0, 0].text(-8, 32, "real", rotation=90, va="center")
    axes[1, 0].text(-8, 32, "generated", rotation=90, va="center")
    fig.tight_layout()
    path = out / "real_vs_generated.png"
    fig.savefig(str(path) + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(str(path) + ".tmp.png", path)
    return path


def pretrain(out: Path, n: int, steps: int) -> None:
    from genssl_hf.training.vlp import export_image_tower

    pairs = {
        "real": ["--pairs", f"phantom:{n}", "--phantom_config", json.dumps(REAL_DOMAIN)],
        "generated": [
            "--pairs",
            f"generated:{out / 'gen-phantom-reports'}",
            "--reports",
            str(out / "phantom-reports.parquet"),
        ],
    }
    recipe = ["--model", "tiny", "--image_size", "32", "--text_tower", "minilm", "--freeze_text_layers", "6"]
    recipe += ["--per_device_train_batch_size", "32", "--learning_rate", "1e-3", "--warmup_ratio", "0.1"]
    recipe += ["--crop_scale_min", "0.8", "--seed", "0", "--overwrite_output_dir"]
    runs = {name: (name.split("-")[0], pairs[name.split("-")[1]], steps) for name in VLP_RUNS}
    runs["random-init"] = ("convirt", pairs["real"], 1)
    for name, (method, spec, n_steps) in runs.items():
        tower = out / "towers" / name
        if (tower / "config.json").is_file():
            continue
        dual = out / "vlp" / name
        argv = ["pretrain", "--method", method, *spec, *recipe, "--max_steps", str(n_steps), "--output_dir", str(dual)]
        if name == "random-init":
            argv += ["--learning_rate", "0"]
        t0 = time.perf_counter()
        _cli(argv)
        print(f"[medsyn] {name}: {n_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        export_image_tower(dual, tower)
    mae = out / "towers" / "mae"
    if not (mae / "config.json").is_file():
        argv = [
            "pretrain",
            "--method",
            "mae",
            "--model",
            "tiny",
            "--image_size",
            "32",
            "--dataset",
            str(out / "mae-images"),
        ]
        argv += ["--max_steps", str(steps), "--per_device_train_batch_size", "64", "--learning_rate", "1.5e-3"]
        argv += ["--seed", "0", "--output_dir", str(mae)]
        _cli(argv)


def evaluate(out: Path, seeds: list[str], dense_steps: int, detect_steps: int, parallel: bool) -> None:
    """One command per task and encoder (a cut-short run keeps every finished encoder's cells); with
    ``parallel`` detection runs in one process queue, segmentation then the probe in another."""
    protocol = ["--fractions", "0.01", "0.1", "1", "--seeds", *seeds, "--overwrite"]
    dense = ["--phantom_sizes", "200", "100", "--per_device_train_batch_size", "16"]
    detect, segment = [], []
    for name in ENCODERS:
        model = ["--model", f"{name}={out / 'towers' / name}"]
        for queue, task, steps in ((detect, "detect", detect_steps), (segment, "segment", dense_steps)):
            folder = out / task / name
            if not any(folder.glob("dense_*.json")):
                queue.append([task, *model, *protocol, *dense, "--max_steps", str(steps), "--output_dir", str(folder)])
    if not (out / "probe" / "frozen_features.json").is_file():
        models = [a for name in ENCODERS for a in ("--model", f"{name}={out / 'towers' / name}")]
        segment.append(
            ["probe", *models, *protocol, "--dataset", "phantom", "--phantom_sizes", "400", "100", "200"]
            + ["--tsne", "off", "--output_dir", str(out / "probe")]
        )
    if not parallel:
        for job in detect + segment:
            _cli(job)
        return
    import threading

    failures: list[BaseException] = []

    def drain(queue: list[list[str]]) -> None:
        try:
            for job in queue:
                _cli(job)
        except BaseException as exc:  # reported after both queues stop
            failures.append(exc)

    threads = [threading.Thread(target=drain, args=(q,)) for q in (detect, segment)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"an evaluation stage failed: {failures[0]}")


def _mean_ci(values) -> dict:
    """Mean and 95 % t-interval over seeds (the spread of the label subsets and decoders)."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return {
        "mean": round(float(v.mean()), 4),
        "ci95": [round(v.mean() - half, 4), round(v.mean() + half, 4)],
        "n": int(v.size),
    }


def collect(out: Path) -> dict:
    """``{table: {encoder: {fraction: mean/ci95/n}}}`` from the three commands' JSON files."""
    tables: dict = {"linear probe AUC": {}, "segmentation Dice (pooled)": {}, "detection mAP@[0.40:0.75]": {}}
    probe = out / "probe" / "frozen_features.json"
    if probe.is_file():
        by_cell: dict = {}
        for row in json.loads(probe.read_text())["rows"]:
            by_cell.setdefault(row["encoder"], {}).setdefault(row["fraction"], []).append(row["probe_auc"])
        tables["linear probe AUC"] = {e: {f: _mean_ci(v) for f, v in c.items()} for e, c in by_cell.items()}
    for table, paths in (
        ("segmentation Dice (pooled)", [out / "segment" / e / "dense_segmentation.json" for e in ENCODERS]),
        ("detection mAP@[0.40:0.75]", [out / "detect" / e / "dense_detection.json" for e in ENCODERS]),
    ):
        for title, enc in [kv for p in paths if p.is_file() for kv in json.loads(p.read_text())["encoders"].items()]:
            by_fraction: dict = {}
            baseline: dict = {}
            for row in enc["rows"]:
                metric = "dice" if "dice" in row["scores"] else "map"
                by_fraction.setdefault(row["fraction"], []).append(row["scores"][metric])
                baseline.setdefault(row["fraction"], []).append(row["baseline"][metric])
            tables[table][title] = {f: _mean_ci(v) for f, v in by_fraction.items()}
            tables[table]["trivial baseline"] = {f: _mean_ci(v) for f, v in baseline.items()}
    return tables


def markdown(tables: dict) -> str:
    lines = []
    for table, rows in tables.items():
        fractions = sorted({f for cells in rows.values() for f in cells})
        if not fractions:
            lines += [f"**{table}**: not run (no output found)", ""]
            continue
        lines += [f"**{table}** (mean [95 % t-interval] over seeds)", ""]
        lines += ["| encoder | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |"]
        lines += ["|---" * (len(fractions) + 1) + "|"]
        for name, cells in rows.items():
            text = [
                f"{c['mean']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]" if (c := cells.get(f)) else "-"
                for f in fractions
            ]
            lines.append(f"| {name} | " + " | ".join(text) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/medsyn"))
    p.add_argument("--num_pairs", type=int, default=384)
    p.add_argument("--max_steps", type=int, default=200, help="pre-training steps (VLP and MAE)")
    p.add_argument("--dense_steps", type=int, default=80, help="decoder steps per segmentation fit")
    p.add_argument("--detect_steps", type=int, default=200, help="head steps per detection fit (100 scored 0 mAP)")
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    p.add_argument("--parallel_dense", action="store_true", help="two evaluation processes side by side")
    p.add_argument("--record", action="store_true", help="write the tables as a row of benchmarks/results.json")
    p.add_argument("--tables_only", action="store_true", help="only collect the tables of an earlier run")
    args = p.parse_args(argv)
    if args.num_pairs < 32 or args.max_steps < 1 or min(args.dense_steps, args.detect_steps) < 1:
        p.error("--num_pairs must be >= 32 (one batch), the step counts >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.tables_only:  # else: collect the tables of whatever an earlier run finished
        generate(args.out, args.num_pairs)
        pairs_figure(args.out, args.num_pairs)
        print(f"[medsyn] data ready at {time.perf_counter() - t0:.0f} s", flush=True)
        pretrain(args.out, args.num_pairs, args.max_steps)
        print(f"[medsyn] encoders ready at {time.perf_counter() - t0:.0f} s", flush=True)
        evaluate(args.out, args.seeds, args.dense_steps, args.detect_steps, args.parallel_dense)
        print(f"[medsyn] done in {time.perf_counter() - t0:.0f} s", flush=True)
    tables = collect(args.out)
    text = markdown(tables)
    (args.out / "tables.md").write_text(text)
    print(text)
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from machine import record_results

        row = {"name": "medsyn_tables@phantom", "unit": "AUC / Dice / mAP, mean and 95 % t-interval over seeds"}
        row["command"] = "python benchmarks/medsyn_tables.py --parallel_dense (then --tables_only --record)"
        row["config"] = {k: str(v) for k, v in vars(args).items()}
        row["tables"] = {
            t: {e: {str(f): c for f, c in cells.items()} for e, cells in rows.items()} for t, rows in tables.items()
        }
        record_results([row])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
