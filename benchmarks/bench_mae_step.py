#!/usr/bin/env python
"""One MAE training step, taken apart: where its time goes, and what each lever gives (issue 37.3).

The step is the core step of ``bench_mae_pretraining.py``'s batch sweep: ViT-S/16 at 224 px, mask
0.9, uint8 batch -> ``MAEAugment`` -> bf16 autocast forward (matmul attention) -> backward -> fused
AdamW. Two modes:

* ``profile``: ``torch.profiler`` over ``--steps`` steps; self CPU time per category (matmuls,
  attention softmax, layer norm, GELU, casts / copies, optimiser, data path: augmentation and
  masking, loss target), the matmuls' rate against a 2048^3 bf16 matmul timed in the same process,
  and the user / kernel split of unprofiled steps (kernel time is page faults, see
  ``genssl_hf.core.allocator``).
* ``levers``: each variant runs in a fresh process (process-wide settings such as the allocator
  cannot be undone inside one), the variants alternate for ``--rounds`` rounds, and the report gives
  per-image CPU time (user + kernel, robust to other users' load) and wall time: medians of the
  per-round medians, as ratios against the first variant. Variants join options with ``+``:
  ``base`` (glibc's default malloc), ``retain`` (freed memory kept in the heap, what training now
  sets on a CPU), ``compile`` (``torch.compile`` of the model; its first step, the compilation, is
  reported apart).

    python benchmarks/bench_mae_step.py profile --batch 64 --threads 2 --retain
    python benchmarks/bench_mae_step.py levers --variants base,retain,retain+compile --batches 32
    python benchmarks/bench_mae_step.py levers --variants retain --batches 32,16,64   # micro-batch sweep
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

VARIANT_OPTIONS = ("base", "retain", "compile")
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def check_variants(variants: list[str]) -> None:
    for v in variants:
        bad = [o for o in v.split("+") if o not in VARIANT_OPTIONS]
        if bad or not v:
            raise ValueError(f"--variants: {v!r} has unknown options {bad}; join {', '.join(VARIANT_OPTIONS)} with +")


def build_step(batch: int, options: set[str]):
    """The core step as a closure, with the model and optimiser it trains."""
    from genssl_hf.core.allocator import retain_freed_memory
    from genssl_hf.processing import MAEAugment
    from genssl_hf.training import mae_model
    from genssl_hf.training.attention import resolve_attn_implementation
    from genssl_hf.training.optim import build_optimizer

    os.environ["GENSSL_HF_MALLOC"] = "retain" if "retain" in options else "default"
    if "retain" in options and not retain_freed_memory():
        raise RuntimeError("the retain variant needs glibc's malloc")
    cfg = mae_model.build_mae_config("vit-s16")
    torch.manual_seed(0)
    model, _ = mae_model.build_model(cfg, attn_implementation=resolve_attn_implementation("auto", "cpu", "bf16"))
    model.train()
    opt = build_optimizer(model, 1e-4, 0.05)
    augment = MAEAugment(cfg.image_size, out_channels=3)
    forward = torch.compile(model) if "compile" in options else model
    images = (torch.rand(batch, 1, cfg.image_size, cfg.image_size) * 255).to(torch.uint8)

    def step() -> None:
        with torch.autograd.profiler.record_function("PHASE_augment"):
            pixel_values = augment(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = forward(pixel_values=pixel_values).loss
        loss.backward()
        with torch.autograd.profiler.record_function("PHASE_optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def timed_steps(step, warmup: int, steps: int) -> dict[str, list[float]]:
    """Wall, user and kernel seconds of each measured step (after ``warmup`` steps)."""
    out: dict[str, list[float]] = {"wall": [], "user": [], "sys": [], "first_step": []}
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), os.times()
        step()
        t1, c1 = time.perf_counter(), os.times()
        if i == 0:
            out["first_step"].append(t1 - t0)
        if i >= warmup:
            out["wall"].append(t1 - t0)
            out["user"].append(c1.user - c0.user)
            out["sys"].append(c1.system - c0.system)
    return out


# ------------------------------------------------------------------------------------------ profile
def category(name: str, phase: str | None) -> str:
    """The profile row an op's self time belongs to (phases first: they name the data path)."""
    by_phase = {
        "PHASE_augment": "data path: augmentation (crop, flip, AdaIN)",
        "PHASE_masking": "data path: masking (argsort, gather)",
        "PHASE_patchify": "loss: patchified target",
        "PHASE_optimizer": "optimiser (fused AdamW, zero_grad)",
    }
    if phase in by_phase:
        return by_phase[phase]
    rules = (
        (lambda n: n in MATMULS, "matmuls (mm, addmm, bmm)"),
        (lambda n: "conv" in n, "patch embedding (convolution)"),
        (lambda n: "softmax" in n, "attention softmax (fwd + bwd)"),
        (lambda n: "layer_norm" in n, "layer norm (fwd + bwd)"),
        (lambda n: "gelu" in n, "GELU (fwd + bwd)"),
        (lambda n: n in ("aten::copy_", "aten::_to_copy", "aten::clone"), "casts and copies"),
        (lambda n: n == "aten::sum", "sums (bias gradients, loss)"),
        (lambda n: n.startswith("autograd::"), "autograd engine"),
    )
    for test, label in rules:
        if test(name):
            return label
    return "other element-wise, gather / cat, allocation"


