"""Backbone presets and builders (ViT and ResNet), pooled features and the method-neutral encoder
export. The lowest model layer: imports only ``genssl_hf.utils`` and third-party libraries.

The ViT fine-tuning classifier (``GenSSLViTConfig`` / ``GenSSLViTForImageClassification``, model_type
``genssl_hf_vit``) lives in :mod:`genssl_hf.models.vit_classifier` and its stochastic depth in
:mod:`genssl_hf.models.drop_path`; they are not imported here, so that this package does not load
transformers' ViT modelling code."""

from genssl_hf.models.backbones import (
    backbone_image_size,
    build_backbone,
    build_backbone_config,
    feature_dim,
    is_cnn,
    load_backbone,
    pooled_features,
)
from genssl_hf.models.classifier import build_resnet_classifier, is_cnn_init
from genssl_hf.models.export import ENCODER_INFO_FILE, classifier_class_for, save_encoder, verify_encoder_folder
from genssl_hf.models.presets import (
    BACKBONE_PRESETS,
    RESNET_PRESETS,
    VIT_ENCODER_KEYS,
    VIT_MAE_PRESETS,
    VIT_PRESETS,
    backbone_family,
)

__all__ = [
    "BACKBONE_PRESETS",
    "RESNET_PRESETS",
    "VIT_ENCODER_KEYS",
    "VIT_MAE_PRESETS",
    "VIT_PRESETS",
    "backbone_family",
    "build_backbone_config",
    "build_backbone",
    "load_backbone",
    "pooled_features",
    "feature_dim",
    "backbone_image_size",
    "is_cnn",
    "is_cnn_init",
    "build_resnet_classifier",
    "ENCODER_INFO_FILE",
    "save_encoder",
    "verify_encoder_folder",
    "classifier_class_for",
]
