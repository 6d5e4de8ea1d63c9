"""Noise schedulers of :class:`~genssl_hf.generation.pipeline.CXRLatentDiffusionPipeline`: the
MONAI CXR bundle's DDIM (:func:`bundle_scheduler`) and the sampling presets of
``pipe.use_preset(name)`` (:data:`GENERATION_PRESETS`)."""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler

__all__ = ["GENERATION_PRESETS", "bundle_scheduler", "check_sampler_name"]

# Sampling presets (``pipe.use_preset(name)``). "bundle": the MONAI bundle's 50-step DDIM, the
# default, kept for faithfulness. "fast": the fastest setting whose images stayed within the noise
# of the 50-step DDIM reference in ``benchmarks/bench_generation_quality.py`` (prompt-adherence AUC
# of the phantom finding classifier and feature-space FID against the reference; see BENCHMARKS.md).
# ``scheduler``: a diffusers scheduler class built from the pipeline's own noise schedule (betas,
# prediction type) with ``scheduler_kwargs``; ``guidance_fraction``: classifier-free guidance on that
# leading share of the steps only (the rest run the conditional branch alone, half the UNet batch).
# "unipc-5" and "dpm++2m-5": the few-step settings of the downstream-equal sweep (issue 37.1; their
# settings are bench_generation_quality.py's "unipc-5" and "dpm++2m-8" at 5 steps). The dataset writer
# takes a preset by name (``sampler=``, ``genssl generate --sampler``, the pipeline's
# ``generation.sampler``).
# "unipc-3" and "unipc-5-unguided": the settings of the 50x question (issue 37.2): fewer steps, or no
# unconditional branch at all (``guidance_fraction`` 0: half the UNet batch, images no longer steered
# towards their prompt). Both pre-trained MAEs that fine-tuned to DDIM-50's AUC on Kermany (BENCHMARKS.md,
# "Generation at equal downstream quality"), but the unguided images are visibly flatter (FID 15x the
# floor): it is meant for label-free pre-training only; a use that reads the prompts (VLP, classifiers
# on generated labels) needs guidance.
GENERATION_PRESETS: dict[str, dict[str, Any]] = {
    "bundle": {
        "scheduler": "DDIMScheduler",
        "scheduler_kwargs": {},
        "num_inference_steps": 50,
        "guidance_fraction": 1.0,
    },
    "fast": {
        "scheduler": "UniPCMultistepScheduler",
        "scheduler_kwargs": {},
        "num_inference_steps": 8,
        "guidance_fraction": 1.0,
    },
    "unipc-5": {
        "scheduler": "UniPCMultistepScheduler",
        "scheduler_kwargs": {},
        "num_inference_steps": 5,
        "guidance_fraction": 1.0,
    },
    "dpm++2m-5": {
        "scheduler": "DPMSolverMultistepScheduler",
        "scheduler_kwargs": {"algorithm_type": "dpmsolver++", "solver_order": 2},
        "num_inference_steps": 5,
        "guidance_fraction": 1.0,
    },
    "unipc-3": {
        "scheduler": "UniPCMultistepScheduler",
        "scheduler_kwargs": {},
        "num_inference_steps": 3,
        "guidance_fraction": 1.0,
    },
    "unipc-5-unguided": {
        "scheduler": "UniPCMultistepScheduler",
        "scheduler_kwargs": {},
        "num_inference_steps": 5,
        "guidance_fraction": 0.0,
    },
}


def check_sampler_name(name: Any, option: str = "sampler") -> None:
    """A clear error naming ``option`` and the known names when ``name`` is no preset of
    :data:`GENERATION_PRESETS` (checked before any model is loaded)."""
    if not isinstance(name, str) or name not in GENERATION_PRESETS:
        raise ValueError(f"{option} {name!r} is not a generation preset; known: {sorted(GENERATION_PRESETS)}")


def bundle_scheduler(**overrides: Any) -> DDIMScheduler:
    """DDIM with the MONAI CXR bundle's training settings: 1000 steps, scaled-linear betas
    0.0015 -> 0.0205, v-prediction, no sample clipping; "linspace" timestep spacing (999 -> 0), which
    is exactly MONAI >= 1.4 DDIMScheduler (the test compares them step by step)."""
    cfg = dict(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0205,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="linspace",
    )
    cfg.update(overrides)
    return DDIMScheduler(**cfg)
