"""One writer per run folder, and no stage outliving the pipeline runner.

* A trainer refuses a folder another live process is writing (the message names the holder), and
  takes the folder over once that holder was SIGKILLed (a stale lock never blocks).
* Killing the runner (SIGKILL or SIGTERM) mid-stage leaves no stage process alive, grandchildren
  included, and a rerun is refused while the killed runner's stage still holds the run folder.
* The stage's output reaches the terminal (lines, the bar as a status line) and its log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from genssl_hf.pipeline.stage_process import ProgressEcho
from genssl_hf.utils import FolderBusyError, FolderLock, writer_lock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _state(pid: int) -> str | None:
    """The process state letter in ``/proc/<pid>/stat`` (None once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")  # a zombie has ended


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the writer lock of ``folder`` (as a running trainer would)."""
    code = "import sys, time; from genssl_hf.utils import FolderLock; FolderLock(sys.argv[1]).acquire(); "
    code += "print('held', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_trainer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    from genssl_hf.training import mae

    out = tmp_path / "run"
    holder = _hold_lock(out)
    args = mae.build_parser().parse_args(["--dataset", str(tmp_path / "missing"), "--output_dir", str(out)])
    try:
        with pytest.raises(
            FolderBusyError, match=rf"--output_dir {out} is being written by another run \(pid {holder.pid}"
        ):
            mae.pretrain_mae(args)
        assert (out / FolderLock.NAME).exists()  # the holder's lock is untouched
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file is stale, the next writer takes over; here it
    # then fails on the missing dataset, and leaves the folder as it found it (the stale lock aside)
    with pytest.raises((FileNotFoundError, ValueError), match="missing"):
        mae.pretrain_mae(args)
    assert not any(p.name != FolderLock.NAME for p in out.iterdir())


def test_writer_lock_is_reentrant_and_removes_the_empty_folder_it_made(tmp_path):
    out = tmp_path / "eval"
    with writer_lock(out, "--output_dir") as lock:
        assert lock is not None and lock.path.exists()
        with writer_lock(out, "--output_dir") as again:  # the same process: same lock
            assert again is lock
        with pytest.raises(FolderBusyError):
            FolderLock(out).acquire()  # another open file description: refused
    assert not out.exists()
    beside = tmp_path / "results"
    with writer_lock(beside, "--output_dir", beside=True) as lock:
        assert lock.path == tmp_path / f".results{FolderLock.NAME}"
        assert not beside.exists()  # atomic_dir makes it whole later


RUNNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from genssl_hf.pipeline.launch import _run_command
    from genssl_hf.pipeline.stage_process import install_signal_handlers
    from genssl_hf.utils import writer_lock

    root = Path(sys.argv[1])
    stage = root / "stage"
    with writer_lock(root, "pipeline run folder"):
        install_signal_handlers()
        stage.mkdir(exist_ok=True)
        child = (
            "import subprocess, sys, time, os; "
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            "open(sys.argv[1], 'w').write(f'{os.getpid()} {g.pid}'); "
            "print('stage started', flush=True); "
            "[print(f'\\\\rstep {i}/100 loss=0.5 img/s=10', end='', file=sys.stderr, flush=True) "
            " or time.sleep(0.05) for i in range(100000)]"
        )
        _run_command([sys.executable, "-c", child, str(stage / "pids")], stage, print)
    """
)


def _start_runner(root: Path) -> tuple[subprocess.Popen, int, int]:
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV
    )
    pids = root / "stage" / "pids"
    _wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="the stage to start")
    stage_pid, grandchild_pid = map(int, pids.read_text().split())
    return runner, stage_pid, grandchild_pid


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_runner_leaves_no_stage_process(tmp_path, sig):
    root = tmp_path / "run"
    runner, stage_pid, grandchild_pid = _start_runner(root)
    try:
        assert _alive(stage_pid) and _alive(grandchild_pid)
        _wait_for(lambda: "step" in (root / "stage" / "command.log").read_text(), what="progress in the log")
        if sig == signal.SIGKILL:
            runner.kill()
            runner.wait()
        else:
            runner.send_signal(sig)
            assert runner.wait(timeout=60) == 128 + sig
        _wait_for(lambda: not _alive(stage_pid), timeout=30, what="the stage to end")
        # the whole process group ends: the runner's handler (SIGTERM) or the watcher (SIGKILL)
        _wait_for(lambda: not _alive(grandchild_pid), timeout=30, what="the stage's child to end")
        with writer_lock(root, "pipeline run folder"):  # the rerun gets the folder
            pass
    finally:
        for pid in (stage_pid, grandchild_pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        runner.kill()
        runner.wait()
    out = runner.stdout.read().decode()
    assert "log: " + str(root / "stage" / "command.log") in out
    assert "[stage] stage started" in out


def test_rerun_is_refused_while_a_stage_of_the_killed_runner_lives(tmp_path):
    root = tmp_path / "run"
    runner, stage_pid, grandchild_pid = _start_runner(root)
    try:
        os.kill(stage_pid, signal.SIGSTOP)  # a stage slow to die: it must not be overlapped meanwhile
        # wait until it has stopped: a SIGSTOP still pending when the runner dies loses to the
        # parent-death SIGTERM (the kernel delivers the lower-numbered signal first) on a busy machine
        _wait_for(lambda: _state(stage_pid) == "T", timeout=30, what="the stage to stop")
        runner.kill()
        runner.wait()
        with pytest.raises(FolderBusyError, match=r"pipeline run folder .* is being written by another run \(pid"):
            FolderLock(root, "pipeline run folder").acquire()
        os.kill(stage_pid, signal.SIGCONT)  # the pending SIGTERM from the parent-death guard ends it
        _wait_for(lambda: not _alive(stage_pid), timeout=30, what="the stage to end")
        FolderLock(root).acquire().release()
    finally:
        for pid in (stage_pid, grandchild_pid):
            if _alive(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


def test_progress_echo_shows_lines_and_throttled_bars():
    shown: list[str] = []
    echo = ProgressEcho("[mae] ", shown.append, interval=3600)
    echo.feed("loading data\n\rMAE:  10%| 1/10 [loss=0.9, img/s=5]\rMAE:  20%| 2/")
    echo.feed("10 [loss=0.8, img/s=6]\rMAE: 100%| 10/10 [loss=0.5, img/s=7]\r")
    echo.close()
    assert shown == [
        "[mae] loading data",
        "[mae] MAE:  10%| 1/10 [loss=0.9, img/s=5]",
        "[mae] MAE: 100%| 10/10 [loss=0.5, img/s=7]",
    ]


def test_generator_progress_bar_counts_whole_images():
    """The sampling bar advances in whole images spread over the steps and ends at exactly its
    total (it read ``4.000000000000002/4 [..<-00:00]`` with fractional updates)."""
    import io

    from genssl_hf.generation.pretrained import load_phantom_generator

    pipe = load_phantom_generator()
    buf = io.StringIO()
    pipe.set_progress_bar_config(file=buf, mininterval=0, ascii=True)
    # 2 images over 3 steps: fractional updates of 2/3 summed to 1.9999999999999998, not 2
    pipe(["left pleural effusion"] * 2, num_inference_steps=3, height=64, width=64, output_type="np")
    last = buf.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert " 2/2 [" in last and "<-" not in last, last
