"""Contrastive, Siamese and pretext pre-training (SimCLR, MoCo v2, SimSiam, rotation prediction,
BYOL) on ViT and ResNet backbones, on the shared engine. Layout as in lightly / solo-learn:
``losses``, ``heads``, ``transforms`` as small parts, ``methods`` (one file per method and the
registry), ``pretrain`` (the shared recipe and its command line)."""

from genssl_hf.training.ssl.methods import METHODS, SSLMethod, build_method

__all__ = ["METHODS", "SSLMethod", "build_method"]
