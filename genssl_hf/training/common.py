"""Shared ``accelerate`` plumbing for every training loop in genssl_hf: the accelerator, seeded
sampling and per-step seeds, the NaN guard, the progress bar, run config, export and the command-line
ending. The shared options live in :mod:`~genssl_hf.training.args`, the optimiser and schedule in
:mod:`~genssl_hf.training.optim`, checkpoints in :mod:`~genssl_hf.training.checkpoints`; the loop
itself is :mod:`~genssl_hf.training.engine` and the recipe around it :mod:`~genssl_hf.training.recipe`.

Small on purpose: building blocks, not a Trainer. A loop built from them looks like::

    parser = argparse.ArgumentParser(); add_common_args(parser); args = parser.parse_args()
    accelerator = make_accelerator(args)
    model, optimizer, loader = accelerator.prepare(model, build_optimizer(model, lr, wd), loader)
    scheduler = cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    accelerator.register_for_checkpointing(scheduler)        # stepped by hand, never prepared
    state = maybe_resume(accelerator, args.resume_from_checkpoint, args.output_dir)
    write_run_config(accelerator, args.output_dir, {...})
    guard = LossGuard(accelerator, args.output_dir)
    bar = TrainProgress(accelerator, total_steps, state, images_per_step)
    for batch in resumable_batches(accelerator, loader, state):
        seed_step(args.seed, state, accelerator)                 # exact, resumable randomness
        with accelerator.accumulate(model):
            loss = ...; accelerator.backward(loss); optimizer.step(); optimizer.zero_grad()
        guard.add(loss)
        if accelerator.sync_gradients:
            scheduler.step(); state.global_step += 1; bar.update()
            if state.global_step % args.checkpointing_steps == 0:
                guard.checkpoint(state, args.checkpoints_total_limit)  # raises on NaN before saving
            if state.global_step >= total_steps: break

Exact resume: the checkpoint holds model, optimiser, scheduler and RNG states (``accelerator.save_state``)
plus ``train_state.json`` (epoch, batches consumed in that epoch, optimiser steps, micro steps).
``resumable_batches`` skips the consumed batches of the interrupted epoch; sampling order is a pure
function of ``(seed, epoch)`` (:class:`EpochShuffleSampler`) and the per-step randomness a pure function of
``(seed, micro_step, process)`` (:func:`seed_step`), so a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from genssl_hf.training.args import check_publish_available
from genssl_hf.training.checkpoints import TrainState, find_last_checkpoint, save_checkpoint
from genssl_hf.utils import normalise_modes, write_json

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "run_config.json"

__all__ = [
    "make_accelerator",
    "EpochShuffleSampler",
    "seed_step",
    "LossGuard",
    "NonFiniteLossError",
    "TrainProgress",
    "write_run_config",
    "save_model_and_processor",
    "release_process_group",
    "is_main_process_env",
    "init_trackers",
    "no_trace_on_early_failure",
    "run_training_command",
]


# --------------------------------------------------------------------------------------------- args
def make_accelerator(args: argparse.Namespace | None = None, **overrides: Any):
    """An ``Accelerator`` from the shared args (precision, accumulation, trackers, project dir).

    ``overrides`` win over ``args`` (e.g. ``cpu=True`` in tests). Trackers are only enabled when
    ``--report_to`` is not ``none``; the logging dir is ``<output_dir>/logs``.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    kw: dict[str, Any] = {}
    if args is not None:
        kw["mixed_precision"] = getattr(args, "mixed_precision", "no")
        kw["gradient_accumulation_steps"] = int(getattr(args, "gradient_accumulation_steps", 1))
        report = getattr(args, "report_to", "none") or "none"
        if report != "none":
            kw["log_with"] = "all" if report == "all" else [r.strip() for r in report.split(",") if r.strip()]
        out = getattr(args, "output_dir", None)
        if out:
            kw["project_config"] = ProjectConfiguration(project_dir=str(out), logging_dir=str(Path(out) / "logs"))
    kw.update(overrides)
    if kw.get("gradient_accumulation_steps", 1) < 1:
        raise ValueError(f"--gradient_accumulation_steps must be >= 1, got {kw['gradient_accumulation_steps']}")
    return Accelerator(**kw)


