"""MedSyn's three tables on phantoms (issue 32, item 7).

ConVIRT and GLoRIA image towers are pre-trained on (a) real-domain phantom image-report pairs and
(b) images generated from **the same reports** by the shipped phantom text-to-image generator
(``generate_dataset(..., reports=...)``, joined back by SHA-256: ``--pairs generated:DIR --reports``).
Each frozen image tower, a random-init tower (the same initial weights: one step at learning rate 0),
a quick MAE encoder and ResNet-tiny rows (random init; MoCo v2 and SimCLR on the real-domain images)
are then scored by ``genssl probe`` (linear-probe AUC), ``genssl segment`` (Dice) and ``genssl
detect`` (mAP over IoU 0.40-0.75) at 1 / 10 / 100 % labels.

**Paired seeds.** Seed ``s`` (0, 1, 2) pre-trains every encoder (``--seed s``: initial weights,
crops, batch order) *and* draws the labelled subset and the decoder that scores it, so each cell
is a mean over 3 scoring runs whose spread covers pre-training as well as the label subset and the
decoder (95 % t-interval over the 3 paired seeds, as before).

**Caching.** Every encoder x seed has its own folders (``towers/<encoder>/seed<s>``,
``<task>/<encoder>/seed<s>``); a stage whose output exists is skipped, so an interrupted run
resumes, and ``--encoders`` adds rows later without rerunning the others (``--tables_only``
collects whatever is there). The dense phantoms are rendered once to ``dense-<N>/`` (train N,
validation 100, test 100); ``--stages budget`` fits the random-init encoder at 100 % labels on the
*validation* split to choose the decoder budget (never the test split).

One torch thread per process; with ``--parallel`` the work runs as two processes side by side.

    python benchmarks/medsyn_tables.py --parallel [--out outputs/medsyn] [--encoders ...] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REAL_DOMAIN = {"exposure": [1.2, 1.6], "gamma": [1.15, 1.4]}
# name -> (backbone preset, pre-training method, pair / image source, trained?); the table and job order
ENCODERS = {
    "random-init": ("tiny", "convirt", "real", False),
    "convirt-real": ("tiny", "convirt", "real", True),
    "convirt-generated": ("tiny", "convirt", "generated", True),
    "gloria-real": ("tiny", "gloria", "real", True),
    "gloria-generated": ("tiny", "gloria", "generated", True),
    "mae": ("tiny", "mae", "real", True),
    "resnet-random-init": ("resnet-tiny", "moco_v2", "real", False),
    "resnet-mocov2-real": ("resnet-tiny", "moco_v2", "real", True),
    "resnet-simclr-real": ("resnet-tiny", "simclr", "real", True),
    "mgca-real": ("tiny", "mgca", "real", True),  # last: added after the others (issue 32's MGCA rows)
    "mgca-generated": ("tiny", "mgca", "generated", True),
}
# The rows of BENCHMARKS' paired-seed tables; MoCo v2 left out (its run ended at the chance loss,
# the embedding std falling: not a pre-trained encoder), MGCA rows added with --encoders
DEFAULT_ENCODERS = [e for e in ENCODERS if e not in ("resnet-mocov2-real", "mgca-real", "mgca-generated")]
VLP_METHODS = ("convirt", "gloria", "mgca")
TIMINGS: list[Path] = []  # set by main: out / "timings.jsonl", one line per finished command
TASKS = {"segment": "dense_segmentation.json", "detect": "dense_detection.json", "probe": "frozen_features.json"}


def _cli(argv: list[str], log: Path | None = None) -> None:
    """One ``genssl`` command in a child process at one thread (a fresh process per stage: no state leaks)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = "import sys, torch; torch.set_num_threads(1); from genssl_hf.cli import main; sys.exit(main(sys.argv[1:]))"
    t0 = time.perf_counter()
    if log is None:
        subprocess.run([sys.executable, "-c", code, *argv], check=True, env=env)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            subprocess.run([sys.executable, "-c", code, *argv], check=True, env=env, stdout=handle, stderr=handle)
    seconds = time.perf_counter() - t0
    print(f"[medsyn] {argv[0]} {argv[-1]}: {seconds:.0f} s", flush=True)
    if TIMINGS:  # one short line per append: whole lines even with two writers
        line = {"command": argv[0], "output": argv[-1], "seconds": round(seconds, 1), "load": os.getloadavg()[0]}
        with open(TIMINGS[0], "a") as handle:
            handle.write(json.dumps(line) + "\n")


