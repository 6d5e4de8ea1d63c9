"""The options of contrastive / Siamese / pretext pre-training (``genssl pretrain --method
simclr|moco_v2|simsiam|rotation|byol``) as typed dataclasses, and its parser
(:class:`~genssl_hf.typed_args.TypedArgumentParser`). The methods' hyper-parameter options come from
the registry (:class:`~genssl_hf.training.ssl.methods.HParam`): a registered method adds its options
without touching this file. Training is :mod:`genssl_hf.training.ssl.pretrain`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

from genssl_hf.models import BACKBONE_PRESETS
from genssl_hf.training.args import (
    AdainArguments,
    BaseLearningRateArguments,
    ImageDataArguments,
    OptimisationArguments,
    RunArguments,
    TimeBoxArguments,
)
from genssl_hf.training.ssl.methods import METHODS, HParam
from genssl_hf.training.ssl.optim import OPTIMIZERS
from genssl_hf.typed_args import TypedArgumentParser, add_dataclass_arguments
from genssl_hf.validation import renamed_options

__all__ = [
    "SslModelArguments",
    "SslViewArguments",
    "SslTrainingArguments",
    "SslMonitoringArguments",
    "build_parser",
    "method_arguments",
    "method_options",
]


@dataclass(kw_only=True)
class SslModelArguments:
    _argument_group_name = "method and model"
    method: str = field(metadata={"choices": list(METHODS), "help": "the pre-training method (registry)"})
    model: str = field(
        default="resnet-18",
        metadata={
            "choices": sorted(BACKBONE_PRESETS),
            "help": "architecture preset: ViT (tiny, vit-s16, vit-b16) or ResNet (resnet-tiny, resnet-18, resnet-50)",
        },
    )
    image_size: int | None = field(default=None, metadata={"help": "override the preset's input size"})
    patch_size: int | None = field(default=None, metadata={"help": "override the ViT preset's patch size"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "ViT attention kernel"})


@dataclass(kw_only=True)
class SslViewArguments:
    _argument_group_name = "views (kornia, grayscale)"
    crop_scale_min: float | None = field(
        default=None, metadata={"help": "random resized crop minimum area (default 0.2; rotation 0.5)"}
    )
    rotation_degrees: float | None = field(default=None, metadata={"help": "random rotation range (default 10)"})
    brightness: float | None = field(default=None, metadata={"help": "brightness jitter strength (default 0.4)"})
    contrast: float | None = field(default=None, metadata={"help": "contrast jitter strength (default 0.4)"})
    blur_p: float | None = field(default=None, metadata={"help": "Gaussian blur probability (default 0.5)"})
    no_hflip: bool = field(default=False, metadata={"help": "no horizontal flip"})


@dataclass(kw_only=True)
class SslTrainingArguments:
    _argument_group_name = "optimisation"
    optimizer: str | None = field(default=None, metadata={"choices": list(OPTIMIZERS), "help": "optimiser"})
    warmup_epochs: float | None = field(default=None, metadata={"help": "warm-up length in epochs"})
    sgd_momentum: float = field(default=0.9, metadata={"help": "momentum of SGD / LARS"})


@dataclass(kw_only=True)
class SslMonitoringArguments:
    _argument_group_name = "monitoring"
    knn_dataset: str | None = field(
        default=None, metadata={"help": "labelled dataset spec for kNN monitoring (e.g. phantom)"}
    )
    knn_train: int = field(default=500, metadata={"help": "kNN monitoring: labelled training rows"})
    knn_test: int = field(default=200, metadata={"help": "kNN monitoring: labelled test rows"})
    eval_steps: int = field(default=0, metadata={"help": "kNN evaluation every K optimiser steps (0: off)"})
    figure: Literal["on", "off"] = field(default="on", metadata={"help": "views / kNN figure"})


def method_options() -> dict[str, tuple[HParam, list[str]]]:
    """Every method's hyper-parameter options: ``flag -> (its spec, the methods that take it)``.
    Methods that share a flag share its meaning (the first declaration gives type and help)."""
    options: dict[str, tuple[HParam, list[str]]] = {}
    for name, cls in METHODS.items():
        for hparam, spec in cls.hparams_spec.items():
            flag = spec.flag or f"--{hparam}"
            if flag in options:
                first = options[flag][0]
                if (first.type, first.choices) != (spec.type, spec.choices):
                    raise TypeError(f"methods {options[flag][1]} and {name!r} declare {flag} with different types")
                options[flag][1].append(name)
            else:
                options[flag] = (spec, [name])
    return options


def method_arguments() -> type:
    """``MethodArguments``: one optional field per registered hyper-parameter option (unset: the
    method's default at the model's scale), built from the registry."""
    fields = []
    for flag, (spec, names) in method_options().items():
        typed = spec.type in (int, float, str, None)
        metadata = {"help": f"{spec.help} [{', '.join(names)}]"}
        if spec.choices is not None:
            metadata["choices"] = spec.choices
        if not typed:
            metadata["parse"] = spec.type
        annotation = Optional[spec.type or str] if typed else Optional[str]  # noqa: UP045 (a runtime type)
        fields.append((flag[2:], annotation, field(default=None, metadata=metadata)))
    cls = dataclasses.make_dataclass("MethodArguments", fields, kw_only=True)
    cls._argument_group_name = "method hyper-parameters (unset: the method's default at the model's scale)"
    return cls


def build_parser() -> TypedArgumentParser:
    p = TypedArgumentParser(
        [RunArguments, SslModelArguments, method_arguments(), ImageDataArguments, SslViewArguments, AdainArguments],
        description="Contrastive / Siamese / pretext pre-training (SimCLR, MoCo v2, SimSiam, "
        "rotation, BYOL) of a ViT or ResNet with accelerate",
    )
    title = "optimisation (defaults: the method's recipe for the model family)"
    g = add_dataclass_arguments(p, OptimisationArguments, title)
    for dtype in (BaseLearningRateArguments, TimeBoxArguments, SslTrainingArguments):
        add_dataclass_arguments(p, dtype, group=g)
    add_dataclass_arguments(p, SslMonitoringArguments)
    return renamed_options(p, {"--backbone": "--model", "--max_train_steps": "--max_steps"})
