"""The tables and command line of frozen-feature probing (:mod:`genssl_hf.evaluation.frozen_features`):
the per-seed rows summarised over seeds, the Markdown table, and ``scripts/probe_encoders.py``'s
parser and ``main``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from genssl_hf.evaluation.frozen_features import _check_fractions, check_encoder_spec, frozen_feature_table
from genssl_hf.evaluation.probe_args import build_parser

__all__ = ["summarise_table", "markdown_table", "parse_encoder_arg", "build_parser", "main"]


def summarise_table(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds per (encoder, fraction), in the rows' order."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in table["rows"]:
        groups.setdefault((row["encoder"], row["fraction"]), []).append(row)
    out = []
    for (title, fraction), rows in groups.items():
        entry: dict[str, Any] = {
            "encoder": title,
            "fraction": fraction,
            "num_seeds": len(rows),
            "num_train": rows[0]["num_train"],
        }
        for key in ("knn_auc", "probe_auc"):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            entry[f"{key}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            entry[f"{key}_std"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else 0.0
        entry["probe_C"] = sorted({r["probe_C"] for r in rows})
        out.append(entry)
    return out


def markdown_table(table: Mapping[str, Any]) -> str:
    """Encoder x label fraction: kNN and linear-probe test AUC, mean ± std over seeds."""
    summary = summarise_table(table)
    fractions = list(table["fractions"])
    titles = list(dict.fromkeys(r["encoder"] for r in summary))
    cell = {(r["encoder"], r["fraction"]): r for r in summary}

    def fmt(r, key):
        return f"{r[key + '_mean']:.3f} ± {r[key + '_std']:.3f}"

    head = ["encoder"] + [f"kNN {f:.0%}" for f in fractions] + [f"probe {f:.0%}" for f in fractions]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in titles:
        vals = [fmt(cell[(t, f)], "knn_auc") for f in fractions] + [fmt(cell[(t, f)], "probe_auc") for f in fractions]
        lines.append(f"| {t} | " + " | ".join(vals) + " |")
    p = table["protocol"]
    n_train = {f: cell[(titles[0], f)]["num_train"] for f in fractions}
    lines += [
        "",
        f"Test mean ROC AUC ({table['task']}, classes {', '.join(table['label_names'])}), mean ± std over "
        f"seeds {table['seeds']}; training rows per fraction: "
        + ", ".join(f"{f:.0%}: {n}" for f, n in n_train.items())
        + f"; splits {table['splits']}. Features: {p['pooling']} pooling of "
        f"{'the last layer' if p.get('layer', -1) == -1 else 'block ' + str(p['layer']) + ' (no final norm)'}, frozen. "
        f"kNN: k={p['knn_k']}, T={p['knn_temperature']}, cosine. Probe: logistic regression on standardised "
        f"features, C in {p['c_grid']} chosen on validation.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ command line
def parse_encoder_arg(text: str) -> tuple[str, dict[str, str]]:
    """``TITLE=INIT`` or ``TITLE=INIT:PROCESSOR`` (``PROCESSOR``: ``init`` / ``none`` / a folder)."""
    title, sep, rest = str(text).partition("=")
    if not sep or not title.strip() or not rest.strip():
        raise ValueError(f"--model {text!r}: expected TITLE=PATH_OR_PRESET[:init|none|PROCESSOR_FOLDER]")
    init, _, processor = rest.partition(":")
    return title.strip(), {"init": init.strip(), "image_processor": processor.strip() or "init"}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: every input checked before any features are computed; writes
    ``frozen_features.json`` and ``frozen_features.md`` into ``--output_dir`` (atomically)."""
    from genssl_hf.utils import writer_lock

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    encoders: dict[str, dict[str, str]] = {}
    for text in args.model:
        title, spec = parse_encoder_arg(text)
        if title in encoders:
            raise ValueError(f"--model {text!r}: the title {title!r} is given twice")
        try:
            check_encoder_spec(spec["init"], spec["image_processor"])
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"--model {text!r}: {err}") from err
        encoders[title] = spec
    _check_fractions(args.fractions)
    out = Path(args.output_dir)
    with writer_lock(out, "--output_dir"):
        return _run(args, encoders, out)


def _run(args: argparse.Namespace, encoders: dict[str, dict[str, str]], out: Path) -> dict[str, Any]:
    import json
    import platform

    from genssl_hf.data.registry import open_labelled_dataset
    from genssl_hf.utils import atomic_write_text, write_json

    if (out / "frozen_features.json").exists() and not args.overwrite:
        raise FileExistsError(f"--output_dir {str(out)!r} already holds frozen_features.json; pass --overwrite")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    dd = open_labelled_dataset(
        args.dataset,
        config=args.dataset_config,
        phantom_sizes=args.phantom_sizes,
        phantom_resolution=args.phantom_resolution,
        seed=0,
    )
    table = frozen_feature_table(
        encoders,
        dd,
        fractions=args.fractions,
        seeds=args.seeds,
        train_split=args.train_split,
        validation_split=args.validation_split,
        test_split=args.test_split,
        image_column=args.image_column,
        pooling=args.pooling,
        k=args.knn_k,
        temperature=args.knn_temperature,
        c_grid=args.c_grid,
        batch_size=args.per_device_eval_batch_size,
        layer=args.layer,
        feature_maps_dir=out if args.tsne == "on" else None,
    )
    table["summary"] = summarise_table(table)
    table["dataset"] = str(args.dataset)
    table["machine"] = {"processor": _cpu_model() or platform.processor(), "torch_threads": torch.get_num_threads()}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "frozen_features.json", table)
    atomic_write_text(
        out / "frozen_features.md",
        f"# Frozen-feature quality on {args.dataset}\n\n{markdown_table(table)}\n"
        f"Wall time {table['seconds']:.0f} s on {table['machine']['processor']} "
        f"({table['machine']['torch_threads']} torch thread(s)).\n",
    )
    print(json.dumps({"output_dir": str(out), "seconds": table["seconds"]}))
    return table


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


if __name__ == "__main__":
    main()
