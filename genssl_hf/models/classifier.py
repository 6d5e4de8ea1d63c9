"""The CNN classifier slot: transformers ``ResNetForImageClassification`` from a ResNet preset
(random init) or from a folder holding a ResNet (a method-neutral encoder export or a ResNet
classifier). The ViT classifier (``GenSSLViTForImageClassification``) lives in
``genssl_hf.training.classifier``; ``build_classifier`` there dispatches here for CNN inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from genssl_hf.models.presets import RESNET_PRESETS

__all__ = ["is_cnn_init", "build_resnet_classifier"]


def _folder_model_type(init: str | os.PathLike) -> str | None:
    cfg = Path(init) / "config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text()).get("model_type")


def is_cnn_init(init: str | os.PathLike) -> bool:
    """True for a ResNet preset name or a folder whose config is a ResNet."""
    return str(init) in RESNET_PRESETS or _folder_model_type(init) == "resnet"


def build_resnet_classifier(
    init: str | os.PathLike,
    label_names: Sequence[str],
    *,
    multi_label: bool,
    image_size: int | None = None,
    head_init_std: float = 2e-5,
):
    """``ResNetForImageClassification`` with a new head (tiny std, as the ViT head) for ``label_names``.
    Raises when the folder misses a backbone weight (never a silent partial load)."""
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.utils import logging as hf_logging

    names = list(label_names)
    labels = dict(
        num_labels=len(names),
        id2label={i: n for i, n in enumerate(names)},
        label2id={n: i for i, n in enumerate(names)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    if str(init) in RESNET_PRESETS:
        kw: dict[str, Any] = dict(RESNET_PRESETS[str(init)])
        if image_size is not None:
            kw["image_size"] = int(image_size)
        config = ResNetConfig(num_channels=3, **kw, **labels)
        config.architectures = ["ResNetForImageClassification"]
        model = ResNetForImageClassification(config)
    else:
        folder = Path(init)
        config = ResNetConfig.from_pretrained(str(folder))
        for k, v in labels.items():
            setattr(config, k, v)
        if getattr(config, "image_size", None) is None:
            config.image_size = int(image_size or 224)
        config.architectures = ["ResNetForImageClassification"]
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the new head is reported below, not as a warning
        try:
            model, info = ResNetForImageClassification.from_pretrained(
                str(folder), config=config, output_loading_info=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = [k for k in info["missing_keys"] if not k.startswith("classifier.")]
        if missing:
            raise ValueError(f"{folder}: ResNet weights missing from the checkpoint: {missing[:5]}")
        if not any(k.startswith("classifier.") for k in info["missing_keys"]) and not info.get("mismatched_keys"):
            return model  # a trained classifier with the same labels: keep its head
    head = model.classifier[-1]
    with torch.no_grad():
        nn.init.trunc_normal_(head.weight, std=head_init_std)
        nn.init.zeros_(head.bias)
    return model
