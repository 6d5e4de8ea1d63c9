"""What a pre-training method is: :class:`SSLMethod`, an ``nn.Module`` on a backbone that turns
views into ``(loss, metrics)``, and declares everything the shared recipe needs to know about it.

The family runs as one :class:`~genssl_hf.training.recipe.Method` of the shared recipe
(:class:`~genssl_hf.training.ssl.pretrain.SSLPretraining`), which never names a method: it reads
these class attributes and calls these hooks. A method declares

* ``name`` (the ``--method`` value and registry key), ``title`` (tables and cards);
* ``num_views`` and ``view_overrides`` (changes to the default :class:`~..transforms.SSLViews`);
* ``hparams``: its hyper-parameters with their ``full`` / ``tiny`` defaults and command-line
  options (:class:`HParam`), from which the parser and the run config are built;
* ``recipes``: its optimisation recipe per backbone family (``cnn``, ``vit``, ``tiny``);
* ``fixed_lr_prefixes``: parameter-name prefixes kept at a fixed lr (SimSiam's predictor);

and may override :meth:`check_hparams` (errors before compute), :meth:`check_global_batch` (a
constraint between the method and the global micro batch, e.g. MoCo's queue) and
:meth:`after_optimizer_step` (momentum updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from genssl_hf.models import feature_dim, pooled_features

__all__ = ["HParam", "SSLMethod", "on_off"]


def on_off(value: str | None) -> bool | None:
    """``on`` / ``off`` on the command line, a bool in the hyper-parameters (None: the default)."""
    return None if value is None else value == "on"


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter: its defaults per scale and its command-line option.

    ``flag`` defaults to ``--<name>``; ``convert`` maps the parsed option to the value the method
    gets (e.g. ``on``/``off`` to a bool). An option left unset keeps the scale's default.
    """

    full: Any
    tiny: Any
    type: Callable[[str], Any] | None = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    convert: Callable[[Any], Any] | None = None

    def default(self, scale: str) -> Any:
        if scale not in ("full", "tiny"):
            raise ValueError(f"scale must be 'full' or 'tiny', got {scale!r}")
        return self.full if scale == "full" else self.tiny


class SSLMethod(nn.Module):
    """Base: a backbone, ``num_views`` augmented views per image, a loss (see the module docstring)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    num_views: ClassVar[int] = 2
    view_overrides: ClassVar[dict[str, Any]] = {}
    fixed_lr_prefixes: ClassVar[tuple[str, ...]] = ()
    hparams_spec: ClassVar[dict[str, HParam]] = {}
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any]):
        super().__init__()
        self.backbone = backbone
        self.hparams = dict(hparams)
        self.dim = feature_dim(backbone)

    # ------------------------------------------------------------------ declared behaviour
    @classmethod
    def default_hparams(cls, scale: str) -> dict[str, Any]:
        return {k: spec.default(scale) for k, spec in cls.hparams_spec.items()}

    @classmethod
    def check_hparams(cls, h: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the option for a bad value (before any model or data work)."""
        if "temperature" in h and not h["temperature"] > 0:
            raise ValueError(f"--temperature must be > 0, got {h['temperature']}")

    def check_global_batch(self, global_micro_batch: int) -> None:
        """Raise ``ValueError`` when the method cannot run with this many images per step on all
        processes (checked once the loader and the process count are known, before training)."""

    # ------------------------------------------------------------------ training
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.backbone, x)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called on the unwrapped module after each optimiser step (momentum updates)."""