def _run_queues(queues: list[list], parallel: bool) -> None:
    """Run each queue's callables in order; ``parallel``: the queues side by side (one thread each,
    every job a child process), failures reported after every queue stops."""
    if not parallel:
        for job in [j for q in queues for j in q]:
            job()
        return
    failures: list[BaseException] = []

    def drain(queue: list) -> None:
        try:
            for job in queue:
                job()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=drain, args=(q,)) for q in queues if q]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"a stage failed: {failures[0]}")


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


def _sources(out: Path, n: int) -> dict[str, list[str]]:
    """The pre-training data per source: pairs for the VLP methods, images for MAE / MoCo v2."""
    return {
        "real": ["--pairs", f"phantom:{n}", "--phantom_config", json.dumps(REAL_DOMAIN)],
        "generated": [
            "--pairs",
            f"generated:{out / 'gen-phantom-reports'}",
            "--reports",
            str(out / "phantom-reports.parquet"),
        ],
        "images": ["--dataset", str(out / "mae-images")],
    }


def _tower(out: Path, name: str, seed: int) -> Path:
    return out / "towers" / name / f"seed{seed}"


def _tower_ready(out: Path, name: str, seed: int) -> bool:
    """Its weights and config are written (and, for a run that trains in place, its final summary)."""
    tower, in_place = _tower(out, name, seed), ENCODERS[name][1] not in VLP_METHODS
    files = ("config.json", "model.safetensors", *(("train_summary.json",) if in_place else ()))
    return all((tower / f).is_file() for f in files)


def pretrain_job(out: Path, name: str, seed: int, n: int, steps: int):
    """The callable that pre-trains encoder ``name`` at ``seed`` into its tower folder (``None`` if done)."""
    backbone, method, source, trained = ENCODERS[name]
    tower = _tower(out, name, seed)
    if _tower_ready(out, name, seed):
        return None
    n_steps, log = (steps if trained else 1), out / "logs" / f"pretrain-{name}-seed{seed}.log"
    common = ["--model", backbone, "--image_size", "32", "--seed", str(seed), "--max_steps", str(n_steps)]
    lr0 = [] if trained else ["--learning_rate", "0"]  # random init: the same initial weights, one step at lr 0
    if method in VLP_METHODS:
        dual = out / "vlp" / name / f"seed{seed}"
        argv = ["pretrain", "--method", method, *_sources(out, n)[source], *common]
        argv += ["--text_tower", "minilm", "--freeze_text_layers", "6", "--per_device_train_batch_size", "32"]
        argv += ["--learning_rate", "1e-3", "--warmup_ratio", "0.1", "--crop_scale_min", "0.8"]
        argv += ["--overwrite_output_dir", *lr0, "--output_dir", str(dual)]

        def job() -> None:
            from genssl_hf.training.vlp import export_image_tower

            _cli(argv, log)
            export_image_tower(dual, tower)

        return job
    argv = ["pretrain", "--method", method, *_sources(out, n)["images"], *common]
    argv += ["--per_device_train_batch_size", "64"]
    if method == "mae":
        argv += ["--learning_rate", "1.5e-3"]
    else:  # the contrastive methods at their tiny recipes
        argv += ["--figure", "off", *lr0]
    if method == "moco_v2":  # a 256-key queue: under one epoch of 384 images (no stale self-keys)
        argv += ["--queue_size", "256"]
    argv += ["--output_dir", str(tower)]
    return lambda: _cli(argv, log)


