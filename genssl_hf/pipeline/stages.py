"""Stage bookkeeping: a stage's output folder is valid when its ``stage.json`` marker records the
same config fingerprint and every output the stage promised still exists."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..utils import read_json, write_json

MARKER = "stage.json"


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
            "summary": summary,
        },
    )
    log(f"[{stage.name}] done in {seconds:.1f}s")
    return summary
