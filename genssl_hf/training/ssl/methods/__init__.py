"""The registry of contrastive, Siamese and pretext pre-training methods (solo-learn's shape: a
method is one class in its own file plus one line here).

Each entry names the module and class of an :class:`~.base.SSLMethod`; modules load on first use,
so listing the methods costs nothing. ``--method`` choices, the command-line options of each
method's hyper-parameters, its recipes and the pipeline's SSL variants all come from here.

=======================  ==================================================================
``simclr``               SimCLR (Chen et al. 2020), :mod:`.simclr`
``moco_v2``              MoCo v2 (Chen et al. 2020b), MoCo v3's BN head on ViTs, :mod:`.moco`
``simsiam``              SimSiam (Chen & He 2021), :mod:`.simsiam`
``rotation``             rotation prediction (Gidaris et al. 2018), :mod:`.rotation`
``byol``                 BYOL (Grill et al. 2020), :mod:`.byol`
``jigsaw``               jigsaw, permutation classification (Noroozi & Favaro 2016), :mod:`.jigsaw`
``context_restoration``  patch-swap restoration (Chen et al. 2019), :mod:`.context_restoration`
``multitask``            rotation + jigsaw + context restoration, weighted joint heads, :mod:`.multitask`
=======================  ==================================================================

Every method logs ``embedding_std`` (the SimSiam collapse monitor on the normalised projector
output; ~1/sqrt(D) when healthy, 0 when collapsed) and ``feature_std`` (the same on the backbone's
pooled features, which is what gets exported).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from genssl_hf.training.ssl.methods.base import HParam, SSLMethod

__all__ = ["METHODS", "HParam", "SSLMethod", "build_method", "method_hparams"]

# name -> "module:Class" under this package: one line per method.
_REGISTRY: dict[str, str] = {
    "simclr": "simclr:SimCLR",
    "moco_v2": "moco:MoCoV2",
    "simsiam": "simsiam:SimSiam",
    "rotation": "rotation:RotationPrediction",
    "byol": "byol:BYOL",
    "jigsaw": "jigsaw:Jigsaw",
    "context_restoration": "context_restoration:ContextRestoration",
    "multitask": "multitask:MultiTaskPretext",
}


class _MethodRegistry(Mapping):
    """``name -> SSLMethod subclass``, importing a method's module on first access."""

    def __init__(self, entries: dict[str, str]):
        self._entries = dict(entries)
        self._loaded: dict[str, type[SSLMethod]] = {}

    def __getitem__(self, name: str) -> type[SSLMethod]:
        if name not in self._entries:
            raise KeyError(name)
        if name not in self._loaded:
            module, cls_name = self._entries[name].split(":")
            cls = getattr(importlib.import_module(f"{__name__}.{module}"), cls_name)
            if cls.name != name:
                raise TypeError(f"registry entry {name!r} points at {cls.__name__}, whose name is {cls.name!r}")
            self._loaded[name] = cls
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


METHODS: Mapping[str, type[SSLMethod]] = _MethodRegistry(_REGISTRY)


def method_hparams(name: str, scale: str = "full", **overrides: Any) -> dict[str, Any]:
    """The hyper-parameters of method ``name`` at ``scale`` (``full`` / ``tiny``) with the overrides
    that are not None and that the method has, checked (``ValueError`` naming the option)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    cls = METHODS[name]
    h = cls.default_hparams(scale)
    h.update({k: v for k, v in overrides.items() if v is not None and k in h})
    cls.check_hparams(h)
    return h


def build_method(name: str, backbone: nn.Module, scale: str = "full", **overrides: Any) -> SSLMethod:
    """A method module on ``backbone`` with its defaults at ``scale`` (``full`` / ``tiny``) and overrides."""
    return METHODS[name](backbone, method_hparams(name, scale, **overrides))
