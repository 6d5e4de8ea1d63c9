"""Frozen-feature quality of pre-trained encoders: weighted kNN and a logistic-regression linear probe
on the encoder's features, at the label fractions of fine-tuning (1 / 10 / 100 %).

The diagnosis fine-tuning cannot give: how much label signal the encoder's features hold before any
weight moves. Conventions (the SSL literature's, and the package's):

* encoder: what fine-tuning would start from (:func:`~genssl_hf.training.classifier.build_classifier`
  on a ViT / ViTMAE / classifier folder, or a preset such as ``tiny`` for seeded random weights); a
  ViTMAE folder becomes a plain ``ViTModel`` (no masking: every patch is seen), in eval mode;
* inputs: the dataset's images resized to the encoder's input size and normalised as fine-tuning
  would (the folder's ``AdaINImageProcessor`` for ``image_processor="init"``, mean / std 0.5 for
  ``"none"``, or another folder's processor);
* features: the mean of the last layer's patch tokens after the final LayerNorm (``pooling="mean"``)
  or the CLS token (``"cls"``);
* scores (:mod:`genssl_hf.evaluation.probe_scores`) -- kNN: cosine similarity, ``k = 20`` nearest labelled training
  features, votes weighted by
  ``exp(sim / 0.07)`` (Wu et al. 2018; the package's SSL monitor);
* linear probe: scikit-learn ``LogisticRegression`` on features standardised with the training
  subset's statistics (one per class for multi-label data, multinomial for multi-class); the inverse
  regularisation ``C`` is chosen on the validation split from a grid, never on test;
* score: the test split's mean ROC AUC as fine-tuning reports it
  (:func:`~genssl_hf.core.classification_metrics.classification_metrics`: binary tasks give the
  AUC of the positive class, multi-label tasks the mean over classes with both outcomes present);
* label fractions: the training rows fine-tuning would use,
  :func:`~genssl_hf.training.finetune_data.stratified_subset` of the train split's targets with the
  same fraction and seed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from genssl_hf.models import is_cnn_init, pooled_features
from genssl_hf.models.vit_classifier import GENSSL_CLASSIFIER_MODEL_TYPE
from genssl_hf.training.classifier import build_classifier, encoder_config
from genssl_hf.training.finetune_args import image_processor_of, processor_folder, check_image_processor_choice
from genssl_hf.training.finetune_data import Collator, InputNormalizer, stratified_subset, targets_of
from genssl_hf.evaluation.probe_scores import DEFAULT_C_GRID, knn_auc, linear_probe_auc
from genssl_hf.utils import sha256_strings
from genssl_hf.validation import check_weight_files

logger = logging.getLogger(__name__)

__all__ = [
    "FrozenEncoder",
    "load_frozen_encoder",
    "check_encoder_spec",
    "extract_features",
    "frozen_feature_table",
]

POOLINGS = ("mean", "cls")


# ------------------------------------------------------------------------------------------ encoder
def check_encoder_spec(init: str | os.PathLike, image_processor: str = "init") -> None:
    """Raise a clear error naming ``init`` / ``image_processor`` when either cannot be loaded (no compute)."""
    try:
        _, folder = encoder_config(init)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"encoder {str(init)!r}: {err}") from err
    if folder is not None:  # a truncated weight file fails here, not inside from_pretrained
        check_weight_files(folder, f"encoder {str(init)!r}", depth=0)
    check_image_processor_choice(image_processor, f"image processor (for encoder {str(init)!r})")


class FrozenEncoder:
    """A frozen encoder in eval mode with the input normalisation fine-tuning would use.

    ``model`` is the classifier :func:`build_classifier` gives (its head is never used);
    ``features(pixels)`` maps a uint8 ``(B, 1, S, S)`` batch to ``(B, D)`` pooled features."""

    def __init__(
        self,
        model: torch.nn.Module,
        normalizer: InputNormalizer,
        cnn: bool,
        pooling: str,
        normalizer_source: str,
        layer: int = -1,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        depth = None if cnn else int(model.config.num_hidden_layers)
        if layer != -1 and (cnn or not 0 <= layer <= depth):
            raise ValueError(
                f"layer {layer} does not exist: use -1 (the last, after the final LayerNorm) or 0..{depth} "
                "(a ViT's embeddings / block outputs)"
                if not cnn
                else f"layer {layer}: a ResNet gives its pooled last stage only (layer -1)"
            )
        self.layer = layer
        self.model = model.eval().requires_grad_(False)
        self.backbone = model.resnet if cnn else model.vit
        self.normalizer = normalizer
        self.cnn = cnn
        self.pooling = pooling
        self.normalizer_source = normalizer_source

    @property
    def image_size(self) -> int:
        return self.normalizer.image_size

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalizer(self.normalizer.resize(pixels.float().div(255.0)))
        if self.cnn:
            return pooled_features(self.backbone, x).float()
        if self.layer != -1:  # an intermediate block's tokens, as they leave it (no final LayerNorm)
            hidden = self.backbone(pixel_values=x, output_hidden_states=True).hidden_states[self.layer]
            return (hidden[:, 0] if self.pooling == "cls" else hidden[:, 1:].mean(dim=1)).float()
        hidden = self.backbone(pixel_values=x).last_hidden_state  # after the final LayerNorm (CLS-pooled build)
        if self.pooling == "cls":
            return hidden[:, 0].float()
        pooled = hidden[:, 1:].mean(dim=1)
        # a mean-pooled genssl_hf classifier has no final encoder norm but its own fc_norm: its representation
        fc_norm = getattr(self.model, "fc_norm", None)
        return (fc_norm(pooled) if fc_norm is not None else pooled).float()


def _folder_config(folder: Path) -> dict[str, Any]:
    import json

    return json.loads((folder / "config.json").read_text())


def load_frozen_encoder(
    init: str | os.PathLike, *, image_processor: str = "init", pooling: str = "mean", seed: int = 0, layer: int = -1
) -> FrozenEncoder:
    """The encoder fine-tuning would start from for ``--model init`` (seeded random weights for a
    preset), frozen, with its input normalisation (``image_processor``: ``init`` / ``none`` / a folder)."""
    check_encoder_spec(init, image_processor)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    _, init_folder = encoder_config(init)
    cnn = is_cnn_init(init)
    # CLS pooling keeps the encoder's final LayerNorm (a mean-pooled build swaps it for a new fc_norm);
    # a genssl_hf classifier folder is rebuilt as it was saved (its pooling and head shape)
    names, head_pooling = ["unused"], "cls"
    raw = _folder_config(init_folder) if init_folder is not None else {}
    if any(str(a).endswith("ForImageClassification") for a in raw.get("architectures") or []) and raw.get("id2label"):
        names = [raw["id2label"][str(i)] for i in range(len(raw["id2label"]))]  # the saved head's shape
    if raw.get("model_type") == GENSSL_CLASSIFIER_MODEL_TYPE:
        head_pooling = raw.get("pooling", "cls")
    torch.manual_seed(seed)  # a preset's random weights: the same features for the same seed
    model = build_classifier(init, names, multi_label=True, pooling=head_pooling)
    source = processor_folder(image_processor, init_folder)  # fine-tuning's --image_processor
    processor = image_processor_of(source)
    image_size = int(model.config.image_size)
    channels = int(model.config.num_channels)
    if processor is not None:
        normalizer = InputNormalizer.from_processor(processor, image_size, channels)
    else:
        normalizer = InputNormalizer(image_size=image_size, num_channels=channels)
    return FrozenEncoder(
        model,
        normalizer,
        cnn,
        pooling,
        str(source / "preprocessor_config.json") if processor is not None else "default",
        layer=layer,
    )


def extract_features(
    model_folder_or_preset: str | os.PathLike | FrozenEncoder,
    dataset_split,
    *,
    image_column: str = "image",
    batch_size: int = 256,
    image_processor: str = "init",
    pooling: str = "mean",
    seed: int = 0,
    layer: int = -1,
) -> np.ndarray:
    """``(N, D)`` float32 frozen features of every row of ``dataset_split`` (a ``datasets.Dataset``)."""
    encoder = (
        model_folder_or_preset
        if isinstance(model_folder_or_preset, FrozenEncoder)
        else load_frozen_encoder(
            model_folder_or_preset, image_processor=image_processor, pooling=pooling, seed=seed, layer=layer
        )
    )
    if image_column not in dataset_split.column_names:
        raise KeyError(f"dataset has no image column {image_column!r} (columns: {dataset_split.column_names})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    images = dataset_split.select_columns([image_column])
    collate = Collator(encoder.image_size, False, 1, image_column)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size][image_column]
        out.append(encoder.features(collate.pixels([{image_column: im} for im in batch])).cpu().numpy())
    dim = out[0].shape[1] if out else 0
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)


# ------------------------------------------------------------------------------------------ table
def _check_fractions(fractions: Sequence[float]) -> list[float]:
    out = []
    for f in fractions:
        value = float(f)
        if not 0.0 < value <= 1.0 or math.isnan(value):
            raise ValueError(f"label fraction {f!r} must lie in (0, 1]")
        out.append(value)
    if not out:
        raise ValueError("no label fractions given")
    return out


def _encoder_spec(value: Any) -> dict[str, Any]:
    """``"path"`` or ``{"init": path, "image_processor": ...}`` -> ``{"init", "image_processor"}``."""
    if isinstance(value, Mapping):
        if "init" not in value:
            raise ValueError(f"encoder spec {dict(value)!r} has no 'init'")
        return {"init": str(value["init"]), "image_processor": str(value.get("image_processor", "init"))}
    return {"init": str(value), "image_processor": "init"}


def _check_table_inputs(
    encoders: Mapping[str, Any],
    dataset_dict,
    fractions: Sequence[float],
    seeds: Sequence[int],
    split_names: dict[str, str],
    pooling: str,
    k: int,
    temperature: float,
):
    """Before any compute: (encoder specs, fractions, seeds), every encoder checked, the splits present."""
    if not encoders:
        raise ValueError("no encoders given")
    specs = {str(title): _encoder_spec(v) for title, v in encoders.items()}
    fractions = _check_fractions(fractions)
    seeds = [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be a non-empty list of non-negative integers; got {seeds}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    if k < 1 or not temperature > 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0; got k={k}, temperature={temperature}")
    for name in (split_names["train"], split_names["validation"], split_names["test"]):
        if name not in dataset_dict:
            raise KeyError(f"dataset has no split {name!r} (splits: {list(dataset_dict)})")
    if split_names["validation"] == split_names["test"]:
        raise ValueError("the validation split must not be the test split: C is chosen on validation only")
    for title, spec in specs.items():
        try:
            check_encoder_spec(spec["init"], spec["image_processor"])
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"encoder {title!r}: {err}") from err
    return specs, fractions, seeds


def _labelled_splits(
    dataset_dict, split_names: dict[str, str], fractions: list[float], seeds: list[int]
) -> dict[str, Any]:
    """The three splits, their targets (the classes must agree) and fine-tuning's training rows (and
    their hash) per (fraction, seed)."""
    splits = {role: dataset_dict[split_names[role]] for role in ("train", "validation", "test")}
    targets, label_names, multi_label = targets_of(splits["train"])
    eval_targets = {}
    for name in ("validation", "test"):
        y, names, ml = targets_of(splits[name])
        if names != label_names or ml != multi_label:
            raise ValueError(f"{name} split's classes {names} differ from train's {label_names}")
        eval_targets[name] = y
    subsets = {(f, s): stratified_subset(targets, f, s) for f in fractions for s in seeds}
    # the hash fine-tuning writes to label_fraction.json for the same fraction and seed
    subset_hashes = {key: sha256_strings(str(i) for i in idx.tolist()) for key, idx in subsets.items()}
    return {
        "splits": splits,
        "targets": targets,
        "label_names": label_names,
        "multi_label": multi_label,
        "val_y": eval_targets["validation"],
        "test_y": eval_targets["test"],
        "subsets": subsets,
        "subset_hashes": subset_hashes,
    }


def _score_encoder(
    title: str,
    spec: dict[str, Any],
    data: dict[str, Any],
    fractions: list[float],
    seeds: list[int],
    cache: dict,
    rows: list[dict[str, Any]],
    encoder_info: dict[str, Any],
    opts: dict[str, Any],
) -> None:
    """One encoder's rows (every seed x fraction): features extracted once per split (per seed for a
    random-init preset), kNN and linear-probe test AUC."""
    random_init = encoder_config(spec["init"])[1] is None
    num_classes = len(data["label_names"])
    for seed in seeds:
        key = (title, seed if random_init else None)
        if key not in cache:
            enc = load_frozen_encoder(
                spec["init"],
                image_processor=spec["image_processor"],
                pooling=opts["pooling"],
                seed=seed,
                layer=opts["layer"],
            )
            cache.clear()  # one encoder's features in memory at a time
            cache[key] = {
                n: extract_features(enc, ds, image_column=opts["image_column"], batch_size=opts["batch_size"])
                for n, ds in data["splits"].items()
            }
            if opts.get("feature_maps_dir") is not None:
                _write_feature_map(title, seed, cache[key]["test"], data, opts)
            encoder_info[title] = {
                **spec,
                "random_init": random_init,
                "normalizer_source": enc.normalizer_source,
                "image_size": enc.image_size,
                "feature_dim": int(cache[key]["train"].shape[1]),
            }
        feats = cache[key]
        for fraction in fractions:
            idx = data["subsets"][(fraction, seed)]
            tr_x, tr_y = feats["train"][idx], data["targets"][idx]
            knn = knn_auc(
                tr_x, tr_y, feats["test"], data["test_y"], num_classes, k=opts["k"], temperature=opts["temperature"]
            )
            probe, best_c = linear_probe_auc(
                tr_x,
                tr_y,
                feats["validation"],
                data["val_y"],
                feats["test"],
                data["test_y"],
                num_classes,
                c_grid=opts["c_grid"],
                seed=seed,
            )
            rows.append(
                {
                    "encoder": title,
                    "fraction": fraction,
                    "seed": seed,
                    "num_train": int(len(idx)),
                    "train_indices_sha256": data["subset_hashes"][(fraction, seed)],
                    "knn_auc": knn,
                    "probe_auc": probe,
                    "probe_C": best_c,
                }
            )
            logger.info("%s fraction %g seed %d: kNN %.4f probe %.4f (C=%g)", title, fraction, seed, knn, probe, best_c)


def _write_feature_map(title: str, seed: int, test_features: np.ndarray, data: dict, opts: dict) -> None:
    """The t-SNE map of one extraction's test features, listed in ``opts["feature_maps"]``."""
    from genssl_hf.evaluation.feature_map import tsne_figure

    png = tsne_figure(
        test_features,
        data["test_y"],
        data["label_names"],
        data["multi_label"],
        Path(opts["feature_maps_dir"]) / f"tsne_{_file_safe(title)}_seed{seed}.png",
        title=f"t-SNE of {title} test features (seed {seed})",
        seed=seed,
    )
    opts["feature_maps"].append(str(png))


