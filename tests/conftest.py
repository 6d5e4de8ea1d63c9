"""Test-wide guards: everything runs offline, and any attempt to reach the network fails."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

_LOOPBACK_PREFIXES = ("127.", "::1", "localhost")
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = str(address[0])
    return host.startswith(_LOOPBACK_PREFIXES)


def _guarded_connect(self, address):
    if not _is_local(address):
        raise RuntimeError(f"network access attempted in a test: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise RuntimeError(f"network access attempted in a test: {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder beside the project; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Reset accelerate's process-wide singletons after every test, so a test that built an
    ``Accelerator`` (in process, e.g. through ``genssl pretrain``) never fixes the precision or
    accumulation of the next test run by the same pytest worker."""
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_cpu_processes():
    """Run a script (or ``-m module``) under ``ACCELERATE_USE_CPU=yes accelerate launch --multi_gpu
    --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port P``
    with a free port P: ``two_cpu_processes([script, *args], env=None, timeout=600, cwd=REPO)`` returns
    the finished ``subprocess.CompletedProcess`` (text output captured). Each process gets one thread
    and the repository on ``PYTHONPATH``; ``env`` adds to (or replaces) the variables. A port taken
    between choosing it and binding it (another test's launcher) is retried once on a new port."""

    def run(target, *, env: dict | None = None, timeout: float = 600, cwd=REPO) -> subprocess.CompletedProcess:
        full_env = {
            **os.environ,
            "ACCELERATE_USE_CPU": "yes",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
            **(env or {}),
        }
        for _attempt in range(2):
            cmd = [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_processes",
                "2",
                "--num_machines",
                "1",
                "--mixed_precision",
                "no",
                "--dynamo_backend",
                "no",
                "--main_process_port",
                str(free_port()),
                *map(str, target),
            ]
            proc = subprocess.run(cmd, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
                return proc
        return proc

    return run


# ----------------------------------------------------------------------------- xdist: longest first
# `pytest -n 2` (make test) hands tests out one by one, round robin: a module's tests land on both
# workers, so each builds the module's fixtures (a trained tiny MAE, a phantom set), and the longest
# tests, collected last, start last while the other worker idles. With the default `--dist load`,
# this scheduler instead hands out whole modules (one fixture build each), longest first by the
# measured seconds in tests/durations.json (setup + call + teardown per test, from
# `python tests/durations.py`); modules listed as "split" there (independent slow tests, no shared
# fixture) go out test by test. Unknown tests (new ones) count DEFAULT_SECONDS each. The order only
# changes which worker runs what, never what a test does; an explicit --dist other than load wins.
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist", "no") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    try:
        table = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return None  # no table: xdist's own round robin

    seconds, split = table.get("seconds", {}), set(table.get("split", []))
    default = float(table.get("default_seconds", 0.5))

    class LongestFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return nodeid if module in split else module

        def _assign_work_unit(self, node) -> None:
            def cost(scope):
                return sum(seconds.get(n, default) for n in self.workqueue[scope])

            longest = max(self.workqueue, key=cost)
            self.workqueue.move_to_end(longest, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)
