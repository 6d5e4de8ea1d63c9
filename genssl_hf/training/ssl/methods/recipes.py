"""Optimisation recipes shared by the methods (lr = base lr x total batch / 256).

* ResNet (``cnn``), full scale: each paper's own, written in the method's file with :func:`cnn_recipe`.
* ViT, full scale: the papers are ResNet papers; ViTs get the MoCo v3 recipe (Chen, Xie & He 2021):
  AdamW, base lr 1.5e-4, wd 0.1, 300 epochs with 40 warm-up.
* ``tiny`` / ``resnet-tiny`` (CPU, phantom world): AdamW, base lr 2e-3, wd 0.05, batch 64, 20 epochs,
  2 warm-up; our choice, tuned to move in a few hundred steps.
* Where the papers use a step schedule (rotation) we use the package's half-cycle cosine.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TINY", "VIT", "cnn_recipe"]

TINY: dict[str, Any] = dict(
    optimizer="adamw",
    base_learning_rate=2e-3,
    weight_decay=0.05,
    per_device_train_batch_size=64,
    num_train_epochs=20,
    warmup_epochs=2,
)
VIT: dict[str, Any] = dict(
    optimizer="adamw",
    base_learning_rate=1.5e-4,
    weight_decay=0.1,
    per_device_train_batch_size=256,
    num_train_epochs=300,
    warmup_epochs=40,
)


def cnn_recipe(
    *,
    optimizer: str,
    base_learning_rate: float,
    weight_decay: float,
    num_train_epochs: float,
    warmup_epochs: float = 0,
    per_device_train_batch_size: int = 256,
) -> dict[str, Any]:
    """A ResNet recipe as its paper gives it."""
    return dict(
        optimizer=optimizer,
        base_learning_rate=base_learning_rate,
        weight_decay=weight_decay,
        per_device_train_batch_size=per_device_train_batch_size,
        num_train_epochs=num_train_epochs,
        warmup_epochs=warmup_epochs,
    )
