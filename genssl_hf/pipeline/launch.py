"""How a stage runs its training / evaluation job: a fresh subprocess of the ``genssl`` command
(``python -m genssl_hf <command> <config file>``, or through the config's ``launcher``, e.g.
``accelerate launch``), its options, command line and log kept in the stage folder."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from ..utils import write_json

from ..core.secrets import redact_argv
from .stage_process import ProgressEcho, run_stage_process


def _run_command(cmd: list[str], folder: Path, log, name: str = "command", env: dict[str, str] | None = None) -> None:
    """Run a stage's command with its output in ``folder/<name>.log`` and, as it comes, on the
    terminal (lines, and the progress bar as a status line every few seconds); the command is
    recorded, credentials redacted, in ``folder/<name>.txt``. The stage runs in its own process
    group and never outlives the runner (:mod:`.stage_process`). ``env``: variables set for this
    command only (e.g. its thread count)."""
    shown = shlex.join(redact_argv(cmd))
    (folder / f"{name}.txt").write_text(shown + "\n")
    log_path = folder / f"{name}.log"
    log("  $ " + shown)
    log(f"  log: {log_path}")
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")  # progress reaches the terminal as it happens
    with open(log_path, "wb") as fh:
        returncode = run_stage_process(cmd, fh, ProgressEcho(f"  [{folder.name}] ", log), env=env)
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"command failed with exit code {returncode}: {shown}\n(log: {log_path})\n{tail}")


def check_launcher(config: dict) -> None:
    """A ``launcher`` that is not on PATH fails here, before any stage: a stage launching a
    training command would otherwise fail after the (long) generation stage."""
    import shutil

    launcher = config.get("launcher")
    if launcher and shutil.which(launcher[0]) is None:
        raise FileNotFoundError(
            f"config 'launcher' {launcher!r}: {launcher[0]!r} is not on PATH (activate the environment "
            "that has it, give its full path, or set launcher to null to run stages with python -m)"
        )


def generation_processes(config: dict) -> int:
    """How many processes the ``generated_dataset`` stage runs on (``generation.num_processes``,
    default 1: in the runner's own process)."""
    return int(config.get("generation", {}).get("num_processes") or 1)


def _is_accelerate_launch(launcher: Sequence[str]) -> bool:
    """``accelerate launch ...``, ``/venv/bin/accelerate launch``, ``accelerate-launch`` or
    ``python -m accelerate.commands.launch``."""
    return any(Path(str(part)).name.startswith("accelerate") for part in launcher)


def check_generation_launch(config: dict) -> None:
    """``generation.num_processes`` > 1 splits the generated dataset over accelerate's ranks, so it
    needs an ``accelerate launch`` launcher: a clear error naming both keys, before any stage."""
    n = generation_processes(config)
    if n == 1:
        return
    launcher = config.get("launcher")
    if not launcher:
        raise ValueError(
            f"generation.num_processes {n} runs the generated_dataset stage as `accelerate launch "
            f"--num_processes {n} -m genssl_hf generate ...`, but the config has no launcher: set launcher "
            '(e.g. --set \'launcher=["accelerate", "launch"]\') or generation.num_processes to 1'
        )
    if not _is_accelerate_launch(launcher):
        raise ValueError(
            f"generation.num_processes {n} needs launcher to be an `accelerate launch` command (the dataset's "
            f"shards are split over accelerate's ranks), got launcher {list(launcher)!r}"
        )


def generation_launcher(config: dict) -> list[str]:
    """The config's ``launcher`` with ``--num_processes generation.num_processes`` (replacing a
    ``--num_processes`` it has: that one is the training stages' count)."""
    launcher, skip = [], False
    for part in config["launcher"]:
        if skip:
            skip = False
        elif str(part) in ("--num_processes", "--num-processes"):
            skip = True  # and its value
        elif not str(part).startswith(("--num_processes=", "--num-processes=")):
            launcher.append(str(part))
    return launcher + ["--num_processes", str(generation_processes(config))]


def genssl_prefix(config: dict) -> list[str]:
    """``python -m genssl_hf``, or through the config's ``launcher`` (e.g. ``accelerate launch``)."""
    launcher = config.get("launcher")
    if launcher:  # e.g. ["accelerate", "launch", "--num_processes", "8"]
        return list(launcher) + ["-m", "genssl_hf"]
    return [sys.executable, "-m", "genssl_hf"]


def stage_command(
    config: dict, folder: Path, command: Sequence[str], options: dict[str, Any], name: str = "command"
) -> list[str]:
    """The command line of a stage's job, ``python -m genssl_hf <command> <folder>/<name>_config.json``,
    after writing ``options`` into that file: the options a stage records are the ones its job reads
    (``genssl`` reads the file as typed options: ``true`` a flag, ``false`` / ``null`` left out, a
    list several values, a mapping JSON text)."""
    path = folder / f"{name}_config.json"
    write_json(path, _jsonable(options))
    return genssl_prefix(config) + [*command, str(path)]


def _jsonable(obj: Any) -> Any:
    """A JSON-safe copy (anything unknown becomes its string)."""
    return json.loads(json.dumps(obj, default=str))
