"""The last unnamed or misleading errors (issue 35): each now stops before compute with a message
naming the option or file, and leaves no output folder behind. One test per case; the table of
messages is in BENCHMARKS.md ("Reliability, round three")."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def test_candidates_given_a_json_list(tmp_path):
    from genssl_hf.prompts import load_candidates

    path = tmp_path / "cands.json"
    path.write_text(json.dumps(["pleural effusion", "blunted angle"]))
    with pytest.raises(ValueError, match=r"--candidates \(cands.json\): expected a JSON object .* got a JSON list"):
        load_candidates(path)


def test_missing_relative_dataset_path_is_named_as_a_path(tmp_path, monkeypatch):
    from genssl_hf.data.open import open_image_dataset
    from genssl_hf.data.registry import open_labelled_dataset

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"--dataset 'data/train': no such file or folder \({tmp_path}/data"):
        open_image_dataset("data/train")
    with pytest.raises(FileNotFoundError, match=r"--dataset '\./data/train': no such file or folder .* not a Hub"):
        open_labelled_dataset("./data/train")


def test_model_folder_with_a_broken_config_json(tmp_path):
    from genssl_hf.training import mae

    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    args = mae.build_parser().parse_args(["--model", str(folder), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(ValueError, match=rf"--model {folder}: config.json is not valid JSON"):
        mae.pretrain_mae(args)
    assert not (tmp_path / "out").exists()


def test_pipeline_kwargs_not_json(tmp_path):
    from genssl_hf.generation.materialize import main

    argv = ["--pipeline", "phantom", "--prompts", "heuristic", "--num_images", "4", "--output_dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=r"--pipeline_kwargs '\{bad' is not valid JSON"):
        main(argv + ["--pipeline_kwargs", "{bad"])
    assert not (tmp_path / "o").exists()


def test_reference_stats_with_the_wrong_keys(tmp_path):
    import argparse

    from genssl_hf.training.pretraining_data import resolve_reference

    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"avg": 0.5, "sd": 0.2}))
    args = argparse.Namespace(reference_stats=str(path), adain_mean=None, adain_std=None)
    with pytest.raises(ValueError, match=rf"--reference_stats {path}: reference statistics lack the keys \["):
        resolve_reference(args)


def test_seed_out_of_range(capsys):
    from genssl_hf.training import mae

    with pytest.raises(SystemExit):
        mae.build_parser().parse_args(["--seed", str(10**22), "--output_dir", "x"])
    assert "argument --seed: must be in [0, 4.29497e+09]" in capsys.readouterr().err


def test_label_fraction_below_one_image_per_class():
    from genssl_hf.training.finetune_data import check_training_subset, stratified_subset

    targets = np.array([0] * 200 + [1] * 100)
    idx = stratified_subset(targets, 0.001, seed=0)  # what --label_fraction 0.001 keeps: one image
    assert len(idx) == 1
    with pytest.raises(ValueError, match=r"--label_fraction 0.001 keeps 1 of 300 training images, .* classes \['"):
        check_training_subset(targets, idx, ["No Finding", "Effusion"], "--label_fraction 0.001")
    check_training_subset(targets, stratified_subset(targets, 0.01, seed=0), ["No Finding", "Effusion"], "x")


def test_unknown_dataset_scheme_lists_the_schemes():
    from genssl_hf.data.registry import open_labelled_dataset

    with pytest.raises(ValueError, match=r"unknown dataset scheme 'unknownscheme'; give phantom, kermany:<folder>"):
        open_labelled_dataset("unknownscheme:/x")


def test_crop_scale_reversed(tmp_path):
    from genssl_hf.training.finetune import main

    crop = ["--crop_scale", "0.9", "0.1"]
    with pytest.raises(ValueError, match=r"--crop_scale 0.9 0.1: needs 0 < min <= max <= 1"):
        main(["--model", "tiny", "--dataset", "phantom", "--output_dir", str(tmp_path / "o")] + crop)
    assert not (tmp_path / "o").exists()


def test_huge_num_images_is_refused_up_front_and_shipped_names_resolve(tmp_path):
    from genssl_hf.generation.materialize import main

    out = tmp_path / "o"
    argv = [
        "--prompts",
        "heuristic",
        "--num_images",
        str(10**12),
        "--max_images_this_run",
        "2",
        "--output_dir",
        str(out),
    ]
    # the shipped name resolves (the error is the plan's, not "pipeline folder does not exist")
    with pytest.raises(ValueError, match=r"--num_images 1000000000000 .* makes \d+ shards, more than the 1000000"):
        main(["--pipeline", "genssl_hf/phantom-ldm-64", *argv])
    assert not out.exists()
    with pytest.raises(SystemExit, match=r"--pipeline: 'genssl_hf/no-such' is not a shipped genssl_hf artifact"):
        main(["--pipeline", "genssl_hf/no-such", *argv])


def test_pipeline_image_size_checked_against_patch_and_latent_multiples():
    from genssl_hf.pipeline.config import load_preset, validate_config

    with pytest.raises(ValueError, match=r"image_size 60 is not a multiple of the patch size 8 .* \(e.g. 56 or 64\)"):
        validate_config(load_preset("smoke", ["image_size=60"]))
    with pytest.raises(ValueError, match=r"generation.image_size 66: image size 66x66 is not a multiple of"):
        validate_config(load_preset("smoke", ["generation.image_size=66"]))
    validate_config(load_preset("smoke", ["image_size=64"]))


def test_evaluate_refuses_an_encoder_as_a_classifier(tmp_path):
    from transformers import ViTMAEConfig

    from genssl_hf.evaluation.report_inputs import LoadedClassifier

    cfg = ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    cfg.architectures = ["ViTMAEForPreTraining"]
    cfg.save_pretrained(tmp_path / "mae")
    with pytest.raises(
        ValueError, match=r"is not an image classifier \(config.json: ViTMAEForPreTraining\).*fine-tune"
    ):
        LoadedClassifier(tmp_path / "mae")


def test_failed_resume_and_bad_temperature_leave_no_folder(tmp_path):
    from genssl_hf.data.phantom import phantom_dataset
    from genssl_hf.training import mae
    from genssl_hf.training.ssl.pretrain import build_parser, pretrain_ssl

    data = tmp_path / "data"
    phantom_dataset(8, size=32, seed=0).save_to_disk(str(data))
    out = tmp_path / "resume"
    args = mae.build_parser().parse_args(
        ["--model", "tiny", "--image_size", "32", "--per_device_train_batch_size", "4", "--dataset", str(data)]
        + ["--output_dir", str(out)]
        + ["--resume_from_checkpoint", str(tmp_path / "missing")]
    )
    with pytest.raises((FileNotFoundError, ValueError), match="missing"):
        mae.pretrain_mae(args)
    assert not out.exists()
    out = tmp_path / "ssl"
    ssl_args = ["--method", "simclr", "--model", "resnet-tiny", "--dataset", str(data), "--output_dir", str(out)]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pretrain_ssl(build_parser().parse_args(ssl_args + ["--temperature", "0"]))
    assert not out.exists()


def test_pretrain_offers_the_on_error_option_its_message_names():
    from genssl_hf.training.ssl.pretrain import build_parser

    args = build_parser().parse_args(["--method", "simclr", "--output_dir", "x", "--on_error", "skip"])
    assert args.on_error == "skip"


def test_model_safetensors_is_0644(tmp_path):
    from transformers import ViTConfig, ViTModel

    from genssl_hf.processing import AdaINImageProcessor
    from genssl_hf.training.common import save_model_and_processor

    old = os.umask(0o022)
    try:
        model = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
        (tmp_path / "m").mkdir()
        save_model_and_processor(model, AdaINImageProcessor(), tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path(tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes


def test_csv_image_paths_stay_inside_their_root(tmp_path):
    from PIL import Image

    from genssl_hf.data.adapters import load_image_csv
    from genssl_hf.data.adapters._common import CXRDataError

    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "imgs").mkdir(parents=True)
    outside.mkdir()
    for folder in (root / "imgs", outside):
        Image.fromarray(np.full((16, 16), 100, np.uint8)).save(folder / "x.png")
    csv_path = root / "labels.csv"
    csv_path.write_text("file,y\nimgs/x.png,a\n../secret/x.png,b\n")
    kw = dict(path_column="file", label_column="y", cache_dir=tmp_path / "cache")
    escape = rf"labels.csv line 3: image path '../secret/x.png' resolves to {outside}/x.png, outside the image root"
    with pytest.raises(CXRDataError, match=escape):
        load_image_csv(csv_path, **kw)
    (root / "abs.csv").write_text(f"file,y\n{outside / 'x.png'},a\n")
    with pytest.raises(CXRDataError, match="outside the image root"):
        load_image_csv(root / "abs.csv", **kw)
    ds = load_image_csv(csv_path, allow_outside_root=True, **kw)  # the user's explicit choice
    assert len(ds) == 2
