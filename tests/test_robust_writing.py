"""Crash safety of generated-dataset writing, to the last temporary file.

* A writer SIGKILLed at every phase (before and after each atomic rename: the config, the run
  marker, each checkpoint chunk, each shard, the done marker, ``verification.json``, the card)
  leaves no visible partial file; the rerun resumes, ends byte-identical to an uninterrupted run,
  and leaves no temporary file, no lock and no ``.incomplete/``.
* Two writers of one folder: the second stops at once with a message naming the first.
* A failure before the first image is stored leaves no trace that blocks the corrected rerun.
* Files written by the atomic writer get the umask mode (0644 under umask 022), like shards.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from genssl_hf.generation import materialize as mz
from genssl_hf.utils import FolderBusyError, FolderLock, read_json, write_json

PROMPTS = [
    {"text": "Big left-sided pleural effusion", "disease": "Pleural Effusion", "existence": "positive"},
    {"text": "Pleural effusion with no blunting", "disease": "Pleural Effusion", "existence": "negative"},
]
SETTINGS = dict(
    prompts=PROMPTS, num_images=6, shard_size=3, rows_per_checkpoint=2, batch_size=2, height=8, width=8, progress=False
)


class HashGenerator:
    """image = f(prompt, seed), one image at a time."""

    generator_id = "hash-fake"
    batch_invariant = True

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.delay, self.fail = delay, fail

    def __call__(self, prompts, seeds):
        if self.fail:
            raise RuntimeError("generator broke")
        time.sleep(self.delay)
        out = []
        for p, s in zip(prompts, seeds):
            h = int.from_bytes(hashlib.sha256(f"{p}|{s}".encode()).digest()[:8], "little")
            out.append(np.random.default_rng(h).random((8, 8), dtype=np.float32))
        return np.stack(out)


def _files(out: Path) -> dict[str, bytes]:
    """Every file of a finished folder except the card's and config's run-dependent text."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix == ".parquet"
    }


def _leftovers(out: Path) -> list[str]:
    return [
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if ".tmp" in p.name or p.name == FolderLock.NAME or mz.INCOMPLETE_DIR in p.parts
    ]


