"""One training recipe for every method: :func:`train` does once what each trainer used to repeat,
and a :class:`Method` (a small plug-in) says only what is its own.

::

    summary = train(MAEMethod(), args)            # or SSLPretraining(), VLPMethod(), ReportGeneratorMethod()

The recipe, in order (it never names a method):

1. ``method.check(args)``: the method's option errors; then the shared ones (``--push_to_hub`` needs
   ``--hub_model_id``, the output folder is free): all before any data or model work;
2. ``method.load_data``: the training data; then the AdaIN reference statistics (``--reference_stats``
   or ``--adain_mean/std``) when the method aligns its images (``uses_reference_stats``);
3. the accelerator (on a CPU: freed memory kept in the heap, :mod:`genssl_hf.core.allocator`) and
   the output folder; the seed; ``method.build_model``; ``method.build_loader``;
4. the schedule (:func:`plan_schedule`): optimiser steps, warm-up and the lr, ``--learning_rate`` or
   ``--base_learning_rate`` x total batch / 256; ``method.build_optimizer``; the engine
   (:func:`engine_config`), the half-cycle cosine (parameter groups flagged ``fixed_lr`` stay constant);
5. ``method.after_prepare`` (views, compile), the exact resume, ``method.after_resume``;
6. ``method.run_config`` written as ``run_config.json`` (plus the environment), the trackers;
7. the engine runs ``method.build_task(...)``; ``method.summarise``; unless the run was interrupted
   (``--stop_after_steps``: resumable, no final model), ``method.export`` on the main process
   (model, processor, figure, card, ``train_summary.json``).

Everything a method computes on the way lives in the ``run`` dict handed to every hook (keys set by
the recipe: ``data``, ``reference``, ``output_dir``, ``model``, ``loader``, ``batches_per_epoch``,
``schedule``, ``optimizer``, ``scheduler``, ``engine``, ``state``, ``unwrapped``).
The contrastive / Siamese / pretext family is one method here (:mod:`genssl_hf.training.ssl.pretrain`)
whose own plug-ins are the :class:`~genssl_hf.training.ssl.methods.SSLMethod` classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, ClassVar

import torch

from genssl_hf.core.allocator import malloc_choice, retain_freed_memory
from genssl_hf.processing import AdaINImageProcessor
from genssl_hf.training.args import args_to_dict, check_hub_args, check_output_dir
from genssl_hf.training.common import init_trackers, make_accelerator, write_run_config
from genssl_hf.training.engine import Engine, EngineConfig, EngineResult
from genssl_hf.training.optim import cosine_schedule_with_warmup, plan_steps
from genssl_hf.training.pretraining_data import resolve_reference

__all__ = [
    "Method",
    "train",
    "plan_schedule",
    "engine_config",
    "reference_processor",
    "adain_record",
    "device_normalisation",
]


class Method:
    """A training method on :func:`train`. Subclasses set ``name`` and implement the hooks that raise
    ``NotImplementedError``; the others have a neutral default."""

    name: ClassVar[str] = ""  # trackers' project is genssl_<name>
    uses_reference_stats: ClassVar[bool] = True  # resolve the AdaIN reference after loading the data

    # ------------------------------------------------------------------ before compute
    def check(self, args: argparse.Namespace) -> dict[str, Any]:
        """Resolve defaults and raise for bad options (naming them); returns the first ``run`` entries."""
        return {}

    def load_data(self, args: argparse.Namespace, data: Any, run: dict[str, Any]) -> Any:
        """The training data (``data``, a caller's object, or the one the options name)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ model, data, optimiser
    def build_model(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> torch.nn.Module:
        """The model, built right after ``torch.manual_seed(args.seed)``."""
        raise NotImplementedError

    def build_loader(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> tuple[Any, int | None]:
        """(the prepared training loader, batches per epoch or None when unknown)."""
        raise NotImplementedError

    def build_optimizer(self, args: argparse.Namespace, run: dict[str, Any], lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    def engine_options(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        """:class:`EngineConfig` fields of the method (``desc``, ``progress_keys``, ...)."""
        return {}

    def after_prepare(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> None:
        """After ``engine.prepare``, before the resume (views on the device, ``torch.compile``)."""

    def after_resume(self, args: argparse.Namespace, run: dict[str, Any], accelerator) -> None:
        """After the resume (``run['state']``): checks of the resumed weights."""

    # ------------------------------------------------------------------ training and outputs
    def run_config(self, args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
        """The body of ``run_config.json`` (the environment is added by the recipe)."""
        raise NotImplementedError

    def build_task(self, args: argparse.Namespace, run: dict[str, Any], accelerator):
        """The engine's :class:`~genssl_hf.training.engine.TrainingTask`."""
        raise NotImplementedError

    def summarise(self, args: argparse.Namespace, run: dict[str, Any], result: EngineResult) -> dict[str, Any]:
        return {**result.summary, "output_dir": str(run["output_dir"])}

    def export(
        self,
        args: argparse.Namespace,
        run: dict[str, Any],
        run_config: dict[str, Any],
        summary: dict[str, Any],
        result: EngineResult,
    ) -> None:
        """Main process only: the finished run's folder (model, processor, figure, card, summary)."""
        raise NotImplementedError


def plan_schedule(args: argparse.Namespace, batches_per_epoch: int | None, accelerator) -> dict[str, Any]:
    """Batch arithmetic and schedule, the same for every method: total batch, optimiser steps
    (``--max_steps``, else ``--num_train_epochs`` x steps per epoch), epochs, warm-up (``--warmup_steps``,
    else ``--warmup_epochs``, else ``--warmup_ratio`` of the steps) and the learning rate
    (``--learning_rate``, else ``--base_learning_rate`` x total batch / 256)."""
    accum = accelerator.gradient_accumulation_steps
    total_batch = args.per_device_train_batch_size * accum * accelerator.num_processes
    steps_per_epoch, total_steps = plan_steps(args.max_steps, args.num_train_epochs, batches_per_epoch, accum)
    epochs = args.num_train_epochs if args.max_steps is None or not steps_per_epoch else total_steps / steps_per_epoch
    if getattr(args, "warmup_steps", None) is not None:
        warmup = int(args.warmup_steps)
    elif hasattr(args, "warmup_epochs"):
        warmup = int(round(args.warmup_epochs / max(epochs, 1e-9) * total_steps)) if args.warmup_epochs else 0
    else:
        warmup = int(round((getattr(args, "warmup_ratio", None) or 0.0) * total_steps))
    lr = args.learning_rate
    if lr is None:
        base = getattr(args, "base_learning_rate", None)
        if base is None:
            raise ValueError("set --learning_rate (or --base_learning_rate: lr = base x total batch / 256)")
        lr = base * total_batch / 256
    return {
        "total_batch_size": total_batch,
        "learning_rate": lr,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "batches_per_epoch": batches_per_epoch,
        "epochs": epochs,
    }


def engine_config(args: argparse.Namespace, output_dir: Path, total_steps: int, **method_options: Any) -> EngineConfig:
    """The engine settings from the shared options, with the method's own (``desc``, ...)."""
    return EngineConfig(
        output_dir=output_dir,
        total_steps=total_steps,
        images_per_micro_batch=args.per_device_train_batch_size,
        seed=args.seed,
        max_grad_norm=args.max_grad_norm,
        logging_steps=args.logging_steps,
        checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit,
        stop_after_steps=getattr(args, "stop_after_steps", None),
        **method_options,
    )


def reference_processor(args: argparse.Namespace, image_size: int, reference: dict[str, Any]) -> AdaINImageProcessor:
    """The image processor saved with a pre-trained model: the run's size, AdaIN reference and normalisation."""
    return AdaINImageProcessor(
        size={"height": image_size, "width": image_size},
        do_adain=args.adain == "on",
        adain_mean=reference["mean"],
        adain_std=reference["std"],
        reference_stats=reference["reference_stats"],
        image_mean=[args.image_mean],
        image_std=[args.image_std],
        num_channels=3,
    )


def device_normalisation(args: argparse.Namespace, reference: dict[str, Any]) -> dict[str, Any]:
    """The AdaIN and normalisation keywords of the on-device augmentations (``MAEAugment``, ``SSLViews``):
    the same settings :func:`reference_processor` saves for inference."""
    return {
        "adain": args.adain == "on",
        "adain_mode": args.adain_mode,
        "adain_mean": reference["mean"],
        "adain_std": reference["std"],
        "image_mean": args.image_mean,
        "image_std": args.image_std,
    }


def adain_record(args: argparse.Namespace, reference: dict[str, Any]) -> dict[str, Any]:
    """The run config's and card's ``adain`` entry."""
    return {
        "enabled": args.adain == "on",
        "mode": args.adain_mode,
        "mean": reference["mean"],
        "std": reference["std"],
        "reference_stats": reference["reference_stats"],
    }


def _resolved_reference(args: argparse.Namespace) -> dict[str, Any]:
    mean, std, provenance = resolve_reference(args)
    return {"mean": mean, "std": std, "reference_stats": provenance}


def _optimisation(method: Method, args: argparse.Namespace, run: dict[str, Any], accelerator) -> None:
    """Schedule, optimiser, engine and cosine lr (``fixed_lr`` groups constant); model and optimiser prepared."""
    schedule = run["schedule"] = plan_schedule(args, run["batches_per_epoch"], accelerator)
    optimizer = method.build_optimizer(args, run, schedule["learning_rate"])
    total_steps = schedule["total_steps"]
    engine = Engine(
        accelerator,
        engine_config(args, run["output_dir"], total_steps, **method.engine_options(args, run)),
    )
    scheduler = cosine_schedule_with_warmup(optimizer, schedule["warmup_steps"], total_steps)
    if any(g.get("fixed_lr") for g in optimizer.param_groups):  # e.g. a predictor trained at a fixed lr
        cosine = scheduler.lr_lambdas[0]
        scheduler.lr_lambdas = [(lambda step: 1.0) if g.get("fixed_lr") else cosine for g in optimizer.param_groups]
    run["model"], run["optimizer"] = engine.prepare(run["model"], optimizer, scheduler)
    run["engine"], run["scheduler"] = engine, scheduler


def train(method: Method, args: argparse.Namespace, data: Any = None, accelerator=None) -> dict[str, Any]:
    """Train ``method`` as configured by ``args`` (the method's parser); ``data`` may replace the data
    option (a ``datasets`` object, pairs). Returns the method's summary (see the module docstring)."""
    run = dict(method.check(args))
    check_hub_args(args)
    malloc_choice()  # a bad GENSSL_HF_MALLOC fails here, before any data or model work
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    run["data"] = method.load_data(args, data, run)
    if method.uses_reference_stats:
        run["reference"] = _resolved_reference(args)

    accelerator = accelerator or make_accelerator(args)
    if accelerator.device.type == "cpu":
        retain_freed_memory()  # no per-step mmap / page faults for big activations (core.allocator)
    out = run["output_dir"] = Path(args.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # model init: identical on every process
    run["model"] = method.build_model(args, run, accelerator)
    run["loader"], run["batches_per_epoch"] = method.build_loader(args, run, accelerator)
    _optimisation(method, args, run, accelerator)
    method.after_prepare(args, run, accelerator)
    run["state"] = run["engine"].resume(args.resume_from_checkpoint)
    method.after_resume(args, run, accelerator)
    unwrapped = accelerator.unwrap_model(run["model"])
    run["unwrapped"] = getattr(unwrapped, "_orig_mod", unwrapped)  # under torch.compile too

    run_config = method.run_config(args, run)
    write_run_config(accelerator, out, run_config)
    schedule = run["schedule"]
    init_trackers(
        accelerator,
        f"genssl_{method.name}",
        {**args_to_dict(args), "learning_rate": schedule["learning_rate"], "total_steps": schedule["total_steps"]},
    )
    task = method.build_task(args, run, accelerator)
    result = run["engine"].run(task, run["model"], run["optimizer"], run["scheduler"], run["loader"], run["state"])
    summary = method.summarise(args, run, result)
    if not result.interrupted:  # an interrupted run resumes from its last checkpoint; no final model
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            method.export(args, run, run_config, summary, result)
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
