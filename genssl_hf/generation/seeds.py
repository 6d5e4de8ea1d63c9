"""Per-image randomness of a pipeline call: each image gets its own seed and its own CPU
``torch.Generator``, so neither the batch size nor the image's position in the batch changes the
random numbers it gets."""

from __future__ import annotations

import secrets
from typing import Any, Sequence

import torch

__all__ = ["resolve_seeds"]


def resolve_seeds(n: int, generator: Any, seeds: Sequence[int] | None) -> tuple[list[int], list[torch.Generator]]:
    """The seed and the CPU ``torch.Generator`` of each of ``n`` images: from ``seeds`` (one per
    image), from ``generator`` (one per image, or one that draws a seed per image), or fresh random
    seeds; the seeds are returned so that any image can be regenerated alone."""
    device = "cpu"  # initial noise is drawn on CPU so results do not depend on the accelerator
    if seeds is not None:
        if generator is not None:
            raise ValueError("pass either `seeds` or `generator`, not both")
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} images (prompts x num_images_per_prompt)")
        return seeds, [torch.Generator(device).manual_seed(s) for s in seeds]
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise ValueError(f"got {len(generator)} generators for {n} images (prompts x num_images_per_prompt)")
        return [int(g.initial_seed()) for g in generator], list(generator)
    if isinstance(generator, torch.Generator):
        # one generator: draw one seed per image from it, so the run is reproducible from it
        drawn = torch.randint(0, 2**62, (n,), generator=generator).tolist()
    else:
        drawn = [secrets.randbits(62) for _ in range(n)]
    return drawn, [torch.Generator(device).manual_seed(s) for s in drawn]