# -------------------------------------------------------------------------------------- state / rng
def seed_step(seed: int, state: TrainState, accelerator=None) -> int:
    """Seed torch / numpy / random for the next micro batch from ``(seed, micro_step, process)``.

    Augmentation and masking then depend only on the data position, never on how many times the
    process was restarted, and every process draws different crops and masks. Returns the seed.
    """
    rank = accelerator.process_index if accelerator is not None else 0
    s = int(np.random.SeedSequence([int(seed), int(state.micro_step), int(rank)]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    import random

    random.seed(s)
    return s


class EpochShuffleSampler(torch.utils.data.Sampler):
    """Random permutation that is a pure function of ``(seed, epoch)``; call ``set_epoch`` per epoch.

    Unlike ``RandomSampler`` it never touches the global RNG, which keeps resumes exact.
    """

    def __init__(self, data_source_len: int, seed: int = 0, shuffle: bool = True):
        self.n = int(data_source_len)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


# ------------------------------------------------------------------------------------- NaN guard
class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped without saving the bad weights."""


class LossGuard:
    """Accumulates the loss on device (no per-step host sync) and checks it is finite when asked:
    at every log step and before every checkpoint, so a checkpoint never holds NaN weights.

    ``check`` returns the mean loss since the last check (a float) or raises :class:`NonFiniteLossError`
    naming the step range and the last good checkpoint.
    """

    def __init__(self, accelerator, output_dir: str | os.PathLike):
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self._sum: torch.Tensor | None = None
        self._n = 0
        self._since_step = 0

    def add(self, loss: torch.Tensor) -> None:
        value = loss.detach().float()
        self._sum = value if self._sum is None else self._sum + value
        self._n += 1

    def check(self, state: TrainState) -> float | None:
        if self._n == 0:
            return None
        mean = (
            self.accelerator.reduce(self._sum / self._n, reduction="mean")
            if self.accelerator.num_processes > 1
            else self._sum / self._n
        )
        value = float(mean.item())
        if not math.isfinite(value):
            last = find_last_checkpoint(self.output_dir)
            where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
            raise NonFiniteLossError(
                f"training loss became {value} between optimiser steps {self._since_step} and {state.global_step} "
                f"(epoch {state.epoch}); stopping without saving these weights; {where}. "
                "Lower the learning rate, check the input images for NaN/constant values, or use --mixed_precision no."
            )
        self._sum, self._n, self._since_step = None, 0, state.global_step
        state.last_loss = value
        return value

    def checkpoint(self, state: TrainState, total_limit: int | None = None) -> Path:
        """Check the loss (raising on NaN), then :func:`save_checkpoint` into the guard's output
        folder: the one way the training loops save, so no checkpoint holds NaN weights."""
        self.check(state)
        return save_checkpoint(self.accelerator, self.output_dir, state, total_limit)


# ------------------------------------------------------------------------------ progress / logging
class TrainProgress:
    """tqdm bar over optimiser steps (main process only) showing loss, lr and images/s."""

    def __init__(self, accelerator, total_steps: int, state: TrainState, images_per_step: int, desc: str = "train"):
        from tqdm.auto import tqdm

        self.images_per_step = int(images_per_step)
        self.bar = tqdm(
            total=total_steps,
            initial=state.global_step,
            desc=desc,
            unit="step",
            disable=not accelerator.is_local_main_process,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        self._t0 = time.perf_counter()
        self._steps = 0
        self.step_times: list[float] = []  # wall clock at each update, for steady-state throughput
        self.step_cpu_times: list[float] = []  # process CPU time at each update (robust on a shared machine)

    @property
    def images_per_second(self) -> float:
        dt = time.perf_counter() - self._t0
        return self._steps * self.images_per_step / dt if dt > 0 else 0.0

    def steady_images_per_second(self, warmup: int = 2) -> float | None:
        """Throughput over the steps after the first ``warmup`` ones (which carry one-off costs)."""
        t = self.step_times
        warmup = max(1, warmup)
        if len(t) <= warmup:
            return None
        return (len(t) - warmup) * self.images_per_step / (t[-1] - t[warmup - 1])

    def update(self, n: int = 1, **postfix: Any) -> None:
        self._steps += n
        self.step_times.append(time.perf_counter())
        self.step_cpu_times.append(time.process_time())
        self.bar.update(n)
        if postfix or self._steps % 5 == 0:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}
            shown["img/s"] = f"{self.images_per_second:.1f}"
            self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()


def init_trackers(accelerator, project_name: str, config: dict[str, Any]) -> None:
    """Start the trackers chosen by ``--report_to`` with a flat, scalar-only copy of ``config``."""
    if not accelerator.log_with:
        return
    flat = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)) for k, v in config.items()}
    accelerator.init_trackers(project_name, config=flat)


def write_run_config(
    accelerator, output_dir: str | os.PathLike, config: dict[str, Any], name: str = RUN_CONFIG_FILE
) -> Path:
    """Write the resolved run configuration (args + derived values + environment) as JSON, main process only."""
    path = Path(output_dir) / name
    if accelerator.is_main_process:
        import accelerate
        import transformers

        full = dict(config)
        full.setdefault(
            "environment",
            {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "accelerate": accelerate.__version__,
                "num_processes": accelerator.num_processes,
                "device": str(accelerator.device),
                "mixed_precision": accelerator.mixed_precision,
            },
        )
        write_json(path, full)
    return path


def save_model_and_processor(model, processor, out: Path) -> None:
    """Write the model and processor to a temporary folder, then move the files into ``out``."""
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    normalise_modes(tmp)  # transformers 5 writes model.safetensors 0600
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def no_trace_on_early_failure(train: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a training entry point ``train(args, ...)``: it runs holding the writer lock of
    ``args.output_dir`` (a second run into the folder stops at once, naming the first); when it
    fails before anything of value was saved (no ``*.safetensors`` under ``args.output_dir``: no
    checkpoint, no model) in a run that started on an absent or empty output folder, remove what it
    wrote (``run_config.json``, logs, the folder it created), so the corrected command is not
    refused as "not empty"."""
    import contextlib
    import functools

    from ..utils import FolderLock, writer_lock

    @functools.wraps(train)
    def wrapper(args, *a, **kw):
        out = Path(args.output_dir)
        existed = out.exists()
        fresh = not getattr(args, "resume_from_checkpoint", None) and (
            not existed or (out.is_dir() and not any(p.name != FolderLock.NAME for p in out.iterdir()))
        )
        try:
            with writer_lock(out, "--output_dir"):
                try:
                    return train(args, *a, **kw)
                except BaseException:
                    if fresh and is_main_process_env() and out.is_dir() and not any(out.rglob("*.safetensors")):
                        for child in out.iterdir():  # the user's folder stays, emptied
                            if child.name != FolderLock.NAME:
                                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
                    raise
        except BaseException:
            if fresh and not existed and is_main_process_env():
                with contextlib.suppress(OSError):
                    out.rmdir()  # the folder this run created, empty once the lock is gone
            raise

    return wrapper


# ----------------------------------------------------------------------------------------- hub
def is_main_process_env() -> bool:
    """Rank 0 of an ``accelerate launch`` run (or a plain run), read after the Accelerator has ended."""
    return int(os.environ.get("RANK", "0")) == 0


def release_process_group() -> None:
    """Tear the process group down once a command has trained. Left to interpreter shutdown, gloo's
    threads were seen to abort a rank ("terminate called without an active exception") or to hang
    on a loaded 2-core machine, at c456fdf too (tests/test_vlp_loss.py, tests/test_report_generation.py)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_training_command(train, args: argparse.Namespace, publish, kind: str, summary_keys: Iterable[str]) -> int:
    """The command-line ending every pre-training entry point shares: check that a publisher exists
    when ``--push_to_hub`` asks for one, train, then publish the output folder (rank 0 only) and print
    the summary. Exit code 3 on a non-finite loss (the last good checkpoint is kept)."""
    check_publish_available(args, publish)
    try:
        summary = train(args)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        release_process_group()
    if args.push_to_hub and is_main_process_env():
        summary["hub_url"] = publish(kind, args.output_dir, args.hub_model_id)
    print({k: summary.get(k) for k in summary_keys})
    return 0
