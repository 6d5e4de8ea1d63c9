"""The command line of :mod:`genssl_hf.training.vlp` (image-report contrastive pre-training): its
options as typed dataclasses and their parser (:class:`~genssl_hf.typed_args.TypedArgumentParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genssl_hf.training.args import add_adain_args, add_common_args, add_optimisation_args
from genssl_hf.models.presets import VIT_PRESETS
from genssl_hf.training.dual_encoder import CNN_PRESETS
from genssl_hf.training.vlp_loss import LOSS_PRESETS
from genssl_hf.typed_args import TypedArgumentParser, add_dataclass_arguments
from genssl_hf.validation import renamed_options

__all__ = [
    "RENAMED_OPTIONS",
    "VlpPairArguments",
    "VlpModelArguments",
    "VlpLossArguments",
    "VlpMgcaArguments",
    "VlpTrainingArguments",
    "VlpOutputArguments",
    "build_parser",
]

# The options of this script before it spoke the trainers' one vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {"--image_tower": "--model"}


@dataclass(kw_only=True)
class VlpPairArguments:
    _argument_group_name = "pairs"
    pairs: str = field(
        default="phantom:2000",
        metadata={
            "help": "phantom[:N] (embedded default), generated:DIR (with --reports), mimic:ROOT (with --reports)"
        },
    )
    reports: str | None = field(
        default=None,
        metadata={
            "help": "report corpus for generated:/mimic: pairs (iu:NLMCXR_reports.tgz, mimic-reports:ROOT, a "
            "dataset or file); the text is joined back by hash at run time and never written"
        },
    )
    section: Literal["findings", "impression", "text"] = field(
        default="findings", metadata={"help": "report section used as text"}
    )
    phantom_config: str | None = field(
        default=None,
        metadata={"help": "JSON PhantomConfig fields for phantom pairs, e.g. '{\"exposure\": [1.2, 1.6]}'"},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "cap the training pairs"})


@dataclass(kw_only=True)
class VlpModelArguments:
    _argument_group_name = "model"
    model: str = field(
        default="tiny",
        metadata={
            "help": f"the image tower: a ViT preset ({', '.join(VIT_PRESETS)}) or CNN preset "
            f"({', '.join(CNN_PRESETS)}) for random init, or a ViT / ViTMAE / classifier folder to start from"
        },
    )
    text_tower: str = field(
        default="minilm",
        metadata={"help": "minilm (packaged all-MiniLM-L6-v2), tiny-bert (random, tests) or a local BERT-style folder"},
    )
    image_size: int | None = field(default=None, metadata={"help": "input size (default: the image tower's)"})
    projection_dim: int = field(default=128, metadata={"help": "width of the shared embedding"})
    freeze_text_layers: int = field(
        default=0, metadata={"help": "freeze the text tower's embeddings and first N layers"}
    )
    max_text_length: int = field(default=128, metadata={"help": "tokens per report (capped at the text tower's limit)"})


@dataclass(kw_only=True)
class VlpLossArguments:
    _argument_group_name = "loss"
    loss: str = field(
        default="convirt",
        metadata={
            "choices": sorted(LOSS_PRESETS),
            "help": "convirt: T=0.1 fixed, lambda=0.75; clip: learnable T, lambda=0.5; "
            "gloria: global + local (word-region) losses; mgca: instance + token + prototype alignment",
        },
    )
    temperature: float | None = field(default=None, metadata={"help": "override the preset's (initial) temperature"})
    image_to_text_weight: float | None = field(default=None, metadata={"help": "override lambda"})
    dedupe_targets: Literal["on", "off"] = field(
        default="on", metadata={"help": "identical reports are positives, not negatives"}
    )


@dataclass(kw_only=True)
class VlpMgcaArguments:
    """MGCA's options (``--method mgca`` only; unset: the paper's value, see ``mgca_loss.MGCA_LOSS``)."""

    _argument_group_name = "MGCA (--method mgca; unset: the defaults of genssl_hf.training.mgca_loss)"
    mgca_ita_weight: float | None = field(default=None, metadata={"help": "weight of the instance loss (1)"})
    mgca_cta_weight: float | None = field(default=None, metadata={"help": "weight of the token loss (1)"})
    mgca_cpa_weight: float | None = field(default=None, metadata={"help": "weight of the prototype loss (1)"})
    mgca_num_prototypes: int | None = field(default=None, metadata={"help": "prototypes K (64; paper 500)"})
    mgca_local_temperature: float | None = field(default=None, metadata={"help": "token-level temperature (0.1)"})
    mgca_prototype_temperature: float | None = field(
        default=None, metadata={"help": "swapped-prediction temperature (0.2)"}
    )
    mgca_sinkhorn_epsilon: float | None = field(default=None, metadata={"help": "Sinkhorn epsilon (0.05)"})
    mgca_sinkhorn_iterations: int | None = field(default=None, metadata={"help": "Sinkhorn iterations (3)"})
    mgca_cpa_start_step: int | None = field(
        default=None, metadata={"help": "optimiser step from which CPA joins the loss (default: one epoch)"}
    )
    mgca_token_weights: Literal["attention", "uniform"] | None = field(
        default=None,
        metadata={"help": "token importance: last-layer [CLS] attention (uniform where a tower has none) or uniform"},
    )


@dataclass(kw_only=True)
class VlpTrainingArguments:
    _argument_group_name = "optimisation"
    crop_scale_min: float = field(default=0.6, metadata={"help": "random resized crop minimum area"})
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (1 is fastest on a shared, loaded CPU)"}
    )


@dataclass(kw_only=True)
class VlpOutputArguments:
    _argument_group_name = "AdaIN (as for MAE pre-training)"
    figure: Literal["on", "off"] = field(default="on", metadata={"help": "retrieval figure"})


def build_parser() -> TypedArgumentParser:
    p = TypedArgumentParser(
        [VlpPairArguments, VlpModelArguments, VlpLossArguments, VlpMgcaArguments],
        description="Image-report pre-training (ConVIRT / CLIP / GLoRIA / MGCA) -> VisionTextDualEncoderModel",
    )
    g = add_optimisation_args(
        p,
        batch_size=64,
        epochs=10,
        learning_rate=1e-4,
        weight_decay=1e-4,
        warmup_ratio=0.05,
        max_grad_norm=1.0,
        num_workers=True,
    )
    add_dataclass_arguments(p, VlpTrainingArguments, group=g)
    g = add_adain_args(p, "AdaIN (as for MAE pre-training)")
    add_dataclass_arguments(p, VlpOutputArguments, group=g)
    add_common_args(p)
    p.set_defaults(mixed_precision="no")
    renamed_options(p, RENAMED_OPTIONS)
    return p
