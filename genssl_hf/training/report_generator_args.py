"""The command line of :mod:`genssl_hf.training.report_generator`: its parser and the checks on what it parsed."""

from __future__ import annotations

import argparse

from genssl_hf.models import VIT_PRESETS
from genssl_hf.training.args import add_common_args, add_optimisation_args
from genssl_hf.training.report_generator_model import DECODERS, GENERATION_DEFAULTS
from genssl_hf.validation import renamed_options

__all__ = ["VOCABULARIES", "RENAMED_OPTIONS", "build_parser", "check_args"]

VOCABULARIES = ("minilm", "reports")

# The options of this script before it spoke the trainers' one vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {"--encoder": "--model"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Train a chest X-ray report generator (VisionEncoderDecoderModel) with accelerate."
    )
    _add_model_args(ap)
    _add_data_args(ap)
    _add_optimisation_args(ap)
    _add_generation_args(ap)
    add_common_args(ap)
    ap.set_defaults(mixed_precision="no", checkpointing_steps=0)
    renamed_options(ap, RENAMED_OPTIONS)
    return ap


def _add_model_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("model")
    g.add_argument(
        "--model",
        default="tiny",
        help=f"the image encoder: a ViT preset ({', '.join(VIT_PRESETS)}: random init) or a ViT / ViTMAE / "
        "classifier folder to start from",
    )
    g.add_argument(
        "--decoder",
        choices=DECODERS,
        default="minilm",
        help="minilm: BERT decoder from all-MiniLM-L6-v2; gpt2: small GPT-2 from config",
    )
    g.add_argument(
        "--decoder_layers", type=int, default=None, help="decoder layers (MiniLM: first K of 6; GPT-2 default 2)"
    )
    g.add_argument("--gpt2_hidden", type=int, default=256, help="GPT-2 decoder width (--decoder gpt2)")
    g.add_argument(
        "--vocabulary",
        choices=VOCABULARIES,
        default="minilm",
        help="minilm: MiniLM's WordPiece tokenizer; reports: a word vocabulary built from the training reports "
        "(R2Gen's recipe; --decoder gpt2 only): a far smaller output layer, faster steps",
    )
    g.add_argument(
        "--vocabulary_min_frequency", type=int, default=3, help="--vocabulary reports: keep words seen this often"
    )
    g.add_argument(
        "--image_size", type=int, default=None, help="input size (random-init encoders only; folders keep theirs)"
    )
    g.add_argument(
        "--adain", choices=["on", "off"], default="on", help="AdaIN in the processor of a random-init encoder"
    )
    g.add_argument(
        "--freeze_encoder",
        action="store_true",
        help="train the decoder only (the encoder is a fixed feature extractor)",
    )


def _add_data_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="phantom:2000",
        help="pairs spec: 'phantom[:N]', 'generated:DIR', 'mimic:ROOT' (genssl_hf.data.pairs) or 'iu-xray:PNG_DIR'",
    )
    g.add_argument(
        "--reports",
        default=None,
        help="report corpus for generated:/mimic: pairs (e.g. iu:NLMCXR_reports.tgz); text stays in memory",
    )
    g.add_argument(
        "--section", choices=["findings", "impression", "text"], default="findings", help="report part to generate"
    )
    g.add_argument("--max_report_tokens", type=int, default=128)
    g.add_argument(
        "--corpus_name", default=None, help="name of the report corpus for the card (default: from --dataset)"
    )
    g.add_argument(
        "--corpus_license", default=None, help="licence of the report corpus (e.g. cc-by-nc-nd-4.0 for IU X-ray)"
    )


def _add_optimisation_args(ap: argparse.ArgumentParser) -> None:
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
    g.add_argument(
        "--encoder_learning_rate", type=float, default=None, help="encoder lr (default: --learning_rate / 5)"
    )


def _add_generation_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("generation (stored in generation_config.json)")
    g.add_argument("--num_beams", type=int, default=GENERATION_DEFAULTS["num_beams"])
    g.add_argument("--no_repeat_ngram_size", type=int, default=GENERATION_DEFAULTS["no_repeat_ngram_size"])
    g.add_argument("--length_penalty", type=float, default=GENERATION_DEFAULTS["length_penalty"])
    g.add_argument("--max_new_tokens", type=int, default=GENERATION_DEFAULTS["max_new_tokens"])


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
