"""The command line of ``scripts/generate_dataset.py`` (``python -m genssl_hf.generation.materialize``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from genssl_hf.utils import PRETRAINED_PREFIX, pretrained_path, read_json
from genssl_hf.core.secrets import redact_argv
from genssl_hf.validation import checked_parser

from .generators import check_generator_spec
from .layout import DEFAULT_ROWS_PER_CHECKPOINT, DEFAULT_SHARD_SIZE
from .shards import _Dist, _dist_from
from .job import GenerationOptions
from .writer import generate_dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="generate_dataset.py",
        description="Generate chest X-rays with a text-to-image pipeline into a sharded, resumable Hugging Face "
        "dataset (parquet + card). Run under `accelerate launch` to split the work over processes.",
    )
    p.add_argument(
        "--pipeline", required=True, help="diffusers pipeline folder, 'phantom', or 'package.module:factory'"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompt set: shipped name (disease/heuristic/elaborated), folder, or JSON file")
    src.add_argument(
        "--reports",
        help="report corpus (one image per report): save_to_disk folder, dataset folder, parquet/json(l)/csv",
    )
    p.add_argument("--report-column", default="report", help="text column of the report corpus (default: report)")
    p.add_argument(
        "--keep-prompt-text",
        action="store_true",
        help="report mode: also publish the report text (default: only its SHA-256)",
    )
    p.add_argument(
        "--num-images", type=int, default=None, help="N images (required with --prompts; default all reports)"
    )
    p.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=50, help="inference steps")
    p.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance scale")
    p.add_argument("--image-size", type=int, default=None, help="square output size in px (default: the pipeline's)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="global seed; image i uses a seed derived from (seed, i)")
    p.add_argument(
        "--shard-size", default=DEFAULT_SHARD_SIZE, help="images per shard (e.g. 1000) or bytes (e.g. 256MB, default)"
    )
    p.add_argument(
        "--rows-per-checkpoint",
        type=int,
        default=DEFAULT_ROWS_PER_CHECKPOINT,
        help="images per crash-safe checkpoint chunk (and parquet row group)",
    )
    p.add_argument(
        "--generator-id", default=None, help="generator id stored in every row (default: folder name @ content hash)"
    )
    p.add_argument(
        "--pipeline-kwargs", default=None, help="JSON object of extra keyword arguments for the pipeline call"
    )
    p.add_argument("--license", default="other", help="license in the dataset card (default: other)")
    p.add_argument(
        "--quality-json", default=None, help="JSON file of image-quality numbers (FID, similarity) for the card"
    )
    p.add_argument(
        "--push-to-hub", default=None, metavar="REPO", help="upload the finished dataset to this Hub dataset repo"
    )
    p.add_argument("--public", action="store_true", help="create the Hub repo public (default: private)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing output folder's content and start over")
    p.add_argument(
        "--max-images-this-run",
        type=int,
        default=None,
        help="stop each process after about this many new images (resume later)",
    )
    p.add_argument("--no-progress", action="store_true")
    return checked_parser(p)


def _launch_state() -> Any:
    """``accelerate.PartialState`` under a multi-process launch; a plain single-process context
    otherwise (so an in-process call never pins accelerate's global state for later code)."""
    from accelerate.utils import parse_flag_from_env

    use_cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("LOCAL_RANK") is not None
    if launched:
        from accelerate import PartialState

        # PartialState (unlike Accelerator) does not read ACCELERATE_USE_CPU itself; without it a
        # CPU-only multi-process launch would run as N independent single processes.
        return PartialState(cpu=use_cpu)
    device = None
    if not use_cpu:
        import torch

        device = torch.device("cuda") if torch.cuda.is_available() else None
    return _Dist(device=device)


def dist_is_main(state: Any) -> bool:
    return _dist_from(state).is_main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("genssl_hf").setLevel(logging.INFO)
    if args.image_size is not None and (args.height or args.width):
        raise SystemExit("give --image-size or --height/--width, not both")
    height = args.height or args.image_size
    width = args.width or args.image_size
    try:
        call_kwargs = json.loads(args.pipeline_kwargs) if args.pipeline_kwargs else None
    except ValueError as e:
        raise SystemExit(f"--pipeline-kwargs {args.pipeline_kwargs!r} is not valid JSON ({e})") from None
    if call_kwargs is not None and not isinstance(call_kwargs, dict):
        raise SystemExit("--pipeline-kwargs must be a JSON object")
    quality = read_json(args.quality_json) if args.quality_json else None
    if quality is not None and not isinstance(quality, dict):
        raise SystemExit("--quality-json must hold a JSON object")
    # Validate before starting processes' collective state (cheap; generate_dataset re-checks).
    if args.pipeline and str(args.pipeline).startswith(
        PRETRAINED_PREFIX
    ):  # a shipped name, e.g. genssl_hf/phantom-ldm-64
        try:
            args.pipeline = str(pretrained_path(args.pipeline))
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"--pipeline: {e}") from None
    check_generator_spec(args.pipeline)
    state = _launch_state()
    options = GenerationOptions(
        prompts=args.prompts,
        reports=args.reports,
        report_column=args.report_column,
        num_images=args.num_images,
        seed=args.seed,
        batch_size=args.batch_size,
        shard_size=int(args.shard_size) if str(args.shard_size).isdigit() else args.shard_size,
        rows_per_checkpoint=args.rows_per_checkpoint,
        height=height,
        width=width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator_id=args.generator_id,
        call_kwargs=call_kwargs,
        keep_prompt_text=args.keep_prompt_text,
        license=args.license,
        quality=quality,
        push_to_hub=args.push_to_hub,
        private=not args.public,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        command=" ".join([Path(sys.argv[0]).name, *redact_argv(argv if argv is not None else sys.argv[1:])]),
        max_images_this_run=args.max_images_this_run,
    )
    result = generate_dataset(args.out, args.pipeline, options, state=state)
    if dist_is_main(state):
        msg = {
            "out": str(result.out_dir),
            "num_images": result.num_images,
            "num_shards": result.num_shards,
            "generated_by_main_process": result.generated,
            "verification": result.verification.summary() if result.verification else "not run (stopped early)",
            "encode_write_share": round(result.write_share, 4),
            "pushed_to": result.pushed_to,
        }
        print(json.dumps(msg))
        if result.verification:
            print(f"open it with: datasets.load_dataset({str(result.out_dir)!r}, split='train')")
    return 0
