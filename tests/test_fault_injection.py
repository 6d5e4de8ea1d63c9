"""Faults beyond kill -9 (issue 35): a full disk while writing a shard or a checkpoint, and a
truncated latest checkpoint on resume. (An upload interrupted mid-way: tests/test_publish_outgoing.py.)

* ENOSPC in the middle of a shard: the error propagates, no partial shard is visible, the lock is
  released, and the rerun completes with shards byte-identical to an uninterrupted run.
* ENOSPC in the middle of a checkpoint: the error names the checkpoint and the intact earlier ones,
  and no half-written checkpoint folder stays.
* A truncated ``model.safetensors`` in the latest checkpoint: ``--resume_from_checkpoint latest``
  falls back to the previous checkpoint and names the skipped one; an explicit path is refused.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from genssl_hf.generation import materialize as mz
from genssl_hf.training.checkpoints import TrainState, list_checkpoints, maybe_resume, save_checkpoint
from genssl_hf.utils import FolderLock

PROMPTS = [
    {"text": "Big left-sided pleural effusion", "disease": "Pleural Effusion", "existence": "positive"},
    {"text": "Pleural effusion with no blunting", "disease": "Pleural Effusion", "existence": "negative"},
]
SETTINGS = dict(
    prompts=PROMPTS, num_images=6, shard_size=3, rows_per_checkpoint=2, batch_size=2, height=8, width=8, progress=False
)


class HashGenerator:
    """image = f(prompt, seed): deterministic, so two runs can be compared byte for byte."""

    generator_id = "hash-fake"
    batch_invariant = True

    def __call__(self, prompts, seeds):
        out = []
        for p, s in zip(prompts, seeds):
            h = int.from_bytes(hashlib.sha256(f"{p}|{s}".encode()).digest()[:8], "little")
            out.append(np.random.default_rng(h).random((8, 8), dtype=np.float32))
        return np.stack(out)


def _shards(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "data").rglob("*.parquet"))}


def test_disk_full_during_a_shard_write_then_the_rerun_completes(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    clean = tmp_path / "clean"
    mz.generate_dataset(clean, HashGenerator(), **SETTINGS)
    out = tmp_path / "full"
    real_write = pq.ParquetWriter.write_table
    calls = [0]

    def write_table(self, table, *a, **kw):
        calls[0] += 1
        if calls[0] == 4:  # a few chunks in: the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, table, *a, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    with pytest.raises(OSError, match="No space left on device"):
        mz.generate_dataset(out, HashGenerator(), **SETTINGS)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real_write)
    visible = [p for p in (out / "data").rglob("*") if p.is_file()] if (out / "data").exists() else []
    assert all(not p.name.startswith(".tmp") for p in visible)  # no partial shard under data/
    assert len(_shards(out)) < len(_shards(clean))
    assert not (out / FolderLock.NAME).exists()  # the lock went with the failed writer
    mz.generate_dataset(out, HashGenerator(), **SETTINGS)  # space freed: the rerun resumes
    assert _shards(out) == _shards(clean)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def accelerator(fresh_accelerate_state):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    return acc, model, opt


def _step(model, opt):
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    opt.zero_grad()


def test_disk_full_during_a_checkpoint_keeps_the_earlier_ones(tmp_path, accelerator, monkeypatch):
    acc, model, opt = accelerator
    save_checkpoint(acc, tmp_path, TrainState(global_step=1))
    real_save = acc.save_state

    def save_state(folder, **kw):
        (Path(folder) / "model.safetensors").write_bytes(b"partial")  # some files made it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(acc, "save_state", save_state)
    expected = r"writing checkpoint .*checkpoint-2 failed \(No space left on device\); .* intact \(checkpoint-1\)"
    with pytest.raises(OSError, match=expected):
        save_checkpoint(acc, tmp_path, TrainState(global_step=2))
    monkeypatch.setattr(acc, "save_state", real_save)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1"]


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, accelerator, capsys):
    acc, model, opt = accelerator
    save_checkpoint(acc, tmp_path, TrainState(global_step=1))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt)
    save_checkpoint(acc, tmp_path, TrainState(global_step=2))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]
    weights = next((tmp_path / "checkpoint-2").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a crash mid-write
    _step(model, opt)
    state = maybe_resume(acc, "latest", tmp_path)
    assert state.global_step == 1
    out = capsys.readouterr().out
    assert f"skipping unreadable checkpoint(s) checkpoint-2 ({weights.name}:" in out
    assert "resuming from checkpoint-1 instead" in out
    assert all(torch.equal(v, first[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint .*checkpoint-2: unreadable checkpoint"):
        maybe_resume(acc, str(tmp_path / "checkpoint-2"), tmp_path)
