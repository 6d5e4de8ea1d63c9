"""ConVIRT vs GLoRIA vs MGCA at the same budget: retrieval and zero-shot on held-out phantom pairs.

Each method trains with the recipe of ``tests/test_gloria.py`` (frozen all-MiniLM-L6-v2 with cached
token features, tiny ViT at 32 px, ``--max_steps`` steps of 32 pairs over 512 phantoms, lr 1e-3,
one thread) through ``genssl pretrain --method M``, once per ``--seeds`` seed, and is scored with
``evaluate_dual_encoder`` on 300 phantom pairs of the test split (never seen in training):
image->report and report->image R@1/5/10 and the zero-shot mean AUC. Training CPU seconds are
``time.process_time`` around the pretrain call (a loaded, shared machine inflates wall time, not CPU
time). Writes ``results.json`` and ``results.md`` under ``--output_dir``; ``--record`` adds a row to
``benchmarks/results.json``.

    python benchmarks/bench_vlp_methods.py --output_dir /work/runs/NAME/vlp_methods --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = [
    "--pairs",
    "phantom:512",
    "--model",
    "tiny",
    "--image_size",
    "32",
    "--text_tower",
    "minilm",
    "--freeze_text_layers",
    "6",
    "--per_device_train_batch_size",
    "32",
    "--learning_rate",
    "1e-3",
    "--warmup_ratio",
    "0.1",
    "--crop_scale_min",
    "0.8",
    "--logging_steps",
    "20",
    "--checkpointing_steps",
    "0",
    "--num_threads",
    "1",
    "--figure",
    "off",
]
METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "zero_shot_mauc")


def parse_spec(spec: str) -> tuple[str, str, list[str]]:
    """``METHOD`` or ``LABEL=METHOD --option value ...`` (an ablation) -> (label, method, extra options)."""
    if "=" not in spec:
        return spec, spec, []
    label, rest = spec.split("=", 1)
    method, *extra = rest.split()
    return label, method, extra


def run_one(spec: str, seed: int, steps: int, out: Path, test_pairs) -> dict:
    from genssl_hf.cli.pretrain import main as pretrain_main
    from genssl_hf.evaluation.vlp import evaluate_dual_encoder

    label, method, extra = parse_spec(spec)
    folder = out / f"{label}-seed{seed}"
    if not (folder / "model.safetensors").is_file():
        start = time.process_time()
        argv = ["--method", method, *RECIPE, *extra, "--max_steps", str(steps), "--seed", str(seed)]
        if pretrain_main([*argv, "--output_dir", str(folder), "--overwrite_output_dir"]) != 0:
            raise RuntimeError(f"{method} seed {seed}: pretraining failed")
        (folder / "bench_cpu_seconds.txt").write_text(f"{time.process_time() - start:.1f}\n")
    result = evaluate_dual_encoder(folder, pairs=test_pairs, n_bootstrap=0)
    r, zs = result["retrieval"], result["zero_shot"]["metrics"]
    row = {
        "method": label,
        "options": " ".join(extra),
        "seed": seed,
        "train_cpu_s": float((folder / "bench_cpu_seconds.txt").read_text()),
    }
    for short, key in (("i2t", "image_to_text"), ("t2i", "text_to_image")):
        for k in (1, 5, 10):
            row[f"{short}_R@{k}"] = round(float(r[key][f"R@{k}"]), 4)
            row[f"{short}_chance_R@{k}"] = round(float(r[key]["chance"][f"R@{k}"]), 4)
    row["zero_shot_mauc"] = round(float(zs["mean_auc"]), 4)
    summary = json.loads((folder / "train_summary.json").read_text())
    row["final_loss"] = round(float(summary["final_loss"]), 4)
    return row


def table(rows: list[dict], methods: list[str]) -> str:
    lines = [
        "| Method | seeds | train CPU-s | image->report R@1 / R@5 / R@10 | report->image R@1 / R@5 / R@10 "
        "| zero-shot mAUC |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in [parse_spec(spec)[0] for spec in methods]:
        mine = [r for r in rows if r["method"] == m]
        med = {k: statistics.median(r[k] for r in mine) for k in (*METRICS, "train_cpu_s")}
        i2t = " / ".join(f"{100 * med[f'i2t_R@{k}']:.1f}" for k in (1, 5, 10))
        t2i = " / ".join(f"{100 * med[f't2i_R@{k}']:.1f}" for k in (1, 5, 10))
        seeds = ",".join(str(r["seed"]) for r in mine)
        lines.append(
            f"| {m} | {seeds} | {med['train_cpu_s']:.0f} | {i2t} | {t2i} | {100 * med['zero_shot_mauc']:.1f} |"
        )
    return "\n".join(lines)


def plot_curves(out: Path, methods: list[str], seeds: list[int]) -> Path:
    """``loss_curves.png``: each method's total loss per seed, and its parts (GLoRIA local / global,
    MGCA ita / cta / cpa) for the first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(methods), figsize=(4.2 * (1 + len(methods)), 3.6))
    for i, m in enumerate([parse_spec(spec)[0] for spec in methods]):
        for seed in seeds:
            summary = json.loads((out / f"{m}-seed{seed}" / "train_summary.json").read_text())
            steps, values = zip(*summary["loss_curve"])
            axes[0].plot(steps, values, color=f"C{i}", alpha=0.8, label=m if seed == seeds[0] else None)
            if seed == seeds[0]:
                for j, (part, curve) in enumerate(sorted(summary.get("loss_parts", {}).items())):
                    axes[1 + i].plot(*zip(*curve), color=f"C{j}", label=part)
                axes[1 + i].plot(steps, values, color="k", lw=1, ls="--", label="total")
                axes[1 + i].set_title(f"{m}, seed {seed}: loss and its parts")
    axes[0].set_title("total training loss (every seed)")
    for ax in axes:
        ax.set_xlabel("optimiser step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument(
        "--methods",
        nargs="+",
        default=["convirt", "gloria", "mgca"],
        help="METHOD or LABEL='METHOD --option value' (an ablation, its folder and row named LABEL)",
    )
    p.add_argument("--name", default="vlp_mgca_vs_gloria_vs_convirt@phantom32", help="results.json row name")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--max_steps", type=int, default=300)
    p.add_argument("--record", action="store_true", help="add a row to benchmarks/results.json")
    args = p.parse_args(argv)

    import torch

    from benchmarks.machine import finish, machine_info, print_machine, record_results
    from genssl_hf.data.pairs import phantom_pairs

    torch.set_num_threads(1)
    machine = machine_info(peaks=False)
    print_machine(machine)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    test_pairs = phantom_pairs(300, size=32, split="test")
    rows = []
    for seed in args.seeds:  # seed-major: a load change hits every method alike
        for method in args.methods:
            rows.append(run_one(method, seed, args.max_steps, out, test_pairs))
            print(json.dumps(rows[-1]), flush=True)
    finish(machine)
    md = table(rows, args.methods)
    print(md)
    doc = {"rows": rows, "machine": machine, "recipe": RECIPE, "max_steps": args.max_steps}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "results.md").write_text(md + "\n")
    print(plot_curves(out, args.methods, args.seeds))
    if args.record:
        record_results(
            [
                {
                    "name": args.name,
                    "unit": f"training CPU seconds (time.process_time) for {args.max_steps} steps of 32 pairs, "
                    "1 thread; retrieval recall and zero-shot mean AUC on 300 held-out phantom pairs; per seed",
                    "rows": rows,
                    "command": "python benchmarks/bench_vlp_methods.py --seeds "
                    + " ".join(map(str, args.seeds))
                    + " --methods "
                    + " ".join(repr(m) if " " in m else m for m in args.methods)
                    + " (genssl pretrain --method M "
                    + " ".join(RECIPE)
                    + f" --max_steps {args.max_steps} --seed S)",
                    "machine": machine,
                    "date": time.strftime("%Y-%m-%d"),
                }
            ]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
