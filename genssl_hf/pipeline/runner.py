"""The end-to-end GEN-SSL pipeline behind ``scripts/run_pipeline.py``.

Stages, in order (each a folder under the run root, skipped when its output is already valid):

``real_data``          the labelled real split (train / validation / test) as parquet; by default
                       phantoms rendered with a *different* acquisition (exposure, contrast) than
                       the generator saw, so AdaIN has a real domain gap to close
``real_unlabelled``    as many unlabelled real-domain images as are generated (the "MAE on the
                       same number of real images" baseline)
``prompt_set``         a shipped or freshly built :class:`~genssl_hf.prompts.PromptSet`
``generator``          the shipped phantom generator, or one trained here
``generated_dataset``  balanced generated images (``genssl_hf.generation.materialize``), in the
                       runner's process, or with ``generation.num_processes`` N > 1 as
                       ``genssl generate`` through ``launcher`` (``accelerate launch
                       --num_processes N``): the same dataset, each rank writing its own shards
``reference_stats``    AdaIN reference mean / std of the real training split
``sample_grid``        generated samples per prompt next to real ones (PNG)
``mae_<variant>``      ViTMAE pre-training: ``genssl`` (AdaIN on), ``genssl_no_adain``, ``real``
``finetune_<variant>`` fine-tuning on the labelled real train split, selection on validation;
                       ``random_init`` plus one per pre-trained encoder
``evaluation``         test-split metrics of every variant side by side, ROC curves, attention maps,
                       robustness; ``results.md`` is the table ``make demo`` prints
``hub``                dry-run publish folders (exactly what would be uploaded) for the encoder,
                       classifier, generator, prompt set and generated dataset
``vlp``, ``vlp_zero_shot``  (when the config has a ``vlp`` section) an image-report dual encoder
                       (``genssl_hf.training.vlp``) pre-trained on real-domain phantoms and their
                       reports, evaluated zero-shot on the test split: a row of the results table
                       that used no labels at all

Training and evaluation stages run the ``genssl`` command as subprocesses on a config file they
write into their folder (``python -m genssl_hf pretrain <stage>/command_config.json``, or through
``accelerate launch`` when ``launcher`` is set), so each gets a fresh Accelerator and the options
recorded next to the outputs are the ones that ran.

Modules: :mod:`.config` (presets, validation, fine-tuning runs), :mod:`.variants` (the compared
variants, as data), :mod:`.steps` (one builder per stage), :mod:`.launch` (subprocess commands),
:mod:`.stages` (skip-when-valid bookkeeping), :mod:`.results` (the results table); this module
orders the stages. ``genssl_hf.pipeline`` is this end-to-end runner; the diffusers pipeline class
is :mod:`genssl_hf.generation.pipeline`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

from ..utils import write_json, writer_lock
from .config import finetune_runs, fraction_suffix, label_fractions, load_preset, validate_config
from .launch import check_launcher
from .stage_process import install_signal_handlers
from .stages import TIMINGS, RunClock, Stage, run_stage, run_stage_graph
from .steps import (
    stage_evaluation,
    stage_generated_dataset,
    stage_hub,
    stage_prompt_set,
    stage_real_data,
    stage_real_unlabelled,
    stage_reference_stats,
    stage_sample_grid,
    stage_vlp_zero_shot,
)
from .training_steps import stage_finetune, stage_generator, stage_pretrain, stage_ssl_pretrain, stage_vlp
from .variants import Variant, finetune_config, finetune_init, selected_variants

__all__ = ["run_pipeline", "main", "print_report"]


def _pretrain_stage(config: dict, variant: Variant, root: Path, stats: Path, log) -> Stage:
    """The pre-training stage of a variant, by family (the only place a family is named)."""
    if variant.family == "ssl":
        return stage_ssl_pretrain(config, variant.name, stats, root, log)
    return stage_pretrain(config, variant.pretrain_stage, root / variant.data_stage, variant.adain, stats, log)


def run_pipeline(
    config: dict, output_dir: str | Path | None = None, log=print, *, finetune: bool = True
) -> dict[str, Any]:
    """Run every stage of ``config`` in order under ``output_dir``; returns the stage summaries.
    ``finetune=False`` stops after pre-training (for a protocol that fine-tunes its own way,
    :mod:`.protocol`)."""
    config = copy.deepcopy(config)
    validate_config(config)
    check_launcher(config)
    root = Path(output_dir or config.get("output_dir") or f"outputs/{config['name']}").resolve()
    # one runner per run folder: a rerun never overlaps a runner (or its stages) still at work there
    with writer_lock(root, "pipeline run folder"):
        install_signal_handlers()  # Ctrl-C / SIGTERM end the running stage's process group too
        return _run_stages(config, root, log, finetune)


def stage_workers(config: dict) -> int:
    """How many stages run side by side after the reference statistics (``stage_workers``, default 1)."""
    return int(config.get("stage_workers") or 1)


def with_stage_threads(config: dict) -> dict:
    """``config`` with the thread count of every training / evaluation subprocess in its
    ``subprocess_env``: ``stage_threads``, or 1 when stages run side by side (several
    multi-threaded processes on the same cores spin against each other). Without either, the
    subprocesses keep the environment's (torch's default: every core)."""
    threads = config.get("stage_threads") or (1 if stage_workers(config) > 1 else None)
    if not threads:
        return config
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return {**config, "subprocess_env": {**env, **config.get("subprocess_env", {})}}


def _run_stages(config: dict, root: Path, log, finetune: bool) -> dict[str, Any]:
    write_json(root / "pipeline_config.json", config)
    start = time.perf_counter()
    workers = stage_workers(config)
    config = with_stage_threads(config)
    clock = RunClock(root, workers)
    variants = selected_variants(config)
    s: dict[str, Any] = {}

    def step(stage: Stage, deps: list[str] = ()) -> Any:
        with clock.step([stage.name]):
            return run_stage(root, stage, log, deps=deps)

    s["real_data"] = step(stage_real_data(config))
    s["prompt_set"] = step(stage_prompt_set(config))
    s["generator"] = step(stage_generator(config, log))
    s["generated_dataset"] = step(
        stage_generated_dataset(config, root / "generator", root / "prompt_set", log), deps=["generator", "prompt_set"]
    )
    s["sample_grid"] = step(stage_sample_grid(config, root / "generated_dataset"), deps=["generated_dataset"])
    s["reference_stats"] = step(stage_reference_stats(config, root / "real_data"), deps=["real_data"])
    stats = root / "reference_stats" / "reference_stats.json"
    # the rest: stages that read only finished ones, `workers` at a time (one by one by default)
    jobs = _pretraining_jobs(config, variants, root, stats, log)
    if config.get("vlp"):
        jobs.insert(0, (stage_vlp(config, stats, log), ["reference_stats"]))  # the longest: started first
        jobs.append((stage_vlp_zero_shot(config, root, root / "real_data", log), ["vlp", "real_data"]))
    if finetune:
        jobs += _finetuning_jobs(config, variants, root, log)
        if config.get("hub", {}).get("dry_run", True):
            top = fraction_suffix(config, max(label_fractions(config)))
            in_run = {stage.name for stage, _ in jobs}
            deps = ["real_data", "prompt_set", "generator", "generated_dataset"]
            deps += [d for d in ("mae_genssl", f"finetune_genssl{top}", "vlp") if d in in_run]
            jobs.append((stage_hub(config, root, log), deps))
    names = [stage.name for stage, _ in jobs]
    if workers > 1:
        with clock.step(names):
            s.update(run_stage_graph(root, jobs, workers, log))
    else:
        for stage, deps in jobs:
            s[stage.name] = step(stage, deps)
    if not finetune:
        return {"root": str(root), **s}
    s["seconds"] = round(time.perf_counter() - start, 1)
    write_json(root / "summary.json", s)
    log(f"run time: {s['seconds']:.0f} s wall, {clock.record()['cpu_seconds']:.0f} CPU s (per step: {root / TIMINGS})")
    return {"root": str(root), **s}


def _pretraining_jobs(
    config: dict, variants: list[Variant], root: Path, stats: Path, log
) -> list[tuple[Stage, list[str]]]:
    """Every variant's pre-training stage, after the unlabelled real images when one needs them."""
    jobs: list[tuple[Stage, list[str]]] = []
    for v in variants:
        if v.data_stage == "real_unlabelled" and all(stage.name != "real_unlabelled" for stage, _ in jobs):
            jobs.append((stage_real_unlabelled(config, root / "real_data"), ["real_data"]))
        if v.pretrain_stage:
            jobs.append((_pretrain_stage(config, v, root, stats, log), [v.data_stage, "reference_stats"]))
    return jobs


