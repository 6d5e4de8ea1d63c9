#!/usr/bin/env python
"""Bit-exact final-weight hashes of tiny CPU runs of every trainer, to prove a refactor kept behaviour.

Each trainer runs once, in its own subprocess, on the package's phantom data with tiny settings
(a few optimiser steps, seconds each) into a fresh temporary folder; the harness then hashes the
saved final weights: every ``*.safetensors`` under the output folder except ``checkpoints/`` and
``checkpoint-*/``, sorted by relative path, each tensor's name + dtype + shape + raw bytes (loaded
with ``safetensors.torch.load_file``, so file metadata does not count).

    python benchmarks/bitexact_hashes.py --out /tmp/hashes.json              # all runs, write JSON
    python benchmarks/bitexact_hashes.py --compare /tmp/hashes.json          # exit 1 if any hash differs
    python benchmarks/bitexact_hashes.py --only mae,finetune --compare FILE  # a subset (dependencies run too)

Run it from the root of the checkout under test (its ``genssl_hf`` is the one imported: the harness
puts the checkout first on PYTHONPATH and checks it). Every subprocess gets one CPU thread, no GPU
and the offline switches, so the same commit gives the same hashes run to run.
Bit-exactness holds for one machine and one environment: the hashes change with the CPU thread
count (measured: 2 threads change 5 of the 6), the torch version and the CPU's kernels, so compare
only against a file written on the same machine with the same virtualenv.

A refactor that renames command-line flags edits only COMMANDS below. Placeholders in an argv:
``{out}`` the run's output folder, ``{data}`` the phantom image folder (``save_to_disk``) built
once per harness run, ``{out:NAME}`` the output folder of run NAME (it runs first).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ============================================================================================
# COMMANDS: name -> argv (after the Python interpreter). Edit ONLY this table when flags change.
# ============================================================================================
COMMANDS: dict[str, list[str]] = {
    # MAE pre-training: tiny ViT-MAE, 32 px, 5 optimiser steps of 2 x 8 images, bf16 autocast.
    "mae": [
        "scripts/pretrain_mae.py",
        "--model",
        "tiny",
        "--image_size",
        "32",
        "--patch_size",
        "8",
        "--dataset",
        "{data}",
        "--output_dir",
        "{out}",
        "--per_device_train_batch_size",
        "8",
        "--gradient_accumulation_steps",
        "2",
        "--mixed_precision",
        "bf16",
        "--max_steps",
        "5",
        "--logging_steps",
        "1",
        "--checkpointing_steps",
        "0",
        "--figure",
        "off",
        "--seed",
        "0",
    ],
    # SimCLR on the tiny ViT: 4 steps of 8 images.
    "simclr": [
        "scripts/pretrain.py",
        "--method",
        "simclr",
        "--model",
        "tiny",
        "--image_size",
        "32",
        "--patch_size",
        "8",
        "--dataset",
        "{data}",
        "--output_dir",
        "{out}",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "4",
        "--logging_steps",
        "1",
        "--mixed_precision",
        "no",
        "--checkpointing_steps",
        "0",
        "--figure",
        "off",
        "--seed",
        "0",
    ],
    # MoCo v2 on the tiny ViT (momentum key encoder + queue of 64): 4 steps of 8 images.
    "moco_v2": [
        "scripts/pretrain.py",
        "--method",
        "moco_v2",
        "--model",
        "tiny",
        "--image_size",
        "32",
        "--patch_size",
        "8",
        "--dataset",
        "{data}",
        "--output_dir",
        "{out}",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "4",
        "--logging_steps",
        "1",
        "--mixed_precision",
        "no",
        "--queue_size",
        "64",
        "--checkpointing_steps",
        "0",
        "--figure",
        "off",
        "--seed",
        "0",
    ],
    # Fine-tuning from the MAE run's folder on phantoms (48 train / 24 val / 24 test, 32 px):
    # 2 epochs of 3 steps of 16 images.
    "finetune": [
        "scripts/finetune.py",
        "--model",
        "{out:mae}",
        "--dataset",
        "phantom",
        "--phantom_sizes",
        "48",
        "24",
        "24",
        "--phantom_resolution",
        "32",
        "--image_size",
        "32",
        "--num_train_epochs",
        "2",
        "--warmup_epochs",
        "1",
        "--per_device_train_batch_size",
        "16",
        "--base_learning_rate",
        "1e-3",
        "--n_bootstrap",
        "10",
        "--output_dir",
        "{out}",
        "--mixed_precision",
        "no",
        "--checkpointing_steps",
        "0",
        "--logging_steps",
        "1",
        "--seed",
        "0",
    ],
    # VLP (ConVIRT loss): tiny ViT image tower + random 2-layer BERT text tower, 32 phantom pairs, 4 steps of 8.
    "vlp": [
        "scripts/pretrain_vlp.py",
        "--pairs",
        "phantom:32",
        "--model",
        "tiny",
        "--image_size",
        "32",
        "--text_tower",
        "tiny-bert",
        "--loss",
        "convirt",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "4",
        "--learning_rate",
        "1e-3",
        "--warmup_ratio",
        "0.25",
        "--num_threads",
        "1",
        "--output_dir",
        "{out}",
        "--mixed_precision",
        "no",
        "--checkpointing_steps",
        "0",
        "--logging_steps",
        "1",
        "--figure",
        "off",
        "--seed",
        "0",
    ],
    # Report generator: the MAE run's encoder + first MiniLM layer as decoder, 32 phantom pairs, 4 steps of 4.
    "report_generator": [
        "scripts/train_report_generator.py",
        "--model",
        "{out:mae}",
        "--decoder_layers",
        "1",
        "--image_size",
        "32",
        "--dataset",
        "phantom:32",
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "4",
        "--output_dir",
        "{out}",
        "--mixed_precision",
        "no",
        "--checkpointing_steps",
        "0",
        "--logging_steps",
        "1",
        "--seed",
        "0",
    ],
}

# The phantom image folder behind {data}: genssl_hf.data.phantom.phantom_dataset(N, size=SIZE, seed=SEED).
PHANTOM_DATA = {"num_samples": 32, "size": 48, "seed": 1}
RUN_TIMEOUT_S = 300
# ============================================================================================

_DEP = re.compile(r"\{out:([A-Za-z0-9_\-]+)\}")


def deterministic_env(tmp_root: Path) -> dict[str, str]:
    """One CPU thread everywhere, no GPU, offline, this checkout first on the path, a private datasets cache."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "",
            "ACCELERATE_USE_CPU": "yes",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp_root / "hf_datasets_cache"),
            "WANDB_MODE": "disabled",
            "MPLBACKEND": "Agg",
        }
    )
    for k in ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_CONFIG_FILE"):
        env.pop(k, None)
    return env


