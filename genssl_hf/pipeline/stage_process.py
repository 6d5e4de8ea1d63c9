"""Stage subprocesses that never outlive the pipeline, with their progress on the terminal.

* Each stage command runs in its own process group (``start_new_session``), so ending it ends the
  launcher and everything it started (``accelerate launch`` workers, data-loader workers).
* It ends when the runner ends: on SIGINT / SIGTERM / SIGHUP the runner's handlers terminate
  every live stage group (SIGTERM, then SIGKILL after a grace period) before exiting; if the runner
  is killed outright (SIGKILL, a crash), the kernel sends the stage SIGTERM (Linux
  ``PR_SET_PDEATHSIG``, set in the child before it runs the command) and a small watcher process
  (one per stage, polling its parent) ends the stage's whole group, grandchildren included.
* The runner's writer locks are handed to the stage (``pass_fds``): the run folder stays locked
  until the stage has ended, so a rerun never overlaps a stage of a killed runner.
* Its output goes to the stage's log file unchanged and to the terminal: whole lines as they come,
  and progress bars (tqdm redraws with ``\\r``) as one status line at most every
  ``$GENSSL_PROGRESS_SECONDS`` seconds (default 20), each prefixed with the stage name.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Callable

from ..utils import held_lock_fds

GRACE_SECONDS = 10.0
PROGRESS_SECONDS_ENV = "GENSSL_PROGRESS_SECONDS"

_live: dict[int, subprocess.Popen] = {}  # pid -> stage process (its own process group)
_live_lock = threading.Lock()
_handlers_installed = False
_cpu = threading.local()  # .seconds: CPU of the commands this thread ran inside counting_command_cpu


@contextlib.contextmanager
def counting_command_cpu():
    """Sum, into the yielded dict's ``"seconds"``, the CPU seconds (user + system, with the
    processes each waited for) of every stage command this thread runs in the body; ``None`` where
    the platform does not tell (not Linux). Per thread, so stages run side by side count their own."""
    counter: dict = {"seconds": 0.0}
    outer = getattr(_cpu, "counter", None)
    _cpu.counter = counter
    try:
        yield counter
    finally:
        _cpu.counter = outer
        if outer is not None and counter["seconds"] is not None and outer["seconds"] is not None:
            outer["seconds"] += counter["seconds"]


def _wait_counting_cpu(proc: subprocess.Popen) -> int:
    """``proc.wait()``; on Linux first read the ended child's CPU seconds from ``/proc`` (it stays a
    zombie until reaped: ``waitid(WNOWAIT)``) into this thread's :func:`counting_command_cpu`."""
    counter = getattr(_cpu, "counter", None)
    if counter is not None and counter["seconds"] is not None:
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            counter["seconds"] += ticks / os.sysconf("SC_CLK_TCK")
        except (AttributeError, OSError, ValueError, IndexError):
            counter["seconds"] = None  # unknown here: no number rather than a wrong one
    return proc.wait()


def _parent_death_guard(parent_pid: int) -> Callable[[], None]:
    """``preexec_fn`` of a stage: SIGTERM when the runner dies (Linux), and exit at once if it
    died already between fork and here."""

    def guard() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:
            os._exit(1)

    return guard


_WATCHER = """
import os, signal, sys, time
pgid, parent, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
while os.getppid() == parent and alive():
    time.sleep(0.2)
if os.getppid() != parent:  # the runner died: end the stage's group
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        end = time.monotonic() + wait
        while alive() and time.monotonic() < end:
            time.sleep(0.2)
"""


def _start_watcher(stage: subprocess.Popen, grace: float = GRACE_SECONDS) -> subprocess.Popen:
    """A process that ends ``stage``'s group if this runner dies without doing so itself."""
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(stage.pid), str(os.getpid()), str(grace)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # not in the stage's group, and no terminal Ctrl-C
    )


def terminate_group(proc: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """End a stage's whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (workers that ignored SIGTERM)


def terminate_all_stages() -> None:
    """End every live stage process group of this runner."""
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        terminate_group(proc)


def _on_signal(signum, frame) -> None:
    terminate_all_stages()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """In the runner's main thread: SIGINT / SIGTERM / SIGHUP end the running stages, then the
    runner (no-op elsewhere, e.g. inside a worker thread)."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    _handlers_installed = True


class ProgressEcho:
    """Split a stage's output stream into lines and progress redraws for the terminal."""

    def __init__(self, prefix: str, emit: Callable[[str], None], interval: float | None = None):
        self.prefix, self.emit = prefix, emit
        self.interval = float(os.environ.get(PROGRESS_SECONDS_ENV, "20")) if interval is None else interval
        self._pending = ""
        self._bar: str | None = None  # latest progress redraw not yet shown
        self._last_bar = float("-inf")

    def feed(self, text: str) -> None:
        self._pending += text
        while True:
            cut = min((i for i in (self._pending.find("\n"), self._pending.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                return
            piece, sep, self._pending = self._pending[:cut], self._pending[cut], self._pending[cut + 1 :]
            piece = piece.strip()
            if not piece:
                continue
            if sep == "\r":  # a bar redraw: show it now and then
                self._bar = piece
                if time.monotonic() - self._last_bar >= self.interval:
                    self._show_bar()
            else:
                self._bar = None
                self.emit(f"{self.prefix}{piece}")

    def _show_bar(self) -> None:
        if self._bar is not None:
            self.emit(f"{self.prefix}{self._bar}")
            self._bar, self._last_bar = None, time.monotonic()

    def close(self) -> None:
        if self._pending.strip():
            self.feed("\n")
        self._show_bar()


def run_stage_process(
    cmd: list[str], log_file: IO[bytes], echo: ProgressEcho, env: dict[str, str] | None = None
) -> int:
    """Run ``cmd`` as a stage (own process group, parent-death guard), its output into
    ``log_file`` and ``echo``; returns the exit code. Any exception here (Ctrl-C included) ends
    the stage's group before it propagates."""
    install_signal_handlers()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_parent_death_guard(os.getpid()),
        pass_fds=held_lock_fds(),  # the run folder stays locked while the stage lives
    )
    with _live_lock:
        _live[proc.pid] = proc
    watcher = _start_watcher(proc)
    try:
        fd = proc.stdout.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # chunks may split a character
        while chunk := os.read(fd, 65536):
            log_file.write(chunk)
            log_file.flush()
            echo.feed(decoder.decode(chunk))
        echo.close()
        return _wait_counting_cpu(proc)
    except BaseException:
        terminate_group(proc)
        raise
    finally:
        watcher.kill()
        watcher.wait()
        proc.stdout.close()
        with _live_lock:
            _live.pop(proc.pid, None)