def _phase(event) -> str | None:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("PHASE_"):
            return parent.name
        parent = parent.cpu_parent
    return None


def _matmul_flops(event) -> int:
    shapes = [s for s in event.input_shapes if s]
    if event.name == "aten::addmm":
        (m, k), n = shapes[1], shapes[2][1]
        return 2 * m * k * n
    if event.name == "aten::mm":
        (m, k), n = shapes[0], shapes[1][1]
        return 2 * m * k * n
    (b, m, k), n = shapes[0], shapes[1][2]
    return 2 * b * m * k * n


def _mark_phases() -> None:
    """Name the masking and the loss target in the profile (wraps ViTMAE's methods in this process)."""
    import transformers.models.vit_mae.modeling_vit_mae as vit_mae

    def marked(fn, label):
        def wrapper(*args, **kwargs):
            with torch.autograd.profiler.record_function(label):
                return fn(*args, **kwargs)

        return wrapper

    vit_mae.ViTMAEEmbeddings.random_masking = marked(vit_mae.ViTMAEEmbeddings.random_masking, "PHASE_masking")
    vit_mae.ViTMAEForPreTraining.patchify = marked(vit_mae.ViTMAEForPreTraining.patchify, "PHASE_patchify")


def bf16_peak_gflops(n: int = 2048, repeats: int = 4) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def profile(a: argparse.Namespace) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    _mark_phases()
    step = build_step(a.batch, {"retain"} if a.retain else set())
    peak = bf16_peak_gflops()
    plain = timed_steps(step, 2, 2)
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(a.steps):
            step()
    self_us: collections.Counter = collections.Counter()
    mm_flops = mm_us = 0
    for e in prof.events():
        if e.name.startswith("PHASE_"):
            continue
        self_us[category(e.name, _phase(e))] += e.self_cpu_time_total
        if e.name in MATMULS:
            mm_flops += _matmul_flops(e)
            mm_us += e.self_cpu_time_total
    total = sum(self_us.values())
    user, kernel = sum(plain["user"]), sum(plain["sys"])
    print(
        f"batch {a.batch}, {torch.get_num_threads()} thread(s), malloc {'retain' if a.retain else 'default'}, "
        f"load {os.getloadavg()[0]:.1f}: unprofiled step {statistics.median(plain['wall']):.2f} s wall, "
        f"kernel time {100 * kernel / (user + kernel):.1f} % of CPU time"
    )
    print(f"profiled self time per step {total / 1e6 / a.steps:.2f} s; bf16 2048^3 matmul {peak:.1f} GFLOP/s")
    print("| share | s / step | what |\n| ---: | ---: | --- |")
    for label, us in self_us.most_common():
        print(f"| {100 * us / total:.1f} % | {us / 1e6 / a.steps:.3f} | {label} |")
    mm_rate = mm_flops / mm_us / 1e3
    print(
        f"matmuls: {mm_flops / 1e9 / a.steps:.1f} GFLOP per step at {mm_rate:.1f} GFLOP/s = "
        f"{100 * mm_rate / peak:.0f} % of the bf16 peak; matmul share x rate = "
        f"{100 * mm_us / total * mm_rate / peak:.0f} % of the peak for the whole step"
    )
    return {"categories_s_per_step": {k: v / 1e6 / a.steps for k, v in self_us.items()}, "peak": peak}


