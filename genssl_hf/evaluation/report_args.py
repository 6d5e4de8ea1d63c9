"""The options of ``genssl evaluate`` (:mod:`genssl_hf.evaluation.report`) as typed dataclasses and
their parser (:class:`~genssl_hf.typed_args.TypedArgumentParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from genssl_hf.evaluation.recalibration import MIN_CALIBRATION_IMAGES, RECALIBRATION_METHODS
from genssl_hf.evaluation.robustness import CORRUPTIONS
from genssl_hf.training.thresholds import THRESHOLD_RULES
from genssl_hf.typed_args import TypedArgumentParser
from genssl_hf.validation import checked_parser, renamed_options

__all__ = [
    "EvalModelArguments",
    "EvalDataArguments",
    "EvalArguments",
    "RecalibrationArguments",
    "RobustnessArguments",
    "QualityArguments",
    "build_parser",
]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(kw_only=True)
class EvalModelArguments:
    _argument_group_name = "models"
    model: list[str] = field(
        default_factory=list,
        metadata={
            "action": "extend",
            "nargs": "+",
            "metavar": "[NAME=]FOLDER",
            "help": "classifier folder(s) (several, or repeated, for a comparison table; a list in a config file)",
        },
    )
    output_dir: str = field(metadata={"help": "results folder"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing results folder"})
    device: str = field(default_factory=_default_device, metadata={"help": "torch device"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and sampling"})


@dataclass(kw_only=True)
class EvalDataArguments:
    _argument_group_name = "data"
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "'phantom', SCHEME:ROOT (kermany, nih-subset, chexpert, nih14, covidx, mimic, or imagefolder: "
            "a folder of class sub-folders), a save_to_disk folder, or a load_dataset path / Hub id"
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "configuration name for load_dataset"})
    split: str = field(default="test", metadata={"help": "split to evaluate"})
    image_column: str = field(default="image", metadata={"help": "column holding the images"})
    phantom_size: int = field(default=500, metadata={"help": "rows of --dataset phantom"})
    phantom_resolution: int = field(default=64, metadata={"help": "image side of --dataset phantom"})
    max_samples: int | None = field(default=None, metadata={"help": "evaluate at most this many rows"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "images per forward pass"})


@dataclass(kw_only=True)
class EvalArguments:
    _argument_group_name = "scores and operating points"
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap replicates for 95%% CIs (0: none)"})
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "fixed decision threshold for every class, for comparisons only (default: the thresholds "
            "chosen on validation, from the classifier's thresholds.json or --threshold_split)"
        },
    )
    threshold_rule: str | None = field(
        default=None,
        metadata={
            "choices": list(THRESHOLD_RULES),
            "help": "threshold rule (default: the one saved with the classifier, else youden)",
        },
    )
    target_sensitivity: float = field(default=0.9, metadata={"help": "for --threshold_rule sensitivity"})
    threshold_split: str = field(
        default="validation",
        metadata={
            "help": "split to choose thresholds on when the classifier folder has no thresholds.json "
            "(never the evaluated split)"
        },
    )
    calibration_bins: int = field(default=10, metadata={"help": "equal-width bins of the ECE / reliability diagram"})
    sensitivity_classes: list[str] | None = field(
        default=None,
        metadata={"nargs": "*", "help": "classes in the accuracy/sensitivity table (e.g. COVID-19); default: all"},
    )
    attention: int = field(default=8, metadata={"help": "number of attention overlays per model (0: none)"})
    boxes_column: str | None = field(
        default=None, metadata={"help": "column with per-image [x0, y0, x1, y1] boxes to draw"}
    )


@dataclass(kw_only=True)
class RecalibrationArguments:
    _argument_group_name = "operating points for another site (recalibration on a labelled target sample)"
    recalibration_method: list[str] | None = field(
        default=None,
        metadata={
            "nargs": "+",
            "choices": list(RECALIBRATION_METHODS),
            "help": "re-choose the thresholds on a small labelled sample of the evaluated site, by each method given, "
            "and report them beside the validation thresholds (thresholds are site-specific)",
        },
    )
    recalibration_dataset: str | None = field(
        default=None,
        metadata={
            "help": "where the labelled target sample comes from (a dataset spec as --dataset; default: --dataset). "
            "Drawn from the evaluated split, the sample is left out of every score"
        },
    )
    recalibration_split: str | None = field(
        default=None, metadata={"help": "split of --recalibration_dataset (default: the evaluated --split)"}
    )
    recalibration_size: int = field(
        default=50,
        metadata={"help": f"labelled target images in the sample, drawn stratified (>= {MIN_CALIBRATION_IMAGES})"},
    )
    recalibration_seed: int = field(default=0, metadata={"help": "seed of the stratified draw"})


@dataclass(kw_only=True)
class RobustnessArguments:
    _argument_group_name = "robustness"
    robustness: bool = field(default=False, metadata={"help": "run the corruption benchmark (paper Table 8)"})
    corruptions: list[str] = field(
        default_factory=lambda: list(CORRUPTIONS),
        metadata={"nargs": "*", "choices": list(CORRUPTIONS), "help": "corruptions to apply"},
    )
    severities: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5], metadata={"nargs": "*", "help": "corruption severities"}
    )
    robustness_max_samples: int = field(default=500, metadata={"help": "rows of the corruption benchmark"})


@dataclass(kw_only=True)
class QualityArguments:
    _argument_group_name = "image quality (FID, similarity)"
    quality_a: str | None = field(
        default=None, metadata={"help": "image set A for FID / similarity (dataset as --dataset)"}
    )
    quality_b: str | None = field(default=None, metadata={"help": "image set B (the reference) for FID / similarity"})
    quality_split: str = field(default="train", metadata={"help": "split of the quality image sets"})
    quality_max_images: int = field(default=1000, metadata={"help": "images per quality set"})
    extractor: str | None = field(
        default=None, metadata={"help": "encoder folder (ViT / ViTMAE / classifier) for FID features"}
    )
    extractor_pooling: str = field(default="mean", metadata={"choices": ["mean", "cls"], "help": "feature pooling"})


def build_parser() -> TypedArgumentParser:
    p = TypedArgumentParser(
        [
            EvalModelArguments,
            EvalDataArguments,
            EvalArguments,
            RecalibrationArguments,
            RobustnessArguments,
            QualityArguments,
        ],
        prog="genssl evaluate",
        description="Evaluate fine-tuned chest X-ray classifiers (paper metrics, ROC, robustness, attention) "
        "and generated-image quality (FID, FAISS similarity).",
    )
    renamed_options(p, {"--batch_size": "--per_device_eval_batch_size"})
    return checked_parser(
        p, {"recalibration_size": f">={MIN_CALIBRATION_IMAGES}", "recalibration_seed": "[0,4294967295]"}
    )
