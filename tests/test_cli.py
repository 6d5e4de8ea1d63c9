"""The ``genssl`` front door: every job is a subcommand, registries are listed, options come from a
JSON / YAML file or the command line, and ``genssl pretrain`` runs every registered method."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genssl_hf.cli import main
from genssl_hf.cli.commands import COMMANDS
from genssl_hf.cli.config_file import config_file_argv
from genssl_hf.training.ssl.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
}


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out
    assert main([]) == 2  # no command: usage, and a usage error


def test_unknown_command_suggests_the_close_one(capsys):
    assert main(["pretrian"]) == 2
    assert "did you mean `genssl pretrain`" in capsys.readouterr().err


def test_every_command_target_resolves():
    """Each row names a module and a function that exist (a typo would only show when a user runs it)."""
    import importlib

    for name, cmd in COMMANDS.items():
        module, func = cmd.target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_list_through_python_dash_m_names_the_registries():
    r = subprocess.run(
        [sys.executable, "-m", "genssl_hf", "list", "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)
    assert {"mae", "convirt", "clip", *METHODS} <= set(table["methods"]) and "byol" in table["methods"]
    from genssl_hf.data.registry import DATASET_SCHEMES

    assert {f"{k}:ROOT" for k in DATASET_SCHEMES} <= set(table["dataset_schemes"])
    assert {"smoke", "demo", "paper"} <= set(table["pipeline_presets"])
    assert {"tiny", "vit-b16", "resnet-18"} <= set(table["models"])


def test_config_file_becomes_options(tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(
        "method: simclr\nadain: on\noverwrite_output_dir: true\npush_to_hub: false\nhub_model_id: null\n"
        "phantom_sizes: [48, 24, 24]\nlearning_rate: 1.0e-3\nextra: {a: 1}\n"
    )
    assert config_file_argv(cfg) == [
        "--method",
        "simclr",
        "--adain",
        "on",
        "--overwrite_output_dir",
        "--phantom_sizes",
        "48",
        "24",
        "24",
        "--learning_rate",
        "0.001",
        "--extra",
        '{"a": 1}',
    ]
    as_json = tmp_path / "recipe.json"
    as_json.write_text(json.dumps({"method": "rotation", "figure": "off"}))
    assert config_file_argv(as_json) == ["--method", "rotation", "--figure", "off"]


def test_config_file_errors_name_the_file(tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    assert main(["pretrain", str(bad)]) == 2
    assert "list.yaml must hold a mapping" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{oops")
    assert main(["probe", str(broken)]) == 2
    assert "broken.json is not valid JSON" in capsys.readouterr().err
    dashed = tmp_path / "dashed.yaml"
    dashed.write_text("--seed: 1\n")
    assert main(["pretrain", str(dashed)]) == 2
    assert "without dashes" in capsys.readouterr().err


def test_pretrain_needs_a_method(capsys):
    assert main(["pretrain", "--model", "tiny"]) == 2
    assert "--method is required" in capsys.readouterr().err
    assert main(["pretrain", "--method", "clip", "--loss", "convirt"]) == 2
    assert "drop --loss" in capsys.readouterr().err


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from genssl_hf.data.phantom import phantom_dataset

    path = tmp_path_factory.mktemp("cli_phantoms") / "train"
    phantom_dataset(24, size=32, seed=2).save_to_disk(str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mae", *METHODS])
def test_pretrain_every_method_three_steps_then_automodel_loads_it(tmp_path, images, method):
    """``genssl pretrain --method M --model tiny`` from a YAML recipe plus command-line options;
    the encoder folder loads with ``AutoModel`` exactly (no missing weight)."""
    from transformers import AutoModel

    from genssl_hf.models import verify_encoder_folder

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"method: {method}\nmodel: tiny\nimage_size: 32\npatch_size: 8\ndataset: {images}\n"
        "per_device_train_batch_size: 8\nmixed_precision: 'no'\ncheckpointing_steps: 0\n"
        "logging_steps: 1\nfigure: 'off'\nseed: 0\n"
    )
    out = tmp_path / "enc"
    extra = ["--queue_size", "64"] if method == "moco_v2" else []
    assert main(["pretrain", str(recipe), "--max_steps", "3", "--output_dir", str(out), *extra]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 3
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["args"]["max_steps"] == 3  # the resolved options are written back into the run folder
    if method == "mae":  # AutoModel gives the ViTMAE encoder; the folder also holds the decoder
        model, info = AutoModel.from_pretrained(str(out), output_loading_info=True)
        assert not info["missing_keys"] and all(k.startswith("decoder") for k in info["unexpected_keys"]), info
        assert model.config.model_type == "vit_mae"
    else:  # AutoModel and the stock classification class both hold every backbone weight exactly
        checked = verify_encoder_folder(out)
        assert checked


@pytest.mark.slow
@pytest.mark.parametrize("method", ["convirt", "clip", "gloria", "mgca"])
def test_pretrain_vision_language_methods(tmp_path, method):
    """``genssl pretrain --method convirt|clip|gloria|mgca`` trains the dual encoder with that loss
    (GLoRIA and MGCA here through their uncached text path: the random tiny BERT trains)."""
    out = tmp_path / "vlp"
    assert (
        main(
            [
                "pretrain",
                "--method",
                method,
                "--model",
                "tiny",
                "--image_size",
                "32",
                "--pairs",
                "phantom:32",
                "--text_tower",
                "tiny-bert",
                "--per_device_train_batch_size",
                "8",
                "--max_steps",
                "3",
                "--mixed_precision",
                "no",
                "--checkpointing_steps",
                "0",
                "--figure",
                "off",
                "--num_threads",
                "1",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["args"]["loss"] == method and run_config["args"]["max_steps"] == 3


@pytest.mark.slow
def test_accelerate_launch_runs_the_module(tmp_path):
    """``accelerate launch -m genssl_hf ...`` reaches the front door (one CPU process)."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "genssl_hf",
            "list",
            "methods",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "byol" in r.stdout and "mae" in r.stdout
