"""Building blocks of the image-corruption pretext tasks (jigsaw, context restoration, their
multi-task mix): the permutation set, the tile shuffle, the patch swap, a backbone's spatial features
and the pixel decoder head.

* **Jigsaw** (Noroozi & Favaro 2016): the image is cut into ``grid x grid`` tiles and the tiles are
  put back in one of ``K`` fixed permutations; the network names the permutation. The set is the
  paper's greedy Hamming-distance-maximal subset of all ``grid**2!`` permutations (each new member
  is the one farthest, in minimum Hamming distance, from those chosen), so the classes are as
  distinct as possible. Noroozi & Favaro encode each tile separately (a context-free network); here
  the shuffled image goes through the backbone whole, so one pre-trained backbone of any family at its
  native input size (fixed ViT position tables) serves the task, the probe and the export.
* **Context restoration** (Chen et al. 2019): ``num_swaps`` times, two random non-overlapping square
  patches of the image trade places; a decoder on the backbone's spatial features restores the
  original, L2 loss. The image keeps its intensity distribution, so only context tells what moved.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from genssl_hf.models import backbone_family

__all__ = [
    "hamming_permutations",
    "shuffle_tiles",
    "swap_patches",
    "spatial_features",
    "feature_grid_scale",
    "PixelDecoder",
]


@lru_cache(maxsize=8)
def hamming_permutations(num_tiles: int, num_permutations: int, seed: int = 0) -> tuple[tuple[int, ...], ...]:
    """``num_permutations`` permutations of ``range(num_tiles)`` chosen greedily to maximise the minimum
    Hamming distance to those already chosen (Noroozi & Favaro 2016, Alg. 1), from a seeded random
    first member; ties go to the lowest index, so the set is the same on every run and process."""
    total = math.factorial(num_tiles)
    if not 1 <= num_permutations <= total:
        raise ValueError(
            f"--jigsaw_permutations must lie in [1, {total}] for {num_tiles} tiles, got {num_permutations}"
        )
    every = np.array(list(itertools.permutations(range(num_tiles))), dtype=np.int8)
    first = int(np.random.default_rng(seed).integers(total))
    chosen = [first]
    min_dist = (every != every[first]).sum(axis=1)
    for _ in range(num_permutations - 1):
        nxt = int(np.argmax(min_dist))
        chosen.append(nxt)
        min_dist = np.minimum(min_dist, (every != every[nxt]).sum(axis=1))
    return tuple(tuple(int(v) for v in every[i]) for i in chosen)


def shuffle_tiles(x: torch.Tensor, grid: int, permutations: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with its ``grid x grid`` tiles (side ``H // grid``; a remainder border stays in
    place) rearranged: tile slot ``s`` of image ``b`` receives tile ``permutations[labels[b], s]``."""
    b, c, h, w = x.shape
    th, tw = h // grid, w // grid
    core = x[:, :, : th * grid, : tw * grid]
    tiles = core.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, th, tw)
    order = permutations.to(x.device)[labels]  # (B, grid * grid)
    tiles = tiles[torch.arange(b, device=x.device)[:, None], order]
    core = tiles.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, th * grid, tw * grid)
    out = x.clone()
    out[:, :, : th * grid, : tw * grid] = core
    return out


def swap_patches(x: torch.Tensor, patch_size: int, num_swaps: int, generator: torch.Generator | None = None):
    """Context-restoration corruption (Chen et al. 2019): ``num_swaps`` times per image, two random
    non-overlapping ``patch_size`` squares swap contents. Randomness from ``generator`` (default: the
    global torch RNG, which the engine seeds per step)."""
    b, _, h, w = x.shape
    if not 1 <= patch_size <= min(h, w) // 2:
        raise ValueError(
            f"context-restoration patches of {patch_size} px (--restoration_patch_fraction x view side) "
            f"must lie in [1, {min(h, w) // 2}] for {h}x{w} views"
        )
    out = x.clone()
    pos = torch.stack(
        [
            torch.randint(0, h - patch_size + 1, (b, num_swaps, 2), generator=generator),
            torch.randint(0, w - patch_size + 1, (b, num_swaps, 2), generator=generator),
        ],
        dim=-1,
    ).tolist()  # (B, swaps, 2 patches, (row, col))
    p = patch_size
    for i in range(b):
        for (r1, c1), (r2, c2) in pos[i]:
            if abs(r1 - r2) < p and abs(c1 - c2) < p:
                continue  # overlapping pair: skipped rather than redrawn, so the RNG use stays fixed
            a = out[i, :, r1 : r1 + p, c1 : c1 + p].clone()
            out[i, :, r1 : r1 + p, c1 : c1 + p] = out[i, :, r2 : r2 + p, c2 : c2 + p]
            out[i, :, r2 : r2 + p, c2 : c2 + p] = a
    return out


def spatial_features(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)``: a ResNet's last stage, or a ViT's final patch tokens laid out on their grid
    (position tables interpolated when the input is not the configured size)."""
    cfg = backbone.config
    if backbone_family(cfg) == "cnn":
        return backbone(pixel_values=pixel_values).last_hidden_state
    interpolate = tuple(pixel_values.shape[-2:]) != (cfg.image_size, cfg.image_size)
    tokens = backbone(pixel_values=pixel_values, interpolate_pos_encoding=interpolate).last_hidden_state[:, 1:]
    gh, gw = pixel_values.shape[-2] // cfg.patch_size, pixel_values.shape[-1] // cfg.patch_size
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)


def feature_grid_scale(backbone: nn.Module, image_size: int) -> int:
    """Pixels per cell of :func:`spatial_features` at ``image_size`` (one dry forward in eval mode)."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        grid = spatial_features(backbone, torch.zeros(2, backbone.config.num_channels, image_size, image_size))
    backbone.train(was_training)
    h, w = grid.shape[-2:]
    if h != w or image_size % h:
        raise ValueError(f"a {h}x{w} feature grid does not tile a {image_size}x{image_size} image")
    return image_size // h


class PixelDecoder(nn.Module):
    """Spatial features ``(B, C, h, w)`` -> an image ``(B, out_channels, h * scale, w * scale)``: a 1x1-conv
    MLP per cell predicting that cell's ``scale x scale`` pixels, laid out by pixel shuffle (MAE's
    per-patch decoder with one hidden layer; works on ViT tokens and ResNet stages alike)."""

    def __init__(self, in_dim: int, hidden_dim: int, scale: int, out_channels: int = 1):
        super().__init__()
        self.scale = int(scale)
        self.mlp = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), nn.GELU(), nn.Conv2d(hidden_dim, out_channels * self.scale**2, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.mlp(features), self.scale)
