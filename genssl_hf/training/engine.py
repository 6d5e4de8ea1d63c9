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
detached tensors and averaged on device between log steps, so no host sync per step), and optional
hooks: inputs made outside autocast (augmentation, frozen encoders), which parts of the model train
(a linear probe keeps its frozen encoder in eval mode), a second optimiser's step (a GAN
discriminator), what happens after an optimiser step (a momentum update), and periodic evaluation
(kNN accuracy, validation with best-model selection). Every training loop of the package runs on it:
MAE (:mod:`~genssl_hf.training.mae`), fine-tuning (:mod:`~genssl_hf.training.finetune`), the SSL
methods, VLP, report generation, and the generator's autoencoder and LDM
(:mod:`~genssl_hf.training.generator`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from genssl_hf.training.checkpoints import TrainState, maybe_resume, resumable_batches
from genssl_hf.training.common import LossGuard, TrainProgress, seed_step

__all__ = ["EngineConfig", "TrainingTask", "Engine", "EngineResult"]


@dataclasses.dataclass
class EngineConfig:
    """Loop settings (the shared CLI options of :func:`~genssl_hf.training.args.add_common_args`).

    ``images_per_micro_batch``: images one process consumes per micro batch (for images/s and
    ``state.images_seen``). ``eval_steps``: call the task's ``periodic`` hook every K optimiser steps
    (and at the last one); an evaluation step is also a log step, so the NaN guard runs before it.
    ``checkpoint_at_end``: also save a checkpoint at the last step (and when ``max_minutes`` ends the
    run). ``max_minutes``: a wall-clock box that ends the run as if it were its last step (the caller
    then writes its final artifact; ``stop_after_steps`` instead reports ``interrupted``).
    ``history_key``: where the log history lives in ``state.extra`` (kept across resumes).
    ``progress_keys``: logged values shown on the progress bar.
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
    checkpoint_at_end: bool = False
    max_minutes: float | None = None
    history_key: str = "history"
    progress_keys: tuple[str, ...] = ("train/loss", "train/lr", "train/embedding_std", "eval/knn_accuracy")

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.images_per_micro_batch < 1:
            raise ValueError(f"images_per_micro_batch must be >= 1, got {self.images_per_micro_batch}")
        if self.logging_steps < 1:
            raise ValueError(f"logging_steps must be >= 1, got {self.logging_steps}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")


class TrainingTask(Protocol):
    """What the engine asks of a method. Only ``training_step`` is required."""

    def training_step(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (scalar tensor) and detached per-step metrics for one micro batch (already on device)."""

    # optional hooks, in the order the engine calls them:
    # def prepare_batch(self, batch) -> Any
    #     after the step's seed, outside autocast: augmentation, frozen encoders, noise
    # def auxiliary_step(self, model) -> dict[str, torch.Tensor]
    #     after the main optimiser step, inside the accumulation context: a second optimiser (GAN discriminator)
    # def after_optimizer_step(self, model: torch.nn.Module, state: TrainState, total_steps: int) -> None
    # def periodic(self, model: torch.nn.Module, state: TrainState) -> dict[str, float]
    # def train_mode(self, model: torch.nn.Module) -> None
    #     put the model in training mode (default ``model.train()``), at the start and after ``periodic``


@dataclasses.dataclass
class EngineResult:
    state: TrainState
    interrupted: bool
    summary: dict[str, Any]
    history: list[dict[str, float]]
    time_limited: bool = False


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
        n, sums = self.n, self.sums
        self.sums, self.n = {}, 0
        if not n or not sums:  # a task without metrics
            return {}
        keys = sorted(sums)
        stacked = torch.stack([sums[k].to(self.accelerator.device) / n for k in keys])
        if self.accelerator.num_processes > 1:
            stacked = self.accelerator.reduce(stacked, reduction="mean")
        return dict(zip(keys, (float(v) for v in stacked.cpu())))


class _Run:
    """One call of :meth:`Engine.run`: the loop's moving parts, so each piece of it stays short."""

    def __init__(
        self,
        engine: "Engine",
        task: TrainingTask,
        model,
        optimizer,
        scheduler,
        state: TrainState,
        extra_models: Sequence[torch.nn.Module],
        on_log,
    ):
        acc, cfg = engine.accelerator, engine.config
        self.acc, self.cfg, self.task = acc, cfg, task
        self.model, self.optimizer, self.scheduler, self.state = model, optimizer, scheduler, state
        self.models = (model, *extra_models)
        self.on_log = on_log
        self.guard = LossGuard(acc, engine.output_dir)
        self.meter = _MetricMeter(acc)
        self.images_per_step = cfg.images_per_micro_batch * acc.num_processes * acc.gradient_accumulation_steps
        self.bar = TrainProgress(acc, cfg.total_steps, state, self.images_per_step, desc=cfg.desc)
        self.history: list[dict[str, float]] = list(state.extra.get(cfg.history_key, []))
        self.unwrapped = acc.unwrap_model(model)
        self.hooks = {
            name: getattr(task, name, None)
            for name in ("prepare_batch", "auxiliary_step", "after_optimizer_step", "periodic", "train_mode")
        }
        self.interrupted = self.time_limited = False
        self.start_step = state.global_step
        self.t0 = time.perf_counter()

    def set_train_mode(self) -> None:
        train_mode = self.hooks["train_mode"]
        train_mode(self.model) if train_mode is not None else self.model.train()

    def micro_step(self, batch: Any) -> None:
        """One micro batch: seed, inputs, forward under autocast, backward, (clipped) optimiser step."""
        acc, cfg, state = self.acc, self.cfg, self.state
        seed_step(cfg.seed, state, acc)  # views / masks: a pure function of (seed, micro step, process)
        if self.hooks["prepare_batch"] is not None:
            batch = self.hooks["prepare_batch"](batch)
        with acc.accumulate(*self.models):
            with acc.autocast():
                loss, metrics = self.task.training_step(self.model, batch)
            acc.backward(loss)
            if cfg.max_grad_norm and acc.sync_gradients:
                acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.hooks["auxiliary_step"] is not None:
                metrics = {**metrics, **self.hooks["auxiliary_step"](self.model)}
        self.guard.add(loss)
        self.meter.add(metrics)
        state.images_seen += cfg.images_per_micro_batch * acc.num_processes

    def optimizer_step_done(self) -> bool:
        """Bookkeeping after an optimiser step (schedule, logs, evaluation, checkpoint); True ends the run."""
        cfg, state = self.cfg, self.state
        if self.scheduler is not None:
            self.scheduler.step()
        state.global_step += 1
        step = state.global_step
        if self.hooks["after_optimizer_step"] is not None:
            self.hooks["after_optimizer_step"](self.unwrapped, state, cfg.total_steps)
        time_up = cfg.max_minutes is not None and (time.perf_counter() - self.t0) / 60.0 >= cfg.max_minutes
        last = step >= cfg.total_steps or time_up
        eval_due = bool(
            self.hooks["periodic"] is not None
            and cfg.eval_steps
            and (step % cfg.eval_steps == 0 or step == cfg.total_steps)
        )
        logs = self.train_logs() if (step % cfg.logging_steps == 0 or last or eval_due) else {}
        if eval_due:
            logs.update(self.hooks["periodic"](self.unwrapped, state))
            self.set_train_mode()
        self.report(step, logs)
        periodic_save = cfg.checkpointing_steps and step % cfg.checkpointing_steps == 0 and step < cfg.total_steps
        if periodic_save or (last and cfg.checkpoint_at_end):
            self.guard.checkpoint(state, cfg.checkpoints_total_limit)
        if step >= cfg.total_steps:
            return True
        if time_up:
            self.time_limited = True
            return True
        if cfg.stop_after_steps is not None and step - self.start_step >= cfg.stop_after_steps:
            self.interrupted = True
            return True
        return False

    def train_logs(self) -> dict[str, float]:
        logs: dict[str, float] = {"train/loss": self.guard.check(self.state)}  # raises on a NaN loss
        logs.update({f"train/{k}": v for k, v in self.meter.mean().items()})
        if self.scheduler is not None:
            logs["train/lr"] = float(self.scheduler.get_last_lr()[0])
        logs["train/images_per_s"] = self.bar.images_per_second
        logs["train/epoch"] = float(self.state.epoch)
        return logs

    def report(self, step: int, logs: dict[str, float]) -> None:
        """Trackers, history (kept in the train state, so it survives a resume) and the progress bar."""
        if not logs:
            self.bar.update(1)
            return
        self.acc.log(logs, step=step)
        self.history.append({"step": step, **logs})
        self.state.extra[self.cfg.history_key] = self.history
        if self.on_log is not None:
            self.on_log(step, logs)
        self.bar.update(1, **{k.split("/", 1)[-1]: v for k, v in logs.items() if k in self.cfg.progress_keys})

    def summary(self) -> dict[str, Any]:
        bar, state = self.bar, self.state
        elapsed = time.perf_counter() - self.t0
        steps_done = state.global_step - self.start_step
        return {
            "global_step": state.global_step,
            "total_steps": self.cfg.total_steps,
            "final_loss": state.last_loss,
            "images_per_second": steps_done * self.images_per_step / elapsed if elapsed > 0 and steps_done else None,
            "images_per_second_steady": bar.steady_images_per_second(min(2, max(1, len(bar.step_times) - 1))),
            "train_seconds": elapsed,
            "step_end_seconds": [round(t - bar.step_times[0], 4) for t in bar.step_times] if bar.step_times else [],
            "step_end_cpu_seconds": [round(t - bar.step_cpu_times[0], 4) for t in bar.step_cpu_times]
            if bar.step_cpu_times
            else [],
            "interrupted": self.interrupted,
        }


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

    def run(
        self,
        task: TrainingTask,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        loader,
        state: TrainState,
        *,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
        extra_models: Sequence[torch.nn.Module] = (),
    ) -> EngineResult:
        """Train until ``total_steps`` optimiser steps (or ``stop_after_steps`` more, then report
        ``interrupted``; or ``max_minutes``, then report ``time_limited``). ``extra_models``: other
        prepared models a step trains (a discriminator), synchronised with ``model`` under gradient
        accumulation. Raises :class:`~genssl_hf.training.common.NonFiniteLossError` on a NaN loss
        before anything is saved."""
        run = _Run(self, task, model, optimizer, scheduler, state, extra_models, on_log)
        run.set_train_mode()
        if state.global_step < self.config.total_steps:
            for batch in resumable_batches(self.accelerator, loader, state):
                run.micro_step(batch)
                if self.accelerator.sync_gradients and run.optimizer_step_done():
                    break
        run.guard.check(state)
        run.bar.close()
        return EngineResult(
            state=state,
            interrupted=run.interrupted,
            summary=run.summary(),
            history=run.history,
            time_limited=run.time_limited,
        )
