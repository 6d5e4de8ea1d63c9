"""The canonical chest X-ray classification schema, as ``datasets.Features``.

Every dataset in genssl_hf (real adapters, the phantom world, generated images) uses it:

- ``image``: a grayscale ``datasets.Image(mode="L")``.
- multi-label tasks: ``labels``, a list of ``ClassLabel`` holding the indices of the positive
  findings of a named label set (the Hugging Face convention for multi-label data);
  :func:`to_multi_hot` turns it into the 0/1 vector a BCE head needs.
- multi-class tasks: ``label``, one ``ClassLabel``.
- metadata: ``patient_id``, ``study_id``, ``view`` (PA/AP/LATERAL/... or ""), ``source``.

Extra columns may follow the canonical ones (for example ``report`` or ``seed``).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import datasets
import numpy as np

CHEXPERT5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The five CheXpert competition labels; also the findings of the phantom world."""

CHEXPERT14 = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert observations in the order of the CheXpert labeller (Irvin et al., AAAI 2019)."""

NIH14 = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""The 14 ChestX-ray14 findings in the official order."""

COVIDX3 = ("normal", "pneumonia", "COVID-19")
"""COVIDx classes."""

METADATA_FEATURES = {
    "patient_id": datasets.Value("string"),
    "study_id": datasets.Value("string"),
    "view": datasets.Value("string"),
    "source": datasets.Value("string"),
}


def cxr_features(
    label_names: Sequence[str],
    *,
    multi_label: bool = True,
    extra: dict[str, datasets.features.features.FeatureType] | None = None,
) -> datasets.Features:
    """Canonical Features for a chest X-ray classification dataset over ``label_names``."""
    names = list(label_names)
    if not names:
        raise ValueError("label_names is empty: a classification schema needs at least one label")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names has duplicates: {names}")
    cols: dict = {"image": datasets.Image(mode="L")}
    if multi_label:
        cols["labels"] = datasets.List(datasets.ClassLabel(names=names))
    else:
        cols["label"] = datasets.ClassLabel(names=names)
    cols.update(METADATA_FEATURES)
    for key, feature in (extra or {}).items():
        if key in cols:
            raise ValueError(f"extra column {key!r} clashes with a canonical column")
        cols[key] = feature
    return datasets.Features(cols)


def label_names_of(features: datasets.Features) -> list[str]:
    """The named label set of a canonical dataset (multi-label or multi-class)."""
    if "labels" in features:
        inner = features["labels"]
        inner = getattr(inner, "feature", inner)
        return list(inner.names)
    if "label" in features:
        return list(features["label"].names)
    raise KeyError("features have neither a 'labels' (multi-label) nor a 'label' (multi-class) column")


def is_multi_label(features: datasets.Features) -> bool:
    return "labels" in features


def to_multi_hot(indices: Iterable[int], num_labels: int) -> np.ndarray:
    """Positive-label indices -> float32 multi-hot vector of length ``num_labels``."""
    out = np.zeros(num_labels, dtype=np.float32)
    for i in indices:
        if not 0 <= int(i) < num_labels:
            raise ValueError(f"label index {i} is outside [0, {num_labels})")
        out[int(i)] = 1.0
    return out


def from_multi_hot(vector: Sequence[float]) -> list[int]:
    """0/1 vector -> sorted list of positive indices."""
    return [i for i, v in enumerate(vector) if float(v) >= 0.5]
