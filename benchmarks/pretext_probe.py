"""Linear probe of a method's backbone after 150 pre-training steps vs its random-init features, on
phantoms: the loop of ``tests/test_ssl_beats_baseline.py`` (its data fixture and probe), one JSON
line per run with the probe mAUCs and the method's last-batch metrics (BENCHMARKS.md, issue 32).

    python benchmarks/pretext_probe.py '{"method": "jigsaw"}' '{"method": "context_restoration", "bb": "tiny"}'

Each argument is a JSON object: ``method``, optional ``bb`` (backbone preset, default resnet-tiny),
``lr`` (default: the method's tiny recipe), ``steps`` and method hyper-parameter overrides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def run(method: str, bb: str = "resnet-tiny", steps: int = 150, lr: float | None = None, **overrides) -> dict:
    import test_ssl_beats_baseline as T

    from genssl_hf.models import build_backbone
    from genssl_hf.training.ssl.methods import METHODS, build_method
    from genssl_hf.training.ssl.optim import build_ssl_optimizer
    from genssl_hf.training.ssl.transforms import SSLViews

    unlabelled, train, test, normalize = T.data._get_wrapped_function()()
    torch.manual_seed(0)
    model = build_method(method, build_backbone(bb, image_size=T.SIZE), "tiny", **overrides)
    random_init = T.linear_probe_mean_auc(model.backbone, train, test, normalize)
    lr = lr or METHODS[method].recipes["tiny"]["base_learning_rate"]
    opt = build_ssl_optimizer(model, "adamw", lr, 0.05, fixed_lr_prefixes=METHODS[method].fixed_lr_prefixes)
    views = SSLViews(T.SIZE, **{k: v for k, v in METHODS[method].view_overrides.items() if k != "crop_scale_min"})
    for step in range(steps):
        x = unlabelled[torch.randint(0, len(unlabelled), (64,))]
        loss, metrics = model([views(x) for _ in range(METHODS[method].num_views)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_optimizer_step(step + 1, steps)
    trained = T.linear_probe_mean_auc(model.backbone, train, test, normalize)
    return {
        "method": method,
        "backbone": bb,
        "lr": lr,
        **overrides,
        "random_init_probe_mauc": round(random_init, 4),
        "trained_probe_mauc": round(trained, 4),
        **{k: round(float(v), 4) for k, v in metrics.items()},
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    for spec in sys.argv[1:]:
        print(json.dumps(run(**json.loads(spec))), flush=True)
