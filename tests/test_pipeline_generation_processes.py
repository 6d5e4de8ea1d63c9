"""The pipeline's ``generated_dataset`` stage on N processes (``generation.num_processes``): through
the config's ``accelerate launch`` it writes the dataset one process writes, row by row; the key
changes no stage fingerprint; bad values and a missing launcher fail before any stage."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from genssl_hf.pipeline.config import load_preset
from genssl_hf.pipeline.launch import generation_launcher
from genssl_hf.pipeline.stages import fingerprint, run_stage
from genssl_hf.pipeline.steps import stage_evaluation, stage_generated_dataset, stage_prompt_set
from genssl_hf.pipeline.training_steps import stage_generator

ACCELERATE = '["accelerate", "launch"]'


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["generation.num_processes=0"], "generation.num_processes must be >= 1, got 0"),
        (["generation.num_processes=-3"], "generation.num_processes must be >= 1, got -3"),
        (["generation.num_processes=true"], "generation.num_processes must be an integer"),
        (["generation.num_processes=2"], "generation.num_processes 2 .* the config has no launcher"),
        (["generation.num_processes=2", 'launcher=["torchrun"]'], "needs launcher to be an `accelerate launch`"),
    ],
)
def test_bad_process_counts_and_a_missing_launcher_fail_at_load(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_preset("smoke", overrides)


def test_the_process_count_changes_no_fingerprint():
    """A run folder made before the key existed (or with another count) reruns nothing."""
    base = load_preset("smoke")
    for overrides in (["generation.num_processes=1"], ["generation.num_processes=4", f"launcher={ACCELERATE}"]):
        cfg = load_preset("smoke", overrides)
        assert cfg["generation"] != base["generation"]  # the key is there...
        for build in (
            lambda c: stage_generated_dataset(c, Path("g"), Path("p")),
            lambda c: stage_evaluation(c, Path("r"), ["genssl"], Path("d"), print, 1.0, 0, ""),
        ):
            assert "num_processes" not in build(cfg).config["generation"]  # ...and is no content key
            assert fingerprint(build(cfg).config) == fingerprint(build(base).config)


def test_the_generation_launcher_takes_the_generation_count():
    launcher = ["accelerate", "launch", "--num_processes", "4", "--mixed_precision", "bf16", "--num-processes=2"]
    cfg = load_preset("paper", ["generation.num_processes=8", f"launcher={json.dumps(launcher)}"])
    # the training stages' own --num_processes is replaced, the other launcher options are kept
    assert generation_launcher(cfg) == ["accelerate", "launch", "--mixed_precision", "bf16", "--num_processes", "8"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(dataset: Path) -> list[dict]:
    table = pq.read_table(sorted((dataset / "data").rglob("*.parquet")))
    return sorted(table.to_pylist(), key=lambda r: r["index"])


@pytest.mark.slow
def test_two_processes_generate_the_one_process_dataset(tmp_path, monkeypatch):
    """The shipped phantom LDM (bf16, CFG, 2 DDIM steps) through the pipeline stage: 1 process in the
    runner vs 2 accelerate CPU processes (4 shards of 2, 2 per rank): equal prompts, seeds, pixels."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "yes")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the launched ranks run one thread each: same rounding in the runner
    gen = ["generation.num_images=8", "generation.num_inference_steps=2", "generation.shard_size=2"]
    gen += ["generation.batch_size=2", "generation.dtype=bfloat16"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    configs = {
        1: load_preset("smoke", gen),
        2: load_preset("smoke", [*gen, "generation.num_processes=2", f"launcher={json.dumps(launcher)}"]),
    }
    markers = {}
    try:
        for n, cfg in configs.items():
            root = tmp_path / f"{n}-processes"
            run_stage(root, stage_prompt_set(cfg), log=lambda m: None)
            run_stage(root, stage_generator(cfg), log=lambda m: None)
            stage = stage_generated_dataset(cfg, root / "generator", root / "prompt_set", log=lambda m: None)
            run_stage(root, stage, log=lambda m: None, deps=["generator", "prompt_set"])
            markers[n] = (root / "generated_dataset" / "stage.json").read_text()
    finally:
        torch.set_num_threads(threads)
    two = tmp_path / "2-processes" / "generated_dataset"
    command = (two / "command.txt").read_text()
    assert "--num_processes 2 -m genssl_hf generate" in command
    log = (two / "command.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log, log[-3000:]  # both ranks took shards
    assert not (tmp_path / "1-processes" / "generated_dataset" / "command.txt").exists()  # in-process
    one_rows, two_rows = _rows(tmp_path / "1-processes/generated_dataset/dataset"), _rows(two / "dataset")
    assert [r["index"] for r in two_rows] == list(range(8))
    assert len({r["prompt"] for r in one_rows}) > 1 and len({r["seed"] for r in one_rows}) == 8
    assert two_rows == one_rows  # image bytes, prompts, seeds, labels: every column of every row
    fingerprints = {n: json.loads(m)["fingerprint"] for n, m in markers.items()}
    assert fingerprints[1] == fingerprints[2]  # the same stage: either folder is valid for both configs
    assert json.loads(markers[2])["summary"]["result"]["verification"]["ok"] is True
