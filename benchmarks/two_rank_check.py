#!/usr/bin/env python
"""Two ranks at full size (issue 33.2): ViT-B/16 MAE and MoCo v2 at 224 px, 2 optimiser steps,
launched by ``accelerate launch`` on the CPU with 1 and with 2 processes at the same global batch:
the losses and final weights must agree to fp32 rounding.

Both processes see the same global batch (fixed pixels, and for MAE fixed per-sample mask noise:
the trainer draws them at random, which no split can reproduce), each its half; DDP averages the
gradients. MoCo v2 exercises the gathered negatives (keys from every rank enter the InfoNCE logits
and the queue), the gathered (global) BN of its head and the momentum encoder update after each
step. Optimisers are the projects' own: the MAE recipe's AdamW (betas 0.9 / 0.95, cosine schedule)
and the ViT SSL recipe's AdamW for MoCo v2, fp32 (``--mixed_precision no``: bf16 autocast rounds
differently at batch 2 and 4, which is not what is under test).

    python benchmarks/two_rank_check.py                       # ViT-B/16, 224 px (a few minutes, 1 core)
    python benchmarks/two_rank_check.py --model tiny --image_size 32 --global_batch 4  # seconds (the test)

The driver prints max abs differences and writes a JSON summary (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# fp32 DDP: the only difference between one and two ranks is the order of the gradient sum
# (and of the logits' reductions), i.e. rounding. Looser than that is a bug.
# AdamW normalises each element by its own gradient size, so an element whose gradient is near zero
# turns rounding into an update of up to +-lr: the weights are judged by the relative L2 difference
# of the two runs' updates (final - initial weights), the largest element difference is reported.
# That gap is a count of step-1 sign flips (each 2 lr), growing like sqrt(flips / elements), not a
# rounding bound: ViT-B MoCo v2 at 2 images per rank flips ~1 element in 5e5 (BENCHMARKS.md, "Two
# ranks at ViT-B"), hence 5e-3; ``--dtype float64`` (gap ~1e-11) is the check that rules out a bug.
TOLERANCE = {"loss": 1e-4, "grad": 1e-4, "update": 5e-3}
NULL_GRADIENT = 1e-6  # a tensor whose largest step-1 gradient is below this x the model's largest


# --------------------------------------------------------------------------------- worker
def _batch(step: int, global_batch: int, image_size: int, patches: int):
    import torch

    g = torch.Generator().manual_seed(1000 + step)
    pv = torch.randn(global_batch, 3, image_size, image_size, generator=g)
    view2 = pv.flip(-1) + 0.1 * torch.randn(pv.shape, generator=g)
    noise = torch.rand(global_batch, patches, generator=g)
    return pv, view2, noise


def _mae(model_name: str, image_size: int):
    from genssl_hf.training.mae_model import build_mae_config, build_model
    from genssl_hf.training.optim import build_optimizer

    overrides = {"image_size": image_size} if model_name == "tiny" else {}
    cfg = build_mae_config(model_name, mask_ratio=0.9, **overrides)
    model, _ = build_model(cfg)
    opt = build_optimizer(model, lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95))
    return model, opt, (image_size // cfg.patch_size) ** 2


def _moco(model_name: str, image_size: int, layers: int | None = None):
    from genssl_hf.models import build_backbone, build_backbone_config
    from genssl_hf.training.ssl.methods import build_method
    from genssl_hf.training.ssl.methods.recipes import VIT
    from genssl_hf.training.ssl.optim import build_ssl_optimizer

    kw = {"patch_size": 8} if model_name == "tiny" else {}
    config = build_backbone_config(model_name, image_size=image_size, **kw)
    if layers:  # a shallower ViT of the same width: the cheapest run that still shows a mismatch
        config.num_hidden_layers = layers
    backbone = build_backbone(config)
    model = build_method("moco_v2", backbone, "tiny" if model_name == "tiny" else "full", queue_size=64)
    opt = build_ssl_optimizer(model, VIT["optimizer"], lr=1.5e-4, weight_decay=VIT["weight_decay"])
    return model, opt, 0


def worker(out_path: str, method: str, args: argparse.Namespace) -> None:
    import torch

    from genssl_hf.training.common import make_accelerator
    from genssl_hf.training.optim import cosine_schedule_with_warmup

    torch.set_num_threads(1)
    acc = make_accelerator(None, cpu=True, mixed_precision="no")
    model_name, image_size, global_batch, steps = args.model, args.image_size, args.global_batch, args.steps
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    if method == "mae":
        model, opt, patches = _mae(model_name, image_size)
    else:
        model, opt, patches = _moco(model_name, image_size, args.layers)
    model.to(dtype)  # float64: does the mismatch shrink to float64 rounding (precision, not a bug)?
    sched = cosine_schedule_with_warmup(opt, 1, steps)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    ddp, opt = acc.prepare(model, opt)
    inner = acc.unwrap_model(ddp)
    b = global_batch // acc.num_processes
    sl = slice(acc.process_index * b, (acc.process_index + 1) * b)
    losses, seconds = [], []
    for step in range(steps):
        pv, view2, noise = (t.to(dtype) for t in _batch(step, global_batch, image_size, patches))
        t0 = time.perf_counter()
        if method == "mae":
            loss = ddp(pixel_values=pv[sl], noise=noise[sl]).loss
        else:
            loss, _ = ddp([pv[sl], view2[sl]])
        acc.backward(loss)
        if step == 0:  # DDP has averaged them over the ranks by now
            grads0 = {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None}
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if method == "moco_v2":
            inner.after_optimizer_step(step + 1, steps)
        seconds.append(time.perf_counter() - t0)
        losses.append(acc.reduce(loss.detach(), reduction="mean").item())
    if acc.is_main_process:
        state = {k: v.detach().clone() for k, v in inner.state_dict().items()}
        torch.save(
            {
                "losses": losses,
                "state": state,
                "grads0": grads0,
                "init": init,
                "seconds": seconds,
                "world": acc.num_processes,
            },
            out_path,
        )
    acc.wait_for_everyone()
    acc.state.destroy_process_group()


# --------------------------------------------------------------------------------- driver
HUNG_LAUNCHES: list[str] = []  # launches that hung and were retried (reported in the summary, never hidden)


def launch(processes: int, out: Path, method: str, args: argparse.Namespace, port: int) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--num_processes", str(processes)]
    if processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", str(port)]
    cmd += [__file__, "--worker", str(out), "--method", method, "--model", args.model]
    cmd += ["--image_size", str(args.image_size), "--global_batch", str(args.global_batch), "--steps", str(args.steps)]
    cmd += ["--dtype", args.dtype] + (["--layers", str(args.layers)] if args.layers else [])
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for attempt in range(2):
        # the launcher and its ranks in a session of their own, so a hang ends them all (killing only the
        # launcher left a rank orphaned, waiting forever in a futex on a store that was gone)
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=args.timeout)
            break
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            HUNG_LAUNCHES.append(f"{processes}-process {method} (port {port})")
            if attempt or processes == 1:
                raise RuntimeError(f"{processes}-process {method} run hung for {args.timeout} s, twice") from None
            print(f"{processes}-process {method} run hung for {args.timeout} s: retried once", flush=True)
            cmd[cmd.index("--main_process_port") + 1] = str(port + 100)  # the store's port may be what hung
    res = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if res.returncode:
        raise RuntimeError(f"{processes}-process {method} run failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")


def compare(one: dict, two: dict) -> dict:
    """Loss, step-1 gradients (relative to the largest gradient) and final weights. Tensors whose
    step-1 gradient is zero up to rounding (e.g. a bias that a following normalisation cancels)
    are listed apart: AdamW divides by sqrt(v), so their rounding noise becomes an update of
    about +-lr, in either direction, on one rank count and the other."""
    import torch

    loss = max(abs(a - b) for a, b in zip(one["losses"], two["losses"]))
    g1, g2 = one["grads0"], two["grads0"]
    scale = max(g.abs().max().item() for g in g1.values())
    null = sorted(n for n, g in g1.items() if g.abs().max().item() < NULL_GRADIENT * scale)
    grad_diffs = {n: (g1[n] - g2[n]).abs().max().item() / scale for n in g1}
    grad = max(grad_diffs.values())
    # where the step-1 gradients part: the 5 tensors with the largest difference, each also relative
    # to its own largest gradient
    worst_grads = {
        n: [float(f"{grad_diffs[n]:.2g}"), float(f"{grad_diffs[n] * scale / max(g1[n].abs().max().item(), 1e-30):.2g}")]
        for n in sorted(grad_diffs, key=grad_diffs.get, reverse=True)[:5]
    }

    # AdamW's first step moves each element by about lr * sign(gradient): an element whose step-1
    # gradient changes sign between the runs (its size is at the rounding noise) differs by 2 lr
    flips = sum(int((torch.sign(g1[n]) != torch.sign(g2[n])).sum()) for n in g1 if n not in null)
    elements = sum(g1[n].numel() for n in g1 if n not in null)

    def diff(k: str) -> float:
        return (one["state"][k].double() - two["state"][k].double()).abs().max().item()

    floats = [k for k in one["state"] if one["state"][k].is_floating_point()]
    weights = {k: diff(k) for k in floats if k in one["init"] and k not in null}
    # the two runs' updates (final - initial weights) over all parameters: relative L2 difference
    num = sum(
        (one["state"][k].double() - two["state"][k].double()).pow(2).sum().item() for k in one["init"] if k not in null
    )
    den = sum(
        (one["state"][k].double() - one["init"][k].double()).pow(2).sum().item() for k in one["init"] if k not in null
    )
    rel_update = (num / den) ** 0.5
    worst = max(weights, key=weights.get)
    # buffers (BN running stats, MoCo queue) follow the features, which the null-gradient drift shifts
    buffers = {k: diff(k) for k in floats if k not in one["init"]}
    worst_buffer = max(buffers, key=buffers.get) if buffers else None
    return {
        "losses_1_process": one["losses"],
        "losses_2_processes": two["losses"],
        "max_abs_loss_diff": loss,
        "max_rel_grad_diff_step1": grad,
        "worst_grad_tensors_step1 [/largest grad, /own largest grad]": worst_grads,
        "step1_gradient_sign_flips": [flips, elements],
        "max_abs_weight_diff": weights[worst],
        "worst_tensor": worst,
        "rel_l2_update_diff": rel_update,
        "tensors_compared": len(weights),
        "null_gradient_tensors": {k: float(f"{diff(k):.2g}") for k in null},
        "max_abs_buffer_diff": {worst_buffer: buffers[worst_buffer]} if buffers else {},
        # MoCo: the queue holds the keys gathered from every rank, in rank order
        "queue_max_abs_diff": diff("queue") if "queue" in one["state"] else None,
        "seconds_per_step_1_process": round(sorted(one["seconds"])[len(one["seconds"]) // 2], 2),
        "seconds_per_step_2_processes": round(sorted(two["seconds"])[len(two["seconds"]) // 2], 2),
        "ok": loss <= TOLERANCE["loss"] and grad <= TOLERANCE["grad"] and rel_update <= TOLERANCE["update"],
    }


def run_check(args: argparse.Namespace) -> dict:
    results = {}
    HUNG_LAUNCHES.clear()
    with tempfile.TemporaryDirectory(prefix="two_rank_") as tmp:
        import torch

        for i, method in enumerate(args.methods.split(",")):
            files = {}
            for n in (1, 2):
                files[n] = Path(tmp) / f"{method}-{n}.pt"
                launch(n, files[n], method, args, args.port + i)
            one, two = (torch.load(files[n], weights_only=False) for n in (1, 2))
            results[method] = compare(one, two)
            print(method, json.dumps({k: v for k, v in results[method].items() if "losses" not in k}), flush=True)
    return {
        "hung_launches_retried": list(HUNG_LAUNCHES),
        "model": args.model,
        "image_size": args.image_size,
        "layers": args.layers,
        "dtype": args.dtype,
        "global_batch": args.global_batch,
        "steps": args.steps,
        "tolerance": TOLERANCE,
        "results": results,
    }


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="mae,moco_v2", help="comma separated: mae, moco_v2")
    ap.add_argument("--model", default="vit-b16", help="MAE / backbone preset (vit-b16, or tiny for the test)")
    ap.add_argument("--image_size", type=int, default=224)
    ap.add_argument("--global_batch", type=int, default=4, help="even: split over the 2 processes")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--layers", type=int, default=None, help="MoCo: fewer ViT layers (same width) for a quick look")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="model and batch dtype")
    ap.add_argument("--port", type=int, default=29731)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per launched run")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        worker(args.worker, args.method, args)
        return 0
    if args.global_batch % 2 or args.global_batch < 2:
        raise SystemExit(f"--global_batch must be even and >= 2 (split over 2 processes), got {args.global_batch}")
    bad = set(args.methods.split(",")) - {"mae", "moco_v2"}
    if bad:
        raise SystemExit(f"--methods: unknown {sorted(bad)} (choose mae, moco_v2)")
    summary = run_check(args)
    if args.json:
        from genssl_hf.utils import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=1) + "\n")
    return 0 if all(r["ok"] for r in summary["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
