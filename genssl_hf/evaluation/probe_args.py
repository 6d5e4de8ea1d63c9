"""The options of ``genssl probe`` (frozen-feature kNN and linear probe,
:mod:`genssl_hf.evaluation.frozen_features_cli`) as typed dataclasses and their parser."""

from __future__ import annotations

from dataclasses import dataclass, field

from genssl_hf.evaluation.frozen_features import POOLINGS
from genssl_hf.evaluation.probe_scores import DEFAULT_C_GRID
from genssl_hf.typed_args import TypedArgumentParser
from genssl_hf.validation import checked_parser, renamed_options

__all__ = ["ProbeModelArguments", "ProbeDataArguments", "ProbeArguments", "build_parser"]


@dataclass(kw_only=True)
class ProbeModelArguments:
    _argument_group_name = "encoders and output"
    model: list[str] = field(
        metadata={
            "action": "append",
            "metavar": "TITLE=MODEL[:PROCESSOR]",
            "help": "repeatable. MODEL: a ViT / ViTMAE / classifier folder, or a preset (tiny, vit-s16, vit-b16) for "
            "seeded random weights. PROCESSOR: 'init' (default: the folder's AdaIN processor, else "
            "mean / std 0.5), 'none' (mean / std 0.5) or a folder whose preprocessor_config.json to use",
        }
    )
    output_dir: str = field(metadata={"help": "folder of frozen_features.json / .md"})
    overwrite: bool = field(default=False, metadata={"help": "replace the tables of an earlier run in --output_dir"})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "feature-extraction batch"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)"})


@dataclass(kw_only=True)
class ProbeDataArguments:
    _argument_group_name = "data"
    dataset: str = field(
        metadata={
            "help": "any genssl_hf.data.registry spec: phantom, kermany:ROOT, nih-subset:ROOT, a save_to_disk or "
            "parquet DatasetDict folder, ..."
        }
    )
    dataset_config: str | None = field(default=None, metadata={"help": "configuration name for load_dataset"})
    train_split: str = field(default="train", metadata={"help": "split the kNN bank / probe is fitted on"})
    validation_split: str = field(default="validation", metadata={"help": "split the probe's C is chosen on"})
    test_split: str = field(default="test", metadata={"help": "split that is scored"})
    image_column: str = field(default="image", metadata={"help": "column holding the images"})
    phantom_sizes: list[int] = field(
        default_factory=lambda: [2000, 300, 500],
        metadata={"nargs": 3, "metavar": ("TRAIN", "VAL", "TEST"), "help": "rows per split for --dataset phantom"},
    )
    phantom_resolution: int = field(default=64, metadata={"help": "phantom image side for --dataset phantom"})


@dataclass(kw_only=True)
class ProbeArguments:
    _argument_group_name = "protocol"
    fractions: list[float] = field(
        default_factory=lambda: [0.01, 0.1, 1.0], metadata={"help": "label fractions in (0, 1]"}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds of the label subsets"})
    pooling: str = field(default="mean", metadata={"choices": list(POOLINGS), "help": "feature pooling"})
    layer: int = field(
        default=-1,
        metadata={
            "help": "-1: the last layer after the final LayerNorm; 0..L: a ViT's embeddings (0) or block L's output "
            "(where in the encoder the label signal lives)"
        },
    )
    knn_k: int = field(default=20, metadata={"help": "neighbours of the weighted kNN"})
    knn_temperature: float = field(default=0.07, metadata={"help": "temperature of the kNN weights"})
    c_grid: list[float] = field(
        default_factory=lambda: list(DEFAULT_C_GRID), metadata={"help": "linear-probe C values"}
    )
    tsne: str = field(
        default="on", metadata={"choices": ["on", "off"], "help": "write a t-SNE map of each encoder's test features"}
    )


def build_parser() -> TypedArgumentParser:
    p = TypedArgumentParser(
        [ProbeModelArguments, ProbeDataArguments, ProbeArguments],
        prog="genssl probe",
        description="Frozen-feature quality of encoders: weighted kNN and a linear probe (C chosen on validation) "
        "at fine-tuning's label fractions; test mean ROC AUC per encoder x fraction x seed.",
    )
    renamed_options(p, {"--encoder": "--model", "--batch_size": "--per_device_eval_batch_size"})
    return checked_parser(p)
