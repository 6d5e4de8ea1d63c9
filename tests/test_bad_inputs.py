"""Bad input fails fast and names itself (issue 15): one regression test per case, grouped by kind.

Configuration and arguments, data, prompts, weights, half-written outputs. Each error must name
the input that caused it and come before compute; a failed run must leave nothing that blocks the
corrected rerun. (Dataset writing's crash safety is in test_robust_writing.py, the MONAI bundle
converter's legacy equivalence in test_generation_convert.py.)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
from PIL import Image

from genssl_hf.validation import check_options, checked_parser


# ------------------------------------------------------------------------- parsers and ranges
def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    from genssl_hf.evaluation import frozen_features_cli, report
    from genssl_hf.generation import materialize
    from genssl_hf.hub import publish
    from genssl_hf.prompts import build
    from genssl_hf.training import finetune, generator, mae

    return {
        "mae": mae.build_parser(),
        "finetune": finetune.build_parser(),
        "autoencoder": generator.autoencoder_parser(),
        "ldm": generator.ldm_parser(),
        "evaluate": report.build_parser(),
        "generate": materialize.build_parser(),
        "publish": publish.build_parser(),
        "build_prompts": build.build_parser(),
        "probe_encoders": frozen_features_cli.build_parser(),
    }


def test_every_numeric_option_of_every_parser_has_a_range_and_refuses_nan():
    parsers = _all_parsers()  # building them raises for a numeric option without a declared range
    checked = 0
    for name, parser in parsers.items():
        for action in parser._actions:
            if action.type in (int, float) or getattr(action.type, "genssl_range", None) is not None:
                assert getattr(action.type, "genssl_range", None) is not None, (name, action.dest)
                for bad in ("nan", "inf", "-inf"):
                    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
                        action.type(bad)
                checked += 1
    assert checked > 100


def test_a_numeric_option_without_a_range_is_a_programming_error():
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--mystery_knob", type=float)
    with pytest.raises(TypeError, match="--mystery_knob.*no declared range"):
        checked_parser(p)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num_train_epochs", "-3"], "argument --num_train_epochs: must be > 0, got -3"),
        (["--learning_rate", "-1"], "argument --learning_rate: must be > 0, got -1"),
        (["--mask_ratio", "1.0"], r"argument --mask_ratio: must be in \(0, 1\), got 1"),
        (["--per_device_train_batch_size", "0"], "argument --per_device_train_batch_size: must be >= 1, got 0"),
        (["--warmup_ratio", "nan"], "argument --warmup_ratio: must be a finite number, got nan"),
    ],
)
def test_pretrain_mae_refuses_impossible_values_before_any_work(tmp_path, capsys, argv, message):
    from genssl_hf.training.mae import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["--output_dir", str(out), "--model", "tiny", "--dataset", str(tmp_path)] + argv)
    assert exc.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_scripts_refuse_impossible_values(capsys):
    from genssl_hf.generation.materialize import main as generate
    from genssl_hf.training.finetune import main as finetune

    with pytest.raises(SystemExit):
        generate(["--pipeline", "phantom", "--prompts", "heuristic", "--output_dir", "x", "--num-images", "-5"])
    assert "argument --num_images: must be >= 1, got -5" in capsys.readouterr().err  # the old spelling, the new name
    with pytest.raises(SystemExit):
        finetune(["--model", "tiny", "--dataset", "phantom", "--output_dir", "x", "--hflip", "2"])
    assert "argument --hflip: must be in [0, 1], got 2" in capsys.readouterr().err


def test_namespaces_built_in_code_are_checked_too(tmp_path):
    from genssl_hf.training.mae import build_parser, pretrain_mae

    args = build_parser().parse_args(["--output_dir", str(tmp_path / "o"), "--model", "tiny"])
    args.num_train_epochs = -3.0
    with pytest.raises(ValueError, match="--num_train_epochs must be > 0, got -3"):
        pretrain_mae(args)
    assert not (tmp_path / "o").exists()


def test_check_options_names_unknown_options_and_bad_values():
    from genssl_hf.training.mae import build_parser

    problems = check_options(
        build_parser(),
        {"num_train_epochz": 5, "learning_rate": "fast", "adain": "maybe", "norm_pix_loss": 3, "mask_ratio": 0.9},
        "pretrain.args",
    )
    assert len(problems) == 4
    assert (
        "pretrain.args.num_train_epochz: unknown option" in problems[0]
        and "did you mean 'num_train_epochs'" in problems[0]
    )
    assert "learning_rate: not a valid float: 'fast'" in problems[1]
    assert "'maybe' is not one of ['on', 'off']" in problems[2]
    assert "norm_pix_loss: a switch" in problems[3]


def _entry_parsers() -> dict[str, Any]:
    """Every trainer's and evaluation entry point's parser builder."""
    from genssl_hf.evaluation import frozen_features_cli, report, report_generation
    from genssl_hf.training import finetune, generator, mae, report_generator, vlp
    from genssl_hf.training.ssl import pretrain as ssl

    return {
        "finetune": finetune.build_parser,
        "mae": mae.build_parser,
        "ssl": ssl.build_parser,
        "vlp": vlp.build_parser,
        "report_generator": report_generator.build_parser,
        "autoencoder": generator.autoencoder_parser,
        "ldm": generator.ldm_parser,
        "evaluate": report.build_parser,
        "probe_encoders": frozen_features_cli.build_parser,
        "evaluate_report_generator": report_generation.build_parser,
    }


@pytest.mark.parametrize(
    "entry, old, new",
    [
        ("finetune", "--init", "--model"),
        ("finetune", "--preset", "--recipe"),
        ("finetune", "--epochs", "--num_train_epochs"),
        ("finetune", "--batch_size", "--per_device_train_batch_size"),
        ("finetune", "--blr", "--base_learning_rate"),
        ("finetune", "--lr", "--learning_rate"),
        ("finetune", "--eval_batch_size", "--per_device_eval_batch_size"),
        ("mae", "--preset", "--model"),
        ("mae", "--init_from", "--model"),
        ("mae", "--max_train_steps", "--max_steps"),
        ("ssl", "--max_train_steps", "--max_steps"),
        ("vlp", "--image_tower", "--model"),
        ("vlp", "--max_train_steps", "--max_steps"),
        ("report_generator", "--encoder", "--model"),
        ("report_generator", "--max_train_steps", "--max_steps"),
        ("autoencoder", "--preset", "--model"),
        ("autoencoder", "--init_from", "--model"),
        ("autoencoder", "--train_batch_size", "--per_device_train_batch_size"),
        ("autoencoder", "--max_train_steps", "--max_steps"),
        ("ldm", "--init_from", "--model"),
        ("ldm", "--lr_warmup_steps", "--warmup_steps"),
        ("evaluate", "--batch_size", "--per_device_eval_batch_size"),
        ("probe_encoders", "--encoder", "--model"),
        ("probe_encoders", "--batch_size", "--per_device_eval_batch_size"),
        ("evaluate_report_generator", "--batch_size", "--per_device_eval_batch_size"),
    ],
)
def test_a_renamed_option_names_its_new_name_before_any_work(capsys, entry, old, new):
    parser = _entry_parsers()[entry]()
    with pytest.raises(SystemExit) as exc:  # before the required options are even looked for
        parser.parse_args([old, "1"])
    assert exc.value.code == 2
    assert f"{old} was renamed: use {new}" in capsys.readouterr().err
    assert old not in parser.format_help().split()  # hidden from --help
    assert new in parser.format_help()


def test_an_unknown_option_gets_the_closest_known_ones(capsys):
    from genssl_hf.training.finetune import build_parser

    base = ["--model", "tiny", "--dataset", "phantom", "--output_dir", "o"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--num_trian_epochs", "3"])
    assert (
        "unrecognized arguments: --num_trian_epochs 3; --num_trian_epochs (did you mean '--num_train_epochs'?)"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):  # a typo of an old name suggests the new one
        build_parser().parse_args(base + ["--bllr=3"])
    assert "--bllr (did you mean '--base_learning_rate' or '--learning_rate'?)" in capsys.readouterr().err
    problems = check_options(build_parser(), {"epochz": 3, "blr": 1e-3}, "finetune.args")
    assert problems == [
        "finetune.args.epochz: unknown option of genssl finetune (did you mean 'num_train_epochs'?)",
        "finetune.args.blr: renamed: use base_learning_rate",
    ]


def test_mae_model_is_a_preset_or_a_folder(tmp_path):
    from genssl_hf.training.mae import build_parser, pretrain_mae

    for name in ("tiny2", "no/such/folder"):
        args = build_parser().parse_args(["--output_dir", str(tmp_path / "o"), "--model", name])
        with pytest.raises(
            FileNotFoundError, match=rf"--model '{name}' is neither an MAE preset \(tiny, tiny-d8, vit-b16, vit-s16\)"
        ):
            pretrain_mae(args)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------- pipeline config
@pytest.mark.parametrize(
    "override, message",
    [
        ("generaton.num_images=5", r"generaton: unknown config key \(did you mean 'generation'"),
        (
            "pretrain.args.num_train_epochz=5",
            r"pretrain.args.num_train_epochz: unknown option .*did you mean 'num_train_epochs'",
        ),
        ("generation.num_images=lots", "generation.num_images must be an integer, got 'lots'"),
        ("generation.num_images=-5", "generation.num_images must be >= 1, got -5"),
        ("pretrain.args.num_train_epochs=-3", "pretrain.args.num_train_epochs: must be > 0, got -3"),
        ("finetune.args.epochz=3", r"finetune.args.epochz: unknown option .*did you mean 'num_train_epochs'"),
        ("finetune.args.blr=1e-3", r"finetune.args.blr: renamed: use base_learning_rate"),
        (
            "real_data.phantom.exposur=[1, 2]",
            r"real_data.phantom.exposur: unknown phantom setting \(did you mean 'exposure'",
        ),
        ("hub.dry_run=maybe", "hub.dry_run must be true or false, got 'maybe'"),
    ],
)
def test_pipeline_config_is_schema_checked_before_the_first_stage(tmp_path, override, message):
    from genssl_hf.pipeline.runner import main

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        main(["--preset", "smoke", "--output-dir", str(out), "--set", override])
    assert not out.exists()  # no stage ran


def test_load_preset_creates_no_unknown_key_and_reports_all_problems(tmp_path):
    from genssl_hf.pipeline.config import load_preset, validate_config

    with pytest.raises(ValueError, match=r"--set generaton.num_images=5: generaton: unknown config key"):
        load_preset("smoke", ["generaton.num_images=5"])
    config = load_preset("smoke")
    config["generation"]["batchsize"] = 4
    config["seed"] = 1.5
    with pytest.raises(ValueError, match=r"2 problem\(s\)") as exc:
        validate_config(config)
    assert "generation.batchsize: unknown config key (did you mean 'batch_size'?)" in str(exc.value)
    assert "seed must be an integer, got 1.5" in str(exc.value)
    for preset in ("smoke", "demo", "paper"):  # the shipped presets pass their own schema
        load_preset(preset)


# -------------------------------------------------------------------------------------------- data
def _png(path: Path, size=16, value=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (
        np.full((size, size), value, np.uint8)
        if value is not None
        else (np.arange(size * size) % 251).astype(np.uint8).reshape(size, size)
    )
    Image.fromarray(arr).save(path)
    return path


def test_truncated_image_in_a_plain_image_folder_is_named_or_skipped(tmp_path):
    from genssl_hf.data.io import CXRReadError  # noqa: F401 - the reader behind the message
    from genssl_hf.training.pretraining_data import load_image_dataset

    folder = tmp_path / "images"
    for i in range(3):
        _png(folder / "a" / f"{i}.png")
    whole = (folder / "a" / "0.png").read_bytes()
    (folder / "a" / "broken.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"broken\.png: truncated PNG"):
        load_image_dataset(str(folder))
    skipped: list = []
    ds = load_image_dataset(str(folder), on_error="skip", skipped=skipped)
    assert len(ds) == 3 and [Path(s.path).name for s in skipped] == ["broken.png"]
    assert np.asarray(ds[0]["image"]).shape == (16, 16)


def test_decompression_bomb_is_a_cxr_read_error_and_skippable(tmp_path, monkeypatch):
    from genssl_hf.data.io import CXRReadError, check_image_file, read_cxr

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 20 x 20 image is then a "bomb"
    for name in ("bomb.png", "bomb.jpg"):
        path = tmp_path / name
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(path)
        with pytest.raises(CXRReadError, match=rf"{name}: decompression bomb"):
            read_cxr(path)
        with pytest.raises(CXRReadError, match="decompression bomb"):
            check_image_file(path)
        skipped: list = []
        assert read_cxr(path, on_error="skip", skipped=skipped) is None and "decompression bomb" in skipped[0].reason


def test_binary_file_given_as_csv_is_named(tmp_path):
    from genssl_hf.data import CXRDataError, load_image_csv

    csv = tmp_path / "labels.csv"
    csv.write_bytes(_png(tmp_path / "x.png").read_bytes())
    with pytest.raises(CXRDataError, match=r"labels\.csv is not UTF-8 text.*CSV"):
        load_image_csv(csv, image_root=tmp_path, path_column="path", label_columns=["a"])


def test_read_cxr_on_a_folder_says_so(tmp_path):
    from genssl_hf.data.io import CXRReadError, read_cxr

    with pytest.raises(CXRReadError, match="is a folder, not an image file"):
        read_cxr(tmp_path)


def test_string_column_as_image_column_and_empty_parquet_are_named(tmp_path):
    from genssl_hf.data.open import open_image_dataset
    from genssl_hf.training.pretraining_data import load_image_dataset

    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": _png(tmp_path / "a.png").read_bytes(), "path": None}], "text": ["hi"]}, features=feats
    )
    with pytest.raises(ValueError, match=r"column 'text' holds string values, not images; the image column is 'image'"):
        load_image_dataset(ds, image_column="text")
    with pytest.raises(ValueError, match=r"no image column 'imag' \(did you mean 'image'"):
        load_image_dataset(ds, image_column="imag")
    empty = tmp_path / "empty"
    empty.mkdir()
    ds.select([]).to_parquet(str(empty / "train.parquet"))
    for source in (empty, empty / "train.parquet"):
        with pytest.raises(ValueError, match=rf"--dataset {source}.*(no rows|empty)"):
            open_image_dataset(str(source))


def test_adain_refuses_nan_inf_and_empty_images_naming_them():
    from genssl_hf.processing import AdaINImageProcessor, adain_numpy

    processor = AdaINImageProcessor(size={"height": 16, "width": 16})
    img = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    nan = img.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"image 1 of 2 has NaN or infinite pixels .*first at \(3, 4\)"):
        processor([img, nan])
    inf = img.copy()
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="image 0 of 1 has NaN or infinite"):
        processor(inf)
    with pytest.raises(ValueError, match=r"image 0 of 1 is empty .*\(0, 0\)"):
        processor(np.zeros((0, 0), np.float32))
    with pytest.raises(ValueError, match=r"AdaIN input image \(1,\) has NaN"):
        adain_numpy(np.stack([img, nan]), 0.5, 0.2)
    with pytest.raises(ValueError, match="AdaIN input is empty"):
        adain_numpy(np.zeros((0, 0), np.float32), 0.5, 0.2)
    out = adain_numpy(img, 0.5, 0.2)
    assert math.isclose(float(out.mean()), 0.5, abs_tol=1e-5) and math.isclose(float(out.std()), 0.2, rel_tol=1e-3)


# ----------------------------------------------------------------------------------------- prompts
def test_promptset_reads_a_plain_list_like_the_generator_does(tmp_path):
    from genssl_hf.generation.materialize import load_prompts
    from genssl_hf.prompts import PromptSet

    items = [
        {"text": "Big cardiomegaly.", "disease": "Cardiomegaly", "existence": "positive"},
        {"text": "Cardiomegaly with no enlargement.", "disease": "Cardiomegaly", "existence": "negative"},
    ]
    (tmp_path / "prompts.json").write_text(json.dumps(items))
    ps = PromptSet.from_pretrained(tmp_path)
    assert ps.texts == [p["text"] for p in items]
    assert [p.text for p in load_prompts(str(tmp_path / "prompts.json")).prompts] == ps.texts
    (tmp_path / "prompts.json").write_text(json.dumps([{"text": "x", "disease": "y", "existance": "positive"}]))
    with pytest.raises(ValueError, match=r"prompts\.json: prompt entry has unknown keys \['existance'\]"):
        PromptSet.from_pretrained(tmp_path)


def test_overlong_prompts_warn_and_are_recorded_in_the_dataset_and_card(tmp_path, caplog):
    from genssl_hf.generation import materialize as mz

    class Truncating:
        generator_id = "truncating-fake"
        batch_invariant = True

        def prompt_token_overflow(self, prompts):
            return [max(0, len(p.split()) - 8) for p in prompts]

        def __call__(self, prompts, seeds):
            return np.stack([np.full((8, 8), 0.5, np.float32) for _ in prompts])

    long_text = "Cardiomegaly " + "with a very long description " * 9000  # 45,000+ characters
    prompts = [
        {"text": "Cardiomegaly.", "disease": "Cardiomegaly", "existence": "positive"},
        {"text": long_text.strip(), "disease": "Cardiomegaly", "existence": "unspecified"},
    ]
    out = tmp_path / "gen"
    with caplog.at_level("WARNING"):
        mz.generate_dataset(out, Truncating(), prompts=prompts, num_images=4, height=8, width=8, progress=False)
    assert "longer than the text encoder reads" in caplog.text
    ds = datasets.load_dataset(str(out), split="train")
    cut = {row["prompt"][:20]: row["prompt_tokens_truncated"] for row in ds}
    assert cut["Cardiomegaly."] == 0 and cut[long_text[:20]] == len(long_text.split()) - 8
    card = (out / "README.md").read_text()
    assert "were generated from a prompt cut to the text encoder's length" in card
    assert f"up to {len(long_text.split()) - 8} tokens lost" in card


def test_pipeline_counts_and_warns_about_truncated_prompts():
    from genssl_hf.generation import CXRLatentDiffusionPipeline
    from genssl_hf.generation.pretrained import PHANTOM_GENERATOR_DIR

    pipe = CXRLatentDiffusionPipeline.from_pretrained(PHANTOM_GENERATOR_DIR)
    limit = pipe.config.max_text_length
    long_text = "effusion " * 45_000
    assert pipe.prompt_token_overflow(["Cardiomegaly.", long_text])[0] == 0
    assert pipe.prompt_token_overflow([long_text])[0] > 40_000 - limit
    with pytest.warns(UserWarning, match=f"exceed the text encoder's {limit} tokens"):
        pipe.encode_prompt([long_text])


# ----------------------------------------------------------------------------------------- weights
def _garbage_model_folder(folder: Path) -> Path:
    from genssl_hf.training.mae_model import build_mae_config

    folder.mkdir(parents=True)
    build_mae_config("tiny").to_json_file(folder / "config.json")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    return folder


def test_garbage_safetensors_in_a_model_folder_is_named_before_training(tmp_path):
    from genssl_hf.training.mae import main as pretrain

    bad = _garbage_model_folder(tmp_path / "bad_init")
    out = tmp_path / "out"
    with pytest.raises(
        ValueError, match=rf"--model {bad}: weight file {bad / 'model.safetensors'} is not a readable safetensors"
    ):
        pretrain(["--output_dir", str(out), "--model", str(bad), "--recipe", "tiny", "--dataset", str(tmp_path)])
    assert not out.exists()


def test_garbage_safetensors_in_finetune_init_is_named(tmp_path):
    from genssl_hf.training.finetune import main as finetune

    bad = _garbage_model_folder(tmp_path / "bad_init")
    with pytest.raises(ValueError, match=rf"--model {bad}: weight file .*model\.safetensors is not a readable"):
        finetune(["--model", str(bad), "--dataset", "phantom", "--output_dir", str(tmp_path / "ft")])
    assert not (tmp_path / "ft").exists()


# ---------------------------------------------------------------------------------- half-written
def test_failed_pretraining_leaves_no_trace_and_the_corrected_run_is_not_refused(tmp_path):
    from genssl_hf.data.phantom import phantom_dataset
    from genssl_hf.training.mae import main as pretrain

    data = tmp_path / "data"
    phantom_dataset(4, size=32, seed=0).select_columns(["image"]).save_to_disk(str(data))
    out = tmp_path / "out"
    common = [
        "--output_dir",
        str(out),
        "--model",
        "tiny",
        "--image_size",
        "32",
        "--dataset",
        str(data),
        "--mixed_precision",
        "no",
        "--figure",
        "off",
        "--checkpointing_steps",
        "0",
    ]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        pretrain(common + ["--per_device_train_batch_size", "8"])  # fails after the model was built
    assert not out.exists()
    assert pretrain(common + ["--per_device_train_batch_size", "2", "--max_steps", "1"]) == 0
    assert (out / "config.json").is_file()
