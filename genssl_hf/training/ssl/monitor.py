"""Representation monitors for self-supervised training: a weighted kNN classifier on a small
labelled split (Wu et al. 2018 / DINO protocol: cosine similarity, k nearest training features,
votes weighted by exp(sim / T)), run every K steps by the engine's ``periodic`` hook."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genssl_hf.models import pooled_features

__all__ = ["knn_scores", "KNNMonitor"]


def knn_scores(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Per-class scores ``(N_test, C)`` from the weighted votes of the ``k`` nearest training
    features; ``train_targets`` is one-hot / multi-hot ``(N_train, C)``. Scores of each row sum to 1
    for one-hot targets."""
    a = F.normalize(train_features.float(), dim=1)
    b = F.normalize(test_features.float(), dim=1)
    sim = b @ a.T
    k = min(k, a.shape[0])
    top, idx = sim.topk(k, dim=1)
    w = (top / temperature).exp()
    votes = train_targets.float()[idx] * w.unsqueeze(-1)
    return votes.sum(1) / w.sum(1, keepdim=True)


class KNNMonitor:
    """kNN evaluation of the backbone's pooled features on fixed labelled train / test images.

    ``images``: uint8 ``(N, 1, S, S)``; ``targets``: ``(N, C)`` one-/multi-hot; ``normalize``: the
    input pipeline of the exported processor (AdaIN + mean/std). Reports ``eval/knn_accuracy``
    (multi-class) or ``eval/knn_mean_auc`` (multi-label, scikit-learn AUC over classes with both
    outcomes)."""

    def __init__(
        self,
        train_images: torch.Tensor,
        train_targets: torch.Tensor,
        test_images: torch.Tensor,
        test_targets: torch.Tensor,
        normalize,
        multi_label: bool,
        k: int = 20,
        batch_size: int = 128,
    ):
        self.train = (train_images, train_targets)
        self.test = (test_images, test_targets)
        self.normalize = normalize
        self.multi_label = multi_label
        self.k = k
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, backbone: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        device = next(backbone.parameters()).device
        out = []
        for i in range(0, len(images), self.batch_size):
            x = self.normalize(images[i : i + self.batch_size].float().div(255.0)).to(device)
            out.append(pooled_features(backbone, x).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, backbone: torch.nn.Module) -> dict[str, float]:
        was = backbone.training
        backbone.eval()
        try:
            ftr = self.features(backbone, self.train[0])
            fte = self.features(backbone, self.test[0])
        finally:
            backbone.train(was)
        scores = knn_scores(ftr, self.train[1], fte, self.k).numpy()
        y = self.test[1].numpy()
        if not self.multi_label:
            return {"eval/knn_accuracy": float((scores.argmax(1) == y.argmax(1)).mean())}
        from sklearn.metrics import roc_auc_score

        aucs = [roc_auc_score(y[:, c], scores[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
        return {"eval/knn_mean_auc": float(np.mean(aucs)) if aucs else float("nan")}


def build_knn_monitor(
    spec: str,
    image_size: int,
    normalize,
    *,
    num_train: int,
    num_test: int,
    seed: int,
    phantom_resolution: int = 64,
    k: int = 20,
) -> tuple[KNNMonitor, dict[str, Any]]:
    """A :class:`KNNMonitor` from a labelled dataset spec (``phantom``, ``kermany:ROOT``, a folder...):
    ``num_train`` images of its train split as the memory bank, ``num_test`` of validation (or test)."""
    from genssl_hf.training.finetune_data import Collator, load_dataset_spec, stratified_subset, targets_of

    dd = load_dataset_spec(
        spec, phantom_sizes=(num_train, num_test, num_test), phantom_resolution=phantom_resolution, seed=seed + 7
    )
    if "train" not in dd:
        raise KeyError(f"--knn_dataset {spec!r} has no train split (splits: {list(dd)})")
    eval_name = "validation" if "validation" in dd else ("test" if "test" in dd else None)
    if eval_name is None:
        raise KeyError(f"--knn_dataset {spec!r} has neither a validation nor a test split")
    tensors = []
    for name, n in (("train", num_train), (eval_name, num_test)):
        ds = dd[name]
        targets, label_names, multi_label = targets_of(ds)
        if n < len(ds):
            ds = ds.select(stratified_subset(targets, n / len(ds), seed))
        batch = Collator(image_size, multi_label, len(label_names))(list(ds))
        y = batch["labels"]
        if not multi_label:
            y = F.one_hot(y.long(), len(label_names))
        tensors += [batch["pixels"], y.float()]
    info = {
        "dataset": spec,
        "train": int(len(tensors[0])),
        "eval_split": eval_name,
        "eval": int(len(tensors[2])),
        "k": k,
        "multi_label": multi_label,
        "label_names": label_names,
    }
    return KNNMonitor(*tensors, normalize=normalize, multi_label=multi_label, k=k), info
