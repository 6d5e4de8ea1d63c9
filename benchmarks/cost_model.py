#!/usr/bin/env python
"""Cost model of the ``paper`` preset (issue 33.3): FLOPs per image of every stage, counted from the
models with ``torch.utils.flop_counter.FlopCounterMode``, checked against measured CPU time, and
projected to GPU hours and CPU days for 300k and 3M generated images.

Stages (all at the preset's sizes): one sampler step of the CXR LDM bundle's UNet at 512 px with
classifier-free guidance (two UNet passes per image), the autoencoder's decoder at 512 px, MAE
pre-training of ViT-S/16 and ViT-B/16 at 224 px with mask 0.9 (forward + backward), fine-tuning
ViT-B/16 at 224 px (forward + backward) and its inference. Networks are built from config (random
weights: the arithmetic does not depend on them).

Check: each stage is also timed on this CPU at a small count (fp32, one thread, median of
``--repeats``) and predicted as FLOPs / (the fp32 matmul rate measured in the same run); the
prediction error says how far "FLOPs / matmul peak" is from the truth per kind of network.
Projection: hours = images x FLOPs / (peak x utilisation). Peaks are the vendors' dense bf16
numbers (H100 SXM 989 TFLOP/s, A100 SXM 312 TFLOP/s); the utilisations are ASSUMED (no GPU has
been lent to this project), labelled so in the table. CPU days use the rate each stage reached here.

    python benchmarks/cost_model.py --json /tmp/cost.json --table /tmp/cost.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# Vendor data sheets, dense (no sparsity) bf16 tensor-core peaks, SXM parts.
GPU_PEAK_TFLOPS = {"H100 SXM": 989.0, "A100 SXM": 312.0}
# ASSUMED model-FLOP utilisation (not measured here: no GPU lent): transformer training at the
# preset's batch 256, and the conv-heavy UNet / decoder at batch 32.
ASSUMED_UTILISATION = {"transformer": 0.40, "conv": 0.30}
PAPER = {"sampler_steps": 50, "mae_epochs": 800, "finetune_epochs": 75, "finetune_images": 224_316}


def count_flops(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median CPU seconds (``process_time``; one thread): robust to the other jobs of a shared machine."""
    fn()  # warm-up (allocator, oneDNN primitive choice)
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------ stages
def generation_stages(check_size: int) -> list[dict[str, Any]]:
    """UNet step with CFG and decoder: counted at 512 px, timed at ``check_size`` px (counted there too)."""
    from genssl_hf.generation import BUNDLE_AUTOENCODER_CONFIG, BUNDLE_UNET_CONFIG, CXRAutoencoderKL, CXRDiffusionUNet

    torch.manual_seed(0)
    unet, vae = CXRDiffusionUNet(**BUNDLE_UNET_CONFIG).eval(), CXRAutoencoderKL(**BUNDLE_AUTOENCODER_CONFIG).eval()
    down = 2 ** (len(BUNDLE_AUTOENCODER_CONFIG["channels"]) - 1)
    ctx = torch.randn(2, 77, BUNDLE_UNET_CONFIG["cross_attention_dim"])

    def unet_step(size: int) -> Callable[[], Any]:
        x, t = torch.randn(2, 3, size // down, size // down), torch.tensor([500, 500])  # cond + uncond pair

        def run():
            with torch.no_grad():
                return unet(x, timesteps=t, context=ctx)

        return run

    def decode(size: int) -> Callable[[], Any]:
        z = torch.randn(1, 3, size // down, size // down)

        def run():
            with torch.no_grad():
                return vae.decode(z)

        return run

    return [
        {"stage": "generation: UNet step, CFG (2 passes)", "kind": "conv", "unit": "image x step", "per": 1,
         "full": unet_step(512), "check": unet_step(check_size), "check_desc": f"{check_size} px"},
        {"stage": "generation: VAE decoder", "kind": "conv", "unit": "image", "per": 1,
         "full": decode(512), "check": decode(check_size), "check_desc": f"{check_size} px"},
    ]  # fmt: skip


def mae_stage(preset: str, batch: int) -> dict[str, Any]:
    from genssl_hf.training.mae_model import build_mae_config, build_model

    torch.manual_seed(0)
    model, _ = build_model(build_mae_config(preset, mask_ratio=0.9))
    model.train()
    pv = torch.randn(batch, 3, 224, 224)

    def step():
        model.zero_grad(set_to_none=True)
        model(pixel_values=pv).loss.backward()

    return {"stage": f"MAE pre-training {preset} (fwd+bwd, mask 0.9)", "kind": "transformer", "unit": "image",
            "per": batch, "full": step, "check": step, "check_desc": f"batch {batch}"}  # fmt: skip


def finetune_stages(batch: int) -> list[dict[str, Any]]:
    from transformers import ViTConfig, ViTForImageClassification

    from genssl_hf.models.presets import VIT_MAE_PRESETS

    p = VIT_MAE_PRESETS["vit-b16"]
    cfg = ViTConfig(
        image_size=224,
        patch_size=16,
        hidden_size=p["hidden_size"],
        num_hidden_layers=p["num_hidden_layers"],
        num_attention_heads=p["num_attention_heads"],
        intermediate_size=p["intermediate_size"],
        num_labels=5,
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(cfg).train()
    pv, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 5, (batch,))

    def step():
        model.zero_grad(set_to_none=True)
        model(pixel_values=pv, labels=y).loss.backward()

    def infer():
        with torch.no_grad():
            return model(pixel_values=pv).logits

    return [
        {"stage": "fine-tuning vit-b16 (fwd+bwd)", "kind": "transformer", "unit": "image", "per": batch,
         "full": step, "check": step, "check_desc": f"batch {batch}"},
        {"stage": "inference vit-b16 (evaluation)", "kind": "transformer", "unit": "image", "per": batch,
         "full": infer, "check": infer, "check_desc": f"batch {batch}"},
    ]  # fmt: skip


# ------------------------------------------------------------------------------------ model
def measure(stages: list[dict[str, Any]], gflops: float, repeats: int) -> list[dict[str, Any]]:
    """FLOPs per unit at full size; at the check size: counted FLOPs, measured and predicted seconds."""
    rows = []
    for s in stages:
        full = count_flops(s["full"]) / s["per"]
        check = count_flops(s["check"])
        measured = median_seconds(s["check"], repeats)
        predicted = check / (gflops * 1e9)
        rows.append(
            {
                "stage": s["stage"],
                "kind": s["kind"],
                "unit": s["unit"],
                "gflop_per_unit": round(full / 1e9, 2),
                "check": s["check_desc"],
                "check_gflop": round(check / 1e9, 2),
                "measured_s": round(measured, 3),
                "predicted_s": round(predicted, 3),
                "prediction_error": round(predicted / measured - 1, 3),
                "achieved_gflops_cpu": round(check / measured / 1e9, 1),
            }
        )
    return rows


def projection(rows: list[dict[str, Any]], images: int) -> list[dict[str, Any]]:
    """Hours per stage for ``images`` generated images under the preset's counts."""
    unet = next(r for r in rows if r["stage"].startswith("generation: UNet"))
    dec = next(r for r in rows if r["stage"].startswith("generation: VAE"))
    mae_b = next(r for r in rows if r["stage"].startswith("MAE pre-training vit-b16"))
    mae_s = next(r for r in rows if r["stage"].startswith("MAE pre-training vit-s16"))
    ft = next(r for r in rows if r["stage"].startswith("fine-tuning"))
    steps, epochs, n_ft = PAPER["sampler_steps"], PAPER["mae_epochs"], PAPER["finetune_images"]
    gen = steps * unet["gflop_per_unit"] + dec["gflop_per_unit"]
    work = [
        (f"generation, {steps} DDIM steps + decode", "conv", images, gen, [(unet, steps), (dec, 1)]),
        ("MAE vit-b16, 1 epoch", "transformer", images, mae_b["gflop_per_unit"], [(mae_b, 1)]),
        (f"MAE vit-b16, {epochs} epochs (preset)", "transformer", images * epochs, mae_b["gflop_per_unit"],
         [(mae_b, 1)]),
        (f"MAE vit-s16, {epochs} epochs", "transformer", images * epochs, mae_s["gflop_per_unit"], [(mae_s, 1)]),
        (f"fine-tuning vit-b16, {n_ft} labelled x {PAPER['finetune_epochs']} epochs", "transformer",
         n_ft * PAPER["finetune_epochs"], ft["gflop_per_unit"], [(ft, 1)]),
    ]  # fmt: skip
    out = []
    for name, kind, n, gflop, parts in work:
        total = n * gflop * 1e9
        row = {"work": name, "images": images, "passes": n, "pflop": round(total / 1e15, 1)}
        for gpu, peak in GPU_PEAK_TFLOPS.items():
            h = total / (peak * 1e12 * ASSUMED_UTILISATION[kind]) / 3600
            row[f"{gpu} h"] = round(h, 1)
            row[f"8x {gpu} h"] = round(h / 8, 2)
        cpu_s = n * sum(r["gflop_per_unit"] * k / r["achieved_gflops_cpu"] for r, k in parts)
        row["CPU days (1 core here)"] = round(cpu_s / 86400, 0)
        out.append(row)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"fp32 matmul rate measured in the run: {result['matmul_gflops']:.1f} GFLOP per CPU-second (1 thread)",
        "",
        "| stage | GFLOP per unit (full size) | unit | check | measured CPU s | predicted s | prediction error "
        "| CPU GFLOP/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["stages"]:
        lines.append(
            f"| {r['stage']} | {r['gflop_per_unit']} | {r['unit']} | {r['check']} ({r['check_gflop']} GFLOP) | "
            f"{r['measured_s']} | {r['predicted_s']} | {100 * r['prediction_error']:+.0f} % | "
            f"{r['achieved_gflops_cpu']} |"
        )
    gpus = list(GPU_PEAK_TFLOPS)
    lines += [
        "",
        "| work | generated images | PFLOP | "
        + " | ".join(f"{g} h | 8x {g} h" for g in gpus)
        + " | CPU days (1 core here) |",
        "| --- " * (4 + 2 * len(gpus)) + "|",
    ]
    for p in result["projection"]:
        cells = " | ".join(f"{p[f'{g} h']} | {p[f'8x {g} h']}" for g in gpus)
        days = p["CPU days (1 core here)"]
        lines.append(f"| {p['work']} | {p['images']:,} | {p['pflop']} | {cells} | {days:,.0f} |")
    lines.append(
        "\nGPU hours: FLOPs / (dense bf16 peak x ASSUMED utilisation "
        f"{ASSUMED_UTILISATION['transformer']:.0%} for ViTs, {ASSUMED_UTILISATION['conv']:.0%} for the UNet / "
        "decoder); "
        "8 GPUs: linear scaling assumed. CPU days: FLOPs / the rate each stage reached on this CPU (fp32, 1 thread)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check_size", type=int, default=256, help="generation size (px) the CPU timing runs at")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", default="300000,3000000")
    ap.add_argument("--json", default=None)
    ap.add_argument("--table", default=None)
    args = ap.parse_args(argv)
    if args.check_size % 8 or args.check_size < 64:
        raise SystemExit(f"--check_size must be a multiple of 8, >= 64, got {args.check_size}")
    torch.set_num_threads(1)
    from benchmarks.machine import matmul_peak_gflops

    gflops = matmul_peak_gflops(torch.float32, n=1024, repeats=5)["cpu_time"]  # per CPU-second, as the stages
    stages = generation_stages(args.check_size) + [mae_stage("vit-s16", 8), mae_stage("vit-b16", 4)]
    stages += finetune_stages(2)
    rows = measure(stages, gflops, args.repeats)
    result = {
        "matmul_gflops": gflops,
        "assumed_utilisation": ASSUMED_UTILISATION,
        "gpu_peak_tflops": GPU_PEAK_TFLOPS,
        "stages": rows,
        "projection": [p for n in args.images.split(",") for p in projection(rows, int(n))],
        "threads": torch.get_num_threads(),
    }
    md = markdown(result)
    print(md)
    from genssl_hf.utils import atomic_write_text

    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    if args.table:
        atomic_write_text(args.table, md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
