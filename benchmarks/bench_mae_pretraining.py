#!/usr/bin/env python
"""MAE pre-training throughput: genssl_hf's accelerate loop against the transformers example recipe.

Side by side in one run, same model (ViTMAEForPreTraining, ViT-S/16 by default, 224 px, mask 0.9) and
same images (phantom chest X-rays):

* **ours**: ``genssl_hf.training.mae.pretrain_mae`` (bf16 autocast, matmul attention (``auto`` on a
  CPU; SDPA's CPU flash backward is slow in bf16), fused AdamW, uint8 batches with
  batched kornia crop/flip + AdaIN, no per-step host sync, freed memory kept in the heap);
* **baseline**: the ``run_mae.py`` way: ``transformers.Trainer`` + ``ViTMAEForPreTraining`` in fp32 with
  per-sample transforms in ``Dataset.with_transform`` (random resized crop, flip, normalise; PIL, since
  torchvision is unavailable here).

Also: this CPU's bf16 matmul peak (a large bf16 matmul, measured in the same run), the share of it that
pre-training reaches (MAE training FLOPs counted analytically: the encoder sees only the visible 10% of
patches, the decoder all of them; backward = 2 x forward), and step time against batch size.
Throughput is the steady state after warm-up steps; medians over ``--repeats``. Ends with one JSON line.

The allocator setting (``--malloc``, :mod:`genssl_hf.core.allocator`) is process-wide, and both sides
run in this one process, so the baseline runs with the same setting as ours: ``retain`` (what our
training sets on a CPU) speeds the baseline up too, which makes the ratio conservative; ``default``
leaves glibc alone on both sides (to measure what the setting gives).

    python benchmarks/bench_mae_pretraining.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402
from genssl_hf.core.allocator import MALLOC_ENV, retain_freed_memory  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


# ------------------------------------------------------------------------------------------ FLOPs
def mae_forward_flops_per_image(cfg) -> float:
    """Multiply-adds x 2 of one ViTMAE forward pass (matmuls only; norms / softmax are negligible)."""
    p, c, d = cfg.patch_size, cfg.num_channels, cfg.hidden_size
    n = (cfg.image_size // p) ** 2
    n_vis = int(n * (1 - cfg.mask_ratio))
    le, ld, dd = n_vis + 1, n + 1, cfg.decoder_hidden_size

    def block(seq: int, h: int, mlp: int) -> float:
        return 2 * seq * (4 * h * h + 2 * h * mlp) + 2 * 2 * seq * seq * h  # qkvo + mlp, QK^T and AV

    f = 2 * n * (c * p * p) * d  # patch embedding runs on every patch before masking
    f += cfg.num_hidden_layers * block(le, d, cfg.intermediate_size)
    f += 2 * le * d * dd  # decoder embed
    f += cfg.decoder_num_hidden_layers * block(ld, dd, cfg.decoder_intermediate_size)
    f += 2 * ld * dd * (p * p * c)  # pixel prediction
    return float(f)


# ------------------------------------------------------------------------------------------- runs
def run_ours(
    data_dir: Path,
    work: Path,
    preset: str,
    batch: int,
    warmup: int,
    steps: int,
    seed: int,
    micro_batch: int | None = None,
    torch_compile: bool = False,
) -> float:
    """Our loop at the effective ``batch``, as ``batch / micro_batch`` accumulated micro-batches (the
    same optimiser steps on the same number of images: the loss is a mean over equal-sized micro-batches)."""
    from genssl_hf.training import mae

    micro = micro_batch or batch
    if batch % micro:
        raise ValueError(f"--micro-batch {micro} must divide --batch {batch}")
    out = work / f"ours-{time.time_ns()}"
    args = mae.build_parser().parse_args(
        [
            "--model",
            preset,
            "--dataset",
            str(data_dir),
            "--output_dir",
            str(out),
            "--per_device_train_batch_size",
            str(micro),
            "--gradient_accumulation_steps",
            str(batch // micro),
            "--max_steps",
            str(warmup + steps),
            "--checkpointing_steps",
            "0",
            "--logging_steps",
            "1000000",
            "--figure",
            "off",
            "--mixed_precision",
            "bf16",
            "--seed",
            str(seed),
            *(["--torch_compile"] if torch_compile else []),
        ]
    )
    reset_accelerate()
    t = time.perf_counter()
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # keep the benchmark output readable
        summary = mae.pretrain_mae(args)
    reset_accelerate()
    t_end = summary["step_end_seconds"]  # end of each optimiser step, from the end of the first
    if len(t_end) <= warmup:
        raise RuntimeError("too few steps to measure steady throughput")
    ips = (len(t_end) - warmup) * batch / (t_end[-1] - t_end[warmup - 1])
    c_end = summary["step_end_cpu_seconds"]
    cpu_ips = (len(c_end) - warmup) * batch / (c_end[-1] - c_end[warmup - 1])
    # the first optimiser step ends where step_end_seconds starts: with --torch-compile it holds the compilation
    first_step = summary["train_seconds"] - t_end[-1]
    print(
        f"  ours     batch {batch} ({batch // micro} x {micro}{', compiled' if torch_compile else ''}): "
        f"{ips:7.2f} img/s wall, {cpu_ips:7.2f} img per CPU-s  (run {time.perf_counter() - t:.0f} s, "
        f"first step {first_step:.0f} s)",
        flush=True,
    )
    return ips, cpu_ips


def run_baseline(ds, preset: str, batch: int, warmup: int, steps: int, seed: int, work: Path) -> float:
    """transformers example recipe: Trainer + ViTMAEForPreTraining, fp32, per-sample transforms."""
    from PIL import Image
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from genssl_hf.training import mae_model

    cfg = mae_model.build_mae_config(preset)
    size = cfg.image_size
    rng = np.random.default_rng(seed)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]  # the example normalises with ImageNet stats
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]

    def rrc_flip(img: Image.Image) -> np.ndarray:
        # RandomResizedCrop(size, scale=(0.2, 1.0), bicubic) + RandomHorizontalFlip, as in run_mae.py
        w, h = img.size
        for _ in range(10):
            area = w * h * rng.uniform(0.2, 1.0)
            ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(area * ar))), int(round(np.sqrt(area / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw, ch = w, h
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = img.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (arr - mean) / std

    def transform(batch_rows):
        return {"pixel_values": [torch.from_numpy(rrc_flip(im.convert("RGB"))) for im in batch_rows["image"]]}

    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}

    class Timer(TrainerCallback):
        def __init__(self):
            self.t: list[float] = []

            self.c: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t.append(time.perf_counter())
            self.c.append(time.process_time())

    reset_accelerate()
    torch.manual_seed(seed)
    model, _ = mae_model.build_model(cfg)  # same fixed sin-cos tables as ours, so both sides train the same model
    targs = TrainingArguments(
        output_dir=str(work / "baseline"),
        per_device_train_batch_size=batch,
        max_steps=warmup + steps,
        learning_rate=1.5e-4 * batch / 256,
        weight_decay=0.05,
        adam_beta2=0.95,
        lr_scheduler_type="cosine",
        warmup_steps=1,
        logging_steps=1_000_000,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=seed,
    )
    timer = Timer()
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=ds.select_columns(["image"]).with_transform(transform),
        data_collator=collate,
        callbacks=[timer],
    )
    t = time.perf_counter()
    trainer.train()
    reset_accelerate()
    ts = timer.t
    ips = (len(ts) - warmup) * batch / (ts[-1] - ts[warmup - 1])  # same window as ours
    cs = timer.c
    cpu_ips = (len(cs) - warmup) * batch / (cs[-1] - cs[warmup - 1])
    print(
        f"  baseline batch {batch}: {ips:7.2f} img/s wall, "
        f"{cpu_ips:7.2f} img per CPU-s  (run {time.perf_counter() - t:.0f} s)",
        flush=True,
    )
    return ips, cpu_ips


def step_time_vs_batch(preset: str, batches: list[int], steps: int) -> dict[int, float]:
    """Seconds per optimiser step of the core step (augment + forward/backward in bf16 + fused AdamW)."""
    from genssl_hf.processing import MAEAugment
    from genssl_hf.training import mae_model
    from genssl_hf.training.attention import resolve_attn_implementation
    from genssl_hf.training.optim import build_optimizer

    cfg = mae_model.build_mae_config(preset)
    model, _ = mae_model.build_model(cfg, attn_implementation=resolve_attn_implementation("auto", "cpu", "bf16"))
    opt = build_optimizer(model, 1e-4, 0.05)
    aug = MAEAugment(cfg.image_size)
    res = {}
    for b in batches:
        x = (torch.rand(b, 1, cfg.image_size, cfg.image_size) * 255).to(torch.uint8)
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(pixel_values=aug(x)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:  # first step is warm-up
                times.append(time.perf_counter() - t)
        res[b] = statistics.median(times)
        print(f"  scaling batch {b:4d}: {res[b]:.3f} s/step, {b / res[b]:.2f} img/s", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="about a minute: small batch, few steps, one repeat")
    ap.add_argument("--preset", default="vit-s16")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="measured steps per run (after warm-up)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--scaling", default=None, help="comma-separated batch sizes for the step-time sweep ('' to skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="ours: accumulate --batch in micro-batches of this size (same optimiser steps; a batch that "
        "stays in cache runs faster, see the step-time sweep)",
    )
    ap.add_argument(
        "--malloc",
        choices=("retain", "default"),
        default="retain",
        help="glibc malloc on both sides: keep freed memory in the heap (what our training sets on a CPU) "
        "or glibc's default (per-step mmap of big blocks)",
    )
    ap.add_argument(
        "--torch-compile",
        action="store_true",
        help="ours: torch.compile the model (pretrain_mae --torch_compile; other numerics than eager, "
        "so opt-in); the compilation falls in the warm-up step and is printed as the first step's time",
    )
    a = ap.parse_args(argv)
    batch = a.batch or (16 if a.quick else 64)
    if a.micro_batch is not None and (a.micro_batch < 1 or batch % a.micro_batch):
        raise ValueError(f"--micro-batch {a.micro_batch} must divide --batch {batch}")
    os.environ[MALLOC_ENV] = a.malloc  # our training reads it; set before either side allocates
    malloc_applied = retain_freed_memory()
    steps = a.steps or (2 if a.quick else 10)
    warmup = max(1, a.warmup if a.warmup is not None else (1 if a.quick else 2))
    repeats = a.repeats or (1 if a.quick else 3)
    scaling = [
        int(s) for s in (a.scaling if a.scaling is not None else ("4,8" if a.quick else "16,32,64,128")).split(",") if s
    ]
    if a.threads:
        torch.set_num_threads(a.threads)

    from genssl_hf.data.phantom import phantom_dataset
    from genssl_hf.training import mae_model

    cfg = mae_model.build_mae_config(a.preset)
    load = os.getloadavg()
    print(
        f"MAE pre-training throughput: {a.preset} {cfg.image_size}px mask {cfg.mask_ratio}, batch {batch}, "
        f"{steps} steps after {warmup} warm-up, {repeats} repeat(s), torch threads {torch.get_num_threads()}, "
        f"load avg {load[0]:.1f} on {os.cpu_count()} CPUs, malloc {a.malloc} (applied: {malloc_applied})",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench_mae_") as tmp:
        work = Path(tmp)
        n_images = batch * (warmup + steps) + batch
        ds = phantom_dataset(n_images, size=cfg.image_size, seed=a.seed)
        data_dir = work / "data"
        ds.save_to_disk(str(data_dir))
        info = machine_info(n=1536 if a.quick else 2048, repeats=3 if a.quick else 5)
        print_machine(info)
        mm = info["matmul_gflops"]
        peak, peak_cpu, fp32_cpu = mm["bf16"]["wall"], mm["bf16"]["cpu_time"], mm["fp32"]["cpu_time"]
        print(
            f"  bf16 matmul peak: {peak:.1f} GFLOP/s wall, {peak_cpu:.1f} GFLOP/s from CPU time "
            f"(fp32: {fp32_cpu:.1f}; bf16/fp32 = {peak_cpu / fp32_cpu:.2f}x, the ceiling of an autocast speed-up)",
            flush=True,
        )
        ours, base = [], []
        for r in range(repeats):  # interleave so load changes hit both sides alike
            ours.append(
                run_ours(data_dir, work, a.preset, batch, warmup, steps, a.seed + r, a.micro_batch, a.torch_compile)
            )
            base.append(run_baseline(ds, a.preset, batch, warmup, steps, a.seed + r, work))
        scal = step_time_vs_batch(a.preset, scaling, 2 if a.quick else 4) if scaling else {}
    ours_m, base_m = statistics.median(o[0] for o in ours), statistics.median(b[0] for b in base)
    ours_c, base_c = statistics.median(o[1] for o in ours), statistics.median(b[1] for b in base)
    train_flops = 3 * mae_forward_flops_per_image(cfg)
    achieved = ours_m * train_flops / 1e9
    share = achieved / peak
    base_share = base_m * train_flops / 1e9 / peak
    # CPU-time view: images per CPU-second x threads, against the matmul peak measured the same way
    share_cpu = ours_c * torch.get_num_threads() * train_flops / 1e9 / peak_cpu
    load_end = os.getloadavg()
    print(f"\nours {ours_m:.2f} img/s vs baseline {base_m:.2f} img/s: ratio {ours_m / base_m:.2f}x")
    print(
        f"training FLOPs/image {train_flops / 1e9:.2f} GFLOP -> {achieved:.1f} GFLOP/s = {100 * share:.1f}% of the "
        f"bf16 peak {peak:.1f} GFLOP/s (baseline {100 * base_share:.1f}%)"
    )
    print(
        f"CPU-time view (robust to other users' load): ours {ours_c:.2f} vs baseline {base_c:.2f} img per CPU-s: "
        f"ratio {ours_c / base_c:.2f}x; {100 * share_cpu:.1f}% of the bf16 peak"
    )
    print(
        f"load average at start {load[0]:.1f}, at end {load_end[0]:.1f} "
        "(the CPU is shared: absolute numbers move with load)"
    )
    print(
        json.dumps(
            {
                "name": f"mae_pretraining_{a.preset}_images_per_s",
                "value": round(ours_m, 3),
                "unit": "images/s",
                "baseline": round(base_m, 3),
                "ratio": round(ours_m / base_m, 3),
                "peak_bf16_gflops": round(peak, 1),
                "share_of_bf16_peak": round(share, 4),
                "baseline_share_of_bf16_peak": round(base_share, 4),
                "train_gflop_per_image": round(train_flops / 1e9, 3),
                "ratio_cpu_time": round(ours_c / base_c, 3),
                "bf16_over_fp32_matmul": round(peak_cpu / fp32_cpu, 3),
                "share_of_bf16_peak_cpu_time": round(share_cpu, 4),
                "batch": batch,
                "micro_batch": a.micro_batch or batch,
                "torch_compile": a.torch_compile,
                "malloc": a.malloc,
                "malloc_applied": malloc_applied,
                "steps": steps,
                "repeats": repeats,
                "runs_ours": [round(x[0], 3) for x in ours],
                "runs_baseline": [round(x[0], 3) for x in base],
                "step_time_s_by_batch": {str(k): round(v, 4) for k, v in scal.items()},
                "threads": torch.get_num_threads(),
                "load_avg": [round(load[0], 2), round(load_end[0], 2)],
                "machine": finish(info),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
