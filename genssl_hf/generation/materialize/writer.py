"""``generate_dataset``: validate, plan, set up the folder, write this process's shards, verify.

Each step is a small function over a :class:`~.job._Job` (everything fixed before any folder is
touched, see :mod:`.job`); the options are one :class:`~.job.GenerationOptions` dataclass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from genssl_hf.utils import (
    FolderLock,
    read_json,
    remove_stale_temps,
    temp_prefix,
    write_json,
)

from .card import push_dataset_to_hub, write_dataset_card
from .generators import _token_overflow, load_generator, to_uint8_gray
from .job import GenerationOptions, GenerationResult, _Job, _plan_job, _Progress
from .layout import (
    _ATOMIC_FILES,
    CONFIG_NAME,
    DATA_DIR,
    INCOMPLETE_DIR,
    VERIFICATION_NAME,
    ShardLayout,
)
from .rows import _PromptRows, _ReportRows
from .shards import (
    _Dist,
    _dist_from,
    _existing_chunks,
    _gaps,
    _has_stored_images,
    _merge_chunks,
    _remove_run_files,
    _table,
    _wait_for_ranks,
    _write_parquet_atomic,
)
from .verify import verify_dataset

__all__ = ["GenerationOptions", "GenerationResult", "generate_dataset"]

logger = logging.getLogger(__name__)


def generate_dataset(
    out_dir: str | os.PathLike,
    generator: Any,
    options: GenerationOptions | None = None,
    *,
    state: Any = None,
    hub_api: Any = None,
    **settings: Any,
) -> GenerationResult:
    """Generate a balanced (``prompts=``) or report-conditioned (``reports=``) dataset into
    ``out_dir`` (see the package doc for layout, determinism, resume). ``generator`` is an
    :class:`ImageGenerator` or a spec for :func:`load_generator`. The options are a
    :class:`GenerationOptions`, or its fields as keywords (which override ``options``' fields).
    ``state`` is an ``accelerate.PartialState`` (or None for one process). All inputs are
    validated before the generator is loaded or any image is made. ``max_images_this_run`` stops
    this process after about that many new images (whole checkpoint chunks); rerun to resume.
    """
    import datasets  # noqa: F401 - fail early if missing

    options = dataclasses.replace(options or GenerationOptions(), **settings)
    dist = _dist_from(state)
    t_start = time.perf_counter()
    job = _plan_job(Path(out_dir), generator, options)
    out = job.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    # One writer per folder: a second run on the same --output_dir stops here, naming the first.
    lock = FolderLock(out, "generated dataset folder") if dist.is_main else None
    if lock is not None:
        lock.acquire()
    fresh = not (out / CONFIG_NAME).is_file() or options.overwrite
    try:
        if lock is not None:  # temporaries of atomic writes a killed run left; nobody else writes here
            remove_stale_temps(out, _ATOMIC_FILES)
        if out.is_dir() and not options.overwrite:
            _check_existing_folder(job)
        token, mine = _set_up_folder(job, dist)
        result, progress = _write_shards(job, mine, dist)
        if progress.stopped_early:
            logger.warning("stopped after %d new images (max_images_this_run); rerun to continue", progress.generated)
            return result
        write_json(out / INCOMPLETE_DIR / f"done-{dist.rank:05d}", {"token": token})
        if dist.is_main:
            _finish(job, result, dist, token, hub_api)
            logger.info(
                "dataset ready at %s (%s) in %.1f s", out, result.verification.summary(), time.perf_counter() - t_start
            )
        return result
    except BaseException:
        # A failure before the first image was stored leaves no trace: the corrected rerun must
        # not be refused as "started with different settings".
        if dist.is_main and fresh and not _has_stored_images(out):
            _remove_run_files(out)
        raise
    finally:
        if lock is not None:
            lock.release()
            if lock.created:
                with contextlib.suppress(OSError):
                    out.rmdir()  # only when empty: the folder was ours and nothing is in it


# ---- the folder: resume checks, set-up, the work list ----------------------------------------

_CONTENT_KEYS = (
    "format_version",
    "mode",
    "num_images",
    "seed",
    "shard_images",
    "height",
    "width",
    "num_inference_steps",
    "guidance_scale",
    "generator_id",
    "prompt_set_hash",
    "corpus_hash",
    "text_column",
    "keep_prompt_text",
    "features",
    "call_kwargs",
    "sampler",  # absent (None) in folders made without one
    "sampler_settings",
)
# Settings a diffusion generator's pixels depend on by float rounding (batched matmuls, thread
# count): checked on resume while images remain to be made, unless the generator is batch-invariant.
_EXACTNESS_KEYS = ("batch_size", "num_threads")


def _batch_invariant(generator: Any) -> bool:
    """Whether the generator's images are bit-identical for any batch size and thread count: the
    phantom world (numpy, one image at a time) and generators that declare ``batch_invariant``.
    A diffusion pipeline is not: batched matmuls change the rounding (see the package doc)."""
    if isinstance(generator, (str, os.PathLike)):
        return os.fspath(generator) == "phantom"
    return bool(getattr(generator, "batch_invariant", False))


def _check_existing_folder(job: _Job) -> None:
    """An existing ``out`` must be this dataset's folder, started with the same settings."""
    out = job.out
    _check_resume(out, job.config, job.layout, job.generator)
    stray = [
        p.name
        for p in out.iterdir()
        if p.name not in {*_ATOMIC_FILES, DATA_DIR, INCOMPLETE_DIR, FolderLock.NAME}
        and not any(p.name.startswith(temp_prefix(n)) for n in _ATOMIC_FILES)
    ]
    if stray and not (out / CONFIG_NAME).is_file():
        raise ValueError(
            f"output folder {out} is not empty and is not a generated dataset ({stray[:5]}); "
            "choose another --output_dir"
        )


def _check_resume(
    out: Path, config: dict[str, Any], layout: "ShardLayout | None" = None, generator: Any = None
) -> None:
    path = out / CONFIG_NAME
    if not path.is_file():
        return
    try:
        old = read_json(path)
    except (OSError, ValueError) as exc:  # written atomically, so only a hand edit gets here
        raise ValueError(f"{path} is not readable JSON ({exc}); use another --output_dir or --overwrite") from None
    diffs = [
        f"{k}: folder has {old.get(k)!r}, this run {config.get(k)!r}"
        for k in _CONTENT_KEYS
        if json.dumps(old.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True)
    ]
    if diffs:
        raise ValueError(
            f"output folder {out} was started with different settings, so resuming would mix two datasets "
            f"({'; '.join(diffs)}). Use another --output_dir, the original settings, or overwrite=True / --overwrite."
        )
    remaining = layout is None or any(not (out / layout.shard_relpath(k)).is_file() for k in range(layout.num_shards))
    if remaining and not _batch_invariant(generator):
        changed_keys = [k for k in _EXACTNESS_KEYS if k in old and old[k] != config.get(k)]
        if changed_keys:
            changed = [f"{k}: folder has {old[k]!r}, this run {config.get(k)!r}" for k in changed_keys]
            raise ValueError(
                f"output folder {out} was started with another {' and '.join(changed_keys)} "
                f"({'; '.join(changed)}). A diffusion generator is bit-exact only at equal batch size and thread "
                "count (otherwise within +-1 grey level in a few pixels), so resuming would mix the two; rerun with "
                "the original values, or use another --output_dir / --overwrite."
            )


def _set_up_folder(job: _Job, dist: _Dist) -> tuple[str, list[int]]:
    """Main process: (re)create the folders and the config, clear stale markers, hand out a run
    token. Then every process lists the shards left and takes its own, round-robin."""
    out, layout = job.out, job.layout
    run_file = out / INCOMPLETE_DIR / "run.json"
    if dist.is_main:
        if job.options.overwrite and out.exists():
            for child in (DATA_DIR, INCOMPLETE_DIR, CONFIG_NAME, VERIFICATION_NAME, "README.md"):
                p = out / child
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        (out / INCOMPLETE_DIR).mkdir(parents=True, exist_ok=True)
        (out / DATA_DIR).mkdir(parents=True, exist_ok=True)
        if not (out / CONFIG_NAME).is_file():
            write_json(out / CONFIG_NAME, job.config)
        # done markers of an earlier run, and shard temporaries a killed run left (no other
        # process writes yet: they wait at the barrier below)
        for stale in [*(out / INCOMPLETE_DIR).glob("done-*"), *(out / INCOMPLETE_DIR).glob(".tmp-*")]:
            stale.unlink(missing_ok=True)
        write_json(run_file, {"token": uuid.uuid4().hex, "world": dist.world})
    dist.barrier()
    token = read_json(run_file)["token"]
    remaining = [k for k in range(layout.num_shards) if not (out / layout.shard_relpath(k)).is_file()]
    dist.barrier()  # nobody finishes a shard before everyone has listed
    mine = remaining[dist.rank :: dist.world]
    logger.info(
        "rank %d/%d: %d of %d shards left in total, %d of them for this process",
        dist.rank,
        dist.world,
        len(remaining),
        layout.num_shards,
        len(mine),
    )
    return token, mine


# ---- this process's shards ---------------------------------------------------------------------


def _write_shards(job: _Job, mine: list[int], dist: _Dist) -> tuple[GenerationResult, _Progress]:
    """Generate and store every shard in ``mine`` (skipping stored chunks); stop early at the
    ``max_images_this_run`` budget."""
    from tqdm.auto import tqdm

    o, layout = job.options, job.layout
    todo_images = 0
    for k in mine:
        s0, s1 = layout.shard_range(k)
        todo_images += (s1 - s0) - sum(b - a for a, b, _ in _existing_chunks(_chunk_dir(job, k), s0, s1))
    gen_obj = None
    if mine:  # loading the generator is the first expensive step
        gen_obj = load_generator(
            job.generator,
            height=job.height,
            width=job.width,
            num_inference_steps=o.steps,
            guidance_scale=o.guidance_scale,
            device=dist.device,
            generator_id=job.generator_id,
            call_kwargs=o.call_kwargs,
            sampler=o.sampler,
        )
    if job.prompt_set:
        source = _PromptRows(job.prompt_set, job.plan, o.seed, job.generator_id)
    else:
        source = _ReportRows(job.corpus, o.seed, job.generator_id, o.keep_prompt_text)
    progress = _Progress()
    bar = tqdm(
        total=todo_images,
        unit="img",
        desc=f"generating [rank {dist.rank}/{dist.world}]",
        disable=not o.progress or not dist.is_main,
        dynamic_ncols=True,
    )
    for k in mine:
        _write_shard(job, k, gen_obj, source, bar, progress)
        if progress.stopped_early:
            break
    bar.close()
    result = GenerationResult(
        job.out, job.num_images, layout.num_shards, progress.generated, progress.t_gen, progress.t_enc, progress.t_write
    )
    return result, progress


def _chunk_dir(job: _Job, k: int) -> Path:
    return job.out / INCOMPLETE_DIR / job.layout.shard_name(k)


def _write_shard(job: _Job, k: int, gen_obj: Any, source: Any, bar: Any, progress: _Progress) -> None:
    """Shard ``k``: its missing checkpoint chunks, then the merge into ``data/`` (a shard made in
    one piece is written straight to its final name)."""
    out, layout, budget = job.out, job.layout, job.options.max_images_this_run
    s0, s1 = layout.shard_range(k)
    final = out / layout.shard_relpath(k)
    cdir = _chunk_dir(job, k)
    done = _existing_chunks(cdir, s0, s1)
    pieces = _gaps(s0, s1, done, layout.rows_per_checkpoint)
    one_piece = not done and len(pieces) == 1
    for a, b in pieces:
        if budget is not None and progress.generated >= budget:
            progress.stopped_early = True
            return
        table = _make_piece(job, gen_obj, source, a, b, bar, progress)
        t0 = time.perf_counter()
        if one_piece:
            _write_parquet_atomic(final, [table], job.features.arrow_schema, tmp_dir=out / INCOMPLETE_DIR)
        else:
            _write_parquet_atomic(cdir / f"rows-{a:012d}-{b:012d}.parquet", [table], job.features.arrow_schema)
        progress.t_write += time.perf_counter() - t0
        progress.generated += b - a
    if not one_piece:
        t0 = time.perf_counter()
        _merge_chunks(cdir, s0, s1, final, job.features.arrow_schema, tmp_dir=out / INCOMPLETE_DIR)
        progress.t_write += time.perf_counter() - t0
    shutil.rmtree(cdir, ignore_errors=True)


def _make_piece(job: _Job, gen_obj: Any, source: Any, a: int, b: int, bar: Any, progress: _Progress) -> Any:
    """Rows ``[a, b)`` as an encoded arrow table: their columns, then images in batches."""
    batch_size = job.options.batch_size
    cols = source.rows(a, b)
    texts = cols.pop("_text", None) or cols["prompt"]
    cols["prompt_tokens_truncated"] = _token_overflow(gen_obj, texts)
    images: list[np.ndarray] = []
    for bs in range(0, b - a, batch_size):
        be = min(bs + batch_size, b - a)
        t0 = time.perf_counter()
        batch = gen_obj(texts[bs:be], cols["seed"][bs:be])
        images.extend(to_uint8_gray(batch, job.height, job.width))
        progress.t_gen += time.perf_counter() - t0
        bar.update(be - bs)
    if len(images) != b - a:
        raise RuntimeError(f"generator returned {len(images)} images for {b - a} prompts")
    t0 = time.perf_counter()
    cols["image"] = images
    encoded = job.features.encode_batch({c: cols[c] for c in job.features})
    table = _table(encoded, job.features.arrow_schema)
    progress.t_enc += time.perf_counter() - t0
    return table


def _finish(job: _Job, result: GenerationResult, dist: _Dist, token: str, hub_api: Any) -> None:
    """Main process: wait for the others (files, not a collective: no timeout on long runs),
    verify, write the card, drop the checkpoint folder, push when asked."""
    out, o = job.out, job.options
    _wait_for_ranks(out, dist.world, token)
    report = verify_dataset(out)
    result.verification = report
    write_json(out / VERIFICATION_NAME, dataclasses.asdict(report))
    if not report.ok:
        raise RuntimeError(f"generated dataset {out} failed verification: {report.summary()}")
    result.card_path = write_dataset_card(out, quality=o.quality)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(out / INCOMPLETE_DIR)
    if o.push_to_hub:
        result.pushed_to = push_dataset_to_hub(out, o.push_to_hub, private=o.private, api=hub_api)
