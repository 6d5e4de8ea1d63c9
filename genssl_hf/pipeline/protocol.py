"""The real-data comparison protocol (issue 21): every arm gets the same fine-tuning budget, chosen on
validation only, then enough seeds to compare means, with the input-standardisation confound
controlled.

An *arm* is one row of the results table: an encoder (a preset for random init, or a pre-training
stage's model folder) and the input standardisation it fine-tunes behind (the encoder's own
processor, plain mean / std 0.5, or another folder's AdaIN processor). The protocol:

1. **Tuning.** Each tuned arm fine-tunes under every recipe of the grid (learning rate x
   augmentation; layer decay is the arm's: 1 for random init) at each few-shot fraction with the
   tuning seeds. The recipe with the best mean *validation* AUC wins (ties: the earlier recipe).
   Arms with ``tune_as`` take the recipe chosen for another arm (e.g. an ablation of GEN-SSL keeps
   GEN-SSL's recipe), so every tuned arm spent the same budget: ``len(recipes) x len(tune_seeds)``
   runs per fraction.
2. **Seeds.** With its recipe, every arm fine-tunes at every fraction and seed; the runs of the
   tuning seeds are the same stages and are reused, not rerun. 100 % labels use the recipe chosen
   at the largest few-shot fraction, with the first seed.
3. **Test.** One evaluation stage per (fraction, seed) scores every arm's selected model on the
   test split (the test split is read nowhere else).

Stages are ordinary pipeline stages (:mod:`.stages`: skipped when their fingerprint matches), run
``workers`` at a time: each is a subprocess, so independent fine-tuning runs fill the cores.
"""

from __future__ import annotations

import copy
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..utils import read_json, write_json, writer_lock
from .launch import _run_command, stage_command
from .stage_process import install_signal_handlers
from .stages import Stage, run_stage
from .steps import evaluation_options
from .training_steps import stage_finetune

__all__ = ["Arm", "DEFAULT_RECIPES", "run_protocol", "select_recipe", "arm_stage_name", "pooled_rows"]

# The fine-tuning grid every tuned arm gets (the ``tiny`` recipe's other settings stay): three base
# lrs (lr = base_learning_rate x batch / 256) with the recipe's augmentation (RandAugment 2 / 8,
# crops of 50-100 %), and the middle lr with light augmentation (crops of 80-100 % and flips only).
# The names (stage folders of earlier runs) keep "blr", the base learning rate's old option name.
DEFAULT_RECIPES: dict[str, dict[str, Any]] = {
    "blr1e-3_randaug": {"base_learning_rate": 1e-3},
    "blr3e-3_randaug": {"base_learning_rate": 3e-3},
    "blr1e-2_randaug": {"base_learning_rate": 1e-2},
    "blr3e-3_light": {"base_learning_rate": 3e-3, "randaug_n": 0, "crop_scale": [0.8, 1.0]},
}


@dataclass(frozen=True)
class Arm:
    """One compared row. ``init``: a preset name (random init) or a stage folder's model, relative to
    the run root (``"mae_genssl/model"``). ``image_processor``: ``"init"``, ``"none"`` or a stage
    folder relative to the root whose ``preprocessor_config.json`` to use. ``layer_decay``: None keeps
    the recipe's (0.75 for a pre-trained ViT); random init fine-tunes with 1."""

    name: str
    title: str
    init: str
    image_processor: str = "init"
    layer_decay: float | None = None
    tune_as: str | None = None
    deps: tuple[str, ...] = ()
    fractions: tuple[float, ...] | None = None  # None: the protocol's fractions and 100 %
    seeds: tuple[int, ...] | None = None  # None: the protocol's seeds (an ablation arm may run fewer)
    args: dict = field(default_factory=dict)  # fixed extra fine-tuning arguments
    # arms of another group are scored by their own evaluation stages (adding an ablation arm then
    # does not rescore the others); every group scores the same test cases, so pairs across groups hold
    group: str = "main"
    # the input side the arm fine-tunes and is scored at (None: the run's); an encoder pre-trained at
    # another size needs its own (every size scores the same test cases, resized by the processor)
    image_size: int | None = None


def arm_stage_name(arm: str, recipe: str, fraction: float, seed: int) -> str:
    return f"ft_{arm}__{recipe}_f{round(fraction * 100):d}_s{seed}"


def _resolve(root: Path, value: str) -> str:
    """A folder relative to the run root, or a preset / keyword unchanged."""
    candidate = root / value
    return str(candidate) if candidate.exists() else value


