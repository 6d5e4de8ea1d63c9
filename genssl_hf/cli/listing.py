"""``genssl list``: what the registries hold (pre-training methods, architecture presets, dataset
schemes, pipeline presets, shipped pretrained folders), as text or ``--json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["registries", "main"]


def registries() -> dict[str, Any]:
    from genssl_hf.cli.commands import VLP_METHODS
    from genssl_hf.data.registry import DATASET_SCHEMES
    from genssl_hf.models.presets import BACKBONE_PRESETS, VIT_MAE_PRESETS
    from genssl_hf.training.ssl.methods import METHODS
    from genssl_hf.utils import PRETRAINED

    methods = {"mae": "masked autoencoder (ViT; GEN-SSL's pre-training)"}
    methods.update({name: f"{cls.title} ({cls.__module__})" for name, cls in METHODS.items()})
    methods.update({name: f"vision-language pre-training on image-report pairs, {name} loss" for name in VLP_METHODS})
    presets = Path(__file__).resolve().parents[1] / "pipeline" / "presets"
    return {
        "methods": methods,
        "models": {
            name: (
                "ViT, MAE preset" if name in VIT_MAE_PRESETS else family.replace("cnn", "ResNet").replace("vit", "ViT")
            )
            for name, family in BACKBONE_PRESETS.items()
        },
        "dataset_schemes": {
            "phantom": "the embedded procedural phantom world (train / validation / test)",
            **{f"{k}:ROOT": v[1] for k, v in DATASET_SCHEMES.items()},
        },
        "pipeline_presets": sorted(p.stem for p in presets.glob("*.json")),
        "pretrained": {f"genssl_hf/{name}": path for name, path in PRETRAINED.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genssl list", description=__doc__.splitlines()[0])
    p.add_argument(
        "what",
        nargs="?",
        choices=["methods", "models", "dataset_schemes", "pipeline_presets", "pretrained"],
        help="one registry (default: all)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    table = registries()
    if args.what:
        table = {args.what: table[args.what]}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for section, entries in table.items():
        print(f"{section.replace('_', ' ')}:")
        items = entries.items() if isinstance(entries, dict) else ((e, "") for e in entries)
        for name, text in items:
            print(f"  {name:<28} {text}".rstrip())
    return 0
