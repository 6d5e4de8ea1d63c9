"""What one call of :class:`~genssl_hf.generation.pipeline.CXRLatentDiffusionPipeline` works with: its
arguments checked, the settings its batches share, and its output (images as tensor, array or PIL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from diffusers.utils import BaseOutput
from PIL import Image

__all__ = ["CXRPipelineOutput", "check_call_arguments", "postprocess_images"]


@dataclass
class _SamplingRun:
    """The settings every batch of one pipeline call shares."""

    device: torch.device
    num_inference_steps: int
    guidance_scale: float
    guidance_fraction: float  # 0 without classifier-free guidance
    net_dtype: torch.dtype  # the UNet's input and context dtype
    decode_dtype: torch.dtype  # the latents' dtype when decoded
    autocast: Any  # torch.autocast for bf16 / fp16, else a null context
    channels_last: bool  # the UNet's weights are channels-last: so are its inputs and the decoder's
    step_kwargs: dict[str, Any]  # extra arguments of scheduler.step (eta; the batch's generators)
    decode_batch_size: int


@dataclass
class CXRPipelineOutput(BaseOutput):
    """``images``: list of PIL ``L`` images, or float32 array ``(N, H, W, 1)``, or tensor
    ``(N, 1, H, W)``, all in [0, 1]. ``seeds``: the seed each image was generated from (pass them
    back as ``seeds=`` to regenerate exactly those images). ``prompts``: the prompt of each image."""

    images: Any
    seeds: list[int]
    prompts: list[str]


def check_call_arguments(
    prompt: str | Sequence[str],
    num_images_per_prompt: int,
    num_inference_steps: int,
    guidance_fraction: float,
    height: int | None,
    width: int | None,
    output_type: str,
    batch_size: int,
    decode_batch_size: int,
    dtype: torch.dtype | None,
    latent_downsample: int,
) -> tuple[list[str], int, int]:
    """Validate the call's arguments (in this order, so the first bad one is reported); returns
    the prompts as a list and the image height and width (multiples of ``latent_downsample``)."""
    if not 0.0 <= float(guidance_fraction) <= 1.0:
        raise ValueError(f"guidance_fraction must be in [0, 1], got {guidance_fraction}")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("`prompt` is empty: give at least one prompt (use '' for unconditional)")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"every prompt must be a string; got {type(bad[0]).__name__}: {bad[0]!r}")
    if num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if decode_batch_size < 1:
        raise ValueError(f"decode_batch_size must be >= 1, got {decode_batch_size}")
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be None, torch.bfloat16 or torch.float16, got {dtype}")
    f = latent_downsample
    if height % f or width % f:
        raise ValueError(
            f"height and width must be multiples of {f} (the autoencoder's downsampling), got {height}x{width}"
        )
    return prompts, height, width


def postprocess_images(images: torch.Tensor, output_type: str) -> Any:
    """Images ``(N, 1, H, W)`` in [0, 1] as a tensor (``pt``), an ``(N, H, W, 1)`` array (``np``) or
    PIL ``L`` images."""
    if output_type == "pt":
        return images
    arr = images.permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return arr
    return [Image.fromarray(np.round(a[..., 0] * 255).astype(np.uint8), mode="L") for a in arr]
