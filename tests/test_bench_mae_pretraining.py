"""benchmarks/bench_mae_pretraining.py: the ``--malloc`` lever reaches the setting our training reads,
and bad options stop before any compute."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_mae_pretraining as bench  # noqa: E402
from genssl_hf.core.allocator import MALLOC_ENV  # noqa: E402


class _StopBeforeData(Exception):
    pass


def _stop(*args, **kwargs):
    raise _StopBeforeData


def test_malloc_option_sets_what_training_reads(monkeypatch):
    import genssl_hf.data.phantom as phantom

    monkeypatch.delenv(MALLOC_ENV, raising=False)  # restored after the test
    monkeypatch.setattr(phantom, "phantom_dataset", _stop)  # the first piece of work: stop there
    with pytest.raises(_StopBeforeData):
        bench.main(["--preset", "tiny", "--malloc", "default", "--scaling", ""])
    assert os.environ[MALLOC_ENV] == "default"


def test_bad_options_stop_before_compute(monkeypatch, capsys):
    import genssl_hf.data.phantom as phantom

    monkeypatch.delenv(MALLOC_ENV, raising=False)
    monkeypatch.setattr(phantom, "phantom_dataset", _stop)
    with pytest.raises(SystemExit):
        bench.main(["--malloc", "jemalloc"])
    assert "invalid choice: 'jemalloc'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--micro-batch 5 must divide --batch 16"):
        bench.main(["--preset", "tiny", "--batch", "16", "--micro-batch", "5"])
    assert MALLOC_ENV not in os.environ  # nothing set before the options were checked