def deps(name: str) -> list[str]:
    return sorted({d for a in COMMANDS[name] for d in _DEP.findall(a)})


def run_order(names: list[str]) -> list[str]:
    """``names`` plus their dependencies, each after what it needs."""
    order: list[str] = []

    def visit(n: str, stack: tuple[str, ...] = ()) -> None:
        if n not in COMMANDS:
            raise SystemExit(f"unknown run {n!r}: choose from {', '.join(COMMANDS)}")
        if n in stack:
            raise SystemExit(f"dependency cycle: {' -> '.join(stack + (n,))}")
        for d in deps(n):
            visit(d, stack + (n,))
        if n not in order:
            order.append(n)

    for n in names:
        visit(n)
    return order


def weight_files(folder: Path) -> list[Path]:
    """Every *.safetensors under ``folder``, not inside checkpoints/ or checkpoint-*/, sorted by relative path."""
    files = []
    for p in folder.rglob("*.safetensors"):
        rel = p.relative_to(folder)
        if any(part == "checkpoints" or part.startswith("checkpoint-") for part in rel.parts[:-1]):
            continue
        files.append(rel)
    return sorted(files, key=lambda r: r.as_posix())


def hash_weights(folder: Path) -> tuple[str, dict[str, str]]:
    """(sha256 over all files, {relative path: sha256 of that file}); tensors hashed by name, dtype, shape, bytes."""
    import torch
    from safetensors.torch import load_file

    total = hashlib.sha256()
    per_file = {}
    for rel in weight_files(folder):
        h = hashlib.sha256()
        tensors = load_file(str(folder / rel))
        for key in sorted(tensors):
            t = tensors[key]
            h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        per_file[rel.as_posix()] = h.hexdigest()
        total.update(f"{rel.as_posix()}\0{h.hexdigest()}\n".encode())
    return total.hexdigest(), per_file


