"""What the evaluation report (:mod:`genssl_hf.evaluation.report`) reads: a saved classifier with the
input pipeline it was trained with, one split of a dataset spec as images and targets, and the names
of the files it saves per model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "LoadedClassifier",
    "load_classifier",
    "load_eval_split",
    "sample_indices",
    "safe_file_name",
    "predictions_path",
]


def check_is_classifier(folder: Path, cfg: dict) -> None:
    """A folder ``evaluate`` can score: a classifier with trained classes, not a pre-trained encoder."""
    archs = cfg.get("architectures") or []
    is_classifier = any(a.endswith("ForImageClassification") for a in archs) or (
        not archs and "id2label" in cfg and cfg.get("model_type") in ("vit", "resnet")
    )
    if not is_classifier:
        kind = ", ".join(archs) or cfg.get("model_type") or "unknown"
        raise ValueError(
            f"--model {folder} is not an image classifier (config.json: {kind}); a pre-trained encoder has no "
            "classification head: fine-tune it first (scripts/finetune.py --model <encoder folder>) and evaluate "
            "that run's folder, or probe it frozen with scripts/probe_encoders.py"
        )


class LoadedClassifier:
    """A saved classifier folder with the input pipeline it was trained with."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu"):
        import genssl_hf.processing  # noqa: F401  (AutoImageProcessor learns AdaINImageProcessor)
        from transformers import AutoImageProcessor, ViTForImageClassification

        from genssl_hf.models.vit_classifier import GenSSLViTForImageClassification
        from genssl_hf.training.finetune_data import InputNormalizer

        self.folder = Path(folder)
        cfg_path = self.folder / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"model folder {self.folder} has no config.json")
        try:
            cfg = json.loads(cfg_path.read_text())
        except ValueError as e:
            raise ValueError(f"--model {self.folder}: config.json is not valid JSON ({e})") from None
        check_is_classifier(self.folder, cfg)
        cls = GenSSLViTForImageClassification if "pooling" in cfg else ViTForImageClassification
        if cfg.get("model_type") == "resnet":  # the CNN slot
            from transformers import ResNetForImageClassification as cls
        self.model = cls.from_pretrained(self.folder).eval().to(device)
        self.device = torch.device(device)
        config = self.model.config
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification"
        size = int(config.image_size)
        if (self.folder / "preprocessor_config.json").is_file():
            proc = AutoImageProcessor.from_pretrained(self.folder)
            psize = getattr(proc, "size", None)
            if psize is not None and getattr(psize, "height", None):
                size = int(psize.height)
            elif isinstance(psize, dict) and psize.get("height"):
                size = int(psize["height"])
            self.normalizer = InputNormalizer.from_processor(proc, size, config.num_channels)
        else:
            self.normalizer = InputNormalizer(image_size=size, num_channels=config.num_channels)
        self.image_size = size

    def model_input(self, images01: torch.Tensor) -> torch.Tensor:
        return self.normalizer(self.normalizer.resize(images01.float())).to(self.device)

    @torch.no_grad()
    def predict(self, images01: torch.Tensor) -> np.ndarray:
        """Probabilities for ``(B, 1, H, W)`` images in [0, 1]."""
        logits = self.model(pixel_values=self.model_input(images01)).logits.float()
        p = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return p.cpu().numpy()


def load_classifier(folder: str | Path, device: str = "cpu") -> LoadedClassifier:
    return LoadedClassifier(folder, device)


def load_eval_split(
    dataset: str,
    split: str,
    *,
    config: str | None = None,
    phantom_size: int = 500,
    phantom_resolution: int = 64,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
):
    """One split of a dataset spec (see :mod:`genssl_hf.data.registry`: 'phantom', kermany: / nih-subset: /
    chexpert: / nih14: / covidx: / mimic: / imagefolder: ROOT, a save_to_disk folder, a Hub id).
    ``label_names`` (the model's classes) orders an ``imagefolder:`` spec's class folders."""
    from genssl_hf.data.registry import open_labelled_dataset

    sizes = {"train": (phantom_size, 0, 0), "validation": (0, phantom_size, 0), "test": (0, 0, phantom_size)}
    dd = open_labelled_dataset(
        dataset,
        config=config,
        phantom_sizes=sizes.get(split, (0, 0, phantom_size)),
        phantom_resolution=phantom_resolution,
        seed=seed,
        label_names=label_names,
    )
    if split not in dd:
        raise KeyError(f"dataset {dataset!r} has no split {split!r} (splits: {list(dd)})")
    return dd[split]


def sample_indices(n: int, k: int | None, seed: int) -> np.ndarray:
    """All ``n`` rows, or a seeded random ``k`` of them (sorted): splits are often ordered by label,
    so "the first k rows" could hold a single class."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _images_and_targets(
    ds, size: int, image_column: str, max_samples: int | None = None, batch_size: int = 256, seed: int = 0
):
    from genssl_hf.training.finetune_data import Collator, targets_of

    targets, names, multi_label = targets_of(ds)
    rows = sample_indices(len(ds), max_samples, seed)
    collate = Collator(size, multi_label, len(names), image_column)
    chunks = [
        collate([ds[int(j)] for j in rows[i : i + batch_size]])["pixels"] for i in range(0, len(rows), batch_size)
    ]
    images = torch.cat(chunks).float().div_(255.0)
    return images, targets[rows], names, multi_label


def safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def predictions_path(results_dir: str | Path, model_name: str) -> Path:
    """Where :func:`run_evaluation` saves a model's test ``probs`` and ``targets`` (``.npz``)."""
    return Path(results_dir) / f"predictions_{safe_file_name(model_name)}.npz"
