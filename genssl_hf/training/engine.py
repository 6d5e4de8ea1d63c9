"""The shared ``accelerate`` training engine: the loop written once, from the blocks in
:mod:`genssl_hf.training.common`.

A loop is a :class:`TrainingTask` (``batch -> loss``, plus optional hooks) run by :class:`Engine`::

    engine = Engine(accelerator, EngineConfig(output_dir=out, total_steps=1000, seed=0, ...))
    model, optimizer = engine.prepare(model, optimizer, scheduler)   # loader: prepared by its builder
    state = engine.resume(resume_from)                               # exact resume (or a fresh state)
    result = engine.run(task, model, optimizer, scheduler, loader, state)

What the engine owns, for every task: gradient accumulation (``accelerator.accumulate``), bf16 / fp16
autocast, gradient clipping, the per-step lr schedule, the NaN guard (:class:`LossGuard`: checked at
every log step and before every checkpoint), checkpoints every K optimiser steps with exact resume
(per-step seeds from :func:`seed_step`, batches skipped by :func:`resumable_batches`), trackers
(``accelerator.log``), a progress bar with images/s, a time box (``stop_after_steps``) and a summary.

What a task owns: how a batch becomes a loss (views, heads, loss), per-step metrics (returned as
detached tensors and averaged on device between log steps, so no host sync per step), what happens
after an optimiser step (a momentum update), and optional periodic evaluation (kNN accuracy).
MAE pre-training and fine-tuning can move onto it by writing their step as a task.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from genssl_hf.training.common import (
    LossGuard,
    TrainProgress,
    TrainState,
    maybe_resume,
    resumable_batches,
    seed_step,
)

__all__ = ["EngineConfig", "TrainingTask", "Engine", "EngineResult"]


@dataclasses.dataclass
class EngineConfig:
    """Loop settings (the shared CLI options of :func:`~genssl_hf.training.common.add_common_args`).

    ``images_per_micro_batch``: images one process consumes per micro batch (for images/s and
    ``state.images_seen``). ``eval_steps``: call the task's ``periodic`` hook every K optimiser steps.
    """

    output_dir: str | os.PathLike
    total_steps: int
    images_per_micro_batch: int
    seed: int = 0
    max_grad_norm: float = 0.0
    logging_steps: int = 10
    checkpointing_steps: int = 0
    checkpoints_total_limit: int | None = 2
    stop_after_steps: int | None = None
    eval_steps: int = 0
    desc: str = "train"

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.images_per_micro_batch < 1:
            raise ValueError(f"images_per_micro_batch must be >= 1, got {self.images_per_micro_batch}")
        if self.logging_steps < 1:
            raise ValueError(f"logging_steps must be >= 1, got {self.logging_steps}")


class TrainingTask(Protocol):
    """What the engine asks of a method. Only ``training_step`` is required."""

    def training_step(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (scalar tensor) and detached per-step metrics for one micro batch (already on device)."""

    # optional:
    # def after_optimizer_step(self, model: torch.nn.Module, state: TrainState, total_steps: int) -> None
    # def periodic(self, model: torch.nn.Module, state: TrainState) -> dict[str, float]


@dataclasses.dataclass
class EngineResult:
    state: TrainState
    interrupted: bool
    summary: dict[str, Any]
    history: list[dict[str, float]]


