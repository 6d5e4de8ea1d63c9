#!/usr/bin/env python
"""GEN-SSL on real chest X-rays (issue 9.3), through the same pipeline as ``make demo``.

1. A small generator: the shipped phantom autoencoder and LDM fine-tuned on the 600 training
   images of the NIH ChestX-ray14 subset, conditioned on their findings written as a short report
   ("Effusion. Infiltration." / "No finding."); prompts are the 14 findings plus "No finding.".
2. Balanced generation, AdaIN reference statistics from the real Kermany training images.
3. MAE pre-training (tiny ViT, 64 px): on generated images with AdaIN, without AdaIN, and on the
   same number of real Kermany training images.
4. Fine-tuning on the Kermany paediatric pneumonia training split (NORMAL vs PNEUMONIA) at label
   fractions 1 %, 10 %, 100 %; validation (15 %) and test (20 %) are carved out of the training
   split, stratified, seeded and patient-disjoint (the Kermany test split is not here).
   Few-shot protocol for 1 % and 10 %: three seeds (three label subsets, head inits and batch
   orders) and at least 250 optimiser steps (``--min_steps``: epochs, warm-up and evaluation
   cadence stretched alike); 100 % runs once with the plain 10-epoch recipe.
5. Test AUC with bootstrap CIs for random init and the three encoders, and the paired bootstrap
   difference against random init, per seed.

Data: ../shared/data (Kermany et al. 2018, CC BY 4.0; NIH Clinical Center ChestX-ray14, Wang et
al. CVPR 2017). Nothing from it is published: the run folder stays local and the hub stage is off.

    python benchmarks/bench_genssl_realdata.py            # full run (about an hour on 2 CPU cores)
    python benchmarks/bench_genssl_realdata.py --quick    # every stage at toy size (minutes)
    python benchmarks/bench_genssl_realdata.py --protocol [--extra mae_real_x5,...]   # issue 21's protocol
    python benchmarks/bench_genssl_realdata.py --reconstruction [--extra ...]   # MAE loss vs the mean image

``--protocol`` (issue 21) reuses the run folder's generator, images and MAEs and compares arms with
``genssl_hf.pipeline.protocol``. The recipes are tuned per arm on validation only. Every arm runs 5
seeds at 1 % and 10 % labels. Two controls separate pre-training from input standardisation: random
init behind the AdaIN processor, and GEN-SSL fine-tuned without it. ``--extra`` adds the diagnosis
and ablation encoders of ``EXTRA_STAGES``, with 3 seeds each.

``--reconstruction`` scores every MAE of the run folder (and ``--extra``) on the real test images:
the masked-patch loss beside the best constant patch and the mean training image
(``genssl_hf.evaluation.reconstruction``). Nothing is fine-tuned, and no figure of real images is drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import finish, machine_info, print_machine, record_results  # noqa: E402

from genssl_hf.data.schema import NIH14  # noqa: E402
from genssl_hf.pipeline.config import finetune_runs  # noqa: E402
from genssl_hf.pipeline.runner import run_pipeline  # noqa: E402
from genssl_hf.utils import read_json, write_json  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


SSL_METHODS = ("simclr", "moco_v2", "simsiam", "rotation", "jigsaw", "context_restoration", "multitask")


def add_ssl_variants(cfg: dict, methods: list[str], quick: bool) -> dict:
    """The GEN-SSL paper's Tab. 9 beside MAE: each contrastive / Siamese / pretext method pre-trains
    the same tiny ViT on the same AdaIN-aligned generated images, then fine-tunes with the same
    protocol. Stages already in the run folder (MAE, random init) are reused, not rerun."""
    if not methods:
        return cfg
    cfg["ssl_pretrain"] = {
        "args": {
            "model": "tiny",
            "num_train_epochs": 1 if quick else 10,
            "per_device_train_batch_size": 64,
            "mixed_precision": "bf16",
            "checkpointing_steps": 0 if quick else 200,
            "queue_size": 1024,
            "max_train_samples": 256 if quick else None,
        }
    }
    cfg["ssl_variants"] = {m: {"method": m} for m in methods}
    cfg["variants"] = [*cfg["variants"], *methods]
    return cfg


def config(quick: bool, shared: Path) -> dict:
    prompts = [{"text": f"{name.replace('_', ' ')}.", "disease": name} for name in NIH14]
    prompts.append({"text": "No finding.", "disease": "No Finding"})
    return {
        "name": "realdata-quick" if quick else "realdata",
        "seed": 0,
        "image_size": 64,
        "real_data": {
            "source": "kermany",
            "path": str(shared / "kermany-pneumonia-224"),
            "validation_fraction": 0.15,
            "test_fraction": 0.2,
        },
        "prompts": {"custom": prompts, "name": "nih14-findings"},
        "generator": {
            "source": "train",
            "dataset": "nih-subset",
            "path": str(shared / "nih-cxr14-1000-64px"),
            "resolution": 64,
            "autoencoder_args": {
                "max_steps": 10 if quick else 150,
                "per_device_train_batch_size": 16,
                "learning_rate": 1e-4,
                "max_train_minutes": 1 if quick else 10,
                "checkpointing_steps": 0 if quick else 100,
                "adv_weight": 0.005,
            },
            "ldm_args": {
                "max_steps": 10 if quick else 600,
                "per_device_train_batch_size": 32,
                "learning_rate": 2e-4,
                "warmup_steps": 20,
                "max_train_minutes": 1 if quick else 20,
                "prompt_dropout": 0.1,
                "checkpointing_steps": 0 if quick else 200,
                "guidance_scale": 3.0,
                "validation_prompts": ["No finding.", "Effusion.", "Cardiomegaly.", "Pneumonia."],
            },
        },
        "generation": {
            "num_images": 150 if quick else 3000,
            "num_inference_steps": 4 if quick else 20,
            "guidance_scale": 3.0,
            "dtype": "bfloat16",
            "batch_size": 75 if quick else 100,
        },
        "adain_statistic": "per_image",
        "pretrain": {
            "args": {
                "model": "tiny",
                "num_train_epochs": 1 if quick else 20,
                "per_device_train_batch_size": 128,
                "mixed_precision": "bf16",
                "checkpointing_steps": 0 if quick else 200,
            }
        },
        "finetune": {
            "random_init_preset": "tiny",
            "label_fractions": [0.01, 0.1, 1.0],
            # Few-shot protocol: the small fractions get other label subsets (3 seeds) and a
            # fixed budget of optimiser steps (10 epochs of 34 images would be 10 steps).
            "seeds": [0, 1] if quick else [0, 1, 2],
            "seed_fractions": [0.01, 0.1],
            # Selection on validation AUC, the reported metric: accuracy on this 3:1 imbalanced
            # task rewards the trivial majority-class epoch.
            "args": {
                "recipe": "tiny",
                "num_train_epochs": 1 if quick else 10,
                "per_device_train_batch_size": 64,
                "min_steps": 4 if quick else 250,
                "selection_metric": "mean_auc",
                "n_bootstrap": 100 if quick else 500,
                "mixed_precision": "bf16",
                "max_train_samples": 256 if quick else None,
            },
        },
        "variants": ["random_init", "genssl", "genssl_no_adain", "real_mae"],
        "evaluation": {
            "args": {"n_bootstrap": 100 if quick else 1000, "attention": 2, "max_samples": 200 if quick else None}
        },
        "hub": {"dry_run": False},
    }


# ----------------------------------------------------------------------------- the protocol (issue 21)
def protocol_arms(extra: list[str], main: list[str] | None = None) -> list:
    """The compared arms: the encoders, the input-standardisation controls (``main``: a subset of them
    by name, None: all), and the extra pre-training stages ``extra`` names (diagnosis and ablation
    encoders: GEN-SSL's or MAE-real's recipe)."""
    from genssl_hf.pipeline.protocol import Arm

    arms = [
        Arm("random_init", "Random init", "tiny", layer_decay=1.0),
        # the same per-image AdaIN standardisation the GEN-SSL encoder fine-tunes behind
        Arm(
            "random_init_adain",
            "Random init, AdaIN input",
            "tiny",
            image_processor="mae_genssl/model",
            layer_decay=1.0,
            deps=("mae_genssl",),
        ),
        Arm("genssl", "GEN-SSL (AdaIN at pre-training and fine-tuning)", "mae_genssl/model", deps=("mae_genssl",)),
        Arm(
            "genssl_pt_only",
            "GEN-SSL, AdaIN at pre-training only",
            "mae_genssl/model",
            image_processor="none",
            tune_as="genssl",
            deps=("mae_genssl",),
        ),
        Arm(
            "genssl_no_adain",
            "GEN-SSL without AdaIN",
            "mae_genssl_no_adain/model",
            tune_as="genssl",
            deps=("mae_genssl_no_adain",),
        ),
        Arm("real_mae", "MAE on real images", "mae_real/model", deps=("mae_real",)),
        Arm(
            "real_mae_adain",
            "MAE on real images, AdaIN on",
            "mae_real_adain/model",
            tune_as="real_mae",
            deps=("mae_real_adain",),
        ),
    ]
    if main is not None:
        unknown = sorted(set(main) - {a.name for a in arms})
        if unknown:
            raise ValueError(f"--main-arms: unknown {unknown}; known: {[a.name for a in arms]}")
        arms = [a for a in arms if a.name in main]
    for name in extra:
        spec = EXTRA_STAGES[name]
        stage = extra_stage_name(name)
        arms.append(
            Arm(
                name,
                spec["title"],
                f"{stage}/model",
                tune_as=spec["tune_as"],
                deps=(stage,),
                fractions=tuple(spec.get("fractions", (0.01, 0.1))),
                seeds=(0, 1, 2),
                group=spec.get("group", "extra"),
                image_size=spec.get("image_size"),
            )
        )
    return arms


def extra_stage_name(name: str) -> str:
    """The pre-training stage of an extra arm: its own name, or ``ssl_<method>`` for the contrastive and
    Siamese arms (the stage the pipeline's ``ssl_variants`` would build)."""
    spec = EXTRA_STAGES[name]
    return f"ssl_{spec['method']}" if spec["base"] == "ssl" else name


# Extra pre-training stages: the MAE-real diagnosis (length, mask ratio) and the paper's ablations
# (number of generated images, prompt strategy). Each pre-trains the tiny ViT like its base stage
# with the changes listed. ``fractions``: the few-shot label fractions the arm fine-tunes at (default
# 1 % and 10 %, those of them the protocol runs); ``sampler``: a preset of GENERATION_PRESETS the arm's
# own generated set is sampled with, at the preset's step count.
EXTRA_STAGES: dict[str, dict] = {
    "mae_real_x5": {
        "title": "MAE on real images, 5x longer",
        "base": "real",
        "tune_as": "real_mae",
        "pretrain": {"num_train_epochs": 100},
    },
    "mae_real_x25": {
        "title": "MAE on real images, 25x longer",
        "base": "real",
        "tune_as": "real_mae",
        "pretrain": {"num_train_epochs": 500},
    },
    "mae_real_mask75": {
        "title": "MAE on real images, mask 0.75",
        "base": "real",
        "tune_as": "real_mae",
        "pretrain": {"mask_ratio": 0.75},
    },
    "mae_genssl_10k": {
        "title": "GEN-SSL, 10k generated images",
        "base": "generated",
        "tune_as": "genssl",
        "generation": {"num_images": 10000},
    },
    "mae_genssl_30k": {
        "title": "GEN-SSL, 30k generated images",
        "base": "generated",
        "tune_as": "genssl",
        "generation": {"num_images": 30000},
    },
    "mae_genssl_1prompt": {
        "title": "GEN-SSL, 1 prompt (No finding.)",
        "base": "generated",
        "tune_as": "genssl",
        "prompts": "normal",
    },
    "mae_genssl_combos": {
        "title": "GEN-SSL, finding combinations of the NIH reports",
        "base": "generated",
        "tune_as": "genssl",
        "prompts": "combinations",
    },
    # Compute-matched (session 6): the same 2,000 optimiser steps at batch 128 (about 4x the base 20
    # epochs on 3k images) for every arm, so the number of images is not confounded with pre-training
    # length. The three GEN-SSL arms read prefixes of one 30k generated set (every prefix holds the
    # prompts in their global proportions: see generation.balance).
    **{
        f"mae_genssl_{k}k_2000": {
            "title": f"GEN-SSL, {k}k images, 2,000 steps",
            "base": "generated",
            "tune_as": "genssl",
            "data": "generated_30k",
            "generation": {"num_images": 30000},
            # scored in their own evaluation group (fine-tuned beside the other extras)
            "group": "scaling",
            "pretrain": {"max_train_samples": None if k == 30 else k * 1000, "max_steps": 2000},
        }
        for k in (3, 10, 30)
    },
    "mae_real_2000": {
        "title": "MAE on real images, 2,000 steps",
        "base": "real",
        "tune_as": "real_mae",
        "pretrain": {"max_steps": 2000},
    },
    # image size 128 at the same 8 x 8 patch grid (patch 16): the same sequence length and steps, twice
    # the pixels per side
    "mae_real_128px_2000": {
        "title": "MAE on real images, 128 px (patch 16), 2,000 steps",
        "base": "real",
        "tune_as": "real_mae",
        "image_size": 128,
        "pretrain": {"max_steps": 2000, "patch_size": 16},
    },
    # Tab. 9 under the protocol: the same tiny ViT, the same generated images with AdaIN
    "moco_v2": {"title": "MoCo v2 (generated, AdaIN)", "base": "ssl", "tune_as": "genssl", "method": "moco_v2"},
    "simsiam": {"title": "SimSiam (generated, AdaIN)", "base": "ssl", "tune_as": "genssl", "method": "simsiam"},
    # the pretext methods of issue 32 under the same protocol
    **{
        m: {"title": f"{title} (generated, AdaIN)", "base": "ssl", "tune_as": "genssl", "method": m}
        for m, title in (
            ("jigsaw", "Jigsaw"),
            ("context_restoration", "Context restoration"),
            ("multitask", "Multi-task"),
        )
    },
}

# Equal downstream quality (issue 37.1): the base run's prompt-balanced set (same images, seed, prompts,
# generator, guidance) sampled with each preset into its own generated_* stage, the same MAE (recipe,
# steps, seed) pre-trained on each, fine-tuned at 10 % labels with seeds 0-2, compared with the DDIM-50
# arm (benchmarks/bench_sampler_downstream.py adds the FID and the results.json row).
SAMPLER_ARMS: dict[str, tuple[str, str]] = {  # arm -> (sampler preset, title)
    "mae_genssl_ddim50": ("bundle", "GEN-SSL, DDIM 50 steps"),
    "mae_genssl_unipc8": ("fast", "GEN-SSL, UniPC 8 steps"),
    "mae_genssl_unipc5": ("unipc-5", "GEN-SSL, UniPC 5 steps"),
    "mae_genssl_dpm2m5": ("dpm++2m-5", "GEN-SSL, DPM-Solver++ 2M 5 steps"),
    "mae_genssl_unipc3": ("unipc-3", "GEN-SSL, UniPC 3 steps"),
    "mae_genssl_unipc5u": ("unipc-5-unguided", "GEN-SSL, UniPC 5 steps, no guidance"),
}
SAMPLER_REFERENCE = "mae_genssl_ddim50"
EXTRA_STAGES.update(
    {
        arm: {
            "title": title,
            "base": "generated",
            "tune_as": "genssl",
            "sampler": sampler,
            "group": "sampler",
            "fractions": (0.1,),
        }
        for arm, (sampler, title) in SAMPLER_ARMS.items()
    }
)

# Paired contrasts reported beside the baseline columns: (arm, against), when both ran.
CONTRASTS = (
    ("mae_genssl_10k_2000", "mae_genssl_3k_2000"),
    ("mae_genssl_30k_2000", "mae_genssl_3k_2000"),
    ("mae_genssl_30k_2000", "mae_genssl_10k_2000"),
    ("mae_real_2000", "mae_genssl_3k_2000"),
    ("mae_real_128px_2000", "mae_real_2000"),
    ("mae_genssl_3k_2000", "genssl"),
    ("mae_real_2000", "real_mae"),
    ("moco_v2", "genssl"),
    ("simsiam", "genssl"),
    ("jigsaw", "genssl"),
    ("context_restoration", "genssl"),
    ("multitask", "genssl"),
    *((arm, SAMPLER_REFERENCE) for arm in SAMPLER_ARMS if arm != SAMPLER_REFERENCE),
)


def combination_prompts(shared: Path, min_count: int = 2) -> list[dict]:
    """Prompts in the generator's own caption format from the finding combinations of the NIH training
    split (``"Effusion. Infiltration."``) that occur at least ``min_count`` times: the prompt set that
    fits the real generator's conditioning, with the co-occurrences of real reports."""
    import csv
    from collections import Counter

    counts: Counter = Counter()
    with open(shared / "nih-cxr14-1000-64px" / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != "train":
                continue
            found = [f for f in row["finding_labels"].split("|") if f and f != "No Finding"]
            ordered = [n for n in NIH14 if n in found]
            counts[tuple(ordered)] += 1
    prompts = []
    for combo, n in counts.most_common():
        if n < min_count:
            break
        text = " ".join(f"{name.replace('_', ' ')}." for name in combo) or "No finding."
        prompts.append({"text": text, "disease": combo[0] if combo else "No Finding"})
    return prompts


def run_extra_stages(cfg: dict, out: Path, names: list[str], shared: Path, quick: bool) -> None:
    """Pre-train the extra encoders (generating their datasets first where they need their own)."""
    from genssl_hf.pipeline.stages import run_stage

    for name in names:
        for stage, deps in extra_stages(cfg, out, name, shared, quick):
            run_stage(out, stage, print, deps=deps)


def extra_stages(cfg: dict, out: Path, name: str, shared: Path, quick: bool) -> list[tuple[object, list[str]]]:
    """The stages of the extra arm ``name`` in run order, each with the stages it reads: its own prompt
    set and generated set where it needs them, then its pre-training. Building them computes nothing."""
    import copy

    from genssl_hf.pipeline.steps import stage_generated_dataset, stage_prompt_set
    from genssl_hf.pipeline.training_steps import stage_pretrain, stage_ssl_pretrain

    stats = out / "reference_stats" / "reference_stats.json"
    spec = EXTRA_STAGES[name]
    c = copy.deepcopy(cfg)
    c["image_size"] = spec.get("image_size", c["image_size"])
    if spec["base"] == "ssl":
        c = add_ssl_variants(c, [spec["method"]], quick)
        return [(stage_ssl_pretrain(c, spec["method"], stats, out, print), ["generated_dataset", "reference_stats"])]
    c["pretrain"]["args"].update(spec.get("pretrain", {}))
    if quick:
        if "num_train_epochs" in spec.get("pretrain", {}):
            c["pretrain"]["args"]["num_train_epochs"] = 2
        if "max_steps" in spec.get("pretrain", {}):
            c["pretrain"]["args"]["max_steps"] = 4
        if c["pretrain"]["args"].get("max_train_samples"):
            c["pretrain"]["args"]["max_train_samples"] = 100
    if spec["base"] == "real":
        return [
            (
                stage_pretrain(c, name, out / "real_unlabelled", "off", stats, print),
                ["real_unlabelled", "reference_stats"],
            )
        ]
    stages: list[tuple[object, list[str]]] = []
    data = "generated_dataset"
    if "sampler" in spec:
        # the base set's images, seed, prompts, generator and guidance; the preset's scheduler and steps
        c["generation"]["sampler"] = spec["sampler"]
        c["generation"].pop("num_inference_steps", None)
    if "generation" in spec or "prompts" in spec or "sampler" in spec:
        data = spec.get("data", f"generated_{name.removeprefix('mae_genssl_')}")
        prompt_stage = "prompt_set"
        if "prompts" in spec:
            texts = (
                [{"text": "No finding.", "disease": "No Finding"}]
                if spec["prompts"] == "normal"
                else combination_prompts(shared)
            )
            c["prompts"] = {"custom": texts, "name": f"nih14-{spec['prompts']}"}
            prompt_stage = f"prompt_set_{spec['prompts']}"
            ps = stage_prompt_set(c)
            ps.name = prompt_stage
            stages.append((ps, []))
        c["generation"].update(
            {k: (min(v, 300) if quick and k == "num_images" else v) for k, v in spec.get("generation", {}).items()}
        )
        gen = stage_generated_dataset(c, out / "generator", out / prompt_stage)
        gen.name = data
        stages.append((gen, ["generator", prompt_stage]))
    stages.append((stage_pretrain(c, name, out / data, "on", stats, print), [data, "reference_stats"]))
    return stages


def protocol_config(cfg: dict) -> dict:
    """The fine-tuning settings every protocol run shares: the recipe's few-shot budget, validation
    AUC for selection, no test evaluation inside fine-tuning (the evaluation stages score the test
    split), bf16."""
    import copy

    c = copy.deepcopy(cfg)
    args = c["finetune"]["args"]
    args.update({"n_bootstrap": 0, "test_split": "none"})
    return c


def _difference_cell(row: dict, base: str) -> str:
    d = row["vs"].get(base)
    if d is None:
        return "-"
    return f"{100 * d['difference']:+.1f} ({100 * d['low']:+.1f} to {100 * d['high']:+.1f}), p {d['p_value']:.3f}"


def protocol_tables(
    result: dict,
    pooled: list[dict],
    baselines: tuple[str, ...] = ("random_init", "random_init_adain"),
    contrasts: list[tuple[str, str]] = (),
) -> str:
    """Markdown: the tuning budget and choices, then per fraction and arm mean / median (IQR) / range
    over seeds and the pooled paired CIs against the random-init baselines, then the paired
    ``contrasts`` (arm, against) between other arms."""
    lines = ["### Tuning (validation AUC, mean over the tuning seeds; the chosen recipe in bold)", ""]
    recipes = list(result["recipes"])
    lines += [
        "| Arm | Fraction | " + " | ".join(recipes) + " | runs | seconds |",
        "|---|---|" + "---|" * len(recipes) + "---|---|",
    ]
    for arm, per_fraction in result["tuning"].items():
        for fraction, t in per_fraction.items():
            cells = []
            for r in recipes:
                v = 100 * sum(t["validation_auc"][r]) / len(t["validation_auc"][r])
                cells.append(f"**{v:.1f}**" if r == t["chosen"] else f"{v:.1f}")
            lines.append(
                f"| {arm} | {float(fraction):.0%} | " + " | ".join(cells) + f" | {t['runs']} | {t['seconds']:.0f} |"
            )
    titles = {"random_init": "vs random init", "random_init_adain": "vs random init + AdaIN input"}
    lines += [
        "",
        "### Test AUC over seeds, and the mean difference with its paired bootstrap CI over seeds and test cases",
        "",
        "| Fraction | Arm | Recipe | Seeds | Mean | Median (IQR) | Min-max | "
        + " | ".join(titles[b] for b in baselines)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(baselines),
    ]
    for row in sorted(pooled, key=lambda r: r["fraction"]):
        lines.append(
            f"| {row['fraction']:.0%} | {row['title']} | {row['recipe']} | {len(row['seeds'])} | "
            f"{_pct(row['mean'])} | {_pct(row['median'])} ({_pct(row['q1'])}-{_pct(row['q3'])}) | "
            f"{_pct(row['min'])}-{_pct(row['max'])} | " + " | ".join(_difference_cell(row, b) for b in baselines) + " |"
        )
    if contrasts:
        by_key = {(r["fraction"], r["arm"]): r for r in pooled}
        lines += [
            "",
            "### Paired contrasts between arms (mean difference, paired bootstrap CI over seeds and test cases)",
            "",
            "| Fraction | Arm | Against | Seeds | Difference (CI), p |",
            "|---|---|---|---|---|",
        ]
        for fraction in sorted({r["fraction"] for r in pooled}):
            for arm, base in contrasts:
                row = by_key.get((fraction, arm))
                if row is None or base not in row["vs"]:
                    continue
                against = by_key[(fraction, base)]["title"]
                lines.append(
                    f"| {fraction:.0%} | {row['title']} | {against} | "
                    f"{len(row['seeds'])} | {_difference_cell(row, base)} |"
                )
    return "\n".join(lines)


def run_protocol_benchmark(
    cfg: dict,
    out: Path,
    shared: Path,
    extra: list[str],
    quick: bool,
    workers: int,
    extra_only: bool = False,
    main_arms: list[str] | None = None,
    recipe_names: list[str] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    full_fraction: bool = True,
    fractions: tuple[float, ...] = (0.01, 0.1),
    main_group: str = "main",
    encoders: list[dict] = (),
    contrasts: list[tuple[str, str]] = (),
) -> dict:
    """``main_arms``: a subset of the main arms (None: all); ``recipe_names``: a subset of the recipe
    grid (one recipe: no tuning, every arm runs it); ``seeds``: the main arms' seeds; ``fractions``:
    the few-shot label fractions; ``main_group``: the evaluation group of the main arms (another name
    scores them in evaluation stages of their own, leaving the default group's results in place);
    ``encoders``: encoders pre-trained outside the run folder (:func:`parse_encoder`), fine-tuned like
    the main arms in their group; ``contrasts``: paired contrasts beyond :data:`CONTRASTS`."""
    from dataclasses import replace

    from genssl_hf.pipeline.protocol import DEFAULT_RECIPES, pooled_rows, run_protocol

    from genssl_hf.pipeline.stages import run_stage
    from genssl_hf.pipeline.training_steps import stage_pretrain

    from genssl_hf.pipeline.protocol import Arm

    arms = [replace(a, group=main_group) if a.group == "main" else a for a in protocol_arms(extra, main_arms)]
    arms += [
        Arm(e["name"], e["title"], e["folder"], tune_as=e["tune_as"], fractions=fractions, group=main_group)
        for e in encoders
    ]
    if any(a.name == "real_mae_adain" for a in arms):
        # MAE on the real images with AdaIN on (the control of the "MAE on real images" arm)
        stats = out / "reference_stats" / "reference_stats.json"
        run_stage(
            out,
            stage_pretrain(cfg, "mae_real_adain", out / "real_unlabelled", "on", stats, print),
            print,
            deps=["real_unlabelled", "reference_stats"],
        )
    run_extra_stages(cfg, out, extra, shared, quick)
    pcfg = protocol_config(cfg)
    recipes = {k: DEFAULT_RECIPES[k] for k in recipe_names} if recipe_names else None
    # one tuning seed: the 4-recipe grid x 4 tuned arms x 2 fractions is 32 runs (~1 core-minute each
    # here); its runs are the arms' seed-0 runs when chosen
    kwargs = {"tune_seeds": (seeds[0],), "seeds": tuple(seeds), "full_fraction": full_fraction, "fractions": fractions}
    if quick:  # every step at toy size
        recipes = {k: DEFAULT_RECIPES[k] for k in ("blr1e-3_randaug", "blr1e-2_light")}
        kwargs = {
            "seeds": (0, 1),
            "tune_seeds": (0,),
            "fractions": fractions,
            "evaluation_args": {"n_bootstrap": 100, "max_samples": 200},
        }
    if extra_only:
        # only the extra arms, beside a running main protocol: the arms they take their recipe from
        # enter with their tuning runs alone (already there), scored in a group of their own
        # (the extra arms are those --extra names, whatever their evaluation group: "extra",
        # "scaling", "sampler")
        sources = {a.tune_as for a in arms if a.name in extra}
        arms = [replace(a, seeds=(seeds[0],), group="tuning_sources") for a in arms if a.name in sources] + [
            a for a in arms if a.name in extra
        ]
        kwargs["full_fraction"] = False
    result = run_protocol(pcfg, out, arms, recipes=recipes, workers=workers, **kwargs)
    names = {a.name for a in arms}
    baselines = tuple(b for b in ("random_init", "random_init_adain") if b in names)
    contrasts = [(a, b) for a, b in (*CONTRASTS, *contrasts) if a in names and b in names]
    pooled = pooled_rows(
        result,
        out,
        baselines=baselines + tuple(dict.fromkeys(b for _, b in contrasts)),
        n_bootstrap=200 if quick else 2000,
    )
    group = "" if main_group == "main" else f"_{main_group}"  # another group keeps the main tables
    write_json(out / f"protocol_pooled{group}.json", pooled)
    table = protocol_tables(result, pooled, baselines, contrasts)
    (out / f"protocol_results{group}.md").write_text(table + "\n")
    print(table)
    return {"result": result, "pooled": pooled}


def mae_folders(out: Path) -> list[str]:
    """The run folder's MAE stages (``<stage>/model`` holding a ``ViTMAEForPreTraining``), sorted."""
    names = []
    for config in sorted(out.glob("*/model/config.json")):
        if "ViTMAEForPreTraining" in (read_json(config).get("architectures") or []):
            names.append(config.parent.parent.name)
    return names


def reconstruction_rows(
    out: Path, names: list[str], max_images: int = 1000, seed: int = 0, n_bootstrap: int = 2000
) -> list[dict]:
    """Masked-patch loss of each MAE on the held-out real test images, beside the two trivial
    baselines built from the real training images (``genssl_hf.evaluation.reconstruction``). Each MAE
    sees the images through its own processor (AdaIN or not, its own size), so compare an MAE with
    its own baselines: ``model_over_mean_image`` < 1 means it has learnt more than the average image."""
    import genssl_hf  # noqa: F401  (registers AdaINImageProcessor with AutoImageProcessor)
    from transformers import AutoImageProcessor, ViTMAEForPreTraining

    from genssl_hf.data.open import open_image_dataset
    from genssl_hf.evaluation.reconstruction import masked_reconstruction_losses

    data = out / "real_data" / "dataset"
    test = open_image_dataset(str(data), "test", what="the real test split")
    train = open_image_dataset(str(data), "train", what="the real training split")
    test_images = [im.convert("L") for im in test.select(range(min(max_images, len(test))))["image"]]
    train_images = [im.convert("L") for im in train.select(range(min(max_images, len(train))))["image"]]
    rows = []
    for name in names:
        folder = out / name / "model"
        model = ViTMAEForPreTraining.from_pretrained(str(folder))
        processor = AutoImageProcessor.from_pretrained(str(folder))
        size = model.config.image_size
        pixels = processor([im.resize((size, size)) for im in test_images], return_tensors="pt")["pixel_values"]
        reference = processor([im.resize((size, size)) for im in train_images], return_tensors="pt")["pixel_values"]
        losses = masked_reconstruction_losses(model, pixels, reference, seed=seed, n_bootstrap=n_bootstrap)
        summary = read_json(folder / "train_summary.json") if (folder / "train_summary.json").is_file() else {}
        rows.append(
            {
                "encoder": name,
                "steps": summary.get("global_step"),
                "train_loss": summary.get("final_loss"),
                "image_size": size,
                "mask_ratio": model.config.mask_ratio,
                "adain": bool(getattr(processor, "do_adain", False)),
                "test_images": len(test_images),
                "reference_images": len(train_images),
                **{k: [_sig(x) for x in v] if isinstance(v, list) else _sig(v) for k, v in losses.items()},
            }
        )
    return rows


def _sig(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}")


def reconstruction_table(rows: list[dict]) -> str:
    lines = [
        "| MAE | steps | AdaIN | train loss | test loss | best constant patch "
        "| mean image | test / mean image (95 % CI over images) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        train_loss = "-" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
        ci = (
            f" ({r['model_over_mean_image_ci'][0]:.2f}-{r['model_over_mean_image_ci'][1]:.2f})"
            if "model_over_mean_image_ci" in r
            else ""
        )
        lines.append(
            f"| {r['encoder']} | {r['steps']} | {'on' if r['adain'] else 'off'} | {train_loss} | {r['model']:.4f} | "
            f"{r['best_constant_patch']:.4f} | {r['mean_image']:.4f} | {r['model_over_mean_image']:.2f}{ci} |"
        )
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def runs_by_fraction_and_variant(rows: list[dict]) -> dict[tuple[float, str], list[dict]]:
    """The rows of each (fraction, variant), one per seed, in first-seen order."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["fraction"], r["variant"]), []).append(r)
    return groups


def _mean_auc(runs: list[dict]) -> float:
    return sum(r["auc"] for r in runs) / len(runs)


def results_table(rows: list[dict]) -> str:
    """One line per (fraction, variant): the test AUC of each seed with its 95% CI, the mean over seeds,
    and the paired difference to random init per seed (how many seeds' CIs lie above / below zero)."""
    lines = [
        "| Label fraction | Variant | Test AUC per seed (95% CI) "
        "| Mean AUC | vs random init per seed (paired 95% CI) |",
        "|---|---|---|---|---|",
    ]
    for (fraction, _), runs in runs_by_fraction_and_variant(rows).items():
        aucs = "; ".join(f"{_pct(r['auc'])} ({_pct(r['low'])}-{_pct(r['high'])})" for r in runs)
        if runs[0]["diff"] is None:
            diff = "-"
        else:
            diff = "; ".join(
                f"{100 * r['diff']:+.1f} ({100 * r['diff_low']:+.1f} to {100 * r['diff_high']:+.1f})" for r in runs
            )
            above = sum(r["diff_low"] > 0 for r in runs)
            below = sum(r["diff_high"] < 0 for r in runs)
            diff += f"; CI above 0 in {above}/{len(runs)}, below 0 in {below}/{len(runs)}"
        lines.append(f"| {fraction:.0%} | {runs[0]['title']} | {aucs} | {_pct(_mean_auc(runs))} | {diff} |")
    return "\n".join(lines)


def pooled_table(rows: list[dict], out: Path, n_bootstrap: int = 2000) -> tuple[str, list[dict]]:
    """Per (fraction, variant) over its seeds: mean, median and range of the test AUC, and the paired
    bootstrap CI of the mean difference to random init resampling seeds and test cases together
    (``genssl_hf.pipeline.protocol.pooled_rows``): the summary the few-shot claims rest on."""
    from genssl_hf.pipeline.protocol import pooled_rows

    runs = [
        {
            "arm": r["variant"],
            "title": r["title"],
            "fraction": r["fraction"],
            "seed": r["seed"],
            "recipe": None,
            "evaluation": f"evaluation{r['suffix'] or ''}",
            "test_auc": r["auc"],
        }
        for r in rows
    ]
    lines = [
        "| Label fraction | Variant | Seeds | Mean AUC | Median (min-max) | Mean difference vs random init "
        "(95% CI over seeds and test cases) | p |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for row in pooled_rows({"runs": runs}, out, baselines=("random_init",), n_bootstrap=n_bootstrap):
        d = row["vs"].get("random_init")
        cell = "-" if d is None else f"{100 * d['difference']:+.1f} ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})"
        p = "-" if d is None else f"{d['p_value']:.3f}"
        if d is not None:
            summary.append({"fraction": row["fraction"], "variant": row["arm"], "seeds": len(row["seeds"]), **d})
        lines.append(
            f"| {row['fraction']:.0%} | {row['title']} | {len(row['seeds'])} | {_pct(row['mean'])} | "
            f"{_pct(row['median'])} ({_pct(row['min'])}-{_pct(row['max'])}) | {cell} | {p} |"
        )
    return "\n".join(lines), summary


def mean_auc_by_fraction(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{"1%": {variant: mean test AUC over seeds}, ...} for the JSON line."""
    out: dict[str, dict[str, float]] = {}
    for (fraction, variant), runs in runs_by_fraction_and_variant(rows).items():
        out.setdefault(f"{fraction:.0%}", {})[variant] = round(_mean_auc(runs), 4)
    return out


def parse_fractions(text: str, parser: argparse.ArgumentParser) -> tuple[float, ...]:
    """``--fractions``: distinct few-shot label fractions, each strictly between 0 and 1, sorted."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--fractions: not a comma list of numbers: {text!r}")
    if not values or any(not 0 < v < 1 for v in values) or len(set(values)) != len(values):
        parser.error(
            f"--fractions: distinct few-shot fractions in (0, 1) (100 % is --no-full-fraction's); got {text!r}"
        )
    return tuple(sorted(values))


def parse_encoder(text: str, parser: argparse.ArgumentParser, known_arms: list[str]) -> dict:
    """``--encoder NAME=FOLDER:TUNE_AS[:TITLE]``: an encoder pre-trained outside the run folder (e.g. a
    long run resumed across interruptions) fine-tuned under the protocol with the tuned recipe of the
    arm ``TUNE_AS``. Its fine-tuning stages name the folder by its absolute path."""
    name, sep, rest = text.partition("=")
    parts = rest.split(":", 2)
    if not sep or len(parts) < 2 or not name.isidentifier():
        parser.error(f"--encoder: expected NAME=FOLDER:TUNE_AS[:TITLE] with a plain NAME; got {text!r}")
    folder, tune_as = Path(parts[0]).expanduser().resolve(), parts[1]
    if not (folder / "config.json").is_file():
        parser.error(f"--encoder {name}: {folder} holds no config.json (a model folder is expected)")
    if tune_as not in known_arms:
        parser.error(f"--encoder {name}: TUNE_AS {tune_as!r} is not an arm; known: {known_arms}")
    if name in known_arms or name in EXTRA_STAGES:
        parser.error(f"--encoder {name}: the name is taken by an arm; choose another")
    return {"name": name, "folder": str(folder), "tune_as": tune_as, "title": parts[2] if len(parts) > 2 else name}


def parse_contrast(text: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """``--contrast ARM:AGAINST``: one more paired contrast for the tables and the results row."""
    arm, sep, against = text.partition(":")
    if not sep or not arm or not against or arm == against:
        parser.error(f"--contrast: expected ARM:AGAINST (two different arm names); got {text!r}")
    return arm, against


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shared", default=str(SHARED), help="the real data folder")
    parser.add_argument("--output-dir", default=None, help="default: outputs/bench-realdata[-quick]")
    parser.add_argument("--ssl-methods", default="", help=f"comma list of {SSL_METHODS} to add (Tab. 9 rows), or 'all'")
    parser.add_argument(
        "--protocol",
        action="store_true",
        help="issue 21's protocol: tuned recipes per arm on validation, 5 seeds, the AdaIN controls",
    )
    parser.add_argument(
        "--extra", default="", help=f"with --protocol: comma list of extra encoders {list(EXTRA_STAGES)}"
    )
    parser.add_argument("--workers", type=int, default=2, help="fine-tuning runs at a time (one thread each)")
    parser.add_argument(
        "--extra-only",
        action="store_true",
        help="with --protocol --extra: fine-tune only the extra arms (beside a running main protocol)",
    )
    parser.add_argument(
        "--pretrain-only",
        action="store_true",
        help="with --extra: only pre-train the extra encoders (e.g. beside a running protocol)",
    )
    parser.add_argument(
        "--main-arms", default="", help="with --protocol: comma list of the main arms to run (default: all)"
    )
    parser.add_argument(
        "--recipes",
        default="",
        help="with --protocol: comma list of recipes of the grid to tune over (default: all; one: no tuning)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="with --protocol: seeds of the main arms (0 .. N-1)")
    parser.add_argument("--no-full-fraction", action="store_true", help="with --protocol: skip the 100 %% runs")
    parser.add_argument(
        "--fractions",
        default="0.01,0.1",
        help="with --protocol: comma list of the few-shot label fractions (each in (0, 1)); "
        "the extra arms run those of their own fractions listed (EXTRA_STAGES; default 1 %% and 10 %%)",
    )
    parser.add_argument(
        "--main-group",
        default="main",
        help="with --protocol: the evaluation group of the main arms; another name (e.g. for more seeds "
        "of a subset of them) scores them in evaluation stages of their own",
    )
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="NAME=FOLDER:TUNE_AS[:TITLE]",
        help="with --protocol: fine-tune an encoder pre-trained elsewhere as arm NAME (the main arms' "
        "seeds and few-shot fractions, their evaluation group), with arm TUNE_AS's recipe; repeatable",
    )
    parser.add_argument(
        "--contrast",
        action="append",
        default=[],
        metavar="ARM:AGAINST",
        help="with --protocol: a paired contrast between two arms for the tables and the row; repeatable",
    )
    parser.add_argument(
        "--reconstruction",
        action="store_true",
        help="after pre-training (and --extra): each MAE's masked-patch loss on the real test images "
        "against the best constant patch and the mean training image",
    )
    parser.add_argument(
        "--record-name",
        default="genssl_realdata_kermany_protocol",
        help="with --protocol: the results.json row's name (before --record-suffix)",
    )
    parser.add_argument(
        "--record-suffix",
        default="",
        help="appended to the results.json row's name (a rerun beside an earlier run's row)",
    )
    args = parser.parse_args(argv)
    shared = Path(args.shared)
    if not (shared / "kermany-pneumonia-224").is_dir() or not (shared / "nih-cxr14-1000-64px").is_dir():
        print(f"real data not found under {shared}; nothing to measure", file=sys.stderr)
        return 2
    methods = list(SSL_METHODS) if args.ssl_methods == "all" else [m for m in args.ssl_methods.split(",") if m]
    unknown = sorted(set(methods) - set(SSL_METHODS))
    if unknown:
        parser.error(f"--ssl-methods: unknown {unknown}; known: {list(SSL_METHODS)}")
    cfg = add_ssl_variants(config(args.quick, shared), methods, args.quick)
    out = Path(args.output_dir or ROOT / "outputs" / ("bench-realdata-quick" if args.quick else "bench-realdata"))
    extra = [m for m in args.extra.split(",") if m]
    bad = sorted(set(extra) - set(EXTRA_STAGES))
    if bad:
        parser.error(f"--extra: unknown {bad}; known: {list(EXTRA_STAGES)}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    from genssl_hf.pipeline.protocol import DEFAULT_RECIPES

    recipe_names = [r for r in args.recipes.split(",") if r]
    if sorted(set(recipe_names) - set(DEFAULT_RECIPES)):
        parser.error(
            f"--recipes: unknown {sorted(set(recipe_names) - set(DEFAULT_RECIPES))}; known: {list(DEFAULT_RECIPES)}"
        )
    if not 1 <= args.seeds <= 20:
        parser.error(f"--seeds must be 1..20; got {args.seeds}")
    fractions = parse_fractions(args.fractions, parser)
    if not args.main_group.isidentifier():
        parser.error(f"--main-group must be a plain name (letters, digits, _); got {args.main_group!r}")
    main_arms = [a for a in args.main_arms.split(",") if a] or None
    if main_arms:
        known = [a.name for a in protocol_arms([])]
        if sorted(set(main_arms) - set(known)):
            parser.error(f"--main-arms: unknown {sorted(set(main_arms) - set(known))}; known: {known}")
    known_arms = [a.name for a in protocol_arms([])]
    encoders = [parse_encoder(t, parser, known_arms) for t in args.encoder]
    if len({e["name"] for e in encoders}) != len(encoders):
        parser.error("--encoder: two encoders share a NAME")
    contrasts = [parse_contrast(t, parser) for t in args.contrast]
    arm_names = set(known_arms) | set(extra) | {e["name"] for e in encoders}
    for arm, against in contrasts:
        if {arm, against} - arm_names:
            parser.error(f"--contrast {arm}:{against}: unknown arm {sorted({arm, against} - arm_names)}")
    if (encoders or contrasts) and not args.protocol:
        parser.error("--encoder / --contrast need --protocol")
    info = machine_info()  # after the checks: it measures the machine's peaks
    print_machine(info)
    start = time.perf_counter()
    run_pipeline(cfg, out, finetune=not (args.protocol or args.pretrain_only or args.reconstruction))
    if args.pretrain_only or args.reconstruction:
        run_extra_stages(cfg, out, extra, shared, args.quick)
    if args.reconstruction:
        recon = reconstruction_rows(out, mae_folders(out))
        table = reconstruction_table(recon)
        write_json(out / "reconstruction.json", recon)
        (out / "reconstruction.md").write_text(table + "\n")
        print(table)
        record = {
            "name": "genssl_realdata_mae_reconstruction" + args.record_suffix,
            "unit": "masked-patch MSE on the real test images (each MAE's own mask ratio), "
            "baselines from the real training images",
            "rows": recon,
            "wall_s": round(time.perf_counter() - start, 1),
            "quick": args.quick,
            "machine": finish(info),
        }
        print(json.dumps(record))
        if not args.quick:
            record_results([record])
        return 0
    if args.pretrain_only:
        return 0
    if args.protocol:
        protocol = run_protocol_benchmark(
            cfg,
            out,
            shared,
            extra,
            args.quick,
            args.workers,
            args.extra_only,
            main_arms=main_arms,
            recipe_names=recipe_names,
            seeds=tuple(range(args.seeds)),
            full_fraction=not args.no_full_fraction,
            fractions=fractions,
            main_group=args.main_group,
            encoders=encoders,
            contrasts=contrasts,
        )
        if args.extra_only:
            return 0
        record = {
            "name": args.record_name + args.record_suffix,
            "unit": "test AUC, mean over seeds",
            "pooled": {
                f"{r['fraction']:.0%} {r['arm']}": {
                    "mean": round(r["mean"], 4),
                    "median": round(r["median"], 4),
                    **{f"vs_{b}": [round(v[k], 4) for k in ("difference", "low", "high")] for b, v in r["vs"].items()},
                }
                for r in protocol["pooled"]
            },
            "wall_s": round(time.perf_counter() - start, 1),
            "quick": args.quick,
            "machine": finish(info),
        }
        print(json.dumps(record))
        if not args.quick:
            record_results([record])
        return 0
    rows = []
    for fraction, seed, suffix in finetune_runs(cfg):
        comp = read_json(out / f"evaluation{suffix}" / "results" / "comparison.json")
        for r in comp["rows"]:
            d = r.get("vs_baseline") or {}
            rows.append(
                {
                    "fraction": fraction,
                    "seed": seed,
                    "suffix": suffix,
                    "variant": r["variant"],
                    "title": r["title"],
                    "auc": r["mean_auc"],
                    "low": r["low"],
                    "high": r["high"],
                    "diff": d.get("difference"),
                    "diff_low": d.get("low"),
                    "diff_high": d.get("high"),
                    "p": d.get("p_value"),
                }
            )
    write_json(out / "realdata_results.json", rows)
    table = results_table(rows)
    pooled, pooled_rows = pooled_table(rows, out)
    write_json(out / "realdata_pooled.json", pooled_rows)
    (out / "realdata_results.md").write_text(table + "\n\n" + pooled + "\n")
    print(table + "\n\n" + pooled)
    genssl_full = next(r for r in rows if r["fraction"] == 1.0 and r["variant"] == "genssl")
    rand_full = next(r for r in rows if r["fraction"] == 1.0 and r["variant"] == "random_init")
    row = {
        "name": "genssl_realdata_kermany_auc_100pct" + ("_tab9" if methods else ""),
        "value": round(genssl_full["auc"], 4),
        "unit": "test AUC",
        "baseline": round(rand_full["auc"], 4),
        "ratio": round(genssl_full["auc"] / rand_full["auc"], 4),
        "difference": None if genssl_full["diff"] is None else round(genssl_full["diff"], 4),
        "mean_auc_over_seeds": mean_auc_by_fraction(rows),
        "pooled_vs_random_init": {
            f"{r['fraction']:.0%} {r['variant']}": [round(r["difference"], 4), round(r["low"], 4), round(r["high"], 4)]
            for r in pooled_rows
        },
        "wall_s": round(time.perf_counter() - start, 1),
        "quick": args.quick,
        "machine": finish(info),
    }
    print(json.dumps(row))
    if not args.quick:
        record_results([row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
