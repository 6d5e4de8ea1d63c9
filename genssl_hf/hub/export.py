"""Artifact folders in the layouts plain transformers loads exactly, without this package.

- :func:`export_plain_classifier`: a genssl_hf classifier (``model_type`` ``genssl_hf_vit``) as a
  stock ``ViTForImageClassification`` (CLS head) or ``BeitForImageClassification`` (mean-pool head);
- :func:`export_vit_encoder`: the encoder of a ViTMAE folder as a plain ``ViTModel`` checkpoint in
  ``vit/`` (what the transformers example ``run_image_classification.py`` fine-tunes through
  ``AutoModelForImageClassification``, which has no ViTMAE mapping).

Each export is checked numerically against its source before it is returned.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

import torch

from ..utils import read_json

__all__ = ["is_native_classifier", "export_plain_classifier", "export_vit_encoder"]

_MODEL_FILES = {"config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"}
_NOT_COPIED = ("checkpoint-*", "checkpoints", "logs", "runs", "wandb", "__pycache__", ".*", "vit")


def is_native_classifier(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a genssl_hf classifier (which plain transformers refuses)."""
    cfg_path = Path(folder) / "config.json"
    cfg = read_json(cfg_path) if cfg_path.is_file() else {}
    return (
        "GenSSLViTForImageClassification" in (cfg.get("architectures") or [])
        or cfg.get("model_type") == "genssl_hf_vit"
    )


def _copy_files(src: Path, dst: Path, skip_model_files: bool) -> None:
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if not p.is_file() or any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in _NOT_COPIED):
            continue
        if skip_model_files and (rel.as_posix() in _MODEL_FILES or fnmatch.fnmatch(rel.name, "model-*.safetensors")):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, dst / rel)
        except OSError:
            shutil.copy2(p, dst / rel)


def _check_same(name: str, want: torch.Tensor, got: torch.Tensor) -> None:
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4):
        raise ValueError(
            f"{name}: the plain transformers export differs from the source "
            f"(max |difference| {float((want - got).abs().max()):.3g})"
        )


def _probe(config) -> torch.Tensor:
    size = int(config.image_size)
    return torch.randn(2, int(config.num_channels), size, size, generator=torch.Generator().manual_seed(0))


def export_plain_classifier(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the genssl_hf classifier in ``folder`` to ``out`` as a stock transformers classifier
    (see :func:`~genssl_hf.training.classifier.to_plain_transformers`); every other file (processor,
    metrics, card, run config) is copied. Raises ``ValueError`` when the export's logits differ."""
    from genssl_hf.models.vit_classifier import GenSSLViTForImageClassification
    from genssl_hf.training.classifier import to_plain_transformers

    folder, out = Path(folder), Path(out)
    native = GenSSLViTForImageClassification.from_pretrained(str(folder)).eval()
    plain = to_plain_transformers(native)
    x = _probe(native.config)
    with torch.no_grad():
        _check_same(str(folder), native(x).logits, plain(x).logits)
    out.mkdir(parents=True, exist_ok=True)
    _copy_files(folder, out, skip_model_files=True)
    plain.save_pretrained(str(out))
    return out


def export_vit_encoder(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy the ViTMAE folder to ``out`` and add ``out/vit/``: its encoder as a plain ``ViTModel``
    with the same image processor, checked to give the same last hidden states as the ViTMAE
    encoder without masking."""
    from transformers import ViTConfig, ViTMAEModel, ViTModel

    from transformers.utils import logging as hf_logging

    folder, out = Path(folder), Path(out)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the decoder weights are expected to stay behind
    try:
        mae = ViTMAEModel.from_pretrained(str(folder), mask_ratio=0.0).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "initializer_range",
        "layer_norm_eps",
        "image_size",
        "patch_size",
        "num_channels",
        "qkv_bias",
    )
    cfg = mae.config.to_dict()
    vit = ViTModel(ViTConfig(**{k: cfg[k] for k in keys if k in cfg}), add_pooling_layer=False).eval()
    state = {k: v for k, v in mae.state_dict().items()}
    vit.load_state_dict(state, strict=True)
    x = _probe(vit.config)
    n = (int(vit.config.image_size) // int(vit.config.patch_size)) ** 2
    with torch.no_grad():  # noise = arange keeps the token order when nothing is masked
        want = mae(x, noise=torch.arange(n, dtype=torch.float32).expand(2, n)).last_hidden_state
        _check_same(f"{folder} (encoder)", want, vit(x).last_hidden_state)
    out.mkdir(parents=True, exist_ok=True)
    _copy_files(folder, out, skip_model_files=False)
    vit.save_pretrained(str(out / "vit"))
    if (folder / "preprocessor_config.json").is_file():
        shutil.copy2(folder / "preprocessor_config.json", out / "vit" / "preprocessor_config.json")
    return out
