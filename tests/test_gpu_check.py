"""benchmarks/gpu_check.py (issue 19.5): CI has no GPU, so it checks the argument parsing, the plan
the script would run, and the whole script end to end in its CPU dry-run mode (tiny sizes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import gpu_check  # noqa: E402


def test_defaults_are_the_full_gpu_check():
    args = gpu_check.build_parser().parse_args([])
    assert not args.dry_run and args.budget_s <= 480  # under the 8 minutes a lent GPU allows
    assert args.sizes == "256,512" and args.mae_preset == "vit-b16" and args.reference_steps == 50
    assert Path(args.out).name == "results-gpu.json"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            gpu_check.resolve(args)


def test_plan_from_arguments():
    p = gpu_check.build_parser()
    plan = gpu_check.resolve(p.parse_args(["--dry-run", "--batches", "4,8"]))
    assert plan["device"] == "cpu" and plan["sizes"] == [64] and plan["networks"] == "phantom" and not plan["compile"]
    with pytest.raises(SystemExit, match="--dtypes"):
        gpu_check.resolve(p.parse_args(["--dry-run", "--dtypes", "fp8"]))
    with pytest.raises(SystemExit, match="--sizes"):
        gpu_check.resolve(p.parse_args(["--dry-run", "--sizes", "100"]))
    with pytest.raises(SystemExit):
        p.parse_args(["--mae-steps", "many"])


@pytest.mark.slow
def test_dry_run_writes_json_lines_and_a_table(tmp_path, capsys):
    out, table = tmp_path / "gpu.json", tmp_path / "gpu.md"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--table", str(table)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["dry_run"] for r in recs)
    machine = recs[0]
    assert machine["check"] == "machine" and {"cpu_model", "amx", "matmul_gflops", "load_avg_start"} <= set(
        machine["machine"]
    )
    gen = [r for r in recs if r["check"] == "generation"]
    ref = [r for r in gen if r["side"].startswith("reference")]
    ours = [r for r in gen if r["side"] == "ours"]
    assert len(ref) == 1 and ref[0]["images_per_s"] > 0
    assert {r["preset"] for r in ours} == {"fast", "bundle"}
    assert all(r["images_per_s"] > 0 and r["ratio_vs_reference"] > 0 for r in ours)
    mae = [r for r in recs if r["check"] == "mae_pretraining"]
    assert len(mae) == 2 and all(r["images_per_s"] > 0 for r in mae)
    assert recs[-1]["check"] == "done" and "load_avg_end" in recs[-1]["machine"]
    md = table.read_text()
    assert "| generation | 64 | ours | fast / 2 |" in md and "mae_pretraining" in md
    assert md.splitlines()[-1] in capsys.readouterr().out
