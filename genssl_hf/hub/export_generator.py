"""A generator folder as published: self-contained and loadable with diffusers' own loader.

A run's generator folder names its text encoder by the Python package that holds it
(``text_encoder_source``); the published folder stores it (``text_encoder/`` + ``tokenizer/``) and
carries the loader module of :mod:`genssl_hf.generation.folder_code`, so

>>> DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)

gives the same pipeline as ``CXRLatentDiffusionPipeline.from_pretrained(folder)`` where genssl_hf is
installed, and fails with an ImportError naming genssl_hf where it is not.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

__all__ = ["needs_diffusers_export", "export_diffusers_generator"]


def needs_diffusers_export(folder: str | os.PathLike) -> bool:
    """Whether the generator folder still names a packaged text encoder or lacks the loader module."""
    from genssl_hf.generation.folder_code import has_own_loader_code

    index = Path(folder) / "model_index.json"
    if not index.is_file():
        return False  # the validator says what is missing
    return json.loads(index.read_text()).get("text_encoder_source") is not None or not has_own_loader_code(folder)


def _same_weights(name: str, want: torch.nn.Module, got: torch.nn.Module) -> None:
    a, b = want.state_dict(), got.state_dict()
    if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
        raise ValueError(f"{name}: the exported weights differ from the source")


def export_diffusers_generator(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the pipeline in ``folder`` to ``out`` with its text encoder stored inside and the
    diffusers loader module; every other file (card, training commands, figures) is copied.
    The export is reloaded and its weights compared with the source's (bit-exact)."""
    from genssl_hf.generation.pipeline import CXRLatentDiffusionPipeline

    folder, out = Path(folder), Path(out)
    pipe = CXRLatentDiffusionPipeline.from_pretrained(folder)
    pipe.register_to_config(text_encoder_source=None)  # stored, no longer named
    pipe.save_pretrained(out)
    written = {p.name for p in out.iterdir()}
    for p in sorted(folder.iterdir()):
        if p.name in written or p.name.startswith(".") or p.name == "__pycache__":
            continue
        if p.is_dir():
            shutil.copytree(p, out / p.name)
        else:
            shutil.copy2(p, out / p.name)
    back = CXRLatentDiffusionPipeline.from_pretrained(out)
    for name in ("vae", "unet", "text_encoder"):
        _same_weights(f"{folder} ({name})", getattr(pipe, name), getattr(back, name))
    return out
