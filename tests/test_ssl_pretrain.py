"""scripts/pretrain.py end to end: every method x backbone pair pre-trains, fine-tunes (scripts/finetune.py)
and evaluates (scripts/evaluate.py) at tiny sizes; exact resume on the shared engine; bad input fails
before training; --method mae delegates to the MAE trainer; the exported encoder reloads exactly."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genssl_hf.models import verify_encoder_folder
from genssl_hf.training.ssl.methods import METHODS

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from genssl_hf.data.phantom import phantom_dataset

    path = tmp_path_factory.mktemp("ssl_phantoms") / "train"
    phantom_dataset(32, size=40, seed=1).save_to_disk(str(path))
    return path


def _pretrain_args(method, backbone, data, out, *extra):
    args = [
        "--method",
        method,
        "--model",
        backbone,
        "--image_size",
        "32",
        "--dataset",
        str(data),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--mixed_precision",
        "no",
        "--seed",
        "0",
    ]
    if method == "moco_v2":
        args += ["--queue_size", "64"]
    if backbone == "tiny":
        args += ["--patch_size", "8"]
    return args + list(extra)


PAIRS = [(m, b) for m in METHODS for b in ("tiny", "resnet-tiny")]  # every registered method


@pytest.mark.slow
@pytest.mark.parametrize("method,backbone", PAIRS)
def test_pretrain_finetune_evaluate_through_the_scripts(tmp_path, data_dir, method, backbone):
    enc = tmp_path / "enc"
    assert _script("pretrain").main(_pretrain_args(method, backbone, data_dir, enc)) == 0
    for f in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "encoder_info.json",
        "run_config.json",
        "train_summary.json",
        "pretraining.png",
    ):
        assert (enc / f).is_file(), f
    info = json.loads((enc / "encoder_info.json").read_text())
    assert info["method"] == method and info["backbone"] == backbone
    card = (enc / "README.md").read_text()
    assert method in card and backbone in card and "AdaIN" in card
    summary = json.loads((enc / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["final_loss"] is not None
    assert "train/embedding_std" in summary["last_logged"]
    checked = verify_encoder_folder(enc)
    assert checked["classifier"] == (
        "ViTForImageClassification" if backbone == "tiny" else "ResNetForImageClassification"
    )

    from genssl_hf.training.finetune import main as finetune_main  # what scripts/finetune.py runs

    ft = tmp_path / "ft"
    result = _script("finetune").main(
        [
            "--model",
            str(enc),
            "--dataset",
            "phantom",
            "--phantom_sizes",
            "48",
            "24",
            "24",
            "--phantom_resolution",
            "32",
            "--image_size",
            "32",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "16",
            "--randaug_n",
            "0",
            "--output_dir",
            str(ft),
            "--mixed_precision",
            "no",
            "--num_workers",
            "0",
            "--logging_steps",
            "1",
        ]
    )
    assert finetune_main is not None and "test" in result and 0.0 <= result["test"]["mean_auc"] <= 1.0
    # the classifier holds the pre-trained backbone exactly
    body_prefix = "vit." if backbone == "tiny" else "resnet."
    enc_w, clf_w = load_file(str(enc / "model.safetensors")), load_file(str(ft / "final" / "model.safetensors"))
    assert any(body_prefix + k in clf_w for k in enc_w)
    ev = tmp_path / "ev"
    _script("evaluate").main(
        [
            "--model",
            f"{method}={ft / 'best'}",
            "--dataset",
            "phantom",
            "--output_dir",
            str(ev),
            "--attention",
            "2",
            "--n_bootstrap",
            "0",
            "--device",
            "cpu",
        ]
    )
    metrics = json.loads((ev / "metrics.json").read_text())
    assert method in metrics["models"]
    assert len(list((ev / "attention" / method).glob("*.png"))) == 2


@pytest.mark.slow
def test_linear_probe_of_a_cnn_encoder(tmp_path, data_dir, monkeypatch):
    enc = tmp_path / "enc"
    assert _script("pretrain").main(_pretrain_args("rotation", "resnet-tiny", data_dir, enc)) == 0
    from genssl_hf.training.finetune import main as finetune_main

    ft = tmp_path / "lp"
    finetune_main(
        [
            "--model",
            str(enc),
            "--mode",
            "linear_probe",
            "--dataset",
            "phantom",
            "--phantom_sizes",
            "48",
            "24",
            "24",
            "--phantom_resolution",
            "32",
            "--image_size",
            "32",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "16",
            "--output_dir",
            str(ft),
            "--mixed_precision",
            "no",
            "--num_workers",
            "0",
            "--test_split",
            "none",
        ]
    )
    enc_w, clf_w = load_file(str(enc / "model.safetensors")), load_file(str(ft / "final" / "model.safetensors"))
    for k, v in enc_w.items():  # frozen backbone, BN statistics included (eval mode)
        assert torch.equal(clf_w["resnet." + k], v), k
    # scripts/publish.py --kind encoder / classifier take both folders unchanged (dry run), run
    # from the folder that holds the data and the runs (their paths are published relative to it)
    from genssl_hf.hub.publish import publish

    monkeypatch.chdir(tmp_path.parent)

    res = publish("encoder", enc, "me/rotation-resnet", dry_run=tmp_path / "pub_enc", allow_unchecked=True)
    assert res.dry_run and (tmp_path / "pub_enc" / "model.safetensors").is_file()
    res = publish(
        "classifier", ft / "best", "me/rotation-resnet-clf", dry_run=tmp_path / "pub_clf", allow_unchecked=True
    )
    assert res.dry_run and (tmp_path / "pub_clf" / "config.json").is_file()


def test_exact_resume_on_the_engine(tmp_path, data_dir):
    """MoCo (queue, momentum encoder, momentum schedule) interrupted after 2 of 4 steps and resumed
    equals the uninterrupted run."""
    from genssl_hf.training.ssl.pretrain import build_parser, pretrain_ssl

    def run(out, *extra):
        args = _pretrain_args(
            "moco_v2",
            "resnet-tiny",
            data_dir,
            out,
            "--max_steps",
            "4",
            "--figure",
            "off",
            "--checkpointing_steps",
            "2",
            *extra,
        )
        return pretrain_ssl(build_parser().parse_args(args))

    run(tmp_path / "full")
    part = run(tmp_path / "part", "--stop_after_steps", "2")
    assert part["interrupted"] and part["global_step"] == 2
    resumed = run(tmp_path / "part", "--resume_from_checkpoint", "latest")
    assert resumed["global_step"] == 4
    a, b = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(tmp_path / "part" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ckpt = sorted((tmp_path / "full").glob("checkpoint-*"))
    assert ckpt, "no checkpoint written"


def test_bad_input_fails_before_training(tmp_path, data_dir):
    from genssl_hf.training.ssl.pretrain import build_parser, pretrain_ssl

    def run(*args):
        return pretrain_ssl(build_parser().parse_args(list(args)))

    base = _pretrain_args("simclr", "resnet-tiny", data_dir, tmp_path / "o")
    with pytest.raises(ValueError, match="patch_size does not apply"):
        run(*base, "--patch_size", "8")
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        run(*_pretrain_args("simclr", "tiny", data_dir, tmp_path / "o2", "--image_size", "36"))
    with pytest.raises(ValueError, match="queue_size 60 must be a multiple"):
        run(*_pretrain_args("moco_v2", "resnet-tiny", data_dir, tmp_path / "o3", "--queue_size", "60"))
    with pytest.raises(ValueError, match="--eval_steps needs --knn_dataset"):
        run(*base, "--eval_steps", "5")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        run(*base, "--temperature", "0")
    with pytest.raises(ValueError, match="no image column"):
        run(*base, "--image_column", "pixels")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).glob("*.safetensors")) for d in ("o", "o2", "o3"))
    assert _script("pretrain").main(["--model", "tiny"]) == 2  # --method is required


def test_method_mae_delegates_to_the_mae_trainer(tmp_path, data_dir):
    out = tmp_path / "mae"
    rc = _script("pretrain").main(
        [
            "--method",
            "mae",
            "--model",
            "tiny",
            "--image_size",
            "32",
            "--patch_size",
            "8",
            "--per_device_train_batch_size",
            "8",
            "--max_steps",
            "1",
            "--mixed_precision",
            "no",
            "--dataset",
            str(data_dir),
            "--output_dir",
            str(out),
            "--figure",
            "off",
        ]
    )
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "vit_mae"


@pytest.mark.slow
def test_knn_monitor_runs_every_k_steps(tmp_path, data_dir):
    out = tmp_path / "knn"
    args = _pretrain_args(
        "simsiam",
        "resnet-tiny",
        data_dir,
        out,
        "--max_steps",
        "2",
        "--knn_dataset",
        "phantom",
        "--knn_train",
        "40",
        "--knn_test",
        "20",
        "--eval_steps",
        "1",
    )
    assert _script("pretrain").main(args) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert 0.0 <= summary["last_logged"]["eval/knn_mean_auc"] <= 1.0
