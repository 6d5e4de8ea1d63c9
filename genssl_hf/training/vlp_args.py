"""The command line of :mod:`genssl_hf.training.vlp` (image-report contrastive pre-training)."""

from __future__ import annotations

import argparse

from genssl_hf.training.args import add_adain_args, add_common_args, add_optimisation_args
from genssl_hf.training.classifier import VIT_PRESETS
from genssl_hf.training.dual_encoder import CNN_PRESETS
from genssl_hf.training.vlp_loss import LOSS_PRESETS
from genssl_hf.validation import renamed_options

__all__ = ["RENAMED_OPTIONS", "build_parser"]

# The options of this script before it spoke the trainers' one vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {"--image_tower": "--model"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Image-report contrastive pre-training (ConVIRT / CLIP) -> VisionTextDualEncoderModel"
    )
    _add_pair_args(p)
    _add_model_args(p)
    _add_loss_args(p)
    _add_optimisation_args(p)
    a = add_adain_args(p, "AdaIN (as for MAE pre-training)")
    a.add_argument("--figure", choices=["on", "off"], default="on")
    add_common_args(p)
    p.set_defaults(mixed_precision="no")
    renamed_options(p, RENAMED_OPTIONS)
    return p


def _add_pair_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("pairs")
    d.add_argument(
        "--pairs",
        default="phantom:2000",
        help="phantom[:N] (embedded default), generated:DIR (with --reports), mimic:ROOT (with --reports)",
    )
    d.add_argument(
        "--reports",
        default=None,
        help="report corpus for generated:/mimic: pairs "
        "(iu:NLMCXR_reports.tgz, mimic-reports:ROOT, a dataset or file); "
        "the text is joined back by hash at run time and never written",
    )
    d.add_argument(
        "--section", choices=["findings", "impression", "text"], default="findings", help="report section used as text"
    )
    d.add_argument(
        "--phantom_config",
        default=None,
        help="JSON PhantomConfig fields for phantom pairs, e.g. '{\"exposure\": [1.2, 1.6]}'",
    )
    d.add_argument("--max_train_samples", type=int, default=None)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default="tiny",
        help=f"the image tower: a ViT preset ({', '.join(VIT_PRESETS)}) or CNN preset ({', '.join(CNN_PRESETS)}) "
        "for random init, or a ViT / ViTMAE / classifier folder to start from",
    )
    m.add_argument(
        "--text_tower",
        default="minilm",
        help="minilm (packaged all-MiniLM-L6-v2), tiny-bert (random, tests) or a local BERT-style folder",
    )
    m.add_argument("--image_size", type=int, default=None, help="input size (default: the image tower's)")
    m.add_argument("--projection_dim", type=int, default=128)
    m.add_argument(
        "--freeze_text_layers", type=int, default=0, help="freeze the text tower's embeddings and first N layers"
    )
    m.add_argument(
        "--max_text_length", type=int, default=128, help="tokens per report (capped at the text tower's limit)"
    )


def _add_loss_args(p: argparse.ArgumentParser) -> None:
    lo = p.add_argument_group("loss")
    lo.add_argument(
        "--loss",
        choices=sorted(LOSS_PRESETS),
        default="convirt",
        help="convirt: T=0.1 fixed, lambda=0.75; clip: learnable T, lambda=0.5",
    )
    lo.add_argument("--temperature", type=float, default=None, help="override the preset's (initial) temperature")
    lo.add_argument("--image_to_text_weight", type=float, default=None, help="override lambda")
    lo.add_argument(
        "--dedupe_targets", choices=["on", "off"], default="on", help="identical reports are positives, not negatives"
    )


def _add_optimisation_args(p: argparse.ArgumentParser) -> None:
    o = add_optimisation_args(
        p,
        batch_size=64,
        epochs=10,
        learning_rate=1e-4,
        weight_decay=1e-4,
        warmup_ratio=0.05,
        max_grad_norm=1.0,
        num_workers=True,
    )
    o.add_argument("--crop_scale_min", type=float, default=0.6)
    o.add_argument(
        "--num_threads", type=int, default=None, help="torch CPU threads (1 is fastest on a shared, loaded CPU)"
    )
