#!/usr/bin/env python
"""Does the shipped phantom generator draw the finding its prompt asks for?

A phantom finding classifier (``genssl_hf.data.phantom_classifier``, trained here on real phantoms,
seeded) scores images generated from one prompt per finding ("Big left-sided atelectasis.", ...)
and from the normal prompt. Per finding f: AUC of the classifier's f-probability for images of
f's prompt (positives) against images of every other prompt (negatives); 0.5 is chance. The same
classifier's AUC on held-out real phantoms is printed as its ceiling.

    python benchmarks/bench_phantom_generator.py --quick
    python benchmarks/bench_phantom_generator.py --images-per-prompt 64 --steps 50

Ends with one JSON line (value = mean per-finding AUC on generated images).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

FINDING_PROMPTS = {
    "Atelectasis": "Big left-sided atelectasis.",
    "Cardiomegaly": "Big cardiomegaly.",
    "Consolidation": "Big right-sided consolidation.",
    "Edema": "Big bilateral edema.",
    "Pleural Effusion": "Big left-sided pleural effusion.",
}
NORMAL_PROMPT = "No atelectasis. No cardiomegaly. No consolidation. No edema. No pleural effusion."


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from genssl_hf.data.phantom_classifier import phantom_arrays, train_phantom_oracle
    from genssl_hf.data.schema import CHEXPERT5
    from genssl_hf.generation import load_phantom_generator

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 images per prompt, 25 steps, a smaller classifier run")
    ap.add_argument("--pipeline", default=None, help="pipeline folder (default: the shipped phantom generator)")
    ap.add_argument("--images-per-prompt", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=None, help="independent seed sets; the median AUC is reported")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    k = args.images_per_prompt or (8 if args.quick else 48)
    steps = args.steps or (25 if args.quick else 50)
    repeats = args.repeats or (1 if args.quick else 3)
    info = machine_info()
    print_machine(info)

    t0 = time.perf_counter()
    oracle = train_phantom_oracle(
        num_train=1200 if args.quick else 2000, size=64, epochs=6 if args.quick else 8, seed=0
    )
    xt, yt = phantom_arrays(400, 64, 0, "test")
    real_p = oracle.predict(xt)
    real_auc = {
        f: float(roc_auc_score(yt[:, i], real_p[:, i])) for i, f in enumerate(CHEXPERT5) if 0 < yt[:, i].sum() < len(yt)
    }
    t_oracle = time.perf_counter() - t0

    if args.pipeline:
        from genssl_hf.generation import CXRLatentDiffusionPipeline

        pipe = CXRLatentDiffusionPipeline.from_pretrained(args.pipeline)
    else:
        pipe = load_phantom_generator()
    pipe.set_progress_bar_config(disable=True)
    prompts = list(FINDING_PROMPTS.values()) + [NORMAL_PROMPT]
    per_rep = []
    t1 = time.perf_counter()
    for r in range(repeats):
        seeds = [r * 100_000 + i for i in range(k * len(prompts))]
        out = pipe(
            prompts,
            num_images_per_prompt=k,
            seeds=seeds,
            num_inference_steps=steps,
            guidance_scale=args.guidance,
            output_type="np",
            batch_size=32,
            dtype=torch.bfloat16,
        )
        probs = oracle.predict(out.images[..., 0])
        src = np.repeat(np.arange(len(prompts)), k)
        aucs = {}
        for j, f in enumerate(FINDING_PROMPTS):
            col = CHEXPERT5.index(f)
            aucs[f] = float(roc_auc_score((src == j).astype(int), probs[:, col]))
        per_rep.append(aucs)
    t_gen = time.perf_counter() - t1
    med = {f: statistics.median(a[f] for a in per_rep) for f in FINDING_PROMPTS}
    mean_auc = float(np.mean(list(med.values())))
    print(
        "phantom classifier AUC on held-out real phantoms (ceiling): "
        + ", ".join(f"{f} {v:.3f}" for f, v in real_auc.items())
    )
    print(
        f"generated: {k} images per prompt x {len(prompts)} prompts, {steps} steps, "
        f"guidance {args.guidance}, {repeats} seed set(s)"
    )
    for f, v in med.items():
        print(f"  {f:17s} prompt {FINDING_PROMPTS[f]!r:38s} AUC {v:.3f}")
    print(f"  mean per-finding AUC {mean_auc:.3f} (chance 0.5); classifier {t_oracle:.0f} s, generation {t_gen:.0f} s")
    print(
        json.dumps(
            {
                "name": "phantom_generator_prompted_finding_auc",
                "value": round(mean_auc, 4),
                "unit": "AUC",
                "baseline": 0.5,
                "ratio": round(mean_auc / 0.5, 3),
                "per_finding": {f: round(v, 4) for f, v in med.items()},
                "classifier_auc_real_phantoms": {f: round(v, 4) for f, v in real_auc.items()},
                "images_per_prompt": k,
                "steps": steps,
                "guidance": args.guidance,
                "repeats": repeats,
                "machine": finish(info),
            }
        )
    )


if __name__ == "__main__":
    main()
