"""Test-wide guards: everything runs offline, and any attempt to reach the network fails."""

import hashlib
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


@pytest.hookimpl(optionalhook=True)  # without xdist (-p no:xdist) the hook is simply unused
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


# ------------------------------------------------------------------ trained fixtures, cached per tree
# The longest fixtures train a model whose quality several tests then check (test_vlp's dual encoder,
# test_mae_learns' MAEs). Training is seeded and single-threaded, so at the same package source and
# library versions it gives the same folder: `cached_training` keeps that folder under
# outputs/test_cache/<name>/<key>, the key hashing every file of genssl_hf/, the versions of torch,
# transformers, accelerate and datasets, and the fixture's recipe. A rerun at the same tree reuses it;
# any change of the package (or the recipe) trains again, and older entries of that name are removed.
# One builder at a time (a file lock per name: a second pytest run waits, then reuses); the build goes
# to a temporary folder renamed into place when complete, so a killed run never leaves a half entry.
# GENSSL_TEST_CACHE=off trains in the test's temporary folder every time; another value moves the cache.
_TREE_HASH: list[str] = []


def package_tree_hash() -> str:
    if not _TREE_HASH:
        import accelerate
        import datasets
        import torch
        import transformers

        h = hashlib.sha256()
        for path in sorted((REPO / "genssl_hf").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        for module in (torch, transformers, accelerate, datasets):
            h.update(f"{module.__name__}=={module.__version__}\n".encode())
        _TREE_HASH.append(h.hexdigest())
    return _TREE_HASH[0]


def cached_build(cache: Path, name: str, recipe, build):
    """``(folder, value)`` from ``cache / name / key``, ``build(folder)`` run (and its JSON-able value
    kept) only when that entry is absent; see above."""
    import fcntl
    import shutil

    key = hashlib.sha256(f"{package_tree_hash()}\n{json.dumps(recipe, sort_keys=True)}".encode()).hexdigest()[:20]
    root = Path(cache) / name
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            for old in root.iterdir():  # stale entries and temp folders of killed runs (we hold the lock)
                if old.name != ".lock":
                    shutil.rmtree(old, ignore_errors=True)
            tmp = root / f".{key}.tmp-{os.getpid()}"
            value = build(tmp / "out")
            (tmp / "value.json").write_text(json.dumps(value, default=str))
            os.replace(tmp, final)
    return final / "out", json.loads((final / "value.json").read_text())


@pytest.fixture(scope="session")
def cached_training(tmp_path_factory):
    """``cached_training(name, recipe, build)`` -> ``(folder, value)``: ``build(folder)`` trains into
    ``folder`` and returns a JSON-able value (a summary); ``recipe`` (JSON-able) is what, besides the
    package, decides the result."""
    setting = os.environ.get("GENSSL_TEST_CACHE", "")

    def get(name: str, recipe, build):
        if setting == "off":
            folder = tmp_path_factory.mktemp(name) / "out"
            return folder, json.loads(json.dumps(build(folder), default=str))
        return cached_build(Path(setting or REPO / "outputs" / "test_cache"), name, recipe, build)

    return get
