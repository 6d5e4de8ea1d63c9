"""Contrastive, Siamese and pretext pre-training (SimCLR, MoCo v2, SimSiam, rotation prediction) on
ViT and ResNet backbones, on the shared engine. Layout as in lightly: ``losses``, ``heads``,
``transforms`` per method, ``methods`` (the method objects), ``pretrain`` (the driver / CLI)."""

from genssl_hf.training.ssl.methods import METHOD_DEFAULTS, METHODS, SSLMethod, build_method

__all__ = ["METHODS", "METHOD_DEFAULTS", "SSLMethod", "build_method"]
