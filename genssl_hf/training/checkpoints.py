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
    "checkpoint_problem",
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
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json(tmp / TRAIN_STATE_FILE, state.to_dict())
    except OSError as e:  # disk full, quota...: no half checkpoint stays, the earlier ones are intact
        shutil.rmtree(tmp, ignore_errors=True)
        kept = [p.name for p in list_checkpoints(out)]
        raise OSError(
            e.errno,
            f"writing checkpoint {final} failed ({e.strerror or e}); nothing of it was kept, the earlier "
            f"checkpoints are intact ({', '.join(kept) or 'none'}): free space and rerun with "
            "--resume_from_checkpoint latest",
        ) from e
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit and total_limit > 0:
            for old in list_checkpoints(out)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from (a truncated or corrupted file,
    e.g. after a crash or a full disk), or None: ``train_state.json`` parses, every safetensors
    header fits its file, every torch zip archive passes its CRC check."""
    import zipfile

    try:
        read_json(path / TRAIN_STATE_FILE)
    except (OSError, ValueError) as e:
        return f"{TRAIN_STATE_FILE}: {e}"
    for f in sorted(path.rglob("*")):
        if not f.is_file():
            continue
        if f.suffix == ".safetensors":
            try:
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as st:
                    st.keys()
            except Exception as e:  # safetensors raises its own error types
                return f"{f.name}: {type(e).__name__}: {e}"
        elif f.suffix in (".bin", ".pt", ".pth") and zipfile.is_zipfile(f):
            try:
                with zipfile.ZipFile(f) as zf:
                    broken = zf.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                return f"{f.name}: {e}"
            if broken is not None:
                return f"{f.name}: corrupted member {broken}"
        elif f.suffix in (".bin", ".pt", ".pth", ".pkl") and f.stat().st_size == 0:
            return f"{f.name}: empty file"
    return None


def maybe_resume(accelerator, resume_from: str | None, output_dir: str | os.PathLike) -> TrainState:
    """Load a checkpoint (``'latest'`` or a folder) into the prepared objects and return its state;
    a fresh :class:`TrainState` when ``resume_from`` is None (or 'latest' finds none)."""
    if not resume_from:
        return TrainState()
    if resume_from == "latest":
        ckpts = list_checkpoints(output_dir)
        if not ckpts:
            accelerator.print(f"no checkpoint in {output_dir}; starting from scratch")
            return TrainState()
        path, bad = None, []
        for cand in reversed(ckpts):  # newest readable one: a truncated latest one falls back, named
            problem = checkpoint_problem(cand)
            if problem is None:
                path = cand
                break
            bad.append(f"{cand.name} ({problem})")
        if path is None:
            raise ValueError(
                f"--resume_from_checkpoint latest: no readable checkpoint in {output_dir}: {'; '.join(bad)}"
            )
        if bad:
            accelerator.print(f"skipping unreadable checkpoint(s) {'; '.join(bad)}; resuming from {path.name} instead")
    else:
        path = Path(resume_from)
        if not (path / TRAIN_STATE_FILE).is_file():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume_from}: not a checkpoint folder (no {TRAIN_STATE_FILE})"
            )
        problem = checkpoint_problem(path)
        if problem is not None:
            raise ValueError(f"--resume_from_checkpoint {resume_from}: unreadable checkpoint ({problem})")
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
