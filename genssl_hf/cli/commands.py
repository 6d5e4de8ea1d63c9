"""The subcommands of ``genssl``: one row each, naming the function that runs it by import path, so
``genssl --help`` imports nothing heavy and each job loads only its own modules.

A row's function takes ``argv`` (a list of strings) and returns an exit code, a summary or None.
``publish`` rows also get the Hub publisher (training never imports ``hub``; the front door hands
it in, as the scripts do).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Command", "COMMANDS", "VLP_METHODS"]


@dataclass(frozen=True)
class Command:
    target: str  # "module:function"
    help: str
    publish: bool = False  # pass publish=publish_after_training (--push_to_hub)
    config_option: str | None = None  # a config file given first is passed as this option, not expanded
    subcommands: tuple[str, ...] = ()  # words that may come before the config file (train-generator ldm FILE)
    # its parser (a TypedArgumentParser) reads a config file given first itself: typed, errors name file and key
    typed: bool = False


COMMANDS: dict[str, Command] = {
    "prompts": Command(
        "genssl_hf.prompts.build:main", "build a prompt set (disease names, heuristic and LLM prompts)", typed=True
    ),
    "generate": Command(
        "genssl_hf.generation.materialize:main",
        "generate a chest X-ray dataset from a prompt set (sharded parquet, resumable)",
        typed=True,
    ),
    "stats": Command("genssl_hf.processing.stats:main", "reference statistics of real images for AdaIN"),
    "train-generator": Command(
        "genssl_hf.training.generator:main",
        "train the latent diffusion generator: genssl train-generator {autoencoder,ldm} ...",
        subcommands=("autoencoder", "ldm"),
    ),
    "convert-bundle": Command(
        "genssl_hf.generation.convert:main", "convert a MONAI bundle (CXR LDM) into a diffusers-style generator folder"
    ),
    "pretrain": Command(
        "genssl_hf.cli.pretrain:main",
        "self-supervised pre-training: --method mae | simclr | moco_v2 | simsiam | rotation | byol | convirt | clip",
        publish=True,
        typed=True,
    ),
    "finetune": Command(
        "genssl_hf.training.finetune:main",
        "fine-tune or linear-probe an encoder on labelled X-rays",
        publish=True,
        typed=True,
    ),
    "evaluate": Command(
        "genssl_hf.evaluation.report:main",
        "score a classifier on a test set (AUC, operating points, robustness, attention)",
        typed=True,
    ),
    "probe": Command(
        "genssl_hf.evaluation.frozen_features_cli:main", "frozen-encoder kNN and linear-probe tables", typed=True
    ),
    "segment": Command(
        "genssl_hf.evaluation.dense_cli:segment_main",
        "segmentation on a frozen encoder: trainable decoder, Dice / IoU per finding at label fractions",
    ),
    "detect": Command(
        "genssl_hf.evaluation.dense_cli:detect_main",
        "detection on a frozen encoder: CenterNet head, mAP over IoU 0.40-0.75 at label fractions",
    ),
    "evaluate-vlp": Command(
        "genssl_hf.evaluation.vlp:main", "zero-shot classification and retrieval of a dual encoder"
    ),
    "export-image-tower": Command(
        "genssl_hf.cli.pretrain:export_image_tower_main",
        "save a dual encoder's image tower as a plain vision-model folder",
    ),
    "report-generator": Command(
        "genssl_hf.training.report_generator:main",
        "train a report generator (encoder + text decoder) on image-report pairs",
        publish=True,
        typed=True,
    ),
    "evaluate-report-generator": Command(
        "genssl_hf.evaluation.report_generation:main", "score generated reports (BLEU, ROUGE-L, clinical F1)"
    ),
    "publish": Command("genssl_hf.hub.publish:main", "publish a folder to the Hub with its card (leak guard, dry run)"),
    "package-pretrained": Command(
        "genssl_hf.hub.shipped:main", "package a run's models as the shipped pretrained folders"
    ),
    "run": Command(
        "genssl_hf.pipeline.runner:main",
        "run the end-to-end pipeline: --preset smoke | demo | paper | FILE",
        config_option="--preset",
    ),
    "app": Command("genssl_hf.app:main", "the browser app over the package's artifacts and outputs"),
    "list": Command("genssl_hf.cli.listing:main", "list the registered methods, models, dataset schemes and presets"),
}

# Vision-language pre-training runs through ``genssl pretrain --method convirt|clip|gloria|mgca`` (its --loss).
VLP_METHODS = ("convirt", "clip", "gloria", "mgca")
