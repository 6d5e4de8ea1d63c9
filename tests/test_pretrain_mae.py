"""MAE pre-training: bad input, exact resume, NaN guard, saved artifacts, --model folders, two processes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import ViTMAEForPreTraining

import genssl_hf  # noqa: F401
from genssl_hf.training import mae, mae_model
from genssl_hf.training.checkpoints import find_last_checkpoint
from genssl_hf.training.common import NonFiniteLossError

torch.set_num_threads(1)  # the test machine is shared: one thread avoids oversubscription stalls

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model",
    "tiny",
    "--image_size",
    "32",
    "--patch_size",
    "8",
    "--per_device_train_batch_size",
    "8",
    "--logging_steps",
    "1",
    "--mixed_precision",
    "no",
    "--figure_samples",
    "2",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from genssl_hf.data.phantom import phantom_dataset

    path = tmp_path_factory.mktemp("phantoms") / "train"
    phantom_dataset(32, size=48, seed=1).save_to_disk(str(path))
    return path


def _args(out, data, *extra):
    return mae.build_parser().parse_args(TINY + ["--dataset", str(data), "--output_dir", str(out), *extra])


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_bad_input_fails_before_training(tmp_path, data_dir):
    import datasets

    with pytest.raises(ValueError, match="not divisible by the patch size"):
        mae.pretrain_mae(_args(tmp_path / "a", data_dir, "--patch_size", "7"))
    for r in ("1.0", "0", "-0.2"):
        with pytest.raises(SystemExit):  # argparse, through the shared numeric ranges
            _args(tmp_path / "b", data_dir, "--mask_ratio", r)
        args = _args(tmp_path / "b", data_dir)
        args.mask_ratio = float(r)  # a namespace built in code gets the same check
        with pytest.raises(ValueError, match="mask.ratio"):
            mae.pretrain_mae(args)
    empty = datasets.Dataset.from_dict({"image": []}, features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(ValueError, match="empty"):
        mae.pretrain_mae(_args(tmp_path / "c", data_dir), dataset=empty)
    with pytest.raises(ValueError, match="no image column 'image'"):
        mae.pretrain_mae(_args(tmp_path / "d", data_dir), dataset=datasets.Dataset.from_dict({"pixels": [1, 2]}))
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "d"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("mae") / "full"
    args = _args(out, data_dir, "--max_steps", "6", "--checkpointing_steps", "3", "--gradient_accumulation_steps", "2")
    summary = mae.pretrain_mae(args)
    _reset_accelerate()
    return out, summary


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, data_dir, full_run):
    out_full, summary = full_run
    assert summary["global_step"] == 6 and np.isfinite(summary["final_loss"])
    out = tmp_path / "resumed"
    base = ("--max_steps", "6", "--checkpointing_steps", "3", "--gradient_accumulation_steps", "2")
    first = mae.pretrain_mae(_args(out, data_dir, *base, "--stop_after_steps", "4"))
    assert first["interrupted"] and first["global_step"] == 4
    assert not (out / "model.safetensors").exists() and find_last_checkpoint(out).name == "checkpoint-3"
    _reset_accelerate()
    second = mae.pretrain_mae(_args(out, data_dir, *base, "--resume_from_checkpoint", "latest"))
    assert second["global_step"] == 6 and not second["interrupted"]
    a, b = _weights(out_full), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)


def test_saved_artifacts_reload(full_run):
    from transformers import AutoImageProcessor, ViTForImageClassification, ViTMAEForPreTraining

    out, _ = full_run
    clf = ViTForImageClassification.from_pretrained(out, num_labels=5)
    mae_model = ViTMAEForPreTraining.from_pretrained(out)
    assert mae_model.config.mask_ratio == 0.9
    for name in ("layers.0.attention.q_proj.weight", "layers.3.mlp.fc2.bias", "layernorm.weight"):
        torch.testing.assert_close(clf.vit.get_parameter(name), mae_model.vit.get_parameter(name))
    proc = AutoImageProcessor.from_pretrained(out)
    assert type(proc).__name__ == "AdaINImageProcessor" and proc.size.height == 32
    assert (out / "reconstruction.png").stat().st_size > 1000
    card = (out / "README.md").read_text()
    assert "vit-mae" in card and "Research use only" in card and "after crop" in card
    cfg = __import__("json").loads((out / "run_config.json").read_text())
    assert cfg["adain"]["mode"] == "after_crop" and cfg["derived"]["total_batch_size"] == 16
    assert cfg["attn_implementation"] == "sdpa"  # fp32 run: auto keeps SDPA


def test_bf16_cpu_run_uses_matmul_attention(tmp_path, data_dir):
    """auto picks the matmul kernel for bf16 on a CPU; the run trains and the saved config stays portable."""
    import json

    out = tmp_path / "bf16"
    summary = mae.pretrain_mae(
        _args(
            out,
            data_dir,
            "--mixed_precision",
            "bf16",
            "--max_steps",
            "3",
            "--checkpointing_steps",
            "0",
            "--figure",
            "off",
        )
    )
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["attn_implementation"] == "genssl_matmul"
    assert summary["global_step"] == 3 and np.isfinite(summary["final_loss"])
    assert "genssl_matmul" not in (out / "config.json").read_text()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    real_forward = ViTMAEForPreTraining.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        out = real_forward(self, *a, **k)
        calls["n"] += 1
        if calls["n"] > 4:  # from the 5th micro batch on (after checkpoint-2 with accumulation 2)
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(ViTMAEForPreTraining, "forward", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="checkpoint-2"):
        mae.pretrain_mae(
            _args(out, data_dir, "--max_steps", "6", "--checkpointing_steps", "2", "--gradient_accumulation_steps", "2")
        )
    last = find_last_checkpoint(out)
    assert last.name == "checkpoint-2" and not (out / "model.safetensors").exists()
    sd = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in sd.values())


def test_init_from_vit_and_vit_mae(tmp_path, full_run):
    from transformers import ViTConfig, ViTModel

    out, _ = full_run
    cfg = mae_model.build_mae_config("tiny", image_size=32, patch_size=8)
    m, rec = mae_model.build_model(cfg, out)
    assert rec["init"] == "vit_mae"
    saved = ViTMAEForPreTraining.from_pretrained(out)
    torch.testing.assert_close(m.decoder.decoder_embed.weight, saved.decoder.decoder_embed.weight)
    vit = ViTModel(
        ViTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            image_size=32,
            patch_size=8,
        ),
        add_pooling_layer=False,
    )
    vit.save_pretrained(tmp_path / "vit")
    m2, rec2 = mae_model.build_model(cfg, tmp_path / "vit")
    assert rec2["init"] == "vit_encoder" and m2.config.hidden_size == 64 and m2.config.decoder_hidden_size == 96
    torch.testing.assert_close(m2.vit.layers[1].mlp.fc1.weight, vit.layers[1].mlp.fc1.weight)
    with pytest.raises(FileNotFoundError, match="config.json"):
        mae_model.build_model(cfg, tmp_path)


def test_a_model_folder_continues_with_the_recipe_of_its_width(tmp_path, full_run, data_dir):
    """``--model FOLDER`` (formerly ``--init_from``) continues the folder's MAE; the recipe defaults to
    the preset of its encoder width (tiny here), ``--recipe`` overrides it."""
    import json

    out, _ = full_run
    argv = [
        "--model",
        str(out),
        "--image_size",
        "32",
        "--patch_size",
        "8",
        "--per_device_train_batch_size",
        "8",
        "--mixed_precision",
        "no",
        "--figure",
        "off",
        "--max_steps",
        "1",
        "--checkpointing_steps",
        "0",
        "--dataset",
        str(data_dir),
    ]
    mae.pretrain_mae(mae.build_parser().parse_args(argv + ["--output_dir", str(tmp_path / "a")]))
    _reset_accelerate()
    cfg = json.loads((tmp_path / "a" / "run_config.json").read_text())
    assert (
        cfg["args"]["recipe"] == "tiny"
        and cfg["args"]["base_learning_rate"] == mae.RECIPES["tiny"]["base_learning_rate"]
    )
    assert cfg["init"] == {"init": "vit_mae", "init_from": str(out)}
    args = mae.build_parser().parse_args(argv + ["--output_dir", str(tmp_path / "b"), "--recipe", "vit-s16"])
    assert mae._resolve(args).base_learning_rate == mae.RECIPES["vit-s16"]["base_learning_rate"]


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path, data_dir, two_cpu_processes):
    out = tmp_path / "ddp"
    script = ROOT / "scripts" / "pretrain_mae.py"
    args = ["--per_device_train_batch_size", "4", "--dataset", data_dir, "--output_dir", out, "--max_steps", "3"]
    args += ["--checkpointing_steps", "2", "--figure", "off"]
    res = two_cpu_processes([script, *TINY, *args], timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cfg = __import__("json").loads((out / "run_config.json").read_text())
    assert cfg["environment"]["num_processes"] == 2 and cfg["derived"]["total_batch_size"] == 8
    assert (out / "checkpoint-2" / "train_state.json").is_file() and (out / "model.safetensors").is_file()


def test_streaming_parquet_folder(tmp_path, data_dir):
    import datasets

    pq = tmp_path / "pq"
    pq.mkdir()
    datasets.load_from_disk(str(data_dir)).select_columns(["image"]).to_parquet(str(pq / "train.parquet"))
    with pytest.raises(ValueError, match="needs --max_steps"):
        mae.pretrain_mae(_args(tmp_path / "s0", pq, "--streaming"))
    _reset_accelerate()
    s = mae.pretrain_mae(
        _args(tmp_path / "s1", pq, "--streaming", "--max_steps", "5", "--checkpointing_steps", "0", "--figure", "off")
    )
    assert s["global_step"] == 5 and np.isfinite(s["final_loss"])  # 5 steps > 4 batches: crosses an epoch
    assert (tmp_path / "s1" / "model.safetensors").is_file()
