"""How a stage runs its training / evaluation job: a fresh subprocess of the ``genssl`` command
(``python -m genssl_hf <command> <config file>``, or through the config's ``launcher``, e.g.
``accelerate launch``), its options, command line and log kept in the stage folder."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ..utils import write_json


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