def _run_killed(out: Path, kill_at: int, after: bool) -> int:
    """Fork a writer that SIGKILLs itself at its ``kill_at``-th atomic rename (just before it, or
    just after); returns the number of renames an unkilled writer made (kill_at=0)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: count renames, die at the chosen one
        os.close(read)
        calls = [0]
        real = os.replace

        def replace(src, dst):
            calls[0] += 1
            if calls[0] == kill_at and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
            if calls[0] == kill_at and after:
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace
        code = 0
        try:
            mz.generate_dataset(out, HashGenerator(), **SETTINGS)
            os.write(write, str(calls[0]).encode())
        except BaseException:  # noqa: BLE001 - report through the exit code
            code = 1
        os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    data = os.read(read, 64)
    os.close(read)
    if kill_at:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed at rename {kill_at}"
        return 0
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return int(data)


@pytest.mark.slow
def test_kill_at_every_phase_leaves_no_temp_file_and_always_resumes(tmp_path):
    reference = tmp_path / "reference"
    renames = _run_killed(reference, 0, after=False)
    assert renames >= 10  # config, run marker, chunks, shards, done marker, verification, card
    expected = _files(reference)
    assert expected and not _leftovers(reference)
    for kill_at in range(1, renames + 1):
        for after in (False, True):
            out = tmp_path / f"killed-{kill_at}-{'after' if after else 'before'}"
            _run_killed(out, kill_at, after)
            # whatever the moment, data/ holds complete shards only
            for shard in (out / "data").glob("*.parquet") if (out / "data").is_dir() else []:
                assert shard.name.startswith("train-")
            result = mz.generate_dataset(out, HashGenerator(), **SETTINGS)  # the rerun resumes
            assert result.verification.ok, (kill_at, after)
            assert _files(out) == expected, (kill_at, after)
            assert not _leftovers(out), (kill_at, after, _leftovers(out))
            assert (out / "README.md").is_file() and (out / mz.CONFIG_NAME).is_file()


def test_temp_files_of_a_killed_config_write_are_ignored_and_removed(tmp_path):
    """The case of the issue: a kill during the first write of generation_config.json."""
    out = tmp_path / "gen"
    out.mkdir()
    for name in (mz.CONFIG_NAME, mz.VERIFICATION_NAME, "README.md"):
        (out / f".{name}.tmp-abc123").write_text("{half")
    result = mz.generate_dataset(out, HashGenerator(), **SETTINGS)
    assert result.verification.ok and not _leftovers(out)


def test_second_writer_of_a_folder_is_refused_with_a_clear_message(tmp_path):
    out = tmp_path / "gen"
    pid = os.fork()
    if pid == 0:
        try:
            mz.generate_dataset(out, HashGenerator(delay=0.5), **SETTINGS)
        finally:
            os._exit(0)
    try:
        deadline = time.time() + 60
        while not (out / FolderLock.NAME).is_file() and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(FolderBusyError, match=rf"{out.name} is being written by another run \(pid {pid} "):
            mz.generate_dataset(out, HashGenerator(), **SETTINGS)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # the dead writer's lock is released by the kernel: the next run resumes
    assert mz.generate_dataset(out, HashGenerator(), **SETTINGS).verification.ok
    assert not _leftovers(out)


def test_failure_before_the_first_image_leaves_no_trace(tmp_path):
    out = tmp_path / "gen"
    with pytest.raises(RuntimeError, match="generator broke"):
        mz.generate_dataset(out, HashGenerator(fail=True), **SETTINGS)
    assert not out.exists()
    out.mkdir()  # a folder the user made stays, empty
    with pytest.raises(RuntimeError, match="generator broke"):
        mz.generate_dataset(out, HashGenerator(fail=True), **{**SETTINGS, "seed": 5})
    assert out.is_dir() and not list(out.iterdir())
    # the corrected rerun, with other settings, is not refused
    assert mz.generate_dataset(out, HashGenerator(), **SETTINGS).verification.ok


def test_bad_image_size_for_a_pipeline_fails_before_creating_anything(tmp_path):
    from genssl_hf.generation.pretrained import PHANTOM_GENERATOR_DIR

    out = tmp_path / "gen"
    with pytest.raises(ValueError, match=r"50x50 is not a multiple of 4"):
        mz.generate_dataset(out, str(PHANTOM_GENERATOR_DIR), **{**SETTINGS, "height": 50, "width": 50})
    assert not out.exists()


def test_resume_with_another_batch_size_is_refused_for_a_diffusion_generator(tmp_path):
    class Diffusion(HashGenerator):
        batch_invariant = False

    out = tmp_path / "gen"
    mz.generate_dataset(out, Diffusion(), **SETTINGS, max_images_this_run=2)
    config = read_json(out / mz.CONFIG_NAME)
    assert config["batch_size"] == 2 and config["num_threads"] >= 1
    with pytest.raises(ValueError, match=r"another batch_size.*bit-exact only at equal batch size and thread count"):
        mz.generate_dataset(out, Diffusion(), **{**SETTINGS, "batch_size": 3})
    assert mz.generate_dataset(out, Diffusion(), **SETTINGS).verification.ok
    # a finished folder mixes nothing: a rerun with another batch size is a no-op
    assert mz.generate_dataset(out, Diffusion(), **{**SETTINGS, "batch_size": 3}).verification.ok


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "gen"
        mz.generate_dataset(out, HashGenerator(), **SETTINGS)
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for path in [
        out / "README.md",
        out / mz.CONFIG_NAME,
        out / mz.VERIFICATION_NAME,
        tmp_path / "x.json",
        *sorted((out / "data").rglob("*.parquet")),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
