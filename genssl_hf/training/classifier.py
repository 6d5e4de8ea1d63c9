"""Building the fine-tuning classifier and exporting it to stock transformers.

The model itself, :class:`~genssl_hf.models.vit_classifier.GenSSLViTForImageClassification` (a
``ViTPreTrainedModel`` with a CLS or mean-pool head and drop path) and its config
:class:`~genssl_hf.models.vit_classifier.GenSSLViTConfig` (``model_type`` ``genssl_hf_vit``), live
in :mod:`genssl_hf.models.vit_classifier`. :func:`build_classifier` makes
one from a preset (random init) or a checkpoint folder; :func:`to_plain_transformers` turns a
trained model into a stock transformers model that computes the same logits (CLS pooling ->
``ViTForImageClassification``, mean pooling -> ``BeitForImageClassification`` with
``use_mean_pooling``): that is what gets published.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, ViTConfig

from genssl_hf.models.classifier import build_resnet_classifier, is_cnn_init
from genssl_hf.models.presets import RESNET_PRESETS, VIT_PRESETS
from genssl_hf.models.vit_classifier import (
    GENSSL_CLASSIFIER_MODEL_TYPE,
    GenSSLViTConfig,
    GenSSLViTForImageClassification,
    register_auto_config,
    register_auto_model,
)
from genssl_hf.training.mae_init import warn_if_position_blind_folder
from genssl_hf.utils import pretrained_path

__all__ = [
    "encoder_config",
    "build_classifier",
    "register_auto_classes",
    "to_plain_transformers",
]

# Encoder architectures: the encoder half of the MAE presets, defined in genssl_hf.models (one source
# of truth), so a random-init baseline has exactly the architecture of the pre-trained encoders.

# ViT fields shared with ViTMAE configs; everything else (mask ratio, decoder) is dropped.
_ENCODER_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "image_size",
    "patch_size",
    "num_channels",
    "qkv_bias",
)


def _read_config(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
    return json.loads(cfg.read_text())


def encoder_config(init: str | os.PathLike) -> tuple[GenSSLViTConfig, Path | None]:
    """A ``ViTConfig`` for a preset name (``tiny``/``vit-s16``/``vit-b16``, random init) or a folder
    holding a ViT / ViTMAE / genssl_hf classifier; returns ``(config, folder or None)``. A ResNet
    preset or folder (the CNN slot) gives a ``ResNetConfig``."""
    if is_cnn_init(init):
        from transformers import ResNetConfig

        if str(init) in RESNET_PRESETS:
            return ResNetConfig(num_channels=3, **RESNET_PRESETS[str(init)]), None
        return ResNetConfig.from_pretrained(str(init)), Path(init)
    if str(init) in VIT_PRESETS:
        return GenSSLViTConfig(**VIT_PRESETS[str(init)]), None
    path = pretrained_path(init)  # a folder, or a shipped encoder ("genssl_hf/nih-genssl-mae-64")
    if not path.is_dir():
        raise FileNotFoundError(f"--model {init!r} is neither a preset ({', '.join(VIT_PRESETS)}) nor a model folder")
    raw = _read_config(path)
    if raw.get("model_type") not in ("vit", "vit_mae", GENSSL_CLASSIFIER_MODEL_TYPE):
        raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not a ViT or ViTMAE checkpoint")
    return GenSSLViTConfig(**{k: raw[k] for k in _ENCODER_KEYS if k in raw}), path


def build_classifier(
    init: str | os.PathLike,
    label_names: Sequence[str],
    *,
    multi_label: bool,
    pooling: str = "mean",
    drop_path_rate: float = 0.0,
    image_size: int | None = None,
    num_channels: int | None = None,
    label_smoothing: float = 0.0,
    head_init_std: float = 2e-5,
) -> GenSSLViTForImageClassification:
    """The classifier for fine-tuning, from a preset (random init) or a checkpoint folder (a
    genssl_hf MAE, any ViT / ViTMAE, or a genssl_hf classifier). The new head is initialised with a
    tiny std (``2e-5``, as in MAE fine-tuning) so training starts from near-uniform outputs.

    ``image_size`` / ``num_channels`` override the preset (random init only; a checkpoint keeps its
    own, and other input sizes interpolate the position embeddings).

    A ResNet preset or folder gives ``ResNetForImageClassification`` (``pooling`` does not apply: the
    head reads the global average pool; no drop path or label smoothing there).
    """
    if is_cnn_init(init):
        if drop_path_rate:
            raise ValueError(f"drop path is not available for the ResNet {init!r}; use --drop_path 0")
        if label_smoothing:
            raise ValueError(f"label smoothing is not available for the ResNet {init!r}")
        return build_resnet_classifier(
            init, label_names, multi_label=multi_label, image_size=image_size, head_init_std=head_init_std
        )
    config, folder = encoder_config(init)
    if folder is None:
        if image_size is not None:
            config.image_size = int(image_size)
        if num_channels is not None:
            config.num_channels = int(num_channels)
    elif num_channels is not None and int(num_channels) != config.num_channels:
        raise ValueError(f"{folder} expects {config.num_channels} input channels, not {num_channels}")
    names = list(label_names)
    config.num_labels = len(names)
    config.id2label = {i: n for i, n in enumerate(names)}
    config.label2id = {n: i for i, n in enumerate(names)}
    config.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    config.pooling = pooling
    config.drop_path_rate = float(drop_path_rate)
    config.label_smoothing = float(label_smoothing)
    config.architectures = ["GenSSLViTForImageClassification"]
    if folder is None:
        model = GenSSLViTForImageClassification(config)
        new_head = True
    else:
        from transformers.utils import logging as hf_logging

        warn_if_position_blind_folder(folder)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the decoder / missing-head report is expected here
        try:
            model, info = GenSSLViTForImageClassification.from_pretrained(
                folder, config=config, output_loading_info=True
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        missing_encoder = [k for k in info["missing_keys"] if k.startswith("vit.")]
        if missing_encoder:
            raise ValueError(f"{folder}: encoder weights missing from the checkpoint: {missing_encoder[:5]}...")
        new_head = any(k.startswith("classifier.") for k in info["missing_keys"]) or bool(info.get("mismatched_keys"))
    if new_head:
        with torch.no_grad():
            nn.init.trunc_normal_(model.classifier.weight, std=head_init_std)
            nn.init.zeros_(model.classifier.bias)
    return model


# ------------------------------------------------------------------ ecosystem: Auto classes, export
def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForImageClassification`` / ``pipeline("image-classification")``
    resolve ``genssl_hf_vit`` folders to :class:`GenSSLViTForImageClassification` (no remote code),
    with the ``AdaINImageProcessor`` as the processor of that config. ``import genssl_hf`` already
    does this (lazily, once transformers' Auto modules are imported); kept for explicit calls."""
    from genssl_hf.processing.image_processor import register_auto_class

    register_auto_config()
    register_auto_model()
    register_auto_class()