class _MetricMeter:
    """Sums detached metric tensors on device; ``mean()`` syncs once per log step (all processes)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            self.sums[k] = v if k not in self.sums else self.sums[k] + v
        self.n += 1

    def mean(self) -> dict[str, float]:
        if not self.n:
            return {}
        keys = sorted(self.sums)
        stacked = torch.stack([self.sums[k] / self.n for k in keys])
        if self.accelerator.num_processes > 1:
            stacked = self.accelerator.reduce(stacked, reduction="mean")
        self.sums, self.n = {}, 0
        return dict(zip(keys, (float(v) for v in stacked.cpu())))


class Engine:
    """Runs a :class:`TrainingTask` with everything a training loop needs (see the module doc)."""

    def __init__(self, accelerator, config: EngineConfig):
        self.accelerator = accelerator
        self.config = config
        self.output_dir = Path(config.output_dir)

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler=None):
        """``accelerator.prepare`` the model and optimiser; the scheduler is registered for
        checkpointing and stepped by the engine once per optimiser step (never prepared: accelerate
        would step it once per process)."""
        model, optimizer = self.accelerator.prepare(model, optimizer)
        if scheduler is not None:
            self.accelerator.register_for_checkpointing(scheduler)
        return model, optimizer

    def resume(self, resume_from: str | None) -> TrainState:
        """The checkpoint's state loaded into the prepared objects (``'latest'`` or a folder), or a fresh one."""
        return maybe_resume(self.accelerator, resume_from, self.output_dir)

    def run(self, task: TrainingTask, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            loader, state: TrainState, *, on_log: Callable[[int, dict[str, float]], None] | None = None) -> EngineResult:
        """Train until ``total_steps`` optimiser steps (or ``stop_after_steps`` more, then report
        ``interrupted``). Raises :class:`~genssl_hf.training.common.NonFiniteLossError` on a NaN loss
        before anything is saved."""
        acc, cfg = self.accelerator, self.config
        guard = LossGuard(acc, self.output_dir)
        meter = _MetricMeter(acc)
        accumulation = acc.gradient_accumulation_steps
        images_per_step = cfg.images_per_micro_batch * acc.num_processes * accumulation
        bar = TrainProgress(acc, cfg.total_steps, state, images_per_step, desc=cfg.desc)
        history: list[dict[str, float]] = list(state.extra.get("history", []))
        unwrapped = acc.unwrap_model(model)
        after_step = getattr(task, "after_optimizer_step", None)
        periodic = getattr(task, "periodic", None)
        model.train()
        interrupted = False
        start_step = state.global_step
        t0 = time.perf_counter()
        if state.global_step < cfg.total_steps:
            for batch in resumable_batches(acc, loader, state):
                seed_step(cfg.seed, state, acc)  # views / masks: a pure function of (seed, micro step, process)
                with acc.accumulate(model):
                    with acc.autocast():
                        loss, metrics = task.training_step(model, batch)
                    acc.backward(loss)
                    if cfg.max_grad_norm and acc.sync_gradients:
                        acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                guard.add(loss)
                meter.add(metrics)
                state.images_seen += cfg.images_per_micro_batch * acc.num_processes
                if not acc.sync_gradients:
                    continue
                if scheduler is not None:
                    scheduler.step()
                state.global_step += 1
                step = state.global_step
                if after_step is not None:
                    after_step(unwrapped, state, cfg.total_steps)
                logs: dict[str, float] = {}
                if step % cfg.logging_steps == 0 or step == cfg.total_steps:
                    logs["train/loss"] = guard.check(state)
                    logs.update({f"train/{k}": v for k, v in meter.mean().items()})
                    if scheduler is not None:
                        logs["train/lr"] = float(scheduler.get_last_lr()[0])
                    logs["train/images_per_s"] = bar.images_per_second
                    logs["train/epoch"] = float(state.epoch)
                if periodic is not None and cfg.eval_steps and (step % cfg.eval_steps == 0 or step == cfg.total_steps):
                    logs.update(periodic(unwrapped, state))
                    model.train()
                if logs:
                    acc.log(logs, step=step)
                    history.append({"step": step, **logs})
                    state.extra["history"] = history
                    if on_log is not None:
                        on_log(step, logs)
                    shown = {k.split("/", 1)[1]: v for k, v in logs.items()
                             if k in ("train/loss", "train/lr", "train/embedding_std", "eval/knn_accuracy")}
                    bar.update(1, **shown)
                else:
                    bar.update(1)
                if cfg.checkpointing_steps and step % cfg.checkpointing_steps == 0 and step < cfg.total_steps:
                    guard.checkpoint(state, cfg.checkpoints_total_limit)
                if step >= cfg.total_steps:
                    break
                if cfg.stop_after_steps is not None and step - start_step >= cfg.stop_after_steps:
                    interrupted = True
                    break
        guard.check(state)
        bar.close()
        elapsed = time.perf_counter() - t0
        steps_done = state.global_step - start_step
        summary = {
            "global_step": state.global_step,
            "total_steps": cfg.total_steps,
            "final_loss": state.last_loss,
            "images_per_second": steps_done * images_per_step / elapsed if elapsed > 0 and steps_done else None,
            "images_per_second_steady": bar.steady_images_per_second(min(2, max(1, len(bar.step_times) - 1))),
            "train_seconds": elapsed,
            "step_end_seconds": [round(t - bar.step_times[0], 4) for t in bar.step_times] if bar.step_times else [],
            "step_end_cpu_seconds": [round(t - bar.step_cpu_times[0], 4) for t in bar.step_cpu_times] if bar.step_cpu_times else [],
            "interrupted": interrupted,
        }
        return EngineResult(state=state, interrupted=interrupted, summary=summary, history=history)
