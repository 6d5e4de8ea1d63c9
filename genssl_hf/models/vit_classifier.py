"""The ViT classifier model: :class:`GenSSLViTForImageClassification` and its config.

:class:`GenSSLViTForImageClassification` is a transformers ``ViTPreTrainedModel`` (so
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` work as usual) whose config carries
three extra fields:

- ``pooling``: ``"cls"`` (the CLS token after the final LayerNorm, as ``ViTForImageClassification``)
  or ``"mean"`` (the MAE fine-tuning default: mean of the patch tokens of the last block, then its
  own LayerNorm ``fc_norm``, then the classifier; the encoder's final LayerNorm is dropped, as in
  MAE's ``global_pool`` mode);
- ``drop_path_rate``: stochastic depth, linearly increasing over the blocks (training only);
- ``problem_type``: ``multi_label_classification`` (BCE) or ``single_label_classification`` (CE).

Its config is a :class:`GenSSLViTConfig` with its own ``model_type`` (``genssl_hf_vit``): plain
transformers refuses the folder with an error naming ``genssl_hf_vit`` instead of silently loading
a mean-pooled head as a CLS head; after ``import genssl_hf`` the Auto classes and
``pipeline("image-classification")`` load it exactly (:func:`register_auto_config` /
:func:`register_auto_model`, run by ``genssl_hf`` once transformers' Auto modules are imported).

Building one from a preset or a checkpoint (``build_classifier``) and turning it into a stock
transformers model (``to_plain_transformers``) live in ``genssl_hf.training.classifier``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import ViTConfig, ViTModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.vit.modeling_vit import ViTPreTrainedModel

from genssl_hf.models.drop_path import set_drop_path

__all__ = [
    "GENSSL_CLASSIFIER_MODEL_TYPE",
    "GenSSLViTConfig",
    "GenSSLViTForImageClassification",
    "register_auto_config",
    "register_auto_model",
]

# The classifier's own model_type. It starts with the package name: transformers' refusal
# ("model type `genssl_hf_vit` ... does not recognize this architecture") then names what to install.
GENSSL_CLASSIFIER_MODEL_TYPE = "genssl_hf_vit"


class GenSSLViTConfig(ViTConfig):
    """``ViTConfig`` plus ``pooling`` / ``drop_path_rate`` / ``label_smoothing``, under its own
    ``model_type`` so that a folder never loads silently as a stock ViT with the wrong head."""

    model_type = GENSSL_CLASSIFIER_MODEL_TYPE


class GenSSLViTForImageClassification(ViTPreTrainedModel):
    """ViT classifier with a CLS or global-average-pool head and optional drop path."""

    config_class = GenSSLViTConfig

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

    def features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None, **kwargs
    ) -> torch.Tensor:
        """The pooled representation fed to the classifier."""
        if interpolate_pos_encoding is None:
            interpolate_pos_encoding = tuple(pixel_values.shape[-2:]) != (
                self.config.image_size,
                self.config.image_size,
            )
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


# ------------------------------------------------------------------ Auto classes
# Two functions, not one: genssl_hf registers each half as soon as transformers' module holding that
# Auto class has been imported (see genssl_hf/_auto_register.py), without importing the other one.
def register_auto_config() -> None:
    """``AutoConfig`` resolves ``model_type: genssl_hf_vit`` to :class:`GenSSLViTConfig`."""
    from transformers import AutoConfig

    AutoConfig.register(GENSSL_CLASSIFIER_MODEL_TYPE, GenSSLViTConfig, exist_ok=True)


def register_auto_model() -> None:
    """``AutoModelForImageClassification`` (and so ``pipeline("image-classification")``) resolves a
    :class:`GenSSLViTConfig` to :class:`GenSSLViTForImageClassification` (no remote code)."""
    from transformers import AutoModelForImageClassification

    AutoModelForImageClassification.register(GenSSLViTConfig, GenSSLViTForImageClassification, exist_ok=True)