_TRAINING_ONLY_KEYS = (
    "pooling",
    "drop_path_rate",
    "label_smoothing",
    "architectures",
    "model_type",
    "auto_map",
    "transformers_version",
    "_name_or_path",
    "encoder_stride",
    "pooler_output_size",
    "pooler_act",
    "dtype",
)


def to_plain_transformers(model: GenSSLViTForImageClassification) -> PreTrainedModel:
    """A stock transformers classifier computing the same logits as ``model`` (eval mode).

    - CLS pooling: ``ViTForImageClassification`` with the identical state dict.
    - Mean pooling (MAE ``global_pool``: no final encoder norm, ``fc_norm`` on the mean of the patch
      tokens): ``BeitForImageClassification`` with ``use_mean_pooling=True`` (its pooler is exactly
      that), absolute position embeddings, no relative position bias and no layer scale. BEiT has no
      key bias; dropping it is exact because ``q . b_k`` is the same for every key of a query and
      softmax ignores a per-row constant.
    """
    from transformers import BeitConfig, BeitForImageClassification, ViTForImageClassification

    cfg = model.config
    shared = {k: v for k, v in cfg.to_dict().items() if k not in _TRAINING_ONLY_KEYS}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if model.pooling == "cls":
        plain = ViTForImageClassification(ViTConfig(**shared))
        plain.load_state_dict(state, strict=True)
        return plain.eval()
    shared.pop("qkv_bias", None)
    beit_cfg = BeitConfig(
        **shared,
        use_mean_pooling=True,
        use_absolute_position_embeddings=True,
        use_relative_position_bias=False,
        use_shared_relative_position_bias=False,
        layer_scale_init_value=0.0,
        use_mask_token=False,
        drop_path_rate=0.0,
    )
    plain = BeitForImageClassification(beit_cfg)
    target = plain.state_dict()
    converted = {}
    for k, v in state.items():
        if k.startswith("fc_norm."):
            converted["beit.pooler.layernorm." + k[len("fc_norm.") :]] = v
        elif k.startswith("vit."):
            if k.endswith("attention.k_proj.bias"):
                continue  # softmax-invariant: see the docstring
            converted["beit." + k[len("vit.") :]] = v
        else:
            converted[k] = v
    for k in target:  # checkpoints trained with qkv_bias=False: BEiT's q / v biases are zero
        if k not in converted and k.endswith(("q_proj.bias", "v_proj.bias")):
            converted[k] = torch.zeros_like(target[k])
    plain.load_state_dict(converted, strict=True)
    return plain.eval()
