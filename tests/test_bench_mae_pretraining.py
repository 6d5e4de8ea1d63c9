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


def test_torch_compile_option_reaches_our_training(monkeypatch, tmp_path, capsys):
    """``run_ours(torch_compile=True)`` trains with ``--torch_compile`` and reports the first step (the
    compilation) apart from the steady steps it measures."""
    from genssl_hf.training import mae

    seen = {}

    def fake_pretrain(args):
        seen["args"] = args
        # 4 optimiser steps of batch 8: steps end 1 s apart after a first step of 30 s (run starts at 0)
        return {
            "step_end_seconds": [0.0, 1.0, 2.0, 3.0],
            "step_end_cpu_seconds": [0.0, 2.0, 4.0, 6.0],
            "train_seconds": 33.0,
        }

    monkeypatch.setattr(mae, "pretrain_mae", fake_pretrain)
    ips, cpu_ips = bench.run_ours(tmp_path, tmp_path, "tiny", 8, 1, 3, 0, torch_compile=True)
    assert seen["args"].torch_compile is True
    assert (ips, cpu_ips) == (8.0, 4.0)  # 3 steps x 8 images in 3 s wall, 6 CPU-s
    out = capsys.readouterr().out
    assert "(1 x 8, compiled)" in out and "first step 30 s" in out
    bench.run_ours(tmp_path, tmp_path, "tiny", 8, 1, 3, 0)
    assert seen["args"].torch_compile is False