def dense_data(out: Path, n_train: int) -> Path:
    """Dense phantoms at 64 px (the ``genssl segment`` streams: the same rows as ``--phantom_sizes``),
    train ``n_train`` / validation 100 / test 100, rendered once."""
    folder = out / f"dense-{n_train}"
    if not (folder / "dataset_dict.json").is_file():
        import datasets

        from genssl_hf.data.phantom_dense import phantom_dense_dataset

        sizes = {"train": n_train, "validation": 100, "test": 100}
        dd = datasets.DatasetDict({k: phantom_dense_dataset(v, 64, split=k) for k, v in sizes.items()})
        dd.save_to_disk(str(folder) + ".tmp")
        os.replace(str(folder) + ".tmp", folder)
    return folder


def eval_job(out: Path, task: str, name: str, seed: int, cfg: argparse.Namespace):
    """The callable that scores encoder ``name`` at ``seed`` on ``task`` (``None`` if done)."""
    folder = out / task / name / f"seed{seed}"
    if (folder / TASKS[task]).is_file():
        return None
    argv = [task, "--model", f"{name}={_tower(out, name, seed)}", "--fractions", "0.01", "0.1", "1"]
    argv += ["--seeds", str(seed), "--overwrite", "--output_dir", str(folder)]
    if task == "probe":
        argv[-2:-2] = ["--dataset", "phantom", "--phantom_sizes", "400", "100", "200", "--tsne", "off"]
    else:
        steps = cfg.dense_steps if task == "segment" else cfg.detect_steps
        argv[-2:-2] = ["--dataset", str(dense_data(out, cfg.dense_train)), "--test_split", "test"]
        argv[-2:-2] = ["--per_device_train_batch_size", "16", "--max_steps", str(steps)]
    return lambda: _cli(argv, out / "logs" / f"{task}-{name}-seed{seed}.log")


def budget(out: Path, cfg: argparse.Namespace) -> dict:
    """The random-init encoder (seed 0) at 100 % labels, scored on the **validation** split, per
    training-set size and step count: the check that the decoder budget is adequate (above the
    trivial baseline), made before the test split is read."""
    job = pretrain_job(out, "random-init", 0, cfg.num_pairs, 1)
    if job:
        job()
    jobs: dict[str, list] = {"detect": [], "segment": []}
    for n_train in cfg.budget_train_sizes:
        data = dense_data(out, n_train)
        for task, steps in (("segment", cfg.dense_steps), ("detect", cfg.detect_steps)):
            folder = out / "budget" / f"{task}-n{n_train}-steps{steps}"
            if (folder / TASKS[task]).is_file():
                continue
            argv = [task, "--model", f"random-init={_tower(out, 'random-init', 0)}", "--dataset", str(data)]
            argv += ["--test_split", "validation", "--fractions", "1", "--seeds", "0", "--max_steps", str(steps)]
            argv += ["--per_device_train_batch_size", "16", "--overwrite", "--output_dir", str(folder)]
            jobs[task].append(lambda a=argv, f=folder: _cli(a, f / "log.txt"))
    _run_queues(list(jobs.values()), cfg.parallel)
    result = budget_results(out)
    for key, cell in result.items():
        print(f"[medsyn] budget (validation split) {key}: {cell}", flush=True)
    return result


def budget_results(out: Path) -> dict:
    """``{"<task>-n<N>-steps<K>": {metric, encoder, baseline}}`` from every budget check on disk."""
    result = {}
    for path in sorted((out / "budget").glob("*/dense_*.json")):
        row = next(iter(json.loads(path.read_text())["encoders"].values()))["rows"][0]
        metric = "dice" if "dice" in row["scores"] else "map"
        result[path.parent.name] = {
            "metric": metric,
            "encoder": round(row["scores"][metric], 4),
            "baseline": round(row["baseline"][metric], 4),
        }
    return result


