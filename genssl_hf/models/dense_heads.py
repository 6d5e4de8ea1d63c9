"""Trainable dense decoders on a frozen encoder's feature maps (segmentation and detection).

* :func:`backbone_feature_maps` turns a backbone's output into feature maps: a ViT's patch tokens
  of a few evenly spaced blocks (the SETR-MLA / ViTDet taps), each ``(B, D, H/p, W/p)``; a ResNet's
  stage outputs (strides 4, 8, 16, ...), finest first.
* :class:`TokenUpsamplingDecoder` (ViT): the tapped token maps are concatenated, fused by a 1x1
  convolution, then upsampled progressively (x2 bilinear + a 3x3 conv block per step, SETR-PUP) to
  the output stride.
* :class:`StageUNetDecoder` (ResNet): a U-Net decoder, MONAI ``UnetUpBlock`` s from the deepest
  stage up with the finer stages as skips, then x2 steps to the output stride.

Both end in a 1x1 convolution to ``out_channels``: the finding logits for segmentation, or the
CenterNet maps (:mod:`genssl_hf.models.centernet`) for detection. The building blocks are MONAI's.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "StageUNetDecoder",
    "TokenUpsamplingDecoder",
    "backbone_feature_maps",
    "build_dense_decoder",
    "feature_map_shapes",
    "vit_tap_layers",
]


def _is_vit(cfg) -> bool:
    # a ViT, ViTMAE or genssl_hf classifier config (whose model_type differs) has a patch size; a ResNet's has not
    return hasattr(cfg, "patch_size")


def vit_tap_layers(depth: int, taps: int = 4) -> list[int]:
    """Evenly spaced block outputs (indices into ``hidden_states``; the last block always included)."""
    taps = max(1, min(taps, depth))
    return sorted({round(depth * (k + 1) / taps) for k in range(taps)})


@torch.no_grad()
def backbone_feature_maps(backbone: nn.Module, pixel_values: torch.Tensor, taps: int = 4) -> list[torch.Tensor]:
    """The frozen backbone's feature maps for ``(B, 3, H, W)`` inputs (see the module docstring)."""
    cfg = backbone.config
    if not _is_vit(cfg):
        return list(backbone(pixel_values=pixel_values, output_hidden_states=True).hidden_states[1:])
    interpolate = tuple(pixel_values.shape[-2:]) != (cfg.image_size, cfg.image_size)
    out = backbone(pixel_values=pixel_values, output_hidden_states=True, interpolate_pos_encoding=interpolate)
    grid = (pixel_values.shape[-2] // cfg.patch_size, pixel_values.shape[-1] // cfg.patch_size)
    maps = []
    for layer in vit_tap_layers(int(cfg.num_hidden_layers), taps):
        tokens = out.hidden_states[layer][:, 1:]  # drop CLS
        maps.append(tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid))
    return maps


def feature_map_shapes(backbone: nn.Module, image_size: int, taps: int = 4) -> list[tuple[int, int]]:
    """``(channels, stride)`` of each map :func:`backbone_feature_maps` gives at ``image_size``."""
    maps = backbone_feature_maps(backbone, torch.zeros(1, 3, image_size, image_size), taps)
    return [(int(m.shape[1]), image_size // int(m.shape[-1])) for m in maps]


def _steps(stride_from: int, stride_to: int) -> int:
    if stride_from < stride_to or stride_from % stride_to or not math.log2(stride_from // stride_to).is_integer():
        raise ValueError(f"cannot upsample from stride {stride_from} to {stride_to} in x2 steps")
    return int(math.log2(stride_from // stride_to))


def _up_step(channels_in: int, channels_out: int) -> nn.Module:
    from monai.networks.blocks import UnetBasicBlock, UpSample

    return nn.Sequential(
        UpSample(2, scale_factor=2, mode="nontrainable", interp_mode="bilinear", align_corners=False),
        UnetBasicBlock(2, channels_in, channels_out, kernel_size=3, stride=1, norm_name="batch"),
    )


class TokenUpsamplingDecoder(nn.Module):
    """Progressive upsampling of (concatenated) ViT token maps to ``out_stride``."""

    def __init__(
        self, in_channels: Sequence[int], in_stride: int, out_channels: int, *, hidden: int = 64, out_stride: int = 1
    ):
        super().__init__()
        from monai.networks.blocks import UnetBasicBlock, UnetOutBlock

        steps = _steps(in_stride, out_stride)
        self.fuse = UnetBasicBlock(2, sum(in_channels), hidden, kernel_size=1, stride=1, norm_name="batch")
        widths = [max(hidden // 2**k, 16) for k in range(steps + 1)]
        self.up = nn.Sequential(*[_up_step(widths[k], widths[k + 1]) for k in range(steps)])
        self.out = UnetOutBlock(2, widths[-1], out_channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.out(self.up(self.fuse(torch.cat(list(maps), dim=1))))


class StageUNetDecoder(nn.Module):
    """A U-Net decoder over ResNet stages (finest first), then x2 steps to ``out_stride``."""

    def __init__(
        self, in_channels: Sequence[int], in_strides: Sequence[int], out_channels: int, *, out_stride: int = 1
    ):
        super().__init__()
        from monai.networks.blocks import UnetOutBlock, UnetUpBlock

        self.ups = nn.ModuleList(
            UnetUpBlock(
                2,
                in_channels[k + 1],
                in_channels[k],
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name="batch",
            )
            for k in reversed(range(len(in_channels) - 1))
        )
        steps = _steps(int(in_strides[0]), out_stride)
        widths = [max(in_channels[0] // 2**k, 16) for k in range(steps + 1)]
        self.up = nn.Sequential(*[_up_step(widths[k], widths[k + 1]) for k in range(steps)])
        self.out = UnetOutBlock(2, widths[-1], out_channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        x = maps[-1]
        for block, skip in zip(self.ups, reversed(maps[:-1])):
            x = block(x, skip)
        return self.out(self.up(x))


def build_dense_decoder(
    backbone: nn.Module,
    image_size: int,
    out_channels: int,
    *,
    out_stride: int = 1,
    taps: int = 4,
    hidden: int = 64,
    upsample_to_input: bool = False,
) -> nn.Module:
    """The decoder that fits ``backbone`` (ViT: token upsampling; ResNet: stage U-Net). With
    ``upsample_to_input`` its stride-``out_stride`` logits are upsampled bilinearly to the input size
    (segmentation predicts at a coarser stride, as SETR / UPerNet do, at a fraction of the cost)."""
    shapes = feature_map_shapes(backbone, image_size, taps)
    channels, strides = [c for c, _ in shapes], [s for _, s in shapes]
    if not _is_vit(backbone.config):
        decoder = StageUNetDecoder(channels, strides, out_channels, out_stride=out_stride)
    else:
        decoder = TokenUpsamplingDecoder(channels, strides[0], out_channels, hidden=hidden, out_stride=out_stride)
    if upsample_to_input and out_stride > 1:
        return _Upsampled(decoder, out_stride)
    return decoder


class _Upsampled(nn.Module):
    def __init__(self, decoder: nn.Module, factor: int):
        super().__init__()
        self.decoder, self.factor = decoder, int(factor)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        logits = self.decoder(maps)
        return nn.functional.interpolate(logits, scale_factor=self.factor, mode="bilinear", align_corners=False)
