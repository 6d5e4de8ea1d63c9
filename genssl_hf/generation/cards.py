"""The README card of a generator pipeline folder (template ``model_cards/generator.md``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.cards import render_model_card
from ..utils import atomic_write_text


def _params(m) -> str:
    n = sum(p.numel() for p in m.parameters())
    return f"{n / 1e6:.2f} M"


def write_generator_card(
    folder: str | os.PathLike,
    pipe: Any,
    *,
    provenance: dict[str, Any] | None = None,
    training_data: str = "See provenance.",
    example_prompts: list[str] | None = None,
    tags: list[str] | None = None,
    title: str = "CXR latent diffusion generator",
    folder_name: str | None = None,
    guidance_scale: float = 7.0,
) -> Path:
    """Render the card for ``pipe`` and write it to ``folder/README.md``; returns the path.
    ``folder_name``: how the usage example names the folder (the final name, when ``folder`` is a
    temporary one)."""
    vae, unet = pipe.vae.config, pipe.unet.config
    f = 2 ** (len(vae.channels) - 1)
    size = pipe.config.image_size
    te_name = pipe.config.text_encoder_source or type(pipe.text_encoder).__name__
    hidden = getattr(pipe.text_encoder.config, "hidden_size", "?") if pipe.text_encoder is not None else "?"
    prompts = example_prompts or ["No finding."]
    card = render_model_card(
        "generator",
        {
            "license": "apache-2.0",
            "library_name": "diffusers",
            "pipeline_tag": "text-to-image",
            "tags": ["chest-x-ray", "latent-diffusion", "monai", "genssl_hf", "synthetic-data", *(tags or [])],
        },
        title=title,
        folder_hint=folder_name or "path/to/this/folder",
        example_prompts=repr(prompts),
        example_n=4 * len(prompts),
        steps=50,
        guidance=guidance_scale,
        image_size=size,
        vae_summary=f"channels {tuple(vae.channels)}, {vae.num_res_blocks} res blocks, "
        f"latent channels {vae.latent_channels}",
        vae_params=_params(pipe.vae),
        latent_shape=f"{vae.latent_channels} x {size // f} x {size // f}",
        scale_factor=f"{pipe.config.scale_factor:.4g}",
        unet_summary=(
            f"channels {tuple(unet.channels)}, attention {tuple(unet.attention_levels)}, "
            f"cross-attention dim {unet.cross_attention_dim}"
        ),
        unet_params=_params(pipe.unet),
        text_encoder=(
            f"{te_name} (hidden {hidden}; last hidden state, {pipe.config.max_text_length} tokens"
            + (
                "; loaded from its installed Python package, not stored here)"
                if pipe.config.text_encoder_source
                else ")"
            )
        ),
        scheduler=f"{type(pipe.scheduler).__name__} ({pipe.scheduler.config.num_train_timesteps} steps, "
        f"{pipe.scheduler.config.beta_schedule} {pipe.scheduler.config.beta_start}->{pipe.scheduler.config.beta_end}, "
        f"{pipe.scheduler.config.prediction_type})",
        provenance=provenance or {},
        training_data=training_data,
    )
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path
