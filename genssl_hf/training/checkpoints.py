"""Checkpoints and exact resume for the training loops (re-exported by :mod:`genssl_hf.training.common`).

A checkpoint ``<output_dir>/checkpoint-<step>`` holds model, optimiser, scheduler and RNG states
(``accelerator.save_state``) plus ``train_state.json`` (:class:`TrainState`: epoch, batches consumed in that
epoch, optimiser steps, micro steps); :func:`resumable_batches` skips the consumed batches of the interrupted
epoch, so a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from genssl_hf.utils import read_json, write_json

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAIN_STATE_FILE",
    "TrainState",
    "list_checkpoints",
    "find_last_checkpoint",
    "save_checkpoint",
    "maybe_resume",
    "resumable_batches",
]

CHECKPOINT_PREFIX = "checkpoint-"
TRAIN_STATE_FILE = "train_state.json"


@dataclasses.dataclass
class TrainState:
    """Where a run stands; saved as ``train_state.json`` in every checkpoint.

    ``global_step``: optimiser steps done. ``micro_step``: micro batches done (all epochs).
    ``epoch`` / ``batch_in_epoch``: data position (batches of this process consumed in ``epoch``).
    ``images_seen``: images over all processes. ``extra``: anything a loop wants to keep (best metric...).
    """

    global_step: int = 0
    micro_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0
    last_loss: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _checkpoint_step(path: Path) -> int:
    try:
        return int(path.name[len(CHECKPOINT_PREFIX) :])
    except ValueError:
        return -1


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``output_dir`` (with ``train_state.json``), oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [
        p
        for p in out.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and (p / TRAIN_STATE_FILE).is_file() and _checkpoint_step(p) >= 0
    ]
    return sorted(found, key=_checkpoint_step)


def find_last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, state: TrainState, total_limit: int | None = None
) -> Path:
    """``accelerator.save_state`` into ``<output_dir>/checkpoint-<step>`` atomically (written to a temporary
    folder and renamed by the main process once every process is done), plus ``train_state.json``.
    Keeps the newest ``total_limit`` checkpoints."""
    out = Path(output_dir)
    final = out / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = out / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / TRAIN_STATE_FILE, state.to_dict())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit and total_limit > 0:
            for old in list_checkpoints(out)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def maybe_resume(accelerator, resume_from: str | None, output_dir: str | os.PathLike) -> TrainState:
    """Load a checkpoint (``'latest'`` or a folder) into the prepared objects and return its state;
    a fresh :class:`TrainState` when ``resume_from`` is None (or 'latest' finds none)."""
    if not resume_from:
        return TrainState()
    if resume_from == "latest":
        path = find_last_checkpoint(output_dir)
        if path is None:
            accelerator.print(f"no checkpoint in {output_dir}; starting from scratch")
            return TrainState()
    else:
        path = Path(resume_from)
        if not (path / TRAIN_STATE_FILE).is_file():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume_from}: not a checkpoint folder (no {TRAIN_STATE_FILE})"
            )
    accelerator.load_state(str(path))
    state = TrainState.from_dict(read_json(path / TRAIN_STATE_FILE))
    accelerator.print(
        f"resumed from {path} (step {state.global_step}, epoch {state.epoch}, batch {state.batch_in_epoch})"
    )
    return state


def resumable_batches(accelerator, dataloader, state: TrainState) -> Iterator[Any]:
    """Yield batches epoch after epoch from the position in ``state``, forever (the loop breaks).

    Calls ``set_epoch`` every epoch, skips the batches already consumed in a resumed epoch
    (``accelerator.skip_first_batches``), and keeps ``state.epoch`` / ``state.batch_in_epoch`` /
    ``state.micro_step`` current. Raises if an epoch yields no batch (empty data).
    """
    while True:
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(state.epoch)
        elif hasattr(getattr(dataloader, "dataset", None), "set_epoch"):  # plain DataLoader over a streaming dataset
            dataloader.dataset.set_epoch(state.epoch)
        loader = (
            accelerator.skip_first_batches(dataloader, state.batch_in_epoch) if state.batch_in_epoch else dataloader
        )
        yielded = False
        for batch in loader:
            yielded = True
            state.batch_in_epoch += 1
            state.micro_step += 1
            yield batch
        if not yielded and state.batch_in_epoch == 0:
            raise ValueError(
                "the training data yielded no batch (empty dataset, or fewer images than one batch with drop_last)"
            )
        state.epoch += 1
        state.batch_in_epoch = 0
