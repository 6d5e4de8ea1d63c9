"""Method-neutral encoder export: whatever pre-trained it (SimCLR, MoCo v2, SimSiam, rotation
prediction), an encoder folder holds only the backbone, saved under the stock transformers class
names, plus the image processor the method trained with:

* ViT: ``ViTModel`` weights (no pooler: no method trains it) -> ``AutoModel.from_pretrained(folder,
  add_pooling_layer=False)`` loads it exactly, ``ViTForImageClassification.from_pretrained(folder)``
  adds a new head, and ``genssl_hf``'s fine-tuning reads it as any ViT checkpoint;
* CNN: ``ResNetModel`` weights -> ``AutoModel.from_pretrained(folder)`` exactly,
  ``ResNetForImageClassification.from_pretrained(folder)`` with a new head.

Heads, predictors, momentum encoders and queues are training machinery and stay in the checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genssl_hf.models.presets import backbone_family
from genssl_hf.utils import atomic_dir, write_json

__all__ = ["ENCODER_INFO_FILE", "save_encoder", "verify_encoder_folder", "classifier_class_for"]

ENCODER_INFO_FILE = "encoder_info.json"


def classifier_class_for(config: Any):
    """The stock transformers classification class for a backbone config."""
    from transformers import ResNetForImageClassification, ViTForImageClassification

    return ResNetForImageClassification if backbone_family(config) == "cnn" else ViTForImageClassification


def save_encoder(
    backbone: nn.Module,
    processor: Any,
    out_dir: str | os.PathLike,
    *,
    info: dict[str, Any],
    card: str | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write ``backbone`` (``save_pretrained``, safetensors), ``processor`` (``save_pretrained``),
    ``encoder_info.json`` (``info``: method, backbone preset, data, hyper-parameters) and the card
    into ``out_dir`` atomically: files land only once all of them are written. Existing files in
    ``out_dir`` that are not part of the export (checkpoints, logs) are kept."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    family = backbone_family(backbone.config)
    backbone.config.architectures = ["ResNetModel" if family == "cnn" else "ViTModel"]
    tmp = out / ".encoder.tmp"
    with atomic_dir(tmp, overwrite=True) as staging:
        backbone.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        write_json(staging / ENCODER_INFO_FILE, {"backbone_family": family, **info})
        if card is not None:
            (staging / "README.md").write_text(card)
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    return out


@torch.no_grad()
def verify_encoder_folder(folder: str | os.PathLike, reference: nn.Module | None = None) -> dict[str, Any]:
    """Reload ``folder`` with ``AutoModel`` and with the stock classification class; raise unless both
    hold every backbone weight (and, with ``reference``, the same values). Returns what was checked."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    path = Path(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        import json

        raw = json.loads((path / "config.json").read_text())
        family = backbone_family(raw)
        kw = {"add_pooling_layer": False} if family == "vit" else {}
        auto, info = AutoModel.from_pretrained(str(path), output_loading_info=True, **kw)
        cls = classifier_class_for(raw)
        clf, clf_info = cls.from_pretrained(str(path), output_loading_info=True, num_labels=2)
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ValueError(
            f"{path}: AutoModel load is not exact (missing {info['missing_keys'][:5]}, "
            f"unexpected {info['unexpected_keys'][:5]})"
        )
    body = clf.resnet if family == "cnn" else clf.vit
    missing_body = [k for k in clf_info["missing_keys"] if not k.startswith("classifier.")]
    if missing_body:
        raise ValueError(f"{path}: {cls.__name__} misses backbone weights {missing_body[:5]}")
    auto_sd, body_sd = auto.state_dict(), body.state_dict()
    for k, v in auto_sd.items():
        if k not in body_sd or not torch.equal(body_sd[k], v):
            raise ValueError(f"{path}: {cls.__name__} holds a different {k!r} than AutoModel")
    if reference is not None:
        ref = reference.state_dict()
        for k, v in auto_sd.items():
            if k not in ref or not torch.equal(ref[k].cpu(), v):
                raise ValueError(f"{path}: saved {k!r} differs from the trained backbone")
    return {"auto_model": type(auto).__name__, "classifier": cls.__name__, "num_tensors": len(auto_sd)}
