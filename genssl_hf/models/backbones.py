"""Backbone builders: a ViT (``ViTModel``) or a CNN (``ResNetModel``) from a preset, a config or a
folder, and one function that returns pooled features for either.

The method-neutral contract every pre-training method relies on:

* :func:`build_backbone` gives a randomly initialised backbone with 3 input channels (grayscale
  replicated, as every processor in the package outputs);
* :func:`pooled_features` maps ``(B, 3, H, W)`` to ``(B, D)``: the ViT's CLS token after the final
  LayerNorm (the token a linear probe and ``ViTForImageClassification`` read) or the ResNet's
  global-average-pooled last stage (what ``ResNetForImageClassification`` reads);
* :func:`feature_dim` gives ``D``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genssl_hf.models.presets import RESNET_PRESETS, VIT_PRESETS, backbone_family

__all__ = [
    "build_backbone_config",
    "build_backbone",
    "load_backbone",
    "pooled_features",
    "feature_dim",
    "backbone_image_size",
    "is_cnn",
]


def build_backbone_config(
    preset: str, *, image_size: int | None = None, patch_size: int | None = None, num_channels: int = 3
):
    """``ViTConfig`` or ``ResNetConfig`` for a preset name, with the input size (and ViT patch size)
    optionally overridden. Raises on an unknown preset or a size the patch size does not divide."""
    from transformers import ResNetConfig, ViTConfig

    family = backbone_family(preset)
    if family == "vit":
        kw = dict(VIT_PRESETS[preset])
        if image_size is not None:
            kw["image_size"] = int(image_size)
        if patch_size is not None:
            kw["patch_size"] = int(patch_size)
        if kw["image_size"] % kw["patch_size"]:
            raise ValueError(f"image size {kw['image_size']} is not divisible by the patch size {kw['patch_size']}")
        return ViTConfig(num_channels=num_channels, layer_norm_eps=1e-6, **kw)
    kw = dict(RESNET_PRESETS[preset])
    if image_size is not None:
        kw["image_size"] = int(image_size)
    if patch_size is not None:
        raise ValueError(f"--patch_size does not apply to the CNN preset {preset!r}")
    if kw["image_size"] < 32:
        raise ValueError(f"image size {kw['image_size']} is too small for a ResNet (5 stride-2 stages): use >= 32")
    return ResNetConfig(num_channels=num_channels, **kw)


def build_backbone(preset_or_config: Any, *, attn_implementation: str | None = None, **overrides: Any) -> nn.Module:
    """A randomly initialised ``ViTModel`` (no pooler: nothing here trains it) or ``ResNetModel``."""
    from transformers import ResNetModel, ViTModel

    config = (
        build_backbone_config(preset_or_config, **overrides) if isinstance(preset_or_config, str) else preset_or_config
    )
    if backbone_family(config) == "vit":
        kw = {"attn_implementation": attn_implementation} if attn_implementation else {}  # ignored by ResNets
        config.architectures = ["ViTModel"]
        return ViTModel._from_config(config, add_pooling_layer=False, **kw)
    config.architectures = ["ResNetModel"]
    return ResNetModel(config)


def load_backbone(folder: str | os.PathLike) -> nn.Module:
    """The backbone stored in a model folder: an encoder export (``ViTModel`` / ``ResNetModel``), a
    ViTMAE checkpoint (its encoder as a ``ViTModel``), or a ViT / ResNet classifier (its body).
    Raises when an encoder weight is missing: never a silent partial load."""
    from transformers import ResNetModel, ViTConfig, ViTModel
    from transformers.utils import logging as hf_logging

    path = Path(folder)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
    raw = json.loads(cfg_file.read_text())
    family = backbone_family(raw)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # heads / decoders left behind are reported below, not as warnings
    try:
        if family == "cnn":
            model, info = ResNetModel.from_pretrained(str(path), output_loading_info=True)
        else:
            config = ViTConfig(**{k: v for k, v in raw.items() if k in ViTConfig().to_dict() and k != "model_type"})
            model, info = ViTModel.from_pretrained(
                str(path), config=config, add_pooling_layer=False, output_loading_info=True
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if missing:
        raise ValueError(f"{path}: backbone weights missing from the checkpoint: {missing[:5]}")
    return model


def is_cnn(model_or_config: Any) -> bool:
    return backbone_family(model_or_config) == "cnn"


def backbone_image_size(model_or_config: Any) -> int:
    cfg = getattr(model_or_config, "config", model_or_config)
    size = getattr(cfg, "image_size", None)
    if size is None:
        raise ValueError(f"{type(cfg).__name__} has no image_size (build it with genssl_hf.models.build_backbone)")
    return int(size)


def feature_dim(model_or_config: Any) -> int:
    """Width of :func:`pooled_features`."""
    cfg = getattr(model_or_config, "config", model_or_config)
    return int(cfg.hidden_sizes[-1]) if backbone_family(cfg) == "cnn" else int(cfg.hidden_size)


def pooled_features(backbone: nn.Module, pixel_values: torch.Tensor, pooling: str = "cls") -> torch.Tensor:
    """``(B, D)`` features: ViT CLS token after the final LayerNorm (``pooling="cls"``) or mean of the
    patch tokens (``"mean"``); ResNet global average pool of the last stage (``pooling`` ignored).
    Position embeddings are interpolated when the input is not the configured size."""
    cfg = backbone.config
    if backbone_family(cfg) == "cnn":
        return backbone(pixel_values=pixel_values).pooler_output.flatten(1)
    interpolate = tuple(pixel_values.shape[-2:]) != (cfg.image_size, cfg.image_size)
    hidden = backbone(pixel_values=pixel_values, interpolate_pos_encoding=interpolate).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        return hidden[:, 1:].mean(dim=1)
    raise ValueError(f"pooling must be 'cls' or 'mean'; got {pooling!r}")
