#!/usr/bin/env python
"""Speed at equal image quality: diffusers solvers and step counts against the bundle's 50-step DDIM.

On the shipped phantom generator (trained weights, so image quality means something), every setting
generates the same prompts from the same seeds as the reference (DDIM, 50 steps, guidance 4.0):
one prompt per finding ("Big left-sided atelectasis.", ...) plus the normal prompt, ``--k`` images
per prompt, ``--repeats`` independent seed sets. Quality, against the reference:

* **prompt adherence**: the phantom finding classifier's mean per-finding AUC (prompted finding
  against every other prompt; ``bench_phantom_generator.py``), and the paired bootstrap 95 % CI of
  its difference to the reference (same seeds, images resampled; 1,000 replicates);
* **FID** with the package's ``compute_fid`` in the feature space of the same classifier (its pooled
  96-d features; no Inception weights offline) between a setting's seed set r and the reference's
  seed set r+1, against the reference's own floor FID(reference r, reference r+1): two samples of
  the same generator differ by that much.

A setting is "within the noise" when its AUC difference CI contains 0 (or lies above it) and its
median FID to the reference is at most the largest reference-vs-reference FID. Speed: images/s of
each setting on this generator, every setting timed once per seed set in rotation (so load changes
hit all alike); the ratio to DDIM-50 is what carries over to the full-size bundle, where
``bench_generation.py --ours-preset fast --steps 50`` measures it against the MONAI reference.

    python benchmarks/bench_generation_quality.py --quick
    python benchmarks/bench_generation_quality.py            # the full sweep

Ends with one JSON line (value = images/s ratio of the fastest setting within the noise to DDIM-50).
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_phantom_generator import FINDING_PROMPTS, NORMAL_PROMPT  # noqa: E402
from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402

# name -> (diffusers scheduler class, its kwargs, steps, guidance_fraction)
SETTINGS: dict[str, tuple[str, dict, int, float]] = {
    "ddim-50 (reference)": ("DDIMScheduler", {}, 50, 1.0),
    "ddim-25": ("DDIMScheduler", {}, 25, 1.0),
    "ddim-10": ("DDIMScheduler", {}, 10, 1.0),
    "dpm++2m-20": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 20, 1.0),
    "dpm++2m-15": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 15, 1.0),
    "dpm++2m-10": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 10, 1.0),
    "dpm++2m-8": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 8, 1.0),
    "dpm++2m-6": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 6, 1.0),
    "dpm++sde-20": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, 20, 1.0),
    "dpm++sde-10": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, 10, 1.0),
    "unipc-10": ("UniPCMultistepScheduler", {}, 10, 1.0),
    "unipc-8": ("UniPCMultistepScheduler", {}, 8, 1.0),
    "unipc-6": ("UniPCMultistepScheduler", {}, 6, 1.0),
    "unipc-5": ("UniPCMultistepScheduler", {}, 5, 1.0),
    "dpm++2m-10, guidance on 1st half": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        10,
        0.5,
    ),
    "unipc-8, guidance on 1st half": ("UniPCMultistepScheduler", {}, 8, 0.5),
}
QUICK = ["ddim-50 (reference)", "ddim-10", "dpm++2m-10", "unipc-8", "dpm++2m-10, guidance on 1st half"]
REFERENCE = "ddim-50 (reference)"


class ClassifierFeatures:
    """Pooled penultimate features of the phantom finding classifier, as an extractor for
    ``genssl_hf.evaluation.image_quality`` (callable on (N, C, H, W) in [0, 1], with a ``name``)."""

    def __init__(self, oracle):
        self.model, self.size = oracle.model.eval(), oracle.size
        dim = self.model.head.in_features
        self.name = f"phantom finding CNN (pooled {dim}-d features, {self.size}px)"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = images.float()
        x = x.mean(1, keepdim=True) if x.shape[1] == 3 else x
        if x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.model.features(x).mean(dim=(2, 3)).numpy()


def finding_aucs(probs: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per-finding AUC of the classifier's finding probability, prompted (source == j) vs the rest."""
    from sklearn.metrics import roc_auc_score

    from genssl_hf.data.schema import CHEXPERT5

    return np.array(
        [roc_auc_score((source == j).astype(int), probs[:, CHEXPERT5.index(f)]) for j, f in enumerate(FINDING_PROMPTS)]
    )