def _finetune_stage(
    config: dict, root: Path, arm: Arm, recipe: str, overrides: dict, fraction: float, seed: int, log
) -> Stage:
    cfg = copy.deepcopy(config)
    args = cfg["finetune"].setdefault("args", {})
    args.update(overrides)
    args.update(arm.args)
    if arm.image_size is not None:
        cfg["image_size"] = arm.image_size
        if "image_size" in args:  # the fine-tuning args' own size would win on the command line
            args["image_size"] = arm.image_size
    if arm.layer_decay is not None:
        args["layer_decay"] = arm.layer_decay
    if arm.image_processor != "init":
        args["image_processor"] = _resolve(root, arm.image_processor)
    init = _resolve(root, arm.init)
    stage = stage_finetune(
        cfg,
        f"{arm.name}__{recipe}",
        init,
        root / "real_data",
        log,
        fraction,
        seed,
        suffix=f"_f{round(fraction * 100):d}_s{seed}",
    )
    stage.name = arm_stage_name(arm.name, recipe, fraction, seed)
    return stage


def _run_all(root: Path, stages: list[tuple[Stage, list[str]]], workers: int, log) -> None:
    """Run independent stages ``workers`` at a time (each is a subprocess); the first error is raised."""
    if workers <= 1:
        for stage, deps in stages:
            run_stage(root, stage, log, deps=deps)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_stage, root, stage, log, deps) for stage, deps in stages]
        errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def _validation_auc(root: Path, name: str) -> float:
    metrics = read_json(root / name / "run" / "metrics.json")
    return float(metrics["best"]["validation"]["mean_auc"])


def select_recipe(scores: dict[str, list[float]]) -> str:
    """The recipe with the highest mean validation AUC over the tuning seeds (ties: the first)."""
    best, best_score = None, float("-inf")
    for recipe, values in scores.items():
        score = statistics.fmean(values)
        if score > best_score:
            best, best_score = recipe, score
    if best is None:
        raise ValueError("no recipe was scored")
    return best


def _check_arms(
    config: dict, arms: list[Arm], seeds: tuple[int, ...], tune_seeds: tuple[int, ...], workers: int
) -> dict:
    """Arm names unique, ``tune_as`` naming a tuned arm, tuning seeds among the seeds; returns the
    config (with one thread per stage subprocess when several run side by side)."""
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique; got {names}")
    by_name = {a.name: a for a in arms}
    for a in arms:
        if a.tune_as is not None and (a.tune_as not in by_name or by_name[a.tune_as].tune_as is not None):
            raise ValueError(f"arm {a.name!r}: tune_as {a.tune_as!r} must name a tuned arm of this run")
    if not set(tune_seeds) <= set(seeds):
        raise ValueError(f"tune_seeds {tune_seeds} must be among seeds {seeds} (their runs are reused)")
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # each subprocess on one core: several multi-threaded processes on the same cores spin against
        # each other (several times slower in all). Set for the stage commands only, not this process.
        config = {**config, "subprocess_env": {"OMP_NUM_THREADS": "1", **config.get("subprocess_env", {})}}
    return config


def _arm_fractions(a: Arm, fractions: tuple[float, ...]) -> tuple[float, ...]:
    return a.fractions if a.fractions is not None else tuple(fractions)


def _tune(
    config: dict,
    root: Path,
    arms: list[Arm],
    recipes: dict[str, dict],
    fractions: tuple[float, ...],
    tune_seeds: tuple[int, ...],
    workers: int,
    log,
) -> dict[str, dict[str, Any]]:
    """Step 1: every recipe x tuning seed at each few-shot fraction of the tuned arms; the recipe with
    the best mean validation AUC per (arm, fraction)."""
    tuned = [a for a in arms if a.tune_as is None]
    jobs = [
        (_finetune_stage(config, root, a, r, recipes[r], f, s, log), ["real_data", *a.deps])
        for a in tuned
        for f in _arm_fractions(a, fractions)
        if f < 1.0
        for r in recipes
        for s in tune_seeds
    ]
    log(
        f"[protocol] tuning: {len(jobs)} fine-tuning runs ({len(tuned)} arms x {len(recipes)} recipes x "
        f"{len(tune_seeds)} seeds per fraction)"
    )
    _run_all(root, jobs, workers, log)
    tuning: dict[str, dict[str, Any]] = {}
    for a in tuned:
        for f in _arm_fractions(a, fractions):
            if f >= 1.0:
                continue
            scores = {r: [_validation_auc(root, arm_stage_name(a.name, r, f, s)) for s in tune_seeds] for r in recipes}
            seconds = sum(
                read_json(root / arm_stage_name(a.name, r, f, s) / "stage.json").get("seconds", 0.0)
                for r in recipes
                for s in tune_seeds
            )
            tuning.setdefault(a.name, {})[f"{f:g}"] = {
                "chosen": select_recipe(scores),
                "validation_auc": scores,
                "runs": len(recipes) * len(tune_seeds),
                "seconds": round(seconds, 1),
            }
    return tuning


