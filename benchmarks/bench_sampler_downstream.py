#!/usr/bin/env python
"""Generation at equal downstream quality (issue 37.1): is a few-step sampler's generated set as good
for GEN-SSL as the 50-step DDIM set?

For each sampling preset of ``SAMPLER_ARMS`` (``bench_genssl_realdata.py``: DDIM 50 steps = the
reference, UniPC 8, UniPC 5, DPM-Solver++ 2M 5) the base run folder's prompt-balanced set (same number
of images, seed, prompts, generator, guidance) is sampled into its own ``generated_*`` stage, the same
MAE (recipe, steps, seed) is pre-trained on it and fine-tuned on Kermany at 10 % labels with seeds
0-2, and the pooled paired bootstrap AUC difference against the DDIM-50 arm is computed (the
protocol driver with ``--protocol --extra <arms> --extra-only``, evaluation group ``sampler``). Then:

- FID per setting against the DDIM-50 set in the feature space of a trained encoder (the run folder's
  ``mae_genssl/model`` ViT, mean-pooled patch tokens): images ``[0, n)`` of the setting against the
  DDIM-50 images ``[n, 2n)`` (disjoint seeds, both prompt-balanced prefixes), beside the floor
  FID(DDIM-50 ``[0, n)``, DDIM-50 ``[n, 2n)``); ``n`` = ``--fid-images`` (default 1,500 per half).
- The results.json row ``generation_downstream_equal``: per setting the pooled AUC difference with its
  CI, "equal" (CI includes 0 and |difference| <= 0.005 AUC), UNet evaluations per image, images/s
  and its ratio to DDIM-50 (from each generated stage's generation seconds), FID.

    python benchmarks/bench_sampler_downstream.py --output-dir /work/runs/kermany_base --plan   # no compute
    python benchmarks/bench_sampler_downstream.py --output-dir /work/runs/kermany_base
    python benchmarks/bench_sampler_downstream.py --quick     # toy sizes, outputs/bench-realdata-quick

The run folder's generator, prompt set, reference statistics and ``mae_genssl`` are reused (the driver
checks their fingerprints first); the recipe is the run folder's (``--recipes``, default
``blr3e-3_light``: one recipe, no tuning). Images/s compare only within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_genssl_realdata as realdata  # noqa: E402
from benchmarks.machine import finish, machine_info, print_machine, record_results  # noqa: E402

from genssl_hf.utils import read_json  # noqa: E402

EQUAL_AUC_MARGIN = 0.005  # "within 0.5 AUC points"
FRACTION = 0.1
SEEDS = 3
GROUP = "sampler"  # the evaluation group (and the protocol_pooled_<group>.json) of the sweep
RECORD_NAME = "generation_downstream_equal"


def generated_stage(arm: str) -> str:
    """The generated-set stage an arm of ``SAMPLER_ARMS`` pre-trains on (``bench_genssl_realdata.extra_stages``)."""
    return f"generated_{arm.removeprefix('mae_genssl_')}"


def driver_argv(out: Path, shared: Path, recipes: str, workers: int, quick: bool) -> list[str]:
    """The protocol driver's command line of the sweep: the sampler arms alone, beside the run folder's
    earlier results (their own evaluation group and tables)."""
    argv = ["--protocol", "--output-dir", str(out), "--shared", str(shared)]
    argv += ["--extra", ",".join(realdata.SAMPLER_ARMS), "--extra-only", "--recipes", recipes]
    argv += ["--seeds", str(SEEDS), "--fractions", f"{FRACTION:g}", "--no-full-fraction"]
    argv += ["--workers", str(workers), "--main-group", GROUP]
    return argv + (["--quick"] if quick else [])


# ----------------------------------------------------------------------------- generation cost
def unet_evaluations_per_image(steps: int, guidance_scale: float, guidance_fraction: float = 1.0) -> int:
    """UNet evaluations of one image's latent: one per step, plus the unconditional branch on the guided
    steps (``ceil(guidance_fraction * steps)``, the pipeline's rule) under classifier-free guidance."""
    guided = math.ceil(guidance_fraction * steps) if guidance_scale > 1.0 else 0
    return steps + guided


def generation_stats(out: Path, arm: str) -> dict:
    """Sampler, steps, UNet evaluations and images/s of an arm's generated set, from its
    ``generation_config.json`` and stage marker (the writer's generation seconds: sampling and
    decoding, not loading, encoding or writing; the stage's seconds when the marker lacks them)."""
    folder = out / generated_stage(arm)
    config = read_json(folder / "dataset" / "generation_config.json")
    marker = read_json(folder / "stage.json")
    match = re.search(r"seconds_generate=([0-9.eE+-]+)", str(marker.get("summary", {}).get("result", "")))
    seconds = float(match.group(1)) if match else float(marker["seconds"])
    settings = config.get("sampler_settings") or {}
    steps = int(config["num_inference_steps"])
    return {
        "sampler": config.get("sampler"),
        "scheduler": settings.get("scheduler"),
        "steps": steps,
        "guidance_scale": float(config["guidance_scale"]),
        "unet_evaluations_per_image": unet_evaluations_per_image(
            steps, float(config["guidance_scale"]), float(settings.get("guidance_fraction", 1.0))
        ),
        "num_images": int(config["num_images"]),
        "seconds_generate": round(seconds, 2),
        "images_per_s": int(config["num_images"]) / seconds,
        "seconds_source": "writer" if match else "stage",
    }


# ----------------------------------------------------------------------------- FID
def fid_against_reference(
    out: Path, arms: list[str], reference: str, num_images: int, encoder: str = "mae_genssl/model"
) -> dict:
    """FID of each arm's images ``[0, n)`` against the reference's ``[n, 2n)``, and the floor
    FID(reference ``[0, n)``, reference ``[n, 2n)``), in the trained encoder's feature space."""
    import datasets

    from genssl_hf.evaluation.image_quality import EncoderFeatureExtractor, extract_features, frechet_distance

    extractor = EncoderFeatureExtractor(out / encoder, pooling="mean")

    def images(arm: str):
        return datasets.load_dataset(str(out / generated_stage(arm) / "dataset"), split="train")

    ref = images(reference)
    n = min(num_images, len(ref) // 2)
    if n < 2:
        raise ValueError(f"the reference set {generated_stage(reference)} has {len(ref)} images; FID needs >= 4")
    ref_b = extract_features(ref.select(range(n, 2 * n))["image"], extractor)
    fids = {}
    for arm in arms:
        ds = ref if arm == reference else images(arm)
        if len(ds) < n:
            raise ValueError(f"{generated_stage(arm)} has {len(ds)} images, fewer than the {n} compared")
        fids[arm] = frechet_distance(extract_features(ds.select(range(n))["image"], extractor), ref_b)
    return {
        "fid": fids,  # the reference's own entry is the floor
        "floor": fids.get(reference),
        "images_per_half": n,
        "extractor": extractor.name,
        "split": f"setting [0, {n}) vs {reference} [{n}, {2 * n}) (disjoint seeds, prompt-balanced prefixes)",
    }


# ----------------------------------------------------------------------------- the row
def downstream_equal_settings(
    pooled: list[dict],
    stats: dict[str, dict],
    fids: dict[str, float] | None,
    reference: str,
    fraction: float = FRACTION,
    margin: float = EQUAL_AUC_MARGIN,
) -> list[dict]:
    """Per setting: the pooled AUC difference against ``reference`` with its CI, "equal" (the CI holds 0
    and |difference| <= ``margin``), UNet evaluations and images/s with their ratios to the reference,
    and the FID against it. ``pooled``: ``protocol.pooled_rows`` rows; ``stats``: per arm
    :func:`generation_stats`; ``fids``: per arm FID (None: not measured)."""
    by_arm = {r["arm"]: r for r in pooled if abs(r["fraction"] - fraction) < 1e-9}
    if reference not in by_arm or reference not in stats:
        raise ValueError(f"the reference arm {reference!r} has no pooled row at {fraction:g} or no generation stats")
    ref_stats = stats[reference]
    rows = []
    for arm, s in stats.items():
        if arm not in by_arm:
            continue
        row = by_arm[arm]
        d = None if arm == reference else row["vs"].get(reference)
        if arm != reference and d is None:
            raise ValueError(f"arm {arm!r} has no paired difference against {reference!r} (seeds differ?)")
        rows.append(
            {
                "arm": arm,
                "title": row["title"],
                "sampler": s["sampler"],
                "scheduler": s["scheduler"],
                "steps": s["steps"],
                "unet_evaluations_per_image": s["unet_evaluations_per_image"],
                "unet_evaluations_ratio": round(
                    ref_stats["unet_evaluations_per_image"] / s["unet_evaluations_per_image"], 3
                ),
                "images_per_s": round(s["images_per_s"], 3),
                "images_per_s_ratio": round(s["images_per_s"] / ref_stats["images_per_s"], 3),
                "mean_auc": round(row["mean"], 4),
                "seeds": row["seeds"],
                "auc_difference": None if d is None else [round(d[k], 4) for k in ("difference", "low", "high")],
                "p_value": None if d is None else round(d["p_value"], 4),
                "equal": True if d is None else bool(d["low"] <= 0.0 <= d["high"] and abs(d["difference"]) <= margin),
                "fid": None if fids is None or arm not in fids else round(fids[arm], 4),
            }
        )
    return rows


def downstream_equal_record(settings: list[dict], fid: dict | None, reference: str) -> dict:
    """The results.json row: the settings, the FID context and the fastest setting judged equal: the
    fewest UNet evaluations per image (the arithmetic, the same on any machine and load), measured
    images/s breaking ties (each stage's images/s comes from its own run, under its own load)."""
    equal = [s for s in settings if s["equal"] and s["arm"] != reference]
    fastest = max(equal, key=lambda s: (s["unet_evaluations_ratio"], s["images_per_s_ratio"]), default=None)
    return {
        "name": RECORD_NAME,
        "unit": f"pooled test AUC difference vs {reference} at {FRACTION:.0%} labels (paired bootstrap over "
        "seeds and test cases); images/s ratio vs the reference",
        "criterion": f"equal: the 95 % CI holds 0 and |difference| <= {EQUAL_AUC_MARGIN} AUC",
        "reference": reference,
        "settings": settings,
        "fastest_equal": None
        if fastest is None
        else {k: fastest[k] for k in ("arm", "sampler", "steps", "images_per_s_ratio", "unet_evaluations_ratio")},
        "fid": None if fid is None else {k: v for k, v in fid.items() if k != "fid"},
    }


# ----------------------------------------------------------------------------- dry plan
def plan(out: Path, shared: Path, recipe: str, quick: bool) -> list[tuple[str, str]]:
    """(stage, what the sweep would do with it), computing nothing and writing nothing: the base stages
    the arms read, each arm's generated set and MAE, the fine-tuning runs and the evaluation groups.
    A stage is "reused" when its marker holds the fingerprint the run would compute."""
    from genssl_hf.pipeline.protocol import DEFAULT_RECIPES, _evaluation_name, _finetune_stage
    from genssl_hf.pipeline.stages import MARKER, stage_is_valid
    from genssl_hf.pipeline.steps import (
        stage_generated_dataset,
        stage_prompt_set,
        stage_real_data,
        stage_reference_stats,
    )
    from genssl_hf.pipeline.training_steps import stage_generator, stage_pretrain

    cfg = realdata.add_ssl_variants(realdata.config(quick, shared), [], quick)
    stats = out / "reference_stats" / "reference_stats.json"
    runs: set[str] = set()
    rows: list[tuple[str, str]] = []

    def check(stage, deps: list[str]) -> None:
        waiting = [d for d in deps if d in runs or not (out / d / MARKER).is_file()]
        if waiting:
            status = f"runs (after {', '.join(waiting)})"
        else:
            if deps:
                stage.config = dict(
                    stage.config, upstream={d: read_json(out / d / MARKER)["fingerprint"] for d in deps}
                )
            status = "reused" if stage_is_valid(out / stage.name, stage) else "runs"
        if status != "reused":
            runs.add(stage.name)
        rows.append((stage.name, status))

    check(stage_real_data(cfg), [])
    check(stage_prompt_set(cfg), [])
    check(stage_generator(cfg, print), [])
    check(stage_generated_dataset(cfg, out / "generator", out / "prompt_set"), ["generator", "prompt_set"])
    check(stage_reference_stats(cfg, out / "real_data"), ["real_data"])
    check(
        stage_pretrain(cfg, "mae_genssl", out / "generated_dataset", "on", stats, print),
        ["generated_dataset", "reference_stats"],
    )
    for arm in realdata.SAMPLER_ARMS:
        for stage, deps in realdata.extra_stages(cfg, out, arm, shared, quick):
            check(stage, deps)
    pcfg = realdata.protocol_config(cfg)
    arms = realdata.protocol_arms(list(realdata.SAMPLER_ARMS), ["genssl"])
    overrides = DEFAULT_RECIPES[recipe]
    for a in arms:
        seeds = (0,) if a.group == "main" else a.seeds  # --extra-only: the recipe source's tuning run alone
        for s in seeds:
            check(_finetune_stage(pcfg, out, a, recipe, overrides, FRACTION, s, print), ["real_data", *a.deps])
    for group, seeds in (("tuning_sources", (0,)), (GROUP, tuple(range(SEEDS)))):
        for s in seeds:
            name = _evaluation_name(group, FRACTION, s)
            rows.append((name, "scored (its arms' runs side by side)" + (" again" if (out / name).exists() else "")))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=None, help="the run folder (default: the driver's)")
    parser.add_argument("--shared", default=str(realdata.SHARED), help="the real data folder (as the run folder's)")
    parser.add_argument("--quick", action="store_true", help="toy sizes (the driver's --quick run folder)")
    parser.add_argument("--workers", type=int, default=2, help="fine-tuning runs at a time (one thread each)")
    parser.add_argument("--recipes", default="blr3e-3_light", help="the driver's --recipes (one: no tuning)")
    parser.add_argument("--fid-images", type=int, default=1500, help="images per half of each FID (>= 500)")
    parser.add_argument("--plan", action="store_true", help="print the stages it would run or reuse; compute nothing")
    parser.add_argument("--record-suffix", default="", help="appended to the results.json row's name")
    args = parser.parse_args(argv)
    out = Path(args.output_dir or ROOT / "outputs" / ("bench-realdata-quick" if args.quick else "bench-realdata"))
    shared = Path(args.shared)
    if args.fid_images < (2 if args.quick else 500):
        parser.error(f"--fid-images must be >= 500 (issue 37: FID on >= 500 images per setting); got {args.fid_images}")
    from genssl_hf.pipeline.protocol import DEFAULT_RECIPES

    if args.recipes not in DEFAULT_RECIPES:
        parser.error(f"--recipes: one recipe of {list(DEFAULT_RECIPES)}; got {args.recipes!r}")
    made_with = out / "pipeline_config.json"
    if made_with.is_file():
        # the data paths enter the fingerprints: another spelling of the same folder reruns every stage
        old = Path(read_json(made_with)["real_data"]["path"]).parent
        if old != shared:
            parser.error(f"{out} was made with --shared {old}, not {shared}: pass --shared {old}")
    argv_driver = driver_argv(out, shared, args.recipes, args.workers, args.quick)
    print("protocol driver: python benchmarks/bench_genssl_realdata.py " + " ".join(argv_driver))
    if args.plan:
        for name, status in plan(out, shared, args.recipes, args.quick):
            print(f"  {name}: {status}")
        return 0
    start = time.perf_counter()
    code = realdata.main(argv_driver)
    if code:
        return code
    arms = list(realdata.SAMPLER_ARMS)
    reference = realdata.SAMPLER_REFERENCE
    pooled = read_json(out / f"protocol_pooled_{GROUP}.json")
    stats = {arm: generation_stats(out, arm) for arm in arms}
    fid = fid_against_reference(out, arms, reference, args.fid_images)
    settings = downstream_equal_settings(pooled, stats, fid["fid"], reference)
    info = machine_info(peaks=False)
    record = {
        **downstream_equal_record(settings, fid, reference),
        "name": RECORD_NAME + args.record_suffix,
        "command": "python benchmarks/bench_genssl_realdata.py " + " ".join(argv_driver),
        "wall_s": round(time.perf_counter() - start, 1),
        "quick": args.quick,
        "machine": finish(info),
    }
    print_machine(info)
    print(json.dumps(record))
    if not args.quick:
        record_results([record])
    return 0


if __name__ == "__main__":
    sys.exit(main())
