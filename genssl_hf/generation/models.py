"""MONAI generative networks as diffusers components.

``CXRAutoencoderKL`` and ``CXRDiffusionUNet`` *are* MONAI's ``AutoencoderKL`` /
``DiffusionModelUNet`` (same modules, same state-dict keys, same ``load_old_state_dict``)
that are also diffusers ``ModelMixin`` + ``ConfigMixin``: their constructor arguments are the
config, and ``save_pretrained`` / ``from_pretrained`` write and read ``config.json`` +
``diffusion_pytorch_model.safetensors``. Inheriting (rather than holding the MONAI network as a
child module) keeps the parameter names identical to MONAI's, so MONAI code and checkpoints
interoperate without any key renaming.
"""

from __future__ import annotations

from typing import Sequence

from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

__all__ = [
    "CXRAutoencoderKL",
    "CXRDiffusionUNet",
    "BUNDLE_AUTOENCODER_CONFIG",
    "BUNDLE_UNET_CONFIG",
    "BUNDLE_SCALE_FACTOR",
    "PHANTOM_AUTOENCODER_CONFIG",
    "PHANTOM_UNET_CONFIG",
]

# The MONAI model-zoo bundle ``cxr_image_synthesis_latent_diffusion_model`` (MIMIC-CXR, 512 px).
BUNDLE_AUTOENCODER_CONFIG = dict(
    spatial_dims=2,
    in_channels=1,
    out_channels=1,
    channels=(64, 128, 128, 128),
    latent_channels=3,
    num_res_blocks=2,
    attention_levels=(False, False, False, False),
    with_encoder_nonlocal_attn=False,
    with_decoder_nonlocal_attn=False,
    norm_num_groups=32,
    norm_eps=1e-6,
)
BUNDLE_UNET_CONFIG = dict(
    spatial_dims=2,
    in_channels=3,
    out_channels=3,
    channels=(256, 512, 768),
    num_res_blocks=2,
    attention_levels=(False, True, True),
    num_head_channels=(0, 512, 768),
    with_conditioning=True,
    cross_attention_dim=1024,
    transformer_num_layers=1,
    norm_num_groups=32,
    norm_eps=1e-6,
)
BUNDLE_SCALE_FACTOR = 0.3

# The CPU-scale phantom generator: 64 px images -> 3x16x16 latents; MiniLM (384-d) conditioning.
PHANTOM_AUTOENCODER_CONFIG = dict(
    spatial_dims=2,
    in_channels=1,
    out_channels=1,
    channels=(16, 32, 64),
    latent_channels=3,
    num_res_blocks=1,
    attention_levels=(False, False, False),
    with_encoder_nonlocal_attn=False,
    with_decoder_nonlocal_attn=False,
    norm_num_groups=8,
    norm_eps=1e-6,
)
PHANTOM_UNET_CONFIG = dict(
    spatial_dims=2,
    in_channels=3,
    out_channels=3,
    channels=(32, 64, 128),
    num_res_blocks=1,
    attention_levels=(False, True, True),
    num_head_channels=(0, 32, 64),
    with_conditioning=True,
    cross_attention_dim=384,
    transformer_num_layers=1,
    norm_num_groups=16,
    norm_eps=1e-6,
)


def _tuple(x):
    return tuple(x) if isinstance(x, (list, tuple)) else x


class CXRAutoencoderKL(AutoencoderKL, ModelMixin, ConfigMixin):
    """MONAI ``AutoencoderKL`` with diffusers save/load. ``encode`` returns ``(z_mu, z_sigma)``
    and ``decode(z)`` the image, exactly as in MONAI."""

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        num_res_blocks: Sequence[int] | int = 2,
        channels: Sequence[int] = (64, 128, 128, 128),
        attention_levels: Sequence[bool] = (False, False, False, False),
        latent_channels: int = 3,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        with_encoder_nonlocal_attn: bool = False,
        with_decoder_nonlocal_attn: bool = False,
        use_convtranspose: bool = False,
        include_fc: bool = True,
        use_combined_linear: bool = False,
        use_flash_attention: bool = False,
    ) -> None:
        AutoencoderKL.__init__(
            self,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            num_res_blocks=_tuple(num_res_blocks),
            channels=_tuple(channels),
            attention_levels=_tuple(attention_levels),
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            with_encoder_nonlocal_attn=with_encoder_nonlocal_attn,
            with_decoder_nonlocal_attn=with_decoder_nonlocal_attn,
            use_convtranspose=use_convtranspose,
            include_fc=include_fc,
            use_combined_linear=use_combined_linear,
            use_flash_attention=use_flash_attention,
        )

    @property
    def downsample_factor(self) -> int:
        """Image side / latent side (each level but the last halves the resolution)."""
        return 2 ** (len(self.config.channels) - 1)


class CXRDiffusionUNet(DiffusionModelUNet, ModelMixin, ConfigMixin):
    """MONAI ``DiffusionModelUNet`` with diffusers save/load; ``forward(x, timesteps, context)``."""

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 3,
        num_res_blocks: Sequence[int] | int = 2,
        channels: Sequence[int] = (256, 512, 768),
        attention_levels: Sequence[bool] = (False, True, True),
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        resblock_updown: bool = False,
        num_head_channels: int | Sequence[int] = (0, 512, 768),
        with_conditioning: bool = True,
        transformer_num_layers: int = 1,
        cross_attention_dim: int | None = 1024,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        dropout_cattn: float = 0.0,
        include_fc: bool = True,
        use_combined_linear: bool = False,
        use_flash_attention: bool = True,
    ) -> None:
        DiffusionModelUNet.__init__(
            self,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            num_res_blocks=_tuple(num_res_blocks),
            channels=_tuple(channels),
            attention_levels=_tuple(attention_levels),
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            resblock_updown=resblock_updown,
            num_head_channels=_tuple(num_head_channels),
            with_conditioning=with_conditioning,
            transformer_num_layers=transformer_num_layers,
            cross_attention_dim=cross_attention_dim,
            num_class_embeds=num_class_embeds,
            upcast_attention=upcast_attention,
            dropout_cattn=dropout_cattn,
            include_fc=include_fc,
            use_combined_linear=use_combined_linear,
            use_flash_attention=use_flash_attention,
        )