def _finetuning_jobs(config: dict, variants: list[Variant], root: Path, log) -> list[tuple[Stage, list[str]]]:
    """Per (label fraction, seed): fine-tune every variant, then evaluate them side by side."""
    names = [v.name for v in variants]
    jobs: list[tuple[Stage, list[str]]] = []
    for fraction, seed, suffix in finetune_runs(config):
        for v in variants:
            stage = stage_finetune(
                finetune_config(config, v),
                v.name,
                finetune_init(config, v, root),
                root / "real_data",
                log,
                fraction,
                seed,
                suffix,
            )
            jobs.append((stage, v.finetune_deps))
        jobs.append(
            (
                stage_evaluation(config, root, names, root / "real_data", log, fraction, seed, suffix),
                [f"finetune_{n}{suffix}" for n in names] + (["vlp_zero_shot"] if config.get("vlp") else []),
            )
        )
    return jobs


def main(argv: list[str] | None = None) -> int:
    from ..typed_args import hidden_aliases

    parser = argparse.ArgumentParser(description="Run the end-to-end GEN-SSL pipeline.")
    parser.add_argument("--preset", default="demo", help="smoke | demo | paper, or a path to a JSON config")
    parser.add_argument("--output_dir", default=None, help="where stage folders go (default: outputs/<preset>)")
    hidden_aliases(parser, {"--output-dir": "--output_dir"})  # the spelling before underscores
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set pretrain.args.num_train_epochs=5 (repeatable)",
    )
    args = parser.parse_args(argv)
    config = load_preset(args.preset, args.overrides)
    result = run_pipeline(config, args.output_dir)
    print_report(Path(result["root"]))
    return 0


def print_report(root: Path) -> None:
    """The results table and the paths a user looks at next."""
    print("\n" + "=" * 80)
    evaluations = sorted(root.glob("evaluation*/results"))
    for results in evaluations:
        table = results / "results.md"
        if table.is_file():
            print(table.read_text().split("## Detailed tables")[0])
    results = evaluations[-1] if evaluations else root / "evaluation" / "results"
    paths = {
        "sample grid": root / "sample_grid" / "generated_samples.png",
        "reconstruction figure": root / "mae_genssl" / "model" / "reconstruction.png",
        "ROC plot": next(
            iter(sorted(results.glob("roc_GEN*.png"))),
            next(iter(sorted(results.glob("roc*.png"))), results / "roc.png"),
        ),
        "mAUC comparison plot": results / "mauc_comparison.png",
        "reliability diagram": next(iter(sorted(results.glob("reliability_GEN*.png"))), results / "reliability.png"),
        "attention maps": results / "attention",
        "Hub-ready folders (dry run)": root / "hub" / "dry_run",
        "run summary": root / "summary.json",
    }
    for label, path in paths.items():
        print(f"{label:>28}: {path}{'' if path.exists() else '  (missing)'}")


if __name__ == "__main__":
    sys.exit(main())