def _chosen_recipe(tuning: dict[str, dict[str, Any]], a: Arm, f: float, fractions: tuple[float, ...]) -> str:
    """The tuned recipe of ``a`` (or of the arm it is tuned as) at ``f``; the full fraction takes the
    largest few-shot fraction's."""
    source = a.tune_as or a.name
    per_fraction = tuning[source]
    key = f"{f:g}" if f < 1.0 else f"{max(x for x in fractions if x < 1.0):g}"
    return per_fraction[key]["chosen"]


def _run_seeds(
    config: dict,
    root: Path,
    arms: list[Arm],
    recipes: dict[str, dict],
    tuning: dict[str, dict[str, Any]],
    fractions: tuple[float, ...],
    seeds: tuple[int, ...],
    full_fraction: bool,
    workers: int,
    log,
) -> list[dict[str, Any]]:
    """Step 2: every seed with the chosen recipe (tuning-seed runs are the same stages: skipped)."""
    plan: list[tuple[float, int]] = [(f, s) for f in fractions if f < 1.0 for s in seeds]
    if full_fraction:
        plan.append((1.0, seeds[0]))
    jobs, runs = [], []
    for f, s in plan:
        for a in arms:
            if f < 1.0 and (f not in _arm_fractions(a, fractions) or (a.seeds is not None and s not in a.seeds)):
                continue
            if f >= 1.0 and a.fractions is not None and 1.0 not in a.fractions:
                continue
            r = _chosen_recipe(tuning, a, f, fractions)
            jobs.append((_finetune_stage(config, root, a, r, recipes[r], f, s, log), ["real_data", *a.deps]))
            runs.append(
                {
                    "arm": a.name,
                    "title": a.title,
                    "fraction": f,
                    "seed": s,
                    "recipe": r,
                    "stage": arm_stage_name(a.name, r, f, s),
                    "evaluation": _evaluation_name(a.group, f, s),
                }
            )
    log(f"[protocol] seeds: {len(jobs)} fine-tuning runs (the tuning seeds' runs are reused)")
    _run_all(root, jobs, workers, log)
    for run in runs:
        run["validation_auc"] = _validation_auc(root, run["stage"])
    return runs


def _test_runs(
    config: dict, root: Path, runs: list[dict[str, Any]], evaluation_args: dict | None, workers: int, log
) -> None:
    """Step 3: one evaluation per (fraction, seed) over every arm; each run gets its test AUC and CI."""
    ev_args = {"n_bootstrap": 1000, "attention": 0, **(evaluation_args or {})}
    jobs = []
    for name in dict.fromkeys(r["evaluation"] for r in runs):
        group = [r for r in runs if r["evaluation"] == name]
        jobs.append((_evaluation_stage(config, root, name, group, ev_args, log), [r["stage"] for r in group]))
    _run_all(root, jobs, workers, log)
    for run in runs:
        comp = read_json(root / run["evaluation"] / "results" / "comparison.json")
        row = next(x for x in comp["rows"] if x["title"] == run["title"])
        run.update(test_auc=row["mean_auc"], test_low=row["low"], test_high=row["high"])