def pretrain_all(out: Path, cfg: argparse.Namespace) -> None:
    jobs = [pretrain_job(out, e, s, cfg.num_pairs, cfg.max_steps) for e in cfg.encoders for s in cfg.seeds]
    jobs = [j for j in jobs if j]
    _run_queues([jobs[0::2], jobs[1::2]] if cfg.parallel else [jobs], cfg.parallel)


def _claim(path: Path) -> bool:
    """Take the job lock ``path`` (created exclusively, holding our process id); a lock whose process
    is gone is taken over, so a crashed worker's jobs are run again by the next one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return False  # held by a live process (or being written: try later)
            except (ProcessLookupError, ValueError, FileNotFoundError):
                path.unlink(missing_ok=True)
                continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def _worker(out: Path, cfg: argparse.Namespace, specs: list[tuple[str, str, int]]) -> None:
    """Run the first unclaimed job whose tower exists, in ``specs`` order, until none is left; jobs
    whose tower is still being pre-trained (by another process) are waited for up to ``cfg.wait_minutes``."""
    deadline = time.monotonic() + 60 * cfg.wait_minutes
    while True:
        waiting = False
        for task, name, seed in specs:
            if (out / task / name / f"seed{seed}" / TASKS[task]).is_file():
                continue
            if not _tower_ready(out, name, seed):
                waiting = True
                continue
            lock = out / "claims" / f"{task}-{name}-seed{seed}"
            if _claim(lock):
                try:
                    if job := eval_job(out, task, name, seed, cfg):  # None: finished since the check
                        job()
                finally:
                    lock.unlink(missing_ok=True)
                break  # from the top again: the table order first
        else:
            if not waiting or time.monotonic() > deadline:
                return
            time.sleep(20)


def evaluate_all(out: Path, cfg: argparse.Namespace) -> None:
    """Every (encoder, seed, task) job, encoder by encoder (a cut-short run leaves whole encoders
    done). Jobs are claimed through lock files, so any number of processes (two threads with
    ``--parallel``, or another ``--stages evaluate`` run) share the list without running a job twice."""
    specs = [(t, e, s) for e in cfg.encoders for s in cfg.seeds for t in ("detect", "segment", "probe")]

    def work() -> None:
        _worker(out, cfg, specs)

    _run_queues([[work], [work]] if cfg.parallel else [[work]], cfg.parallel)


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


def _cells(out: Path, task: str, name: str) -> tuple[dict, dict]:
    """``{fraction: {seed: score}}`` for the encoder and for the trivial baseline, from every
    ``<task>/<name>/seed*`` folder (each holds one seed)."""
    scores: dict = {}
    baseline: dict = {}
    for path in sorted((out / task / name).glob(f"seed*/{TASKS[task]}")):
        table = json.loads(path.read_text())
        if task == "probe":
            for row in table["rows"]:
                scores.setdefault(row["fraction"], {})[row["seed"]] = row["probe_auc"]
            continue
        for enc in table["encoders"].values():
            for row in enc["rows"]:
                metric = "dice" if "dice" in row["scores"] else "map"
                scores.setdefault(row["fraction"], {})[row["seed"]] = row["scores"][metric]
                baseline.setdefault(row["fraction"], {})[row["seed"]] = row["baseline"][metric]
    return scores, baseline


# paired contrasts (a - b): the same seed pre-trained both from the same initial weights (ViT rows:
# random-init is their step-0 tower) and scored them on the same labelled subset with the same decoder seed
CONTRASTS = (
    ("convirt-generated", "convirt-real"),
    ("gloria-generated", "gloria-real"),
    ("mgca-generated", "mgca-real"),
    ("gloria-real", "convirt-real"),
    ("gloria-generated", "convirt-generated"),
    *((e, "random-init") for e in ("convirt-real", "convirt-generated", "gloria-real", "gloria-generated", "mae")),
    ("mgca-real", "random-init"),
    ("mgca-generated", "random-init"),
    ("resnet-simclr-real", "resnet-random-init"),
    ("resnet-mocov2-real", "resnet-random-init"),
)


def paired_differences(out: Path) -> dict:
    """``{task: {"a - b": {fraction: mean/ci95/n}}}`` over the seeds both rows have."""
    result: dict = {}
    for task in TASKS:
        for a, b in CONTRASTS:
            (sa, _), (sb, _) = _cells(out, task, a), _cells(out, task, b)
            cells = {}
            for f in sorted(set(sa) & set(sb)):
                seeds = sorted(set(sa[f]) & set(sb[f]))
                if seeds:
                    cells[f] = _mean_ci([sa[f][s] - sb[f][s] for s in seeds])
            if cells:
                result.setdefault(task, {})[f"{a} - {b}"] = cells
    return result


def collect(out: Path) -> dict:
    """``{table: {row: {fraction: mean/ci95/n}}}``: every encoder found on disk, in ``ENCODERS``
    order; the dense tables' trivial baseline once per seed (it depends on the labelled rows only)."""
    titles = {
        "probe": "linear probe AUC",
        "segment": "segmentation Dice (pooled)",
        "detect": "detection mAP@[0.40:0.75]",
    }
    tables: dict = {title: {} for title in titles.values()}
    for task, title in titles.items():
        per_seed: dict = {}
        for name in ENCODERS:
            scores, baseline = _cells(out, task, name)
            if scores:
                tables[title][name] = {f: _mean_ci(list(v.values())) for f, v in sorted(scores.items())}
            for f, by_seed in baseline.items():
                for seed, value in by_seed.items():
                    if abs(per_seed.setdefault(f, {}).setdefault(seed, value) - value) > 1e-9:
                        print(f"[medsyn] warning: {task} baseline differs across encoders ({name}, {f}, {seed})")
        if per_seed:
            label = "mean-mask baseline" if task == "segment" else "fixed-box baseline"
            tables[title][label] = {f: _mean_ci(list(v.values())) for f, v in sorted(per_seed.items())}
    return tables


