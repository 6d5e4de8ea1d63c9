"""The fine-tuning model: ``ViTForImageClassification`` with a choice of head and drop path.

:class:`GenSSLViTForImageClassification` is a transformers ``ViTPreTrainedModel`` (so
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` work as usual) whose config carries
three extra fields:

- ``pooling``: ``"cls"`` (the CLS token after the final LayerNorm, as ``ViTForImageClassification``)
  or ``"mean"`` (the MAE fine-tuning default: mean of the patch tokens of the last block, then its
  own LayerNorm ``fc_norm``, then the classifier; the encoder's final LayerNorm is dropped, as in
  MAE's ``global_pool`` mode);
- ``drop_path_rate``: stochastic depth, linearly increasing over the blocks (training only);
- ``problem_type``: ``multi_label_classification`` (BCE) or ``single_label_classification`` (CE).

With ``pooling="cls"`` the state dict is exactly that of ``ViTForImageClassification``, so the
folder also loads with the stock class.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers import ViTConfig, ViTModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.vit.modeling_vit import ViTPreTrainedModel

from genssl_hf.training.drop_path import set_drop_path
from genssl_hf.training.mae import PRESETS as MAE_PRESETS
from genssl_hf.training.mae_init import warn_if_position_blind_folder

__all__ = ["GenSSLViTForImageClassification", "VIT_PRESETS", "encoder_config", "build_classifier"]

# Encoder architectures: the encoder half of the MAE presets (one source of truth), so a
# random-init baseline has exactly the architecture of the pre-trained encoders it is compared with.
_ENCODER_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")
VIT_PRESETS: dict[str, dict[str, Any]] = {
    name: {k: preset[k] for k in _ENCODER_KEYS} for name, preset in MAE_PRESETS.items()
}

# ViT fields shared with ViTMAE configs; everything else (mask ratio, decoder) is dropped.
_ENCODER_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
    "image_size", "patch_size", "num_channels", "qkv_bias",
)


class GenSSLViTForImageClassification(ViTPreTrainedModel):
    """ViT classifier with a CLS or global-average-pool head and optional drop path."""

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        pooling = getattr(config, "pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"config.pooling must be 'cls' or 'mean'; got {pooling!r}")
        self.num_labels = config.num_labels
        self.pooling = pooling
        self.vit = ViTModel(config, add_pooling_layer=False)
        if pooling == "mean":
            self.vit.layernorm = nn.Identity()  # MAE global_pool: no final norm, fc_norm instead
            self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        else:
            self.fc_norm = None
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()
        set_drop_path(self.vit, float(getattr(config, "drop_path_rate", 0.0)))

    def set_drop_path(self, rate: float) -> list[float]:
        """Change the drop path rate (also stored in the config, so it is saved)."""
        self.config.drop_path_rate = float(rate)
        return set_drop_path(self.vit, float(rate))

    def features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None, **kwargs) -> torch.Tensor:
        """The pooled representation fed to the classifier."""
        if interpolate_pos_encoding is None:
            interpolate_pos_encoding = tuple(pixel_values.shape[-2:]) != (self.config.image_size, self.config.image_size)
        hidden = self.vit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs).last_hidden_state
        if self.pooling == "mean":
            return self.fc_norm(hidden[:, 1:].mean(dim=1))
        return hidden[:, 0]

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput:
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        logits = self.classifier(self.features(pixel_values, interpolate_pos_encoding, **kwargs))
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                smoothing = float(getattr(self.config, "label_smoothing", 0.0))
                loss = nn.functional.cross_entropy(logits.float(), labels.long(), label_smoothing=smoothing)
        return ImageClassifierOutput(loss=loss, logits=logits)

    def predict_proba(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Sigmoid (multi-label) or softmax (multi-class) probabilities."""
        logits = self(pixel_values).logits.float()
        if self.config.problem_type == "multi_label_classification":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=-1)


def _read_config(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
    return json.loads(cfg.read_text())


def encoder_config(init: str | os.PathLike) -> tuple[ViTConfig, Path | None]:
    """A ``ViTConfig`` for a preset name (``tiny``/``vit-s16``/``vit-b16``, random init) or a folder
    holding a ViT / ViTMAE / genssl_hf classifier; returns ``(config, folder or None)``."""
    if str(init) in VIT_PRESETS:
        return ViTConfig(**VIT_PRESETS[str(init)]), None
    path = Path(init)
    if not path.is_dir():
        raise FileNotFoundError(
            f"--init {init!r} is neither a preset ({', '.join(VIT_PRESETS)}) nor a model folder"
        )
    raw = _read_config(path)
    if raw.get("model_type") not in ("vit", "vit_mae"):
        raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not a ViT or ViTMAE checkpoint")
    return ViTConfig(**{k: raw[k] for k in _ENCODER_KEYS if k in raw}), path


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
    """
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
