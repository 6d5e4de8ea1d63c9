"""The MAE model of :mod:`genssl_hf.training.mae`: its ``ViTMAEConfig`` per preset, the model built
fresh or continued from a ViTMAE / ViT folder, and what ``--model`` names (a preset or a folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import ViTMAEConfig, ViTMAEForPreTraining

from genssl_hf.models.presets import VIT_MAE_PRESETS
from genssl_hf.training.mae_init import apply_mae_init
from genssl_hf.utils import pretrained_path, read_json

__all__ = ["PRESETS", "build_mae_config", "check_mae_shape", "build_model", "model_folder"]

PRESETS = VIT_MAE_PRESETS  # the architecture presets (genssl_hf.models is their one source)


def build_mae_config(
    preset: str = "vit-s16", *, mask_ratio: float = 0.9, norm_pix_loss: bool = False, **overrides: Any
) -> ViTMAEConfig:
    """``ViTMAEConfig`` for a preset (3 input channels: grayscale replicated), with overrides; checks that
    the image size is divisible by the patch size and that the mask ratio lies in (0, 1)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    kw = dict(PRESETS[preset])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    check_mae_shape(kw["image_size"], kw["patch_size"], mask_ratio)
    for a, b in (("hidden_size", "num_attention_heads"), ("decoder_hidden_size", "decoder_num_attention_heads")):
        if kw[a] % kw[b]:
            raise ValueError(f"{a}={kw[a]} is not divisible by {b}={kw[b]}")
    return ViTMAEConfig(
        num_channels=3, mask_ratio=float(mask_ratio), norm_pix_loss=bool(norm_pix_loss), layer_norm_eps=1e-6, **kw
    )


def check_mae_shape(image_size: int, patch_size: int, mask_ratio: float) -> None:
    if image_size <= 0 or patch_size <= 0 or image_size % patch_size:
        raise ValueError(f"image size {image_size} is not divisible by the patch size {patch_size}")
    if not 0.0 < float(mask_ratio) < 1.0:
        raise ValueError(f"mask ratio must lie strictly between 0 and 1, got {mask_ratio}")
    keep = int((image_size // patch_size) ** 2 * (1 - float(mask_ratio)))
    if keep < 1:
        raise ValueError(f"mask ratio {mask_ratio} leaves no visible patch of the {(image_size // patch_size) ** 2}")


def build_model(
    config: ViTMAEConfig, init_from: str | os.PathLike | None = None, attn_implementation: str = "sdpa"
) -> tuple[ViTMAEForPreTraining, dict[str, Any]]:
    """A ``ViTMAEForPreTraining``: fresh from ``config``, or continued from a folder holding a ViTMAE
    checkpoint (encoder + decoder) or a ViT checkpoint (encoder only; the decoder starts fresh).
    Returns the model and an ``init`` record for the run config / card."""
    if init_from is None:
        model = ViTMAEForPreTraining._from_config(config, attn_implementation=attn_implementation)
        # transformers 5.x leaves the fixed sin-cos tables and the tokens at zero: see mae_init.
        return apply_mae_init(model), {"init": "random"}
    path = pretrained_path(init_from)  # a folder, or a shipped encoder ("genssl_hf/nih-genssl-mae-64")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model {init_from}: no config.json (expected a ViTMAE or ViT model folder)")
    src = read_json(path / "config.json")
    mtype = src.get("model_type")
    arch_keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "patch_size",
        "qkv_bias",
    )
    if mtype == "vit_mae":
        model = ViTMAEForPreTraining.from_pretrained(
            str(path),
            mask_ratio=config.mask_ratio,
            norm_pix_loss=config.norm_pix_loss,
            attn_implementation=attn_implementation,
        )
        if model.config.image_size != config.image_size:
            raise ValueError(
                f"--model {init_from} was trained at {model.config.image_size} px; "
                f"use --image_size {model.config.image_size}"
            )
        return model, {"init": "vit_mae", "init_from": str(path)}
    if mtype in ("vit", "genssl_hf_vit"):  # a ViT, or a genssl_hf classifier (own model_type)
        from transformers import ViTModel

        src_cfg = {k: src[k] for k in arch_keys if k in src}
        cfg = ViTMAEConfig(**{**config.to_dict(), **src_cfg, "layer_norm_eps": src.get("layer_norm_eps", 1e-12)})
        if src.get("image_size", cfg.image_size) != cfg.image_size:
            raise ValueError(
                f"--model {init_from} was trained at {src.get('image_size')} px; "
                f"use --image_size {src.get('image_size')}"
            )
        if src.get("num_channels", 3) != 3:
            raise ValueError(f"--model {init_from} has {src.get('num_channels')} input channels; MAE here uses 3")
        # The MAE recipe's tables first; the ViT checkpoint then overwrites the cls token and patch projection.
        model = apply_mae_init(ViTMAEForPreTraining._from_config(cfg, attn_implementation=attn_implementation))
        vit = ViTModel.from_pretrained(str(path), add_pooling_layer=False)
        sd = {f"vit.{k}": v for k, v in vit.state_dict().items()}
        # ViTMAE keeps fixed sin-cos position embeddings; learned ViT ones are replaced by them.
        sd = {k: v for k, v in sd.items() if not k.endswith("position_embeddings")}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        enc_missing = [k for k in missing if k.startswith("vit.") and not k.endswith("position_embeddings")]
        if enc_missing or unexpected:
            raise ValueError(
                f"--model {init_from}: encoder weights do not match "
                f"(missing {enc_missing[:5]}, unexpected {unexpected[:5]})"
            )
        return model, {"init": "vit_encoder", "init_from": str(path)}
    raise ValueError(f"--model {init_from}: model_type {mtype!r} is neither 'vit_mae' nor 'vit'")


def model_folder(model: str | os.PathLike) -> Path | None:
    """None for an architecture preset name, else the model folder ``--model`` names (a shipped
    encoder name such as ``genssl_hf/nih-genssl-mae-64`` included); a name that is neither is an
    error listing the presets."""
    if str(model) in PRESETS:
        return None
    path = pretrained_path(model)
    if not path.is_dir():
        raise FileNotFoundError(
            f"--model {str(model)!r} is neither an MAE preset ({', '.join(sorted(PRESETS))}) nor a model folder"
        )
    return path
