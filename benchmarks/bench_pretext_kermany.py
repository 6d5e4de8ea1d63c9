#!/usr/bin/env python
"""Tab-9-style rows for the pretext methods on Kermany (issue 32, item 7): jigsaw, context
restoration and the multi-task pretext beside MAE and a contrastive method, every encoder the same
tiny ViT pre-trained for the same number of optimiser steps on the same real Kermany training
images (AdaIN off), then fine-tuned and scored with issue 21's protocol
(``genssl_hf.pipeline.protocol``: session 5's validation-chosen recipe ``blr3e-3_light``, the
few-shot budget of at least 250 steps, seeds 0-2, paired bootstrap over seeds and test cases).

This is a *reduced* budget: the run folder holds no generator (pre-training reads the real
training images, as the MAE-real arm does), pre-training is ``--max_steps`` steps for every arm
(warm-up 5 % of them), fine-tuning may be cut below the protocol's 250 steps
(``--finetune_min_steps``), and only the ``--fractions`` given are run. Its rows are not to be
mixed with session 6's.

    OMP_NUM_THREADS=1 python benchmarks/bench_pretext_kermany.py --max_steps 100 --fractions 0.1 \
        --methods mae,jigsaw,context_restoration --no_random_init --finetune_min_steps 60

Data: ../shared/data (Kermany et al. 2018, CC BY 4.0); the run folder stays local, no figure of
real images is drawn (``figure: off`` for real-data pre-training).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_genssl_realdata import SHARED, config, protocol_config, protocol_tables  # noqa: E402
from benchmarks.machine import finish, machine_info, print_machine, record_results  # noqa: E402

# Every pre-trained arm: a registered SSL method (or MAE), pre-trained on the real images, AdaIN off.
# The real_unlabelled stage's size (the Kermany training images it reads, capped like the generated set).
REAL_UNLABELLED_IMAGES = 3000
PRETEXT_ARMS = ("mae", "jigsaw", "context_restoration", "multitask", "simclr", "moco_v2", "rotation")


def pretrain_stages(cfg: dict, out: Path, methods: list[str], max_steps: int) -> None:
    """The shared stages (real data, reference statistics, the unlabelled real images), then one
    pre-training stage per method, every one ``max_steps`` optimiser steps."""
    import copy

    from genssl_hf.pipeline.stages import run_stage
    from genssl_hf.pipeline.steps import stage_real_data, stage_real_unlabelled, stage_reference_stats
    from genssl_hf.pipeline.training_steps import stage_pretrain, stage_ssl_pretrain

    run_stage(out, stage_real_data(cfg), print)
    run_stage(out, stage_reference_stats(cfg, out / "real_data"), print, deps=["real_data"])
    run_stage(out, stage_real_unlabelled(cfg, out / "real_data"), print, deps=["real_data"])
    stats = out / "reference_stats" / "reference_stats.json"
    for method in methods:
        c = copy.deepcopy(cfg)
        if method == "mae":
            c["pretrain"]["args"]["max_steps"] = max_steps
            stage = stage_pretrain(c, "mae_real", out / "real_unlabelled", "off", stats, print)
        else:
            c["ssl_pretrain"] = {
                "args": {
                    "model": "tiny",
                    "per_device_train_batch_size": 64,
                    "mixed_precision": "bf16",
                    "checkpointing_steps": 0,
                    "queue_size": 1024,
                    "max_steps": max_steps,
                    # the MAE's 5 % warm-up (the tiny recipe's 2 epochs would fill a short run)
                    "warmup_epochs": round(0.05 * max_steps * 64 / REAL_UNLABELLED_IMAGES, 4),
                }
            }
            c["ssl_variants"] = {method: {"method": method, "data": "real", "adain": "off"}}
            stage = stage_ssl_pretrain(c, method, stats, out, print)
        run_stage(out, stage, print, deps=["real_unlabelled", "reference_stats"])


def arms(methods: list[str], seeds: tuple[int, ...], random_init: bool = True) -> list:
    from genssl_hf.pipeline.protocol import Arm
    from genssl_hf.pipeline.ssl_variants import ssl_method_title

    out = [Arm("random_init", "Random init", "tiny", layer_decay=1.0, seeds=seeds)] if random_init else []
    for m in methods:
        stage = "mae_real" if m == "mae" else f"ssl_{m}"
        title = "MAE" if m == "mae" else ssl_method_title(m)
        out.append(Arm(m, f"{title} (real images, no AdaIN)", f"{stage}/model", deps=(stage,), seeds=seeds))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(SHARED), help="the real data folder")
    parser.add_argument("--output_dir", default=str(ROOT / "outputs" / "bench-pretext-kermany"))
    parser.add_argument("--methods", default="mae,jigsaw,context_restoration,multitask", help=f"of {PRETEXT_ARMS}")
    parser.add_argument("--max_steps", type=int, default=100, help="pre-training steps of every arm")
    parser.add_argument("--fractions", default="0.1", help="comma list of label fractions (few-shot protocol)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--finetune_min_steps", type=int, default=250, help="the few-shot budget of optimiser steps (protocol: 250)"
    )
    parser.add_argument("--no_random_init", action="store_true", help="leave out the random-init arm")
    parser.add_argument("--record_suffix", default="")
    args = parser.parse_args(argv)
    shared = Path(args.shared)
    if not (shared / "kermany-pneumonia-224").is_dir():
        print(f"real data not found under {shared}; nothing to measure", file=sys.stderr)
        return 2
    methods = [m for m in args.methods.split(",") if m]
    if not methods or sorted(set(methods) - set(PRETEXT_ARMS)):
        parser.error(f"--methods: unknown {sorted(set(methods) - set(PRETEXT_ARMS))}; known: {list(PRETEXT_ARMS)}")
    if args.max_steps < 1 or args.finetune_min_steps < 1 or not 1 <= args.seeds <= 20:
        parser.error("--max_steps and --finetune_min_steps must be >= 1, --seeds 1..20")
    fractions = tuple(float(f) for f in args.fractions.split(","))
    if any(not 0 < f < 1 for f in fractions):
        parser.error(f"--fractions must lie in (0, 1); got {args.fractions}")
    from genssl_hf.pipeline.protocol import DEFAULT_RECIPES, pooled_rows, run_protocol

    info = machine_info()
    print_machine(info)
    start = time.perf_counter()
    cfg = config(False, shared)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pretrain_stages(cfg, out, methods, args.max_steps)
    pretrained_s = time.perf_counter() - start
    seeds = tuple(range(args.seeds))
    compared = arms(methods, seeds, not args.no_random_init)
    recipes = {"blr3e-3_light": DEFAULT_RECIPES["blr3e-3_light"]}  # session 5's choice: not re-tuned
    pcfg = protocol_config(cfg)
    pcfg["finetune"]["args"]["min_steps"] = args.finetune_min_steps
    result = run_protocol(
        pcfg,
        out,
        compared,
        recipes=recipes,
        fractions=fractions,
        seeds=seeds,
        tune_seeds=(seeds[0],),
        full_fraction=False,
        workers=1,
    )
    shown = () if args.no_random_init else ("random_init",)
    baselines = (*shown, "mae") if "mae" in methods else shown
    pooled = pooled_rows(result, out, baselines=baselines, n_bootstrap=2000)
    contrasts = [(m, "mae") for m in methods if m != "mae"] if "mae" in methods else []
    table = protocol_tables(result, pooled, baselines=shown, contrasts=contrasts)
    (out / "protocol_results.md").write_text(table + "\n")
    print(table)
    record = {
        "name": "genssl_pretext_kermany_protocol" + args.record_suffix,
        "unit": "test AUC (in-split Kermany test), mean over seeds; paired bootstrap over seeds and test cases",
        "budget": {
            "pretrain_max_steps": args.max_steps,
            "fractions": list(fractions),
            "seeds": list(seeds),
            "recipe": "blr3e-3_light",
            "finetune_min_steps": args.finetune_min_steps,
            "pretrain_data": "real Kermany training images, AdaIN off",
        },
        "rows": [
            {k: row[k] for k in ("fraction", "arm", "title", "seeds", "mean", "median", "min", "max", "vs")}
            for row in pooled
        ],
        "pretrain_s": round(pretrained_s, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": finish(info),
    }
    print(json.dumps(record))
    record_results([record])
    return 0


if __name__ == "__main__":
    sys.exit(main())
