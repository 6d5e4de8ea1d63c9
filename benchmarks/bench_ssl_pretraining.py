#!/usr/bin/env python
"""Pre-training throughput per method on the same backbone: SimCLR, MoCo v2, SimSiam, rotation (the
shared engine, ``genssl_hf.training.ssl.pretrain``) and MAE (``genssl_hf.training.mae``) for reference.

Same images (phantom chest X-rays), same input size, same per-step batch of source images, fp32 (no
AMX here: bf16 gains little on small models). "images" are source images per second: a two-view
method runs its backbone on 2x as many crops, rotation on 4x. Steady state after ``--warmup`` steps;
also images per second of process CPU time (robust on a shared machine). Ends with one JSON line.

    python benchmarks/bench_ssl_pretraining.py --model tiny --image_size 64 --batch 32 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
METHODS = ("simclr", "moco_v2", "simsiam", "rotation", "mae")


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def rates(summary: dict, batch: int, warmup: int) -> tuple[float, float]:
    wall, cpu = summary["step_end_seconds"], summary["step_end_cpu_seconds"]
    n = len(wall) - 1 - warmup
    if n < 1:
        raise ValueError("--steps must exceed --warmup + 1")
    return n * batch / (wall[-1] - wall[warmup]), n * batch / (cpu[-1] - cpu[warmup])


def run_method(method: str, data: Path, out: Path, a) -> dict:
    common = [
        "--dataset",
        str(data),
        "--output_dir",
        str(out),
        "--image_size",
        str(a.image_size),
        "--per_device_train_batch_size",
        str(a.batch),
        "--max_steps",
        str(a.steps),
        "--mixed_precision",
        "no",
        "--logging_steps",
        str(a.steps),
        "--checkpointing_steps",
        "0",
        "--figure",
        "off",
        "--overwrite_output_dir",
    ]
    reset_accelerate()
    if method == "mae":
        from genssl_hf.training import mae, mae_model

        preset = a.model if a.model in mae_model.PRESETS else None
        if preset is None:
            return {}
        return mae.pretrain_mae(mae.build_parser().parse_args(common + ["--model", preset]))
    from genssl_hf.training.ssl.pretrain import build_parser, pretrain_ssl

    queue = ["--queue_size", str(a.batch * 16)] if method == "moco_v2" else []
    return pretrain_ssl(build_parser().parse_args(common + ["--method", method, "--model", a.model, *queue]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="4 steps, batch 16")
    a = p.parse_args()
    if a.quick:
        a.steps, a.batch, a.warmup = 4, 16, 1
    torch.set_num_threads(a.threads)
    from genssl_hf.data.phantom import phantom_dataset

    load0 = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        phantom_dataset(max(128, a.batch * (a.steps + 1)), size=a.image_size, seed=0).save_to_disk(str(data))
        for method in METHODS:
            summary = run_method(method, data, Path(tmp) / method, a)
            if not summary:
                continue
            wall, cpu = rates(summary, a.batch, a.warmup)
            results[method] = {"images_per_s": round(wall, 2), "images_per_cpu_s": round(cpu, 2)}
            print(f"{method:9s} {wall:8.2f} img/s  {cpu:8.2f} img per CPU-s", file=sys.stderr, flush=True)
    line = {
        "name": f"ssl_pretraining_images_per_s_{a.model}_{a.image_size}px",
        "value": results.get("simclr", {}).get("images_per_s"),
        "unit": "source images/s (SimCLR; per method in details)",
        "details": {
            "per_method": results,
            "backbone": a.model,
            "image_size": a.image_size,
            "batch": a.batch,
            "steps": a.steps,
            "warmup": a.warmup,
            "threads": a.threads,
            "precision": "fp32",
            "load_average_start": round(load0, 1),
            "load_average_end": round(os.getloadavg()[0], 1),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "script": "bench_ssl_pretraining.py",
        "quick": a.quick,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
