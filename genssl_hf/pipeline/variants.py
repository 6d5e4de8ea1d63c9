"""The pre-training variants a pipeline run compares, as data.

A variant is one row of the results table: an optional pre-training stage on some data, then a
fine-tuning stage initialised from it. Two sources feed the table:

* :data:`MAE_VARIANTS`, the GEN-SSL paper's ablation (random init, MAE on generated images with and
  without AdaIN, MAE on as many real images);
* the config's ``ssl_variants`` section (:mod:`.ssl_variants`): every contrastive, Siamese or
  pretext method, or a random-init baseline of another backbone, is a config entry.

The runner walks :func:`selected_variants` without knowing any method: a new pre-training method is
an entry here or in the config, never runner code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .ssl_variants import (
    ssl_data_stage,
    ssl_finetune_config,
    ssl_finetune_init,
    ssl_stage_name,
    ssl_variant_names,
    ssl_variant_title,
)

# name -> row title, pre-training stage (None: random init), the stage whose dataset it pre-trains
# on, and AdaIN on / off during pre-training.
MAE_VARIANTS: dict[str, dict] = {
    "random_init": {"title": "Random init", "stage": None},
    "genssl": {"title": "GEN-SSL (AdaIN)", "stage": "mae_genssl", "data": "generated_dataset", "adain": "on"},
    "genssl_no_adain": {
        "title": "GEN-SSL without AdaIN",
        "stage": "mae_genssl_no_adain",
        "data": "generated_dataset",
        "adain": "off",
    },
    "real_mae": {"title": "MAE on real images", "stage": "mae_real", "data": "real_unlabelled", "adain": "off"},
}
VARIANTS = tuple(MAE_VARIANTS)
VARIANT_TITLES = {name: spec["title"] for name, spec in MAE_VARIANTS.items()}
# Which pre-training feeds each fine-tuning variant.
VARIANT_PRETRAIN = {name: spec["stage"] for name, spec in MAE_VARIANTS.items() if spec["stage"]}
VLP_TITLE = "VLP zero-shot (no labels)"


@dataclass(frozen=True)
class Variant:
    """One compared variant. ``family`` picks the pre-training stage builder (``"mae"``: the
    ViTMAE trainer; ``"ssl"``: ``genssl_hf.training.ssl.pretrain``)."""

    name: str
    family: str
    pretrain_stage: str | None  # None: fine-tuned from random init
    data_stage: str | None  # the stage folder whose ``dataset`` it pre-trains on
    adain: str = "off"

    @property
    def finetune_deps(self) -> list[str]:
        return ["real_data"] + ([self.pretrain_stage] if self.pretrain_stage else [])


def selected_variants(config: dict) -> list[Variant]:
    """The variants ``config["variants"]`` selects: the MAE table's first, then ``ssl_variants``."""
    chosen = config.get("variants", VARIANTS)
    out = [
        Variant(name, "mae", spec["stage"], spec.get("data"), spec.get("adain", "off"))
        for name, spec in MAE_VARIANTS.items()
        if name in chosen
    ]
    for name in ssl_variant_names(config):
        stage = ssl_stage_name(config, name)
        out.append(Variant(name, "ssl", stage, ssl_data_stage(config, name)))
    return out


def variant_title(cfg: dict, variant: str) -> str:
    return VARIANT_TITLES[variant] if variant in VARIANT_TITLES else ssl_variant_title(cfg, variant)


def finetune_init(config: dict, variant: Variant, root: Path) -> str:
    """What fine-tuning starts from: the pre-trained model folder, or a preset for random init."""
    if variant.family == "ssl":
        return ssl_finetune_init(config, variant.name, root)
    if variant.pretrain_stage is None:
        return config["finetune"].get("random_init_preset", "tiny")
    return str(root / variant.pretrain_stage / "model")


def finetune_config(config: dict, variant: Variant) -> dict:
    """The config the variant's fine-tuning stage reads (an SSL variant may swap the backbone preset)."""
    return ssl_finetune_config(config, variant.name) if variant.family == "ssl" else config
