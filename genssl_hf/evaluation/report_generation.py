"""Evaluate a report generator against the two baselines that make its numbers mean something.

Systems scored on the same test pairs, with the same metrics (:mod:`genssl_hf.evaluation.report_metrics`):

- ``greedy`` and ``beam``: the model's ``generate()`` with ``num_beams=1`` and with the stored beam
  setting (no-repeat n-gram size and length penalty as stored in ``generation_config.json``);
- ``constant``: the most common training report, written for every test image;
- ``nearest_neighbour``: the report of the most similar training image under the *same* encoder
  (cosine similarity of mean-pooled patch features of the model's own encoder, i.e. as fine-tuned
  by report generation: a strong retrieval system in its own right);
- ``nearest_neighbour_initial``: the same retrieval under the encoder the generator *started from*
  (the pre-trained encoder being compared, before any report supervision), when its folder is known
  (``initial_encoder``; ``"auto"`` reads ``init_from`` of the run's ``run_config.json``).

Writes ``report_metrics.json`` and ``report_tables.md``. Example outputs are written only for
phantom data (``examples_allowed``): never real report text in an artifact.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from genssl_hf.data.schema import CHEXPERT5, CHEXPERT14
from genssl_hf.evaluation.report_metrics import report_metrics
from genssl_hf.utils import atomic_write_text, write_json, writer_lock
from genssl_hf.validation import renamed_options

__all__ = ["constant_report", "nearest_neighbour_reports", "evaluate_report_generator", "format_table", "main"]

SYSTEMS = ("greedy", "beam", "constant", "nearest_neighbour", "nearest_neighbour_initial")
TABLE_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "meteor", "ce_precision", "ce_recall", "ce_f1")


def constant_report(train_reports: Sequence[str]) -> str:
    """The most common training report (ties: the lexicographically first, so it is deterministic)."""
    counts = Counter(train_reports)
    if not counts:
        raise ValueError("no training reports for the constant-report baseline")
    top = max(counts.values())
    return min(r for r, c in counts.items() if c == top)


def nearest_neighbour_reports(
    train_features: np.ndarray, train_reports: Sequence[str], test_features: np.ndarray, batch_size: int = 1024
) -> list[str]:
    """For each test feature row, the report of the training row with the highest cosine similarity."""
    tr = np.asarray(train_features, dtype=np.float32)
    te = np.asarray(test_features, dtype=np.float32)
    if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1]:
        raise ValueError(f"feature shapes do not match: train {tr.shape}, test {te.shape}")
    if len(tr) != len(train_reports):
        raise ValueError(f"{len(tr)} training features but {len(train_reports)} training reports")
    tr = tr / np.maximum(np.linalg.norm(tr, axis=1, keepdims=True), 1e-12)
    te = te / np.maximum(np.linalg.norm(te, axis=1, keepdims=True), 1e-12)
    idx = np.concatenate([np.argmax(te[s : s + batch_size] @ tr.T, axis=1) for s in range(0, len(te), batch_size)])
    return [train_reports[i] for i in idx.tolist()]


def _images(pairs) -> list[np.ndarray]:
    return [np.asarray(r[pairs.image_column]) for r in pairs.images.select_columns([pairs.image_column])]


def _system_outputs(
    model, processor, train, train_reports: list[str], test_images, n_test: int, beams: int, batch_size: int
) -> dict[str, list[str]]:
    """The reports of the model (greedy and beam search) and of the baselines (the constant report, the
    nearest training neighbour in the model's encoder space), per test image."""
    import torch

    from genssl_hf.training.report_generator_model import encode_images, generate_reports

    settings = {"greedy": {"num_beams": 1}, "beam": {"num_beams": max(beams, 2)}}
    outputs: dict[str, list[str]] = {}
    with torch.inference_mode():
        for name, kw in settings.items():
            outputs[name] = generate_reports(model, processor, test_images, batch_size=batch_size, **kw)
        outputs["constant"] = [constant_report(train_reports)] * n_test
        train_feats = encode_images(model.encoder, processor, _images(train), batch_size=batch_size)
        test_feats = encode_images(model.encoder, processor, test_images, batch_size=batch_size)
    outputs["nearest_neighbour"] = nearest_neighbour_reports(train_feats, train_reports, test_feats)
    return outputs


def _initial_encoder_neighbours(
    start, model, processor, train, train_reports: list[str], test_images, batch_size: int
) -> list[str]:
    """The nearest-neighbour baseline in the space of the encoder the model was trained from."""
    import torch

    from genssl_hf.training.report_generator_model import encode_images, load_vit_encoder

    encoder, _ = load_vit_encoder(start, model.config.encoder.image_size)
    with torch.inference_mode():
        train_feats = encode_images(encoder, processor, _images(train), batch_size=batch_size)
        test_feats = encode_images(encoder, processor, test_images, batch_size=batch_size)
    return nearest_neighbour_reports(train_feats, train_reports, test_feats)


def evaluate_report_generator(
    model_folder: str | Path,
    pairs: Any,
    *,
    split: str = "test",
    observations: Sequence[str] = CHEXPERT14,
    max_train: int | None = None,
    max_test: int | None = None,
    batch_size: int = 32,
    output_dir: str | Path | None = None,
    examples_allowed: bool = False,
    num_examples: int = 4,
    initial_encoder: str | Path | None = "auto",
) -> dict[str, Any]:
    """Score the model in ``model_folder`` and both baselines on ``pairs[split]`` (a DatasetDict with
    ``train`` and ``split``, each an ``ImageReportPairs``). Returns
    ``{"systems": {name: metrics}, "generation": {...}, ...}``."""
    from transformers import AutoProcessor, VisionEncoderDecoderModel

    import genssl_hf  # noqa: F401  (registers the processor classes)

    folder = Path(model_folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--model {folder}: no config.json (expected a report-generator folder)")
    for name in ("train", split):
        if name not in pairs:
            raise KeyError(f"the pairs have no {name!r} split (splits: {list(pairs)})")
    model = VisionEncoderDecoderModel.from_pretrained(str(folder))
    processor = AutoProcessor.from_pretrained(str(folder))
    train, test = pairs["train"], pairs[split]
    if max_train is not None:
        train = train.select(range(min(len(train), int(max_train))))
    if max_test is not None:
        test = test.select(range(min(len(test), int(max_test))))
    train_reports, refs = list(train.texts), list(test.texts)
    test_images = _images(test)

    gen_cfg = model.generation_config
    beams = int(gen_cfg.num_beams or 1)
    outputs = _system_outputs(model, processor, train, train_reports, test_images, len(refs), beams, batch_size)
    start = _initial_encoder_folder(folder) if initial_encoder == "auto" else initial_encoder
    if start is not None:
        outputs["nearest_neighbour_initial"] = _initial_encoder_neighbours(
            start, model, processor, train, train_reports, test_images, batch_size
        )

    result: dict[str, Any] = {
        "model": str(folder),
        "split": split,
        "num_test": len(refs),
        "num_train": len(train_reports),
        "observations": list(observations),
        "generation": {
            "greedy": {"num_beams": 1},
            "beam": {"num_beams": max(beams, 2)},
            "no_repeat_ngram_size": gen_cfg.no_repeat_ngram_size,
            "length_penalty": gen_cfg.length_penalty,
            "max_new_tokens": gen_cfg.max_new_tokens,
        },
        "systems": {name: report_metrics(hyps, refs, observations) for name, hyps in outputs.items()},
        "distinct_outputs": {name: len(set(h)) for name, h in outputs.items()},
    }
    if examples_allowed:
        result["examples"] = [
            {"reference": refs[i], **{n: outputs[n][i] for n in outputs}} for i in range(min(num_examples, len(refs)))
        ]
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "report_metrics.json", result)
        atomic_write_text(out / "report_tables.md", format_table(result))
    return result


def _initial_encoder_folder(model_folder: Path) -> str | None:
    """The encoder folder a report generator was trained from (``run_config.json``), if it still exists."""
    config = model_folder / "run_config.json"
    if not config.is_file():
        return None
    start = json.loads(config.read_text()).get("model", {}).get("init_from")
    return start if start and (Path(start) / "config.json").is_file() else None


def format_table(result: dict[str, Any]) -> str:
    """Markdown table: one row per system, language and clinical-efficacy columns."""
    systems = result["systems"]
    cols = [m for m in TABLE_METRICS if any(m in s for s in systems.values())]
    lines = ["| system | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, m in systems.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" if c in m else "n/a" for c in cols) + " |")
    skipped = next((s.get("meteor_skipped") for s in systems.values() if s.get("meteor_skipped")), None)
    notes = [f"\n{result['num_test']} test pairs; clinical efficacy (micro) over {', '.join(result['observations'])}."]
    if skipped:
        notes.append(skipped + ".")
    return "\n".join(lines) + "\n" + " ".join(notes) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Evaluate a report generator against constant and nearest-neighbour baselines."
    )
    ap.add_argument("--model", required=True, help="report-generator folder (train_report_generator.py output)")
    ap.add_argument(
        "--dataset",
        default="phantom:2000",
        help="pairs spec, as for training ('phantom[:N]', 'generated:DIR', 'mimic:ROOT')",
    )
    ap.add_argument("--reports", default=None, help="report corpus for generated:/mimic: pairs (text stays in memory)")
    ap.add_argument("--section", choices=["findings", "impression", "text"], default="findings")
    ap.add_argument("--split", default="test")
    ap.add_argument(
        "--observations",
        choices=["auto", "chexpert5", "chexpert14"],
        default="auto",
        help="auto: the phantom world's five findings for phantom data, else the 14 CheXpert observations",
    )
    ap.add_argument("--max_train", type=int, default=None)
    ap.add_argument("--max_test", type=int, default=None)
    ap.add_argument("--per_device_eval_batch_size", type=int, default=32, help="images per generate() call")
    ap.add_argument(
        "--seed", type=int, default=0, help="the training run's seed (same phantom streams / patient split)"
    )
    ap.add_argument("--output_dir", required=True)
    renamed_options(ap, {"--batch_size": "--per_device_eval_batch_size"})
    return ap


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from transformers import VisionEncoderDecoderConfig

    from genssl_hf.training.report_generator import load_report_pairs

    args = build_parser().parse_args(argv)
    phantom = str(args.dataset).startswith("phantom")
    obs = {"chexpert5": CHEXPERT5, "chexpert14": CHEXPERT14}.get(
        args.observations, CHEXPERT5 if phantom else CHEXPERT14
    )
    image_size = VisionEncoderDecoderConfig.from_pretrained(args.model).encoder.image_size
    pairs = load_report_pairs(
        args.dataset, image_size=image_size, seed=args.seed, corpus=args.reports, section=args.section
    )
    with writer_lock(args.output_dir, "--output_dir"):
        result = evaluate_report_generator(
            args.model,
            pairs,
            split=args.split,
            observations=obs,
            max_train=args.max_train,
            max_test=args.max_test,
            batch_size=args.per_device_eval_batch_size,
            output_dir=args.output_dir,
            examples_allowed=phantom,
        )
    print(format_table(result))
    return result


if __name__ == "__main__":
    main()
