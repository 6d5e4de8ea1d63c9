"""How a stage runs its training / evaluation command: a fresh subprocess (``python -m module`` or
the config's ``launcher``, e.g. ``accelerate launch``), its command line and log kept in the stage
folder."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


def _run_command(cmd: list[str], folder: Path, log, name: str = "command", env: dict[str, str] | None = None) -> None:
    """Run a stage's command with its output in ``folder/<name>.log``; the command is recorded in
    ``folder/<name>.txt``. ``env``: variables set for this command only (e.g. its thread count)."""
    (folder / f"{name}.txt").write_text(shlex.join(cmd) + "\n")
    log("  $ " + shlex.join(cmd))
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    with open(folder / f"{name}.log", "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = (folder / f"{name}.log").read_text()[-3000:]
        raise RuntimeError(f"command failed with exit code {proc.returncode}: {shlex.join(cmd)}\n{tail}")


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