def paired_auc_difference(p_cand: np.ndarray, p_ref: np.ndarray, source: np.ndarray, reps: int = 1000, seed: int = 0):
    """Mean-AUC difference (candidate - reference) and its paired bootstrap 95 % CI: the same image
    indices (same seeds) are resampled for both, stratified by prompt."""
    rng = np.random.default_rng(seed)
    by_prompt = [np.flatnonzero(source == j) for j in range(source.max() + 1)]
    diffs = []
    for _ in range(reps):
        idx = np.concatenate([rng.choice(ix, len(ix)) for ix in by_prompt])
        diffs.append(finding_aucs(p_cand[idx], source[idx]).mean() - finding_aucs(p_ref[idx], source[idx]).mean())
    point = finding_aucs(p_cand, source).mean() - finding_aucs(p_ref, source).mean()
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def make_scheduler(base_config, name: str):
    import diffusers

    cls_name, kwargs, _, _ = SETTINGS[name]
    cfg = dict(base_config)
    return getattr(diffusers, cls_name).from_config(cfg, **kwargs)


def main(argv=None) -> int:
    from genssl_hf.data.phantom_classifier import train_phantom_oracle
    from genssl_hf.evaluation.image_quality import extract_features, frechet_distance
    from genssl_hf.generation import load_phantom_generator

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 settings, 8 images per prompt, 2 seed sets")
    ap.add_argument("--k", type=int, default=None, help="images per prompt per seed set (default 32; quick 8)")
    ap.add_argument("--repeats", type=int, default=None, help="seed sets (default 3; quick 2)")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--settings", nargs="*", default=None, help=f"subset of: {list(SETTINGS)}")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    k = args.k or (8 if args.quick else 32)
    repeats = args.repeats or (2 if args.quick else 3)
    names = args.settings or (QUICK if args.quick else list(SETTINGS))
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    if REFERENCE not in names:
        names = [REFERENCE] + names
    if repeats < 2:
        raise SystemExit("--repeats must be >= 2 (the FID noise floor compares two reference seed sets)")

    info = machine_info()
    print_machine(info)
    oracle = train_phantom_oracle(
        num_train=1200 if args.quick else 2000, size=64, epochs=6 if args.quick else 8, seed=0
    )
    extractor = ClassifierFeatures(oracle)
    pipe = load_phantom_generator()
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    prompts = list(FINDING_PROMPTS.values()) + [NORMAL_PROMPT]
    source = np.repeat(np.arange(len(prompts)), k)
    pipe.encode_prompt(prompts + [""])

    probs = {n: [] for n in names}
    feats = {n: [] for n in names}
    secs = {n: [] for n in names}
    for r in range(repeats):
        seeds = [r * 100_000 + i for i in range(k * len(prompts))]
        for n in names:  # in rotation: every setting sees the same load
            _, _, steps, frac = SETTINGS[n]
            pipe.scheduler = make_scheduler(base_config, n)
            t = time.perf_counter()
            out = pipe(
                prompts,
                num_images_per_prompt=k,
                seeds=seeds,
                num_inference_steps=steps,
                guidance_scale=args.guidance,
                guidance_fraction=frac,
                output_type="np",
                batch_size=32,
                dtype=torch.bfloat16,
            )
            secs[n].append(time.perf_counter() - t)
            imgs = out.images[..., 0]
            probs[n].append(oracle.predict(imgs))
            feats[n].append(extract_features(torch.from_numpy(imgs)[:, None], extractor))
        print(f"  seed set {r + 1}/{repeats} done", flush=True)

    n_img = k * len(prompts)
    floor = [frechet_distance(feats[REFERENCE][r], feats[REFERENCE][(r + 1) % repeats]) for r in range(repeats)]
    src_all = np.concatenate([source] * repeats)
    p_ref_all = np.concatenate(probs[REFERENCE])
    ref_ips = n_img / statistics.median(secs[REFERENCE])
    rows = []
    for n in names:
        _, _, steps, frac = SETTINGS[n]
        per_set_auc = [float(finding_aucs(p, source).mean()) for p in probs[n]]
        p_all = np.concatenate(probs[n])
        d, lo, hi = paired_auc_difference(p_all, p_ref_all, src_all)
        fid = [frechet_distance(feats[n][r], feats[REFERENCE][(r + 1) % repeats]) for r in range(repeats)]
        ips = n_img / statistics.median(secs[n])
        within = (hi >= 0.0) and statistics.median(fid) <= max(floor)
        rows.append(
            {
                "setting": n,
                "steps": steps,
                "guidance_fraction": frac,
                "unet_calls_per_image": steps * (1 + frac) if args.guidance > 1 else steps,
                "auc": round(float(finding_aucs(p_all, src_all).mean()), 4),
                "auc_per_seed_set": [round(a, 4) for a in per_set_auc],
                "auc_diff": round(d, 4),
                "auc_diff_ci": [round(lo, 4), round(hi, 4)],
                "fid_to_reference": round(statistics.median(fid), 3),
                "fid_runs": [round(f, 3) for f in fid],
                "images_per_s": round(ips, 2),
                "speedup_vs_ddim50": round(ips / ref_ips, 2),
                "within_noise": bool(within),
            }
        )
    ok = [r for r in rows if r["within_noise"]]
    best = max(ok, key=lambda r: r["speedup_vs_ddim50"])
    # "fastest within the noise" by measured time; by UNet calls too (load makes small timings jumpy)
    best_by_calls = min(ok, key=lambda r: (r["unet_calls_per_image"], -r["auc"]))
    print(
        f"\nphantom generator, {k} images x {len(prompts)} prompts x {repeats} seed sets, guidance {args.guidance}; "
        f"features: {extractor.name}"
    )
    print(f"FID noise floor (reference seed set r vs r+1): {[round(f, 3) for f in floor]}")
    print(
        f"{'setting':36s} {'steps':>5s} {'AUC':>6s} {'dAUC [95% CI]':>24s} "
        f"{'FID':>7s} {'img/s':>7s} {'x DDIM50':>8s}  within noise"
    )
    for r in rows:
        ci = f"{r['auc_diff']:+.3f} [{r['auc_diff_ci'][0]:+.3f}, {r['auc_diff_ci'][1]:+.3f}]"
        print(
            f"{r['setting']:36s} {r['steps']:5d} {r['auc']:6.3f} {ci:>24s} "
            f"{r['fid_to_reference']:7.3f} {r['images_per_s']:7.2f} "
            f"{r['speedup_vs_ddim50']:8.2f}  {'yes' if r['within_noise'] else 'no'}"
        )
    print(
        f"fastest within the noise: {best['setting']} ({best['speedup_vs_ddim50']:.2f}x DDIM-50 measured); "
        f"fewest UNet calls within the noise: {best_by_calls['setting']}"
    )
    finish(info)
    print(
        json.dumps(
            {
                "name": "generation_equal_quality_speedup_vs_ddim50",
                "value": best["speedup_vs_ddim50"],
                "unit": "x DDIM-50 images/s (phantom generator)",
                "best_setting": best["setting"],
                "fewest_calls_setting": best_by_calls["setting"],
                "fid_floor": [round(f, 3) for f in floor],
                "feature_extractor": extractor.name,
                "k": k,
                "repeats": repeats,
                "guidance": args.guidance,
                "rows": rows,
                "machine": info,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
