"""Contrastive / Siamese / pretext variants of the pipeline, data-driven: a variant is a config
entry, not runner code.

``ssl_variants`` maps a variant name to ``{"method": ..., "backbone": ..., "adain": "on"|"off",
"data": "generated"|"real", "args": {...}}``; ``ssl_pretrain.args`` holds the options shared by
all of them (passed to ``genssl_hf.training.ssl.pretrain``). ``method: "random_init"`` adds a
random-init baseline of another backbone (e.g. a ResNet next to the ViT one). Listing the name
in ``variants`` runs it: ``ssl_<name>`` pre-trains (skipped for random init), ``finetune_<name>``
fine-tunes, and the evaluation table gets a row per variant in the layout of the GEN-SSL paper's
Tab. 9 (method, backbone, pre-training data, mAUC with a paired bootstrap CI against random init).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..utils import read_json

__all__ = [
    "RANDOM_INIT",
    "ssl_method_names",
    "ssl_method_title",
    "ssl_variant_names",
    "validate_ssl_variants",
    "ssl_variant_title",
    "ssl_stage_name",
    "ssl_pretrain_options",
    "ssl_finetune_init",
    "ssl_finetune_config",
    "ssl_data_stage",
    "ssl_stage_summary",
]

RANDOM_INIT = "random_init"
DATA_SOURCES = {"generated": "generated_dataset", "real": "real_unlabelled"}


def ssl_method_names() -> list[str]:
    """The pre-training methods a variant may name: every registered method, and the random-init baseline."""
    from ..training.ssl.methods import METHODS

    return [*METHODS, RANDOM_INIT]


def ssl_method_title(method: str) -> str:
    from ..training.ssl.methods import METHODS

    return "Random init" if method == RANDOM_INIT else METHODS[method].title


def ssl_variant_names(config: dict) -> list[str]:
    """The configured SSL variants that ``variants`` selects, in config order."""
    chosen = config.get("variants")
    return [name for name in config.get("ssl_variants", {}) if chosen is None or name in chosen]


def validate_ssl_variants(config: dict) -> None:
    """Clear errors for a malformed ``ssl_variants`` section, before any stage runs."""
    from ..models import BACKBONE_PRESETS

    for name, spec in config.get("ssl_variants", {}).items():
        method = spec.get("method")
        if method not in ssl_method_names():
            raise ValueError(f"ssl_variants.{name}.method {method!r} is not one of {sorted(ssl_method_names())}")
        backbone = spec.get("backbone", config.get("ssl_pretrain", {}).get("args", {}).get("model"))
        if backbone not in BACKBONE_PRESETS:
            raise ValueError(f"ssl_variants.{name}.backbone {backbone!r} is not one of {sorted(BACKBONE_PRESETS)}")
        if spec.get("data", "generated") not in DATA_SOURCES:
            raise ValueError(f"ssl_variants.{name}.data must be 'generated' or 'real', got {spec.get('data')!r}")
        if spec.get("adain", "on") not in ("on", "off"):
            raise ValueError(f"ssl_variants.{name}.adain must be 'on' or 'off', got {spec.get('adain')!r}")


def _spec(config: dict, name: str) -> dict[str, Any]:
    spec = dict(config["ssl_variants"][name])
    spec.setdefault("backbone", config.get("ssl_pretrain", {}).get("args", {}).get("model"))
    spec.setdefault("adain", "on")
    spec.setdefault("data", "generated")
    return spec


def ssl_variant_title(config: dict, name: str) -> str:
    """Row title: method, backbone and pre-training data (Tab. 9 layout)."""
    spec = _spec(config, name)
    if spec["method"] == RANDOM_INIT:
        return f"Random init ({spec['backbone']})"
    data = "generated" if spec["data"] == "generated" else "real"
    adain = ", AdaIN" if spec["adain"] == "on" else ", no AdaIN"
    return f"{ssl_method_title(spec['method'])} ({spec['backbone']}, {data}{adain})"


def ssl_stage_name(config: dict, name: str) -> str | None:
    """The pre-training stage of a variant (None for a random-init baseline)."""
    return None if _spec(config, name)["method"] == "random_init" else f"ssl_{name}"


def ssl_data_stage(config: dict, name: str) -> str:
    return DATA_SOURCES[_spec(config, name)["data"]]


def _shared_args_for(config: dict, method: str) -> dict[str, Any]:
    """``ssl_pretrain.args`` less the method options that ``method`` does not take (shared args may
    set, e.g., MoCo's queue for every variant; the trainer refuses an option its method lacks)."""
    from ..training.ssl.pretrain import method_options

    options = method_options()
    shared = config.get("ssl_pretrain", {}).get("args", {})
    return {k: v for k, v in shared.items() if f"--{k}" not in options or method in options[f"--{k}"][1]}


def ssl_pretrain_options(config: dict, name: str, root: Path, stats_path: Path, out: Path) -> dict[str, Any]:
    """``genssl pretrain`` options of variant ``name`` (written to its stage's config file)."""
    spec = _spec(config, name)
    return {
        "method": spec["method"],
        "dataset": str(root / ssl_data_stage(config, name) / "dataset"),
        "output_dir": str(out),
        "seed": config["seed"],
        "adain": spec["adain"],
        "reference_stats": str(stats_path),
        "image_size": config["image_size"],
        "overwrite_output_dir": True,
        "figure": "off" if spec["data"] == "real" else "on",  # never draw real images into an artifact
        **_shared_args_for(config, spec["method"]),
        **spec.get("args", {}),
        "model": spec["backbone"],  # a variant's "backbone" (Tab. 9's column) is the trainer's --model
    }


def ssl_finetune_init(config: dict, name: str, root: Path) -> str:
    spec = _spec(config, name)
    if spec["method"] == RANDOM_INIT:
        return spec["backbone"]
    return str(root / f"ssl_{name}" / "model")


def ssl_stage_summary(out: Path) -> dict[str, Any]:
    cfg = out / "run_config.json"
    return {"model": "model", "method": read_json(cfg).get("method") if cfg.is_file() else None}


def ssl_finetune_config(config: dict, name: str) -> dict:
    """The pipeline config a variant fine-tunes with: a ResNet variant swaps the ViT fine-tuning
    recipe for the ResNet one and drops the ViT-only options (drop path, layer decay, pooling);
    ``ssl_variants.<name>.finetune_args`` overrides any option."""
    import copy

    from ..models import backbone_family

    spec = _spec(config, name)
    cfg = copy.deepcopy(config)
    args = dict(cfg["finetune"].get("args", {}))
    if backbone_family(spec["backbone"]) == "cnn":
        args["recipe"] = "resnet-tiny" if args.get("recipe", "tiny") == "tiny" else "resnet"
        for key in ("drop_path", "layer_decay", "pooling"):
            args.pop(key, None)
    args.update(spec.get("finetune_args", {}))
    cfg["finetune"]["args"] = args
    return cfg
