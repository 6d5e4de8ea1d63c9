"""``genssl segment`` / ``genssl detect``: dense tasks on frozen encoders from the command line.

Writes into ``--output_dir`` (each file atomically): ``dense_<task>.json`` (every fraction x seed x
encoder row with the baseline's scores, and the summary), ``dense_<task>.md`` (the table) and
``dense_<task>_<title>.png`` (true vs predicted masks or boxes on a few test images, per encoder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

__all__ = ["build_parser", "dense_figure", "main", "markdown_dense", "segment_main", "detect_main"]

FINDING_COLOURS = ("tab:orange", "tab:red", "tab:green", "tab:cyan", "tab:purple")


def build_parser(task: str | None = None):
    import argparse

    from genssl_hf.evaluation.dense import DENSE_TASKS
    from genssl_hf.validation import checked_parser, renamed_options

    p = argparse.ArgumentParser(
        prog=f"genssl {'segment' if task == 'segmentation' else 'detect' if task else 'dense'}",
        description="Dense tasks on frozen encoders (MedSyn's protocol): a trainable decoder on the frozen feature "
        "maps, scored by Dice / IoU per finding (segmentation) or mAP over IoU 0.40-0.75 (detection) at label "
        "fractions, next to the trivial baseline (mean mask / fixed boxes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    if task is None:
        p.add_argument("--task", choices=DENSE_TASKS, required=True)
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="TITLE=MODEL[:PROCESSOR]",
        help="repeatable. MODEL: an encoder / ViTMAE / classifier folder, or a preset (tiny, resnet-tiny, "
        "...) for seeded random weights; PROCESSOR as for genssl probe",
    )
    p.add_argument(
        "--dataset",
        default="phantom",
        help="'phantom' (dense phantoms rendered at --phantom_resolution) or a save_to_disk DatasetDict "
        "folder whose splits have image, mask (bit-coded) and objects columns",
    )
    p.add_argument("--train_split", default="train")
    p.add_argument("--test_split", default="test")
    p.add_argument("--phantom_sizes", type=int, nargs=2, default=[600, 200], metavar=("TRAIN", "TEST"))
    p.add_argument("--phantom_resolution", type=int, default=64)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="label fractions in (0, 1]")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max_steps", type=int, default=400)
    p.add_argument("--per_device_train_batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--figure_images", type=int, default=4, help="test images in the figure")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in --output_dir")
    renamed_options(p, {"--encoder": "--model", "--batch_size": "--per_device_train_batch_size"})
    return checked_parser(p, {"seeds": ">=0", "fractions": ">0", "figure_images": ">=1", "learning_rate": ">0"})


def _open_splits(args) -> tuple[Any, Any]:
    if args.dataset == "phantom":
        from genssl_hf.data.phantom_dense import phantom_dense_dataset

        n_train, n_test = args.phantom_sizes
        res = args.phantom_resolution
        return (
            phantom_dense_dataset(n_train, res, split="train"),
            phantom_dense_dataset(n_test, res, split="test"),
        )
    import datasets

    folder = Path(args.dataset)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset {args.dataset!r}: not 'phantom' and not a folder")
    dd = datasets.load_from_disk(str(folder))
    for split in (args.train_split, args.test_split):
        if split not in dd:
            raise KeyError(f"--dataset {args.dataset!r} has no split {split!r} (splits: {list(dd)})")
    return dd[args.train_split], dd[args.test_split]


def main(argv: Sequence[str] | None = None, task: str | None = None) -> dict[str, Any]:
    """Every input checked before any compute; returns the JSON written."""
    import json

    from genssl_hf.evaluation.dense import evaluate_dense
    from genssl_hf.evaluation.frozen_features import check_encoder_spec
    from genssl_hf.evaluation.frozen_features_cli import parse_encoder_arg
    from genssl_hf.training.dense_fit import DenseFitConfig
    from genssl_hf.utils import atomic_write_text, write_json

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(task).parse_args(argv)
    task = task or args.task
    encoders: dict[str, dict[str, str]] = {}
    for text in args.model:
        title, spec = parse_encoder_arg(text)
        if title in encoders or not title.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"--model {text!r}: titles must be unique and alphanumeric (- and _ allowed)")
        check_encoder_spec(spec["init"], spec["image_processor"])
        encoders[title] = spec
    for f in args.fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"--fractions: each label fraction must lie in (0, 1]; got {f}")
    out = Path(args.output_dir)
    if (out / f"dense_{task}.json").exists() and not args.overwrite:
        raise FileExistsError(f"--output_dir {str(out)!r} already holds dense_{task}.json; pass --overwrite")
    config = DenseFitConfig(
        max_steps=args.max_steps, batch_size=args.per_device_train_batch_size, learning_rate=args.learning_rate
    )
    train, test = _open_splits(args)
    results = {}
    out.mkdir(parents=True, exist_ok=True)
    for title, spec in encoders.items():
        res = evaluate_dense(
            task,
            spec["init"],
            train,
            test,
            fractions=args.fractions,
            seeds=args.seeds,
            config=config,
            image_processor=spec["image_processor"],
        )
        dense_figure(res, out / f"dense_{task}_{title}.png", args.figure_images, title)
        results[title] = {k: v for k, v in res.items() if k not in ("predictions", "test")}
    table = {"task": task, "dataset": str(args.dataset), "encoders": results}
    write_json(out / f"dense_{task}.json", table)
    atomic_write_text(out / f"dense_{task}.md", markdown_dense(table))
    print(json.dumps({"output_dir": str(out), "task": task}))
    return table


def segment_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return main(argv, "segmentation")


def detect_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return main(argv, "detection")


def _fmt(stat: dict[str, Any]) -> str:
    text = f"{stat['mean']:.3f}"
    return text + (f" [{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]" if "ci95" in stat else "")


def markdown_dense(table: dict[str, Any]) -> str:
    """One row per encoder and the baseline, one column per label fraction."""
    metric = "pooled Dice" if table["task"] == "segmentation" else "mAP@[0.40:0.75]"
    any_res = next(iter(table["encoders"].values()))
    fractions = [s["fraction"] for s in any_res["summary"]]
    lines = [
        f"| encoder ({metric}) | " + " | ".join(f"{f:.0%}" for f in fractions) + " |",
        "|---|" + "---|" * len(fractions),
    ]
    for title, res in table["encoders"].items():
        lines.append(f"| {title} | " + " | ".join(_fmt(s["model"]) for s in res["summary"]) + " |")
    base = "mean mask" if table["task"] == "segmentation" else "fixed boxes"
    lines.append(f"| baseline ({base}) | " + " | ".join(_fmt(s["baseline"]) for s in any_res["summary"]) + " |")
    seeds = sorted({r["seed"] for r in any_res["rows"]})
    return "\n".join(lines) + f"\n\nMean [95 % t-interval] over seeds {seeds}; dataset {table['dataset']}.\n"


def dense_figure(result: dict[str, Any], path: Path, num_images: int, title: str) -> Path:
    """True vs predicted masks (contours, one colour per finding) or boxes (solid true, dashed
    predicted with score >= 0.3) on the first test images that hold a finding."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from genssl_hf.utils import atomic_write_bytes

    test, pred, task = result["test"], result["predictions"], result["task"]
    chosen = [i for i in range(len(test)) if test.targets[i].any()][:num_images] or list(
        range(min(num_images, len(test)))
    )
    cols = 2 if task == "segmentation" else 1
    fig, axes = plt.subplots(len(chosen), cols, figsize=(2.6 * 2, 2.6 * len(chosen)), squeeze=False)
    for row, i in enumerate(chosen):
        image = test.images[i, 0].numpy()
        for ax in axes[row]:
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.axis("off")
        if task == "segmentation":
            for c, colour in enumerate(FINDING_COLOURS[: len(test.names)]):
                for ax, m in ((axes[row, 0], test.masks[i, c]), (axes[row, 1], pred[i, c])):
                    if m.any():
                        ax.contour(m.numpy().astype(float), levels=[0.5], colors=[colour], linewidths=1.0)
            axes[row, 0].set_title("true", fontsize=7)
            axes[row, 1].set_title("predicted", fontsize=7)
            continue
        ax = axes[row, 0]
        for box, label in zip(test.boxes[i].numpy(), test.labels[i].numpy()):
            ax.add_patch(Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, lw=1.2, color=FINDING_COLOURS[label]))
        keep = pred[i]["scores"] >= 0.3
        for box, label, s in zip(
            pred[i]["boxes"][keep].numpy(), pred[i]["labels"][keep].numpy(), pred[i]["scores"][keep]
        ):
            ax.add_patch(
                Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, lw=1.0, ls="--", color=FINDING_COLOURS[label])
            )
            ax.text(box[0], box[1], f"{float(s):.2f}", color=FINDING_COLOURS[label], fontsize=5, va="bottom")
        ax.set_title("true (solid) vs predicted (dashed)", fontsize=6)
    handles = [plt.Line2D([], [], color=c, label=n) for n, c in zip(test.names, FINDING_COLOURS)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=6, frameon=False)
    fig.suptitle(f"{title}: {task}, {result['model']}", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