def _file_safe(title: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", title).strip("_") or "encoder"


def frozen_feature_table(
    encoders: Mapping[str, Any],
    dataset_dict,
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    train_split: str = "train",
    validation_split: str = "validation",
    test_split: str = "test",
    image_column: str = "image",
    pooling: str = "mean",
    k: int = 20,
    temperature: float = 0.07,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
    layer: int = -1,
    feature_maps_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """kNN and linear-probe test AUC of every encoder x label fraction x seed.

    ``encoders``: title -> ``init`` (folder or preset) or ``{"init", "image_processor"}``.
    ``dataset_dict``: a ``DatasetDict`` in the canonical schema with train / validation / test splits.
    A folder's features are extracted once per split; a preset's random weights are drawn per seed
    (``torch.manual_seed(seed)``, as fine-tuning's random-init control). The training rows of a
    (fraction, seed) are fine-tuning's (:func:`stratified_subset` of the train split's targets).
    With ``feature_maps_dir`` a t-SNE map of each encoder's test features per feature extraction is
    written there (:mod:`genssl_hf.evaluation.feature_map`), listed under ``"feature_maps"``.
    Returns ``{"rows": [{encoder, fraction, seed, num_train, knn_auc, probe_auc, probe_C}], ...}``.
    """
    split_names = {"train": train_split, "validation": validation_split, "test": test_split}
    specs, fractions, seeds = _check_table_inputs(
        encoders, dataset_dict, fractions, seeds, split_names, pooling, k, temperature
    )
    data = _labelled_splits(dataset_dict, split_names, fractions, seeds)
    opts = {
        "pooling": pooling,
        "layer": layer,
        "image_column": image_column,
        "batch_size": batch_size,
        "k": k,
        "temperature": temperature,
        "c_grid": c_grid,
        "feature_maps_dir": feature_maps_dir,
        "feature_maps": [],
    }
    rows, encoder_info = [], {}
    cache: dict[tuple[str, int | None], dict[str, np.ndarray]] = {}
    started = time.perf_counter()
    for title, spec in specs.items():
        t0 = time.perf_counter()
        _score_encoder(title, spec, data, fractions, seeds, cache, rows, encoder_info, opts)
        encoder_info[title]["seconds"] = round(time.perf_counter() - t0, 2)
    return {
        "rows": rows,
        "encoders": encoder_info,
        "feature_maps": opts["feature_maps"],
        "label_names": data["label_names"],
        "task": "multi_label" if data["multi_label"] else "multi_class",
        "splits": {n: int(len(ds)) for n, ds in data["splits"].items()},
        "split_names": split_names,
        "fractions": fractions,
        "seeds": seeds,
        "protocol": {
            "pooling": pooling,
            "layer": layer,
            "knn_k": k,
            "knn_temperature": temperature,
            "c_grid": list(c_grid),
            "c_selection": "validation mean AUC",
            "metric": "test mean ROC AUC",
            "subset": "genssl_hf.training.finetune_data.stratified_subset(train targets, fraction, seed)",
        },
        "seconds": round(time.perf_counter() - started, 2),
    }
