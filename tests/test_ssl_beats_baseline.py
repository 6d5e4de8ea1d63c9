"""Every pre-training method beats its trivial baseline on phantoms: a linear probe (logistic
regression per finding, mean AUC on held-out labelled phantoms) on the backbone's pooled features
after 150 steps of pre-training scores above the same probe on the random-init features it started
from. Random conv features are a strong baseline on phantoms (~0.85 mAUC), so the margins are small;
the run is seeded and single-threaded, so the comparison is deterministic."""

import numpy as np
import pytest
import torch

from genssl_hf.models import build_backbone, pooled_features
from genssl_hf.training.ssl.methods import METHODS, build_method
from genssl_hf.training.ssl.optim import build_ssl_optimizer
from genssl_hf.training.ssl.transforms import SSLViews

SIZE = 32


@pytest.fixture(scope="module")
def data():
    from genssl_hf.data.phantom import phantom_dataset, phantom_splits
    from genssl_hf.training.finetune_data import Collator, InputNormalizer, targets_of
    from genssl_hf.processing.collate import ImageCollator

    unlabelled = ImageCollator(SIZE)(list(phantom_dataset(512, size=SIZE, seed=3)))
    labelled = phantom_splits({"train": 400, "test": 300}, size=SIZE, seed=11)
    _, names, _ = targets_of(labelled["train"])
    train = Collator(SIZE, True, len(names))(list(labelled["train"]))
    test = Collator(SIZE, True, len(names))(list(labelled["test"]))
    normalize = InputNormalizer(image_size=SIZE, do_adain=True, adain_mean=0.5062, adain_std=0.2732)
    return unlabelled, train, test, normalize


def linear_probe_mean_auc(backbone, train, test, normalize) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    backbone.eval()
    with torch.no_grad():
        a = pooled_features(backbone, normalize(train["pixels"].float() / 255)).numpy()
        b = pooled_features(backbone, normalize(test["pixels"].float() / 255)).numpy()
    backbone.train()
    mu, sd = a.mean(0), a.std(0) + 1e-6
    a, b = (a - mu) / sd, (b - mu) / sd
    aucs = []
    for c in range(train["labels"].shape[1]):
        clf = LogisticRegression(max_iter=2000, C=0.1).fit(a, train["labels"][:, c].numpy())
        aucs.append(roc_auc_score(test["labels"][:, c].numpy(), clf.predict_proba(b)[:, 1]))
    return float(np.mean(aucs))


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))  # every registered method
def test_linear_probe_beats_random_init_features(data, method):
    torch.set_num_threads(1)
    unlabelled, train, test, normalize = data
    torch.manual_seed(0)
    model = build_method(method, build_backbone("resnet-tiny", image_size=SIZE), "tiny", queue_size=512)
    random_init = linear_probe_mean_auc(model.backbone, train, test, normalize)
    lr = METHODS[method].recipes["tiny"]["base_learning_rate"]  # 2e-3 for all but BYOL (5e-3), jigsaw (5e-4)
    opt = build_ssl_optimizer(model, "adamw", lr, 0.05, fixed_lr_prefixes=METHODS[method].fixed_lr_prefixes)
    off = {k: v for k, v in METHODS[method].view_overrides.items() if k != "crop_scale_min"}
    views = SSLViews(SIZE, **off)
    steps = 150
    for step in range(steps):
        x = unlabelled[torch.randint(0, len(unlabelled), (64,))]
        loss, _ = model([views(x) for _ in range(METHODS[method].num_views)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_optimizer_step(step + 1, steps)
    trained = linear_probe_mean_auc(model.backbone, train, test, normalize)
    assert trained > random_init, (
        f"{method}: linear probe {trained:.4f} not above random-init features {random_init:.4f}"
    )
