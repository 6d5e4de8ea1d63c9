"""genssl_hf.generation: text-to-chest-X-ray latent diffusion (MONAI networks, diffusers pipeline).

- :class:`CXRLatentDiffusionPipeline` / :class:`CXRPipelineOutput`: the diffusers pipeline.
- :class:`CXRAutoencoderKL`, :class:`CXRDiffusionUNet`: MONAI networks as diffusers components.
- :func:`bundle_scheduler`: DDIM with the MONAI CXR bundle's schedule.
- :func:`convert_monai_bundle`: MONAI bundle folder -> pipeline folder.
- :func:`load_phantom_generator`: the small generator trained on the phantom world, shipped here.
"""

from .models import (
    BUNDLE_AUTOENCODER_CONFIG,
    BUNDLE_SCALE_FACTOR,
    BUNDLE_UNET_CONFIG,
    PHANTOM_AUTOENCODER_CONFIG,
    PHANTOM_UNET_CONFIG,
    CXRAutoencoderKL,
    CXRDiffusionUNet,
)
from .pipeline import CXRLatentDiffusionPipeline
from .sampling import CXRPipelineOutput
from .pretrained import PHANTOM_GENERATOR_DIR, load_phantom_generator
from .schedulers import bundle_scheduler

_LAZY = {"convert_monai_bundle", "parse_bundle_config", "to_old_state_dict"}


def __getattr__(name):
    # convert is imported on first use, so `python -m genssl_hf.generation.convert` runs cleanly
    if name in _LAZY:
        from . import convert

        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CXRLatentDiffusionPipeline",
    "CXRPipelineOutput",
    "CXRAutoencoderKL",
    "CXRDiffusionUNet",
    "bundle_scheduler",
    "convert_monai_bundle",
    "parse_bundle_config",
    "to_old_state_dict",
    "load_phantom_generator",
    "PHANTOM_GENERATOR_DIR",
    "BUNDLE_AUTOENCODER_CONFIG",
    "BUNDLE_UNET_CONFIG",
    "BUNDLE_SCALE_FACTOR",
    "PHANTOM_AUTOENCODER_CONFIG",
    "PHANTOM_UNET_CONFIG",
]