def check_import(env: dict[str, str]) -> None:
    res = subprocess.run(
        [sys.executable, "-c", "import genssl_hf; print(genssl_hf.__file__)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    where = Path(res.stdout.strip()).resolve()
    if ROOT not in where.parents:
        raise SystemExit(f"genssl_hf resolves to {where}, not to this checkout {ROOT}")
    print(f"genssl_hf: {where}", flush=True)


def make_phantoms(path: Path, env: dict[str, str]) -> None:
    code = (
        "import sys; from genssl_hf.data.phantom import phantom_dataset; "
        f"phantom_dataset({PHANTOM_DATA['num_samples']}, size={PHANTOM_DATA['size']}, seed={PHANTOM_DATA['seed']})"
        ".save_to_disk(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, env=env, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help=f"comma-separated runs (default all: {','.join(COMMANDS)})")
    ap.add_argument("--out", default=None, help="write the hashes JSON here")
    ap.add_argument("--compare", default=None, help="JSON from an earlier --out: exit 1 if any hash differs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed) for inspection")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(COMMANDS)
    order = run_order(names)
    t_start = time.time()
    tmp_root = Path(tempfile.mkdtemp(prefix="bitexact_"))
    results: dict[str, dict] = {}
    try:
        env = deterministic_env(tmp_root)
        check_import(env)
        data = tmp_root / "phantoms"
        if any("{data}" in a for n in order for a in COMMANDS[n]):
            make_phantoms(data, env)
        outs: dict[str, Path] = {}
        for name in order:
            out = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=tmp_root))
            outs[name] = out
            template = COMMANDS[name]
            cmd = [a.replace("{out}", str(out)).replace("{data}", str(data)) for a in template]
            cmd = [_DEP.sub(lambda m: str(outs[m.group(1)]), a) for a in cmd]
            t0 = time.time()
            res = subprocess.run(
                [sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
            )
            if res.returncode != 0:
                sys.stderr.write(res.stdout[-4000:] + res.stderr[-6000:])
                raise SystemExit(f"run {name} failed (exit {res.returncode}): {' '.join(cmd)}")
            digest, per_file = hash_weights(out)
            if not per_file:
                raise SystemExit(f"run {name} saved no *.safetensors in {out}")
            if name in names:
                results[name] = {
                    "sha256": digest,
                    "files": list(per_file),
                    "command": template,
                    "file_sha256": per_file,
                }
            print(f"{name:18s} {digest[:12]}  {time.time() - t0:5.1f}s  {len(per_file)} file(s)", flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp_root}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    print(f"wall time {time.time() - t_start:.1f}s", flush=True)

    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.compare:
        ref = json.loads(Path(args.compare).read_text())
        differ = [n for n in results if n not in ref or ref[n]["sha256"] != results[n]["sha256"]]
        if differ:
            for n in differ:
                old = ref.get(n, {}).get("sha256", "<missing>")
                print(f"DIFFERS {n}: {old[:12]} -> {results[n]['sha256'][:12]}")
                old_files = ref.get(n, {}).get("file_sha256", {})
                for f, h in results[n]["file_sha256"].items():
                    if old_files.get(f) != h:
                        print(f"    {f}")
            print(f"{len(differ)} of {len(results)} differ: {','.join(differ)}")
            return 1
        print(f"all {len(results)} equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