def wall_times(out: Path) -> dict:
    """Per command kind (pretrain per encoder, segment / detect / probe): job count, median and total
    seconds, and the load average range, from ``timings.jsonl``."""
    import statistics

    groups: dict = {}
    path = out / "timings.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        job = json.loads(line)
        parts = Path(job["output"]).parts
        key = job["command"] if job["command"] != "pretrain" else f"pretrain {parts[-2]}"
        groups.setdefault(key, []).append(job)
    return {
        key: {
            "jobs": len(jobs),
            "median_s": round(statistics.median(j["seconds"] for j in jobs), 1),
            "total_s": round(sum(j["seconds"] for j in jobs), 1),
            "load": [round(min(loads), 1), round(max(loads), 1)]
            if (loads := [j["load"] for j in jobs if j.get("load")])
            else None,
        }
        for key, jobs in sorted(groups.items())
    }


def _cell(c: dict | None) -> str:
    if c is None:
        return "-"
    if c["n"] < 2:
        return f"{c['mean']:.3f} (1 seed)"
    return f"{c['mean']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]" + ("" if c["n"] == 3 else f" ({c['n']} seeds)")


def markdown(tables: dict, first: str = "encoder") -> str:
    lines = []
    for table, rows in tables.items():
        fractions = sorted({f for cells in rows.values() for f in cells})
        if not fractions:
            lines += [f"**{table}**: not run (no output found)", ""]
            continue
        lines += [f"**{table}** (mean [95 % t-interval] over the paired seeds)", ""]
        lines += [f"| {first} | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |"]
        lines += ["|---" * (len(fractions) + 1) + "|"]
        for name, cells in rows.items():
            lines.append(f"| {name} | " + " | ".join(_cell(cells.get(f)) for f in fractions) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/medsyn"))
    p.add_argument("--encoders", nargs="+", default=DEFAULT_ENCODERS, choices=list(ENCODERS), metavar="ENCODER")
    p.add_argument("--stages", nargs="+", default=["data", "pretrain", "evaluate"])
    p.add_argument("--num_pairs", type=int, default=384)
    p.add_argument("--max_steps", type=int, default=200, help="pre-training steps (VLP, MAE, MoCo v2)")
    p.add_argument("--dense_train", type=int, default=400, help="dense training phantoms (validation, test: 100)")
    p.add_argument("--dense_steps", type=int, default=300, help="decoder steps per segmentation fit")
    p.add_argument("--detect_steps", type=int, default=300, help="head steps per detection fit")
    p.add_argument("--budget_train_sizes", type=int, nargs="+", default=[200, 400])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="paired pre-training / scoring seeds")
    p.add_argument("--parallel", action="store_true", help="two processes side by side")
    p.add_argument("--wait_minutes", type=float, default=0, help="evaluate: wait this long for missing towers")
    p.add_argument("--record", default=None, metavar="NAME", help="write the tables as results.json row NAME")
    p.add_argument("--tables_only", action="store_true", help="only collect the tables of earlier runs")
    args = p.parse_args(argv)
    if args.num_pairs < 32 or args.max_steps < 1 or min(args.dense_steps, args.detect_steps) < 1:
        p.error("--num_pairs must be >= 32 (one batch), the step counts >= 1")
    if bad := set(args.stages) - {"data", "budget", "pretrain", "evaluate"}:
        p.error(f"--stages: unknown {sorted(bad)} (choose from data, budget, pretrain, evaluate)")
    if min(args.seeds) < 0 or args.dense_train < 10:
        p.error("--seeds must be >= 0 and --dense_train >= 10")
    args.out.mkdir(parents=True, exist_ok=True)
    TIMINGS[:] = [args.out / "timings.jsonl"]
    t0 = time.perf_counter()
    if not args.tables_only:
        if "data" in args.stages:
            generate(args.out, args.num_pairs)
            pairs_figure(args.out, args.num_pairs)
            dense_data(args.out, args.dense_train)
            print(f"[medsyn] data ready at {time.perf_counter() - t0:.0f} s", flush=True)
        if "budget" in args.stages:
            budget(args.out, args)
        if "pretrain" in args.stages:
            pretrain_all(args.out, args)
            print(f"[medsyn] encoders ready at {time.perf_counter() - t0:.0f} s", flush=True)
        if "evaluate" in args.stages:
            evaluate_all(args.out, args)
        print(f"[medsyn] done in {time.perf_counter() - t0:.0f} s", flush=True)
    tables = collect(args.out)
    differences = paired_differences(args.out)
    text = (
        markdown(tables)
        + "\n"
        + markdown({f"{t}: paired difference a - b": d for t, d in differences.items()}, first="contrast")
    )
    (args.out / "tables.md").write_text(text)
    print(text)
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from machine import finish, machine_info, record_results

        row = {"name": args.record, "unit": "AUC / Dice / mAP, mean and 95 % t-interval over paired seeds"}
        row["command"] = "python benchmarks/medsyn_tables.py --parallel (then --tables_only --record NAME)"
        row["config"] = {k: str(v) for k, v in vars(args).items()}  # with --tables_only: not the rows'
        row["rows_in_tables"] = list(dict.fromkeys(e for rows in tables.values() for e in rows))
        row["paired_differences"] = {
            t: {c: {str(f): v for f, v in cells.items()} for c, cells in rows.items()}
            for t, rows in differences.items()
        }
        row["budget_check_validation_split"] = budget_results(args.out)
        row["wall_seconds"] = wall_times(args.out)
        row["machine"] = finish(machine_info(peaks=False))
        row["tables"] = {
            t: {e: {str(f): c for f, c in cells.items()} for e, cells in rows.items()} for t, rows in tables.items()
        }
        record_results([row])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