# ------------------------------------------------------------------------------------------- levers
def child(a: argparse.Namespace) -> None:
    """One variant in this fresh process: one JSON line."""
    options = set(a.child.split("+"))
    result = timed_steps(build_step(a.batch, options), a.warmup, a.steps)
    print(json.dumps({"variant": a.child, "batch": a.batch, **result, "load": os.getloadavg()[0]}))


def levers(a: argparse.Namespace) -> dict:
    variants, batches = a.variants.split(","), [int(b) for b in a.batches.split(",")]
    check_variants(variants)
    runs: dict[tuple[str, int], list[dict]] = collections.defaultdict(list)
    for r in range(a.rounds):  # alternate, so load changes hit every variant alike
        for batch in batches:
            for v in variants:
                cmd = [sys.executable, __file__, "levers", "--child", v, "--batch", str(batch)]
                cmd += ["--threads", str(a.threads), "--steps", str(a.steps), "--warmup", str(a.warmup)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                if out.returncode or not lines:
                    raise RuntimeError(f"variant {v} at batch {batch} failed:\n{out.stderr[-3000:]}")
                d = json.loads(lines[-1])
                runs[(v, batch)].append(d)
                cpu = statistics.median(u + s for u, s in zip(d["user"], d["sys"]))
                print(
                    f"round {r} {v:>16s} batch {batch:4d}: {1e3 * cpu / batch:6.1f} ms CPU/image "
                    f"(kernel {100 * sum(d['sys']) / (sum(d['user']) + sum(d['sys'])):.1f} %), "
                    f"{1e3 * statistics.median(d['wall']) / batch:6.1f} ms wall/image, first step "
                    f"{d['first_step'][0]:.1f} s, load {d['load']:.1f}",
                    flush=True,
                )
    print("\nmedians over rounds, against the first row:")
    rows, first = {}, None
    for (v, batch), ds in runs.items():
        cpu = statistics.median(statistics.median(u + s for u, s in zip(d["user"], d["sys"])) for d in ds) / batch
        wall = statistics.median(statistics.median(d["wall"]) for d in ds) / batch
        first = first or (cpu, wall)
        rows[f"{v}@{batch}"] = {"cpu_s_per_image": cpu, "wall_s_per_image": wall}
        print(
            f"  {v:>16s} batch {batch:4d}: {1e3 * cpu:6.1f} ms CPU/image ({first[0] / cpu:.3f}x), "
            f"{1e3 * wall:6.1f} ms wall/image ({first[1] / wall:.3f}x)"
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("profile", "levers"))
    ap.add_argument("--batch", type=int, default=64, help="profile: the batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="profiled / measured steps")
    ap.add_argument("--warmup", type=int, default=2, help="levers: steps before the measured ones")
    ap.add_argument("--retain", action="store_true", help="profile: keep freed memory in the heap")
    ap.add_argument("--variants", default="base,retain", help="levers: comma-separated, options joined by +")
    ap.add_argument("--batches", default="32", help="levers: comma-separated batch sizes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.mode == "levers" and a.child is None:
        check_variants(a.variants.split(","))
    torch.set_num_threads(a.threads)
    if a.child is not None:
        child(a)
        return 0
    result = profile(a) if a.mode == "profile" else levers(a)
    print(json.dumps({"mode": a.mode, "threads": a.threads, "load_avg": os.getloadavg()[0], "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
