"""Backbone presets: one source of truth for every architecture the package builds.

* ViT: the MAE presets (encoder + decoder widths) and, derived from them, the encoder-only presets a
  classifier or a contrastive method builds, so a random-init baseline, an MAE encoder and a SimCLR
  encoder of the same name have exactly the same encoder.
* CNN: ``transformers`` ``ResNetConfig`` shapes. ``resnet-18`` / ``resnet-50`` are the torchvision /
  timm ImageNet shapes (basic blocks [2, 2, 2, 2] / bottlenecks [3, 4, 6, 3]); ``resnet-tiny`` is a
  CPU-sized two-stage net for tests and the phantom demo.

Every preset carries an ``image_size``: ResNets accept any size, but pre-training, the processor and
fine-tuning need one agreed input size, so the CNN configs store it as an extra config field.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "VIT_MAE_PRESETS",
    "VIT_PRESETS",
    "RESNET_PRESETS",
    "BACKBONE_PRESETS",
    "VIT_ENCODER_KEYS",
    "backbone_family",
]

# ViTMAE architecture presets. vit-s16 / vit-b16 follow the GEN-SSL / MED-MAE recipe; tiny runs on a laptop CPU.
_TINY: dict[str, Any] = dict(
    image_size=64,
    patch_size=8,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    decoder_hidden_size=96,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=384,
)
VIT_MAE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    # tiny twice as deep: the capacity step of the real-data protocol (issue 34), same width, heads,
    # patch grid and decoder as tiny, so only encoder depth differs
    "tiny-d8": {**_TINY, "num_hidden_layers": 8},
    "vit-s16": dict(
        image_size=224,
        patch_size=16,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        decoder_hidden_size=512,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=16,
        decoder_intermediate_size=2048,
    ),
    "vit-b16": dict(
        image_size=224,
        patch_size=16,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        decoder_hidden_size=512,
        decoder_num_hidden_layers=8,
        decoder_num_attention_heads=16,
        decoder_intermediate_size=2048,
    ),
}

# The encoder half of the MAE presets.
VIT_ENCODER_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "image_size",
    "patch_size",
)
VIT_PRESETS: dict[str, dict[str, Any]] = {
    name: {k: preset[k] for k in VIT_ENCODER_KEYS} for name, preset in VIT_MAE_PRESETS.items()
}

# transformers ResNetConfig fields. resnet-18 / resnet-50 match torchvision's ImageNet models (and
# microsoft/resnet-18 / -50 on the Hub); resnet-tiny is the CPU-sized slot for tests.
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "resnet-tiny": dict(
        image_size=64,
        embedding_size=32,
        hidden_sizes=[32, 64, 128],
        depths=[1, 1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
    ),
    "resnet-18": dict(
        image_size=224,
        embedding_size=64,
        hidden_sizes=[64, 128, 256, 512],
        depths=[2, 2, 2, 2],
        layer_type="basic",
        downsample_in_first_stage=False,
    ),
    "resnet-50": dict(
        image_size=224,
        embedding_size=64,
        hidden_sizes=[256, 512, 1024, 2048],
        depths=[3, 4, 6, 3],
        layer_type="bottleneck",
        downsample_in_first_stage=False,
    ),
}

BACKBONE_PRESETS: dict[str, str] = {**{k: "vit" for k in VIT_PRESETS}, **{k: "cnn" for k in RESNET_PRESETS}}


def backbone_family(name_or_config: Any) -> str:
    """``"vit"`` or ``"cnn"`` for a preset name, a config (object or dict) or a model."""
    if isinstance(name_or_config, str):
        if name_or_config not in BACKBONE_PRESETS:
            raise ValueError(f"unknown backbone preset {name_or_config!r}; choose one of {sorted(BACKBONE_PRESETS)}")
        return BACKBONE_PRESETS[name_or_config]
    cfg = getattr(name_or_config, "config", name_or_config)
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else getattr(cfg, "model_type", None)
    if model_type in ("vit", "vit_mae"):
        return "vit"
    if model_type == "resnet":
        return "cnn"
    raise ValueError(f"model_type {model_type!r} is neither a ViT ('vit', 'vit_mae') nor a CNN ('resnet') backbone")
