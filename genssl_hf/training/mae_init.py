"""The MAE recipe's initialisation of ``ViTMAEForPreTraining``, and a guard against position-blind MAEs.

Why this exists: transformers 5.x (seen in 5.10 to 5.24) builds ``ViTMAEForPreTraining(config)`` and
``_from_config(config)`` with **all-zero** fixed position tables and zero cls / mask tokens:

* ``ViTMAEEmbeddings.initialize_weights`` returns early when the patch projection's
  ``_is_hf_initialized`` flag is set, which ``_init_weights`` always has set by the time it reaches the
  embeddings, so the encoder's sin-cos table is never written;
* ``ViTMAEPreTrainedModel._init_weights`` explicitly zeros ``decoder_pos_embed`` and ``mask_token``.

Both tables have ``requires_grad=False``, so such a model trains as a bag of patches and its decoder can
only predict the global mean. :func:`apply_mae_init` writes what the MAE paper's code writes (2-D sin-cos
tables with a zero cls slot, in the h/w-rotated layout of the released MAE checkpoints that transformers
reproduces; cls and mask tokens ~ N(0, 0.02); the patch projection xavier-uniform as a linear layer).
Remove it once upstream initialises these (check with :func:`position_table_problems` on a fresh model).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "sincos_position_table",
    "apply_mae_init",
    "position_table_problems",
    "check_position_tables",
    "PositionBlindError",
    "warn_if_position_blind_folder",
]


class PositionBlindError(ValueError):
    """A fixed MAE position table is all zeros or non-finite: training would be position-blind."""


def sincos_position_table(grid_size: int, dim: int, *, cls_token: bool = True) -> torch.Tensor:
    """The MAE 2-D sin-cos table, shape ``(1, grid_size**2 [+1], dim)``, float32.

    Layout as in the released MAE checkpoints: the first half of the channels encodes the patch column
    (w), the second half the row (h); each half is ``[sin | cos]`` over ``dim / 4`` frequencies
    ``1 / 10000**(i / (dim/4))``. Patches are row-major; the cls slot (row 0) is zero.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64), torch.arange(grid_size, dtype=torch.float64), indexing="ij"
    )

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.flatten()[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), table], dim=0)
    return table.to(torch.float32).unsqueeze(0)


def _grid_size(model) -> int:
    num_patches = model.vit.embeddings.patch_embeddings.num_patches
    grid = int(round(math.sqrt(num_patches)))
    if grid * grid != num_patches:
        raise ValueError(f"MAE sin-cos tables need a square patch grid, got {num_patches} patches")
    return grid


@torch.no_grad()
def apply_mae_init(model, *, tables: bool = True, tokens: bool = True, patch_projection: bool = True):
    """Write the MAE recipe's fixed tables and token / patch-projection initialisation into a
    ``ViTMAEForPreTraining`` (in place; returns it). ``tables=False`` keeps loaded tables."""
    embeddings = model.vit.embeddings
    grid = _grid_size(model)
    if tables:
        embeddings.position_embeddings.copy_(sincos_position_table(grid, embeddings.position_embeddings.shape[-1]))
        decoder = getattr(model, "decoder", None)
        if decoder is not None:
            decoder.decoder_pos_embed.copy_(sincos_position_table(grid, decoder.decoder_pos_embed.shape[-1]))
    std = float(getattr(model.config, "initializer_range", 0.02))
    if tokens:
        torch.nn.init.normal_(embeddings.cls_token, std=std)
        if getattr(model, "decoder", None) is not None:
            torch.nn.init.normal_(model.decoder.mask_token, std=std)
    if patch_projection:
        weight = embeddings.patch_embeddings.projection.weight
        torch.nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    return model


def position_table_problems(state: Any) -> list[str]:
    """What is wrong with the fixed MAE position tables in a model or a state dict: names of tables
    that are all zeros or non-finite (empty list: fine). Learned ViT tables are not checked here."""
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    problems = []
    for name, tensor in state.items():
        if not (name.endswith("position_embeddings") or name.endswith("decoder_pos_embed")):
            continue
        t = tensor.detach().float()
        if not torch.isfinite(t).all():
            problems.append(f"{name} has non-finite values")
        elif t.abs().max() == 0:
            problems.append(f"{name} is all zeros")
    return problems


def check_position_tables(model, what: str = "the MAE model") -> None:
    """Raise :class:`PositionBlindError` before training when a fixed table is zero or non-finite."""
    problems = position_table_problems(model)
    if problems:
        raise PositionBlindError(
            f"{what}: {'; '.join(problems)}. An MAE with such tables cannot tell patches apart and its "
            "reconstruction collapses to the mean. Build it with genssl_hf.training.mae_model.build_model "
            "(which writes the sin-cos tables) or load a checkpoint that has them."
        )


def warn_if_position_blind_folder(folder: str | Path) -> list[str]:
    """Warn when a ``--model`` folder holds an encoder pre-trained with zero position tables (made by
    genssl_hf before the fix, or by transformers' ``run_mae.py`` from scratch with 5.x). Returns the
    problems found. Recognise such folders by ``vit.embeddings.position_embeddings`` being all zeros in
    ``model.safetensors``."""
    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return []
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            state = {
                k: f.get_tensor(k)
                for k in f.keys()
                if k.endswith("position_embeddings") or k.endswith("decoder_pos_embed")
            }
    except Exception as err:  # unreadable weights are reported by the loader with its own message
        raise ValueError(f"{weights}: cannot read the weights ({err})") from err
    problems = position_table_problems(state)
    if problems:
        warnings.warn(
            f"--model {folder}: {'; '.join(problems)}. This encoder was pre-trained position-blind "
            "(an MAE built with transformers 5.x's zero sin-cos tables); its features carry no patch "
            "positions and fine-tuning starts from a weak encoder. Re-run pre-training with this "
            "version of genssl_hf.",
            stacklevel=2,
        )
    return problems
