"""benchmarks/bench_mae_step.py: variants are checked before any process starts, and the profile's
rows put each op where the issue asks (data path by phase, then by op)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_mae_step as step  # noqa: E402


def test_unknown_variant_option_stops_before_any_run():
    step.check_variants(["base", "retain+compile"])
    with pytest.raises(ValueError, match=r"'retain\+jemalloc' has unknown options \['jemalloc'\]"):
        step.main(["levers", "--variants", "base,retain+jemalloc"])


def test_profile_categories():
    assert step.category("aten::gather", "PHASE_masking").startswith("data path: masking")
    assert step.category("aten::_fused_adamw_", "PHASE_optimizer").startswith("optimiser")
    assert step.category("aten::bmm", None).startswith("matmuls")
    assert step.category("aten::_softmax_backward_data", None).startswith("attention softmax")
    assert step.category("aten::native_layer_norm_backward", None).startswith("layer norm")
    assert step.category("aten::_to_copy", None) == "casts and copies"
    assert step.category("aten::mkldnn_convolution", None).startswith("patch embedding")