def run_protocol(
    config: dict,
    root: Path,
    arms: list[Arm],
    *,
    fractions: tuple[float, ...] = (0.01, 0.1),
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    tune_seeds: tuple[int, ...] = (0, 1),
    recipes: dict[str, dict] | None = None,
    full_fraction: bool = True,
    workers: int = 2,
    evaluation_args: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Tune, run every seed and evaluate ``arms`` under ``root`` (a pipeline run folder whose upstream
    stages exist). Returns ``{"tuning": ..., "runs": [...]}`` and writes ``protocol.json``."""
    recipes = dict(recipes or DEFAULT_RECIPES)
    config = _check_arms(config, arms, seeds, tune_seeds, workers)
    with writer_lock(root, "pipeline run folder"):  # no other runner in this folder meanwhile
        install_signal_handlers()
        return _run_protocol(
            config, root, arms, recipes, fractions, seeds, tune_seeds, full_fraction, workers, evaluation_args, log
        )


def _run_protocol(
    config, root, arms, recipes, fractions, seeds, tune_seeds, full_fraction, workers, evaluation_args, log
):
    tuning = _tune(config, root, arms, recipes, fractions, tune_seeds, workers, log)
    runs = _run_seeds(config, root, arms, recipes, tuning, fractions, seeds, full_fraction, workers, log)
    _test_runs(config, root, runs, evaluation_args, workers, log)
    result = {
        "arms": [a.__dict__ | {"deps": list(a.deps)} for a in arms],
        "recipes": recipes,
        "fractions": list(fractions),
        "seeds": list(seeds),
        "tune_seeds": list(tune_seeds),
        "tuning": tuning,
        "runs": runs,
    }
    write_json(root / "protocol.json", result)
    return result


def _evaluation_name(group: str, fraction: float, seed: int) -> str:
    return f"protocol_eval_{group}_f{round(fraction * 100):d}_s{seed}"


def _evaluation_stage(config: dict, root: Path, name: str, group: list[dict], ev_args: dict, log) -> Stage:
    """Test metrics of one (arm group, fraction, seed), its arms side by side (``comparison.json``)."""
    fraction, seed = group[0]["fraction"], group[0]["seed"]
    models = [(r["title"], root / r["stage"] / "run" / "best") for r in group]

    def run(folder: Path) -> dict:
        out = folder / "results"
        options = evaluation_options(config, models, root / "real_data", out, ev_args)
        _run_command(
            stage_command(config, folder, ["evaluate"], options), folder, log, env=config.get("subprocess_env")
        )
        from .results import build_results

        titles = {r["arm"]: r["title"] for r in group}
        summary = build_results(
            out,
            titles,
            {"label fraction": f"{fraction:g} (seed {seed})"},
            n_bootstrap=ev_args.get("n_bootstrap", 1000),
            seed=config["seed"],
        )
        return {"results": "results", "rows": summary["rows"]}

    return Stage(
        name,
        {"models": [[t, str(p)] for t, p in models], "evaluation": ev_args, "seed": config["seed"]},
        run,
        outputs=["results/comparison.json"],
    )


def pooled_rows(
    result: dict, root: Path, baselines: tuple[str, ...] = ("random_init",), n_bootstrap: int = 2000
) -> list[dict]:
    """Per (fraction, arm): mean, median, IQR and range of the test AUC over seeds, and against each
    baseline arm the paired bootstrap CI of the mean difference over seeds and test cases together."""
    import numpy as np

    from ..evaluation.classification import paired_bootstrap_over_seeds
    from ..evaluation.report_inputs import predictions_path

    def load(run: dict):
        d = np.load(predictions_path(root / run["evaluation"] / "results", run["title"]))
        return d["targets"], d["probs"]

    runs = result["runs"]
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["fraction"], r["arm"]), []).append(r)
    out = []
    for (fraction, arm), group in groups.items():
        group = sorted(group, key=lambda r: r["seed"])
        aucs = np.array([r["test_auc"] for r in group])
        row = {
            "fraction": fraction,
            "arm": arm,
            "title": group[0]["title"],
            "recipe": group[0]["recipe"],
            "seeds": [r["seed"] for r in group],
            "mean": float(aucs.mean()),
            "median": float(np.median(aucs)),
            "q1": float(np.percentile(aucs, 25)),
            "q3": float(np.percentile(aucs, 75)),
            "min": float(aucs.min()),
            "max": float(aucs.max()),
            "vs": {},
        }
        for base in baselines:
            # paired on the seeds both ran (the same label subsets and batch orders)
            base_runs = [
                r
                for r in sorted(groups.get((fraction, base), []), key=lambda r: r["seed"])
                if r["seed"] in row["seeds"]
            ]
            if arm == base or [r["seed"] for r in base_runs] != row["seeds"]:
                continue
            loaded = [load(r) for r in group]
            d = paired_bootstrap_over_seeds(
                loaded[0][0], [x[1] for x in loaded], [load(r)[1] for r in base_runs], n_bootstrap=n_bootstrap, seed=0
            )
            row["vs"][base] = d
        out.append(row)
    return out
