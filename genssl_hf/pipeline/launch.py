"""How a stage runs its training / evaluation command: a fresh subprocess (``python -m module`` or
the config's ``launcher``, e.g. ``accelerate launch``), its command line and log kept in the stage
folder."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

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


def _python_module(config: dict, module: str) -> list[str]:
    launcher = config.get("launcher")
    if launcher:  # e.g. ["accelerate", "launch", "--num_processes", "8"]
        return list(launcher) + ["-m", module]
    return [sys.executable, "-m", module]


def _flags(options: dict) -> list[str]:
    """``{"num_train_epochs": 5, "figure": "on"}`` -> ``["--num_train_epochs", "5", "--figure", "on"]``."""
    out: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag] + [str(v) for v in value]
        else:
            out += [flag, str(value)]
    return out


def _jsonable(obj: Any) -> Any:
    """A JSON-safe copy (anything unknown becomes its string)."""
    return json.loads(json.dumps(obj, default=str))
