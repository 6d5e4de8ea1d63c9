"""The command line of ``scripts/generate_dataset.py`` (``python -m genssl_hf.generation.materialize``)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

from genssl_hf.core.secrets import redact_argv
from genssl_hf.utils import PRETRAINED_PREFIX, pretrained_path, read_json
from genssl_hf.typed_args import TypedArgumentParser, hidden_aliases
from genssl_hf.validation import checked_parser, renamed_options

from genssl_hf.generation.schedulers import GENERATION_PRESETS

from .generators import check_generator_spec
from .layout import DEFAULT_ROWS_PER_CHECKPOINT, DEFAULT_SHARD_SIZE
from .shards import _Dist, _dist_from
from .job import GenerationOptions
from .writer import generate_dataset


@dataclass(kw_only=True)
class GenerateArguments:
    """What to generate from: the pipeline, the prompt set or report corpus, how many, where."""

    _argument_group_name = "source and output"
    pipeline: str = field(metadata={"help": "diffusers pipeline folder, 'phantom', or 'package.module:factory'"})
    prompts: str | None = field(
        default=None, metadata={"help": "prompt set: shipped name (disease/heuristic/elaborated), folder, or JSON file"}
    )
    reports: str | None = field(
        default=None,
        metadata={
            "help": "report corpus (one image per report): save_to_disk folder, dataset folder, parquet/json(l)/csv"
        },
    )
    report_column: str = field(default="report", metadata={"help": "text column of the report corpus"})
    keep_prompt_text: bool = field(
        default=False, metadata={"help": "report mode: also publish the report text (default: only its SHA-256)"}
    )
    num_images: int | None = field(
        default=None, metadata={"help": "N images (required with --prompts; default all reports)"}
    )
    output_dir: str = field(metadata={"help": "output folder (rerun the same command to resume)"})
    overwrite: bool = field(
        default=False, metadata={"help": "delete an existing output folder's content and start over"}
    )

    def __post_init__(self):
        if (self.prompts is None) == (self.reports is None):
            raise ValueError("give exactly one of --prompts and --reports")


@dataclass(kw_only=True)
class SamplingArguments:
    """The pipeline call: batch, steps, guidance, size, seed, extra keyword arguments."""

    _argument_group_name = "sampling"
    batch_size: int = field(default=8, metadata={"help": "images per pipeline call"})
    sampler: str | None = field(
        default=None,
        metadata={
            "help": "sampling preset of a diffusion pipeline folder (default: the folder's own scheduler)",
            "choices": sorted(GENERATION_PRESETS),
        },
    )
    num_inference_steps: int | None = field(
        default=None, metadata={"help": "inference steps (default: the --sampler preset's, else 50)"}
    )
    guidance_scale: float = field(default=7.0, metadata={"help": "classifier-free guidance scale"})
    image_size: int | None = field(
        default=None, metadata={"help": "square output size in px (default: the pipeline's)"}
    )
    height: int | None = field(default=None, metadata={"help": "output height in px"})
    width: int | None = field(default=None, metadata={"help": "output width in px"})
    seed: int = field(default=0, metadata={"help": "global seed; image i uses a seed derived from (seed, i)"})
    pipeline_kwargs: str | None = field(
        default=None, metadata={"help": "JSON object of extra keyword arguments for the pipeline call"}
    )
    generator_id: str | None = field(
        default=None, metadata={"help": "generator id stored in every row (default: folder name @ content hash)"}
    )


@dataclass(kw_only=True)
class DatasetWriteArguments:
    """The written dataset: shards, checkpoints, card, Hub upload, progress."""

    _argument_group_name = "dataset"
    shard_size: str = field(
        default=str(DEFAULT_SHARD_SIZE),
        metadata={"help": "images per shard (e.g. 1000) or bytes (e.g. 256MB, default)"},
    )
    rows_per_checkpoint: int = field(
        default=DEFAULT_ROWS_PER_CHECKPOINT,
        metadata={"help": "images per crash-safe checkpoint chunk (and parquet row group)"},
    )
    license: str = field(default="other", metadata={"help": "license in the dataset card"})
    quality_json: str | None = field(
        default=None, metadata={"help": "JSON file of image-quality numbers (FID, similarity) for the card"}
    )
    push_to_hub: str | None = field(
        default=None, metadata={"metavar": "REPO", "help": "upload the finished dataset to this Hub dataset repo"}
    )
    public: bool = field(default=False, metadata={"help": "create the Hub repo public (default: private)"})
    max_images_this_run: int | None = field(
        default=None, metadata={"help": "stop each process after about this many new images (resume later)"}
    )
    no_progress: bool = field(default=False, metadata={"help": "no progress bar"})


# Spellings before the options used underscores and transformers' / diffusers' names.
RENAMED_OPTIONS = {"--out": "--output_dir", "--steps": "--num_inference_steps", "--guidance": "--guidance_scale"}
OLD_SPELLINGS = {
    f"--{name.replace('_', '-')}": f"--{name}"
    for name in (
        "report_column",
        "keep_prompt_text",
        "num_images",
        "batch_size",
        "image_size",
        "shard_size",
        "rows_per_checkpoint",
        "generator_id",
        "pipeline_kwargs",
        "quality_json",
        "push_to_hub",
        "max_images_this_run",
        "no_progress",
    )
}


def build_parser() -> TypedArgumentParser:
    p = TypedArgumentParser(
        [GenerateArguments, SamplingArguments, DatasetWriteArguments],
        prog="genssl generate",
        description="Generate chest X-rays with a text-to-image pipeline into a sharded, resumable Hugging Face "
        "dataset (parquet + card). Run under `accelerate launch` to split the work over processes.",
    )
    renamed_options(p, RENAMED_OPTIONS)
    return hidden_aliases(checked_parser(p), OLD_SPELLINGS)


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
        raise SystemExit("give --image_size or --height/--width, not both")
    height = args.height or args.image_size
    width = args.width or args.image_size
    try:
        call_kwargs = json.loads(args.pipeline_kwargs) if args.pipeline_kwargs else None
    except ValueError as e:
        raise SystemExit(f"--pipeline_kwargs {args.pipeline_kwargs!r} is not valid JSON ({e})") from None
    if call_kwargs is not None and not isinstance(call_kwargs, dict):
        raise SystemExit("--pipeline_kwargs must be a JSON object")
    quality = read_json(args.quality_json) if args.quality_json else None
    if quality is not None and not isinstance(quality, dict):
        raise SystemExit("--quality_json must hold a JSON object")
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
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        sampler=args.sampler,
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
    result = generate_dataset(args.output_dir, args.pipeline, options, state=state)
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
