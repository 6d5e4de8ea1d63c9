"""The command line of :mod:`genssl_hf.training.report_generator`: its options as typed dataclasses,
their parser (:class:`~genssl_hf.typed_args.TypedArgumentParser`) and the checks on what it parsed."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

from genssl_hf.models import VIT_PRESETS
from genssl_hf.training.args import add_common_args, add_optimisation_args
from genssl_hf.training.report_generator_model import DECODERS, GENERATION_DEFAULTS
from genssl_hf.typed_args import TypedArgumentParser, add_dataclass_arguments
from genssl_hf.validation import renamed_options

__all__ = [
    "VOCABULARIES",
    "RENAMED_OPTIONS",
    "ReportModelArguments",
    "ReportDataArguments",
    "ReportTrainingArguments",
    "ReportGenerationArguments",
    "build_parser",
    "check_args",
]

VOCABULARIES = ("minilm", "reports")

# The options of this script before it spoke the trainers' one vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {"--encoder": "--model"}


@dataclass(kw_only=True)
class ReportModelArguments:
    _argument_group_name = "model"
    model: str = field(
        default="tiny",
        metadata={
            "help": f"the image encoder: a ViT preset ({', '.join(VIT_PRESETS)}: random init) or a ViT / ViTMAE / "
            "classifier folder to start from"
        },
    )
    decoder: str = field(
        default="minilm",
        metadata={
            "choices": list(DECODERS),
            "help": "minilm: BERT decoder from all-MiniLM-L6-v2; gpt2: small GPT-2 from config",
        },
    )
    decoder_layers: int | None = field(
        default=None, metadata={"help": "decoder layers (MiniLM: first K of 6; GPT-2 default 2)"}
    )
    gpt2_hidden: int = field(default=256, metadata={"help": "GPT-2 decoder width (--decoder gpt2)"})
    vocabulary: str = field(
        default="minilm",
        metadata={
            "choices": list(VOCABULARIES),
            "help": "minilm: MiniLM's WordPiece tokenizer; reports: a word vocabulary built from the training "
            "reports (R2Gen's recipe; --decoder gpt2 only): a far smaller output layer, faster steps",
        },
    )
    vocabulary_min_frequency: int = field(
        default=3, metadata={"help": "--vocabulary reports: keep words seen this often"}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "input size (random-init encoders only; folders keep theirs)"}
    )
    adain: Literal["on", "off"] = field(
        default="on", metadata={"help": "AdaIN in the processor of a random-init encoder"}
    )
    freeze_encoder: bool = field(
        default=False, metadata={"help": "train the decoder only (the encoder is a fixed feature extractor)"}
    )


@dataclass(kw_only=True)
class ReportDataArguments:
    _argument_group_name = "data"
    dataset: str = field(
        default="phantom:2000",
        metadata={
            "help": "pairs spec: 'phantom[:N]', 'generated:DIR', 'mimic:ROOT' (genssl_hf.data.pairs) or "
            "'iu-xray:PNG_DIR'"
        },
    )
    reports: str | None = field(
        default=None,
        metadata={
            "help": "report corpus for generated:/mimic: pairs (e.g. iu:NLMCXR_reports.tgz); text stays in memory"
        },
    )
    section: Literal["findings", "impression", "text"] = field(
        default="findings", metadata={"help": "report part to generate"}
    )
    max_report_tokens: int = field(default=128, metadata={"help": "tokens per target report"})
    corpus_name: str | None = field(
        default=None, metadata={"help": "name of the report corpus for the card (default: from --dataset)"}
    )
    corpus_license: str | None = field(
        default=None, metadata={"help": "licence of the report corpus (e.g. cc-by-nc-nd-4.0 for IU X-ray)"}
    )


@dataclass(kw_only=True)
class ReportTrainingArguments:
    _argument_group_name = "optimisation"
    encoder_learning_rate: float | None = field(
        default=None, metadata={"help": "encoder lr (default: --learning_rate / 5)"}
    )


@dataclass(kw_only=True)
class ReportGenerationArguments:
    _argument_group_name = "generation (stored in generation_config.json)"
    num_beams: int = field(default=GENERATION_DEFAULTS["num_beams"], metadata={"help": "beam search width"})
    no_repeat_ngram_size: int = field(
        default=GENERATION_DEFAULTS["no_repeat_ngram_size"], metadata={"help": "n-grams that may not repeat"}
    )
    length_penalty: float = field(
        default=GENERATION_DEFAULTS["length_penalty"], metadata={"help": "beam length penalty"}
    )
    max_new_tokens: int = field(default=GENERATION_DEFAULTS["max_new_tokens"], metadata={"help": "report length cap"})


def build_parser() -> TypedArgumentParser:
    ap = TypedArgumentParser(
        [ReportModelArguments, ReportDataArguments],
        description="Train a chest X-ray report generator (VisionEncoderDecoderModel) with accelerate.",
    )
    g = add_optimisation_args(
        ap,
        batch_size=32,
        epochs=10,
        learning_rate=5e-4,
        weight_decay=0.01,
        warmup_ratio=0.05,
        max_grad_norm=1.0,
        num_workers=True,
        stop_after_steps=True,
    )
    add_dataclass_arguments(ap, ReportTrainingArguments, group=g)
    add_dataclass_arguments(ap, ReportGenerationArguments)
    add_common_args(ap)
    ap.set_defaults(mixed_precision="no", checkpointing_steps=0)
    renamed_options(ap, RENAMED_OPTIONS)
    return ap


def check_args(args: argparse.Namespace) -> None:
    if args.vocabulary == "reports" and args.decoder != "gpt2":
        raise ValueError(
            "--vocabulary reports needs --decoder gpt2 (the MiniLM decoder's embeddings belong to its own vocabulary)"
        )
    for name in ("per_device_train_batch_size", "max_new_tokens", "num_beams", "vocabulary_min_frequency"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.no_repeat_ngram_size < 0:
        raise ValueError(f"--no_repeat_ngram_size must be >= 0, got {args.no_repeat_ngram_size}")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max_steps must be >= 1, got {args.max_steps}")
