"""Stage bookkeeping: a stage's output folder is valid when its ``stage.json`` marker records the
same config fingerprint and every output the stage promised still exists."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..utils import read_json, write_json
from .stage_process import counting_command_cpu

MARKER = "stage.json"
TIMINGS = "timings.json"  # the run's wall and CPU seconds per step (:class:`RunClock`)


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The stage options of each config section under the names they had before the trainers took
# transformers' vocabulary (new name -> old name). A stage folder made then, with the same values,
# is still valid: its fingerprint is the one of the config spelled the old way.
LEGACY_OPTION_NAMES: dict[str, dict[str, str]] = {
    "pretrain": {"model": "preset", "max_steps": "max_train_steps"},
    "ssl_pretrain": {"model": "backbone", "max_steps": "max_train_steps"},
    "vlp": {"model": "image_tower", "max_steps": "max_train_steps"},
    "finetune": {
        "recipe": "preset",
        "num_train_epochs": "epochs",
        "per_device_train_batch_size": "batch_size",
        "base_learning_rate": "blr",
        "learning_rate": "lr",
        "per_device_eval_batch_size": "eval_batch_size",
    },
    "autoencoder_args": {
        "max_steps": "max_train_steps",
        "per_device_train_batch_size": "train_batch_size",
        "warmup_steps": "lr_warmup_steps",
    },
    "ldm_args": {
        "max_steps": "max_train_steps",
        "per_device_train_batch_size": "train_batch_size",
        "warmup_steps": "lr_warmup_steps",
    },
}


def legacy_config(obj: Any) -> Any:
    """``obj`` (a stage config) with the options of :data:`LEGACY_OPTION_NAMES` under their old names."""
    if isinstance(obj, list):
        return [legacy_config(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        names = LEGACY_OPTION_NAMES.get(key)
        if names and isinstance(value, dict):
            options = value.get("args") if key in ("pretrain", "ssl_pretrain", "vlp", "finetune") else value
            if isinstance(options, dict):
                options = {names.get(k, k): v for k, v in options.items()}
                value = (
                    {**value, "args": options} if key in ("pretrain", "ssl_pretrain", "vlp", "finetune") else options
                )
        out[key] = legacy_config(value)
    return out


@dataclass
class Stage:
    name: str
    config: dict
    run: Callable[[Path], dict]  # writes into the folder, returns a summary (paths are relative)
    outputs: list[str] = field(default_factory=list)  # files/folders that must exist afterwards


def stage_is_valid(folder: Path, stage: Stage) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        meta = read_json(marker)
    except (OSError, ValueError):
        return False
    if meta.get("fingerprint") not in (fingerprint(stage.config), fingerprint(legacy_config(stage.config))):
        return False
    return all((folder / rel).exists() for rel in stage.outputs)


def run_stage(root: Path, stage: Stage, log: Callable[[str], None] = print, deps: list[str] = ()) -> dict:
    """Run ``stage`` into ``root/<name>`` unless a valid output is already there.

    ``deps`` names the upstream stages whose outputs this one reads: their fingerprints join this
    stage's, so a changed upstream stage makes every stage below it run again."""
    folder = root / stage.name
    if deps:
        stage.config = dict(stage.config, upstream={d: read_json(root / d / MARKER)["fingerprint"] for d in deps})
    if stage_is_valid(folder, stage):
        log(f"[{stage.name}] up to date, skipped")
        return read_json(folder / MARKER)["summary"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    log(f"[{stage.name}] running")
    start = time.perf_counter()
    with counting_command_cpu() as command_cpu:
        summary = stage.run(folder)
    missing = [rel for rel in stage.outputs if not (folder / rel).exists()]
    if missing:
        raise RuntimeError(f"stage {stage.name!r} finished without its outputs: {missing}")
    seconds = time.perf_counter() - start
    write_json(
        folder / MARKER,
        {
            "stage": stage.name,
            "fingerprint": fingerprint(stage.config),
            "config": stage.config,
            "seconds": round(seconds, 2),
            # CPU of the stage's subprocesses (training, evaluation); 0 for a stage run in the runner
            "command_cpu_seconds": None if command_cpu["seconds"] is None else round(command_cpu["seconds"], 2),
            "summary": summary,
        },
    )
    log(f"[{stage.name}] done in {seconds:.1f}s")
    return summary


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and of its finished children
    (stage subprocesses, with the workers they waited for)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stage_seconds(folder: Path) -> dict[str, Any]:
    """The wall seconds and subprocess CPU seconds a stage's ``stage.json`` recorded when it ran."""
    try:
        meta = read_json(folder / MARKER)
    except (OSError, ValueError):
        return {}
    return {"wall_seconds": meta.get("seconds"), "command_cpu_seconds": meta.get("command_cpu_seconds")}


def _marker_mtime(folder: Path) -> int | None:
    marker = folder / MARKER
    return marker.stat().st_mtime_ns if marker.is_file() else None


class RunClock:
    """Where a run's time goes: wall and CPU seconds of every step (one stage, or a group of stages
    run side by side), written to ``<root>/timings.json`` after each step, so an interrupted run
    keeps what it measured. On a shared machine wall seconds depend on the other jobs; the CPU
    seconds (and the load averages recorded at the start and end) say what the run itself cost.
    A group's CPU seconds are its stages' together (they overlap in time); ``per_stage`` has each
    stage's own wall seconds and the CPU seconds of its subprocesses (from its ``stage.json``)."""

    def __init__(self, root: Path, workers: int = 1):
        self.root, self.workers = root, workers
        self.steps: list[dict[str, Any]] = []
        self._wall0, self._cpu0 = time.perf_counter(), cpu_seconds()
        self._load0 = [round(x, 2) for x in os.getloadavg()]

    @contextlib.contextmanager
    def step(self, names: list[str]) -> Iterator[None]:
        """Time the body, which runs the stages ``names`` (a stage whose ``stage.json`` is not
        rewritten was up to date and is listed as skipped)."""
        before = {n: _marker_mtime(self.root / n) for n in names}
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield
        self.steps.append(
            {
                "stages": list(names),
                "per_stage": {n: _stage_seconds(self.root / n) for n in names},
                "skipped": [n for n in names if before[n] is not None and _marker_mtime(self.root / n) == before[n]],
                "wall_seconds": round(time.perf_counter() - wall, 2),
                "cpu_seconds": round(cpu_seconds() - cpu, 2),
            }
        )
        self.write()

    def record(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "wall_seconds": round(time.perf_counter() - self._wall0, 2),
            "cpu_seconds": round(cpu_seconds() - self._cpu0, 2),
            "stage_workers": self.workers,
            "load_average_start": self._load0,  # 1, 5 and 15 min, as uptime prints them
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "cpu_count": os.cpu_count(),
        }

    def write(self) -> None:
        write_json(self.root / TIMINGS, self.record())


def run_stage_graph(
    root: Path, jobs: list[tuple[Stage, list[str]]], workers: int = 1, log: Callable[[str], None] = print
) -> dict[str, dict]:
    """Run ``(stage, deps)`` jobs, up to ``workers`` at a time, each once every dep named among the
    jobs has finished (a dep that is not a job must be done already); ``jobs`` lists them in an
    order that runs one after the other (a dep before the stages that read it), which is the order
    with one worker and the order of preference with several. Each stage writes only its own
    folder and reads only its finished deps, so the results are those of running the jobs one
    after the other. Returns ``{stage name: summary}``. When a stage fails no new stage starts;
    the running ones finish, every failure is logged by stage name and the first is raised."""
    names = [stage.name for stage, _ in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"stage graph: a stage name occurs twice in {names}")
    order = {name: i for i, name in enumerate(names)}
    for stage, deps in jobs:
        later = [d for d in deps if order.get(d, -1) >= order[stage.name]]
        if later:
            raise ValueError(f"stage graph: {stage.name!r} depends on {later}, listed at or after it")
    if workers < 1:
        raise ValueError(f"stage graph: workers must be >= 1, got {workers}")
    if workers == 1:
        return {stage.name: run_stage(root, stage, log, deps=deps) for stage, deps in jobs}
    return _run_graph_threads(root, jobs, workers, log)


def _run_graph_threads(
    root: Path, jobs: list[tuple[Stage, list[str]]], workers: int, log: Callable[[str], None]
) -> dict[str, dict]:
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    in_graph = {stage.name for stage, _ in jobs}
    pending, running = list(jobs), {}
    done: dict[str, dict] = {}
    failed: list[tuple[str, BaseException]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while pending or running:
            while not failed and len(running) < workers:
                ready = next((j for j in pending if all(d in done or d not in in_graph for d in j[1])), None)
                if ready is None:
                    break
                pending.remove(ready)
                stage, deps = ready
                running[pool.submit(run_stage, root, stage, log, deps)] = stage.name
            if not running:
                break  # a failure stopped the rest (every dep of a pending job is in the graph, listed before it)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                if future.exception() is not None:
                    failed.append((name, future.exception()))
                else:
                    done[name] = future.result()
    if failed:
        for name, e in failed:
            log(f"[{name}] failed: {(str(e).splitlines() or [type(e).__name__])[0]}")
        not_run = [stage.name for stage, _ in pending]
        name, first = failed[0]
        raise RuntimeError(
            f"stage {name!r} failed"
            + (f" (and {[n for n, _ in failed[1:]]})" if len(failed) > 1 else "")
            + (f"; not started: {not_run}" if not_run else "")
            + f": {first}"
        ) from first
    return done
