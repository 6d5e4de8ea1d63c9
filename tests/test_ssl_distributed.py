"""Two CPU processes (accelerate launch, gloo) give the same loss, gradients and MoCo queue as one
process on the same global batch: SimCLR's negatives are gathered with gradient, MoCo's queue takes
the keys of every process, the heads' BN is global (SimCLR / SimSiam, ViT and ResNet)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_ssl_ddp_worker.py"


@pytest.mark.slow
def test_two_processes_equal_one_process_at_the_same_global_batch(tmp_path, two_cpu_processes):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "yes"}
    single = tmp_path / "one.pt"
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, env=env, cwd=ROOT, timeout=600)
    double = tmp_path / "two.pt"
    proc = two_cpu_processes([WORKER, double], env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = torch.load(single), torch.load(double)
    assert set(one) == set(two) == {"simclr/tiny", "simclr/resnet-tiny", "moco_v2/tiny", "simsiam/tiny"}
    for case in one:
        assert two[case]["loss"] == pytest.approx(one[case]["loss"], rel=1e-5, abs=1e-6), case
        assert set(one[case]["grads"]) == set(two[case]["grads"]), case
        # float32 sums in a different order: compare against the largest gradient entry of the model
        # (attention key biases have a zero true gradient, so their relative error is meaningless)
        scale = max(g.abs().max().item() for g in one[case]["grads"].values())
        for name, g in one[case]["grads"].items():
            err = (two[case]["grads"][name] - g).abs().max().item()
            assert err <= 1e-4 * scale, f"{case} {name}: max |diff| {err:.3g} vs largest gradient {scale:.3g}"
    torch.testing.assert_close(two["moco_v2/tiny"]["queue"], one["moco_v2/tiny"]["queue"])
    assert two["moco_v2/tiny"]["queue_ptr"] == one["moco_v2/tiny"]["queue_ptr"] == 8
