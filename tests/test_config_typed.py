"""Typed options (dataclasses parsed by transformers' HfArgumentParser) from the command line and
from JSON / YAML files: errors name the file and the key; old spellings stop or are accepted."""

from __future__ import annotations

import json

import pytest

from genssl_hf.cli import main


def _write(path, text):
    path.write_text(text)
    return path


def test_finetune_parser_is_an_hf_argument_parser_over_dataclasses(tmp_path):
    from transformers import HfArgumentParser

    from genssl_hf.training.finetune_args import FinetuneDataArguments, FinetuneModelArguments, build_parser

    p = build_parser()
    assert isinstance(p, HfArgumentParser)
    ns = p.parse_args(["--model", "tiny", "--dataset", "phantom", "--output_dir", "o", "--label_fraction", "10%"])
    groups = p.to_dataclasses(ns)
    model = next(g for g in groups if isinstance(g, FinetuneModelArguments))
    data = next(g for g in groups if isinstance(g, FinetuneDataArguments))
    assert (model.model, data.dataset, data.label_fraction, data.phantom_sizes) == (
        "tiny",
        "phantom",
        0.1,
        [2000, 300, 500],
    )
    assert p.to_dict(ns)["RunArguments"]["mixed_precision"] == "no"  # the command's default over the shared one
    # transformers' own file readers work on the same dataclasses
    cfg = _write(tmp_path / "c.yaml", "model: tiny\ndataset: phantom\noutput_dir: o\nmode: linear_probe\n")
    parsed = p.parse_yaml_file(cfg)
    assert next(g for g in parsed if isinstance(g, FinetuneModelArguments)).mode == "linear_probe"


def test_config_file_is_typed_and_the_command_line_wins(tmp_path):
    from genssl_hf.training.finetune_args import build_parser

    cfg = _write(
        tmp_path / "r.yaml",
        "model: tiny\ndataset: phantom\noutput_dir: out\nseed: 3\n"
        "phantom_sizes: [10, 5, 5]\noverwrite_output_dir: true\n",
    )
    ns = build_parser().parse_args([str(cfg), "--seed", "7"])
    assert (ns.seed, ns.phantom_sizes, ns.overwrite_output_dir, ns.model) == (7, [10, 5, 5], True, "tiny")


@pytest.mark.parametrize(
    "line, message",
    [
        ("num_train_epoch: 3", "num_train_epoch: unknown option of genssl finetune (did you mean 'num_train_epochs'?)"),
        ("seed: abc", "seed: not a valid int: 'abc'"),
        ("hflip: 2", "hflip: must be in [0, 1], got 2"),
        ("mode: probe", "mode: 'probe' is not one of"),
        ("phantom_sizes: [1, 2]", "phantom_sizes: takes 3 values"),
        ("epochs: 3", "epochs: renamed: use num_train_epochs"),
        ("push_to_hub: 1", "push_to_hub: a switch; give true or leave it out"),
    ],
)
def test_config_file_errors_name_the_file_and_the_key(tmp_path, capsys, line, message):
    cfg = _write(tmp_path / "bad.yaml", f"model: tiny\ndataset: phantom\noutput_dir: {tmp_path / 'o'}\n{line}\n")
    assert main(["finetune", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"config file {cfg}: " in err and message in err, err
    assert not (tmp_path / "o").exists()


def test_pretrain_config_file_is_checked_against_the_methods_options(tmp_path, capsys):
    cfg = _write(tmp_path / "mae.yaml", "method: mae\nmodel: tiny\noutput_dir: o\nmask_ration: 0.75\n")
    assert main(["pretrain", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"config file {cfg}: mask_ration: unknown option" in err and "mask_ratio" in err
    ssl = _write(tmp_path / "ssl.json", json.dumps({"method": "moco_v2", "output_dir": "o", "queue_size": "many"}))
    assert main(["pretrain", str(ssl)]) == 2
    assert f"config file {ssl}: queue_size: not a valid int: 'many'" in capsys.readouterr().err


def test_a_run_config_re_runs_its_options(tmp_path):
    from genssl_hf.training.mae import build_parser

    run_config = {
        "args": {"model": "tiny", "output_dir": "old", "max_steps": 3, "streaming": False, "recipe": "tiny"},
        "model": {"hidden_size": 64},
        "environment": {"torch": "x"},
    }
    cfg = _write(tmp_path / "run_config.json", json.dumps(run_config))
    ns = build_parser().parse_args([str(cfg), "--output_dir", "new"])
    assert (ns.model, ns.max_steps, ns.streaming, ns.recipe, ns.output_dir) == ("tiny", 3, False, "tiny", "new")


def test_generate_speaks_underscores_and_names_renamed_options(capsys):
    from genssl_hf.generation.materialize.cli import build_parser

    p = build_parser()
    ns = p.parse_args(["--pipeline", "phantom", "--prompts", "disease", "--output_dir", "o", "--num_images", "4"])
    assert (ns.output_dir, ns.num_images, ns.num_inference_steps, ns.guidance_scale) == ("o", 4, None, 7.0)
    from genssl_hf.generation.materialize import GenerationOptions

    assert GenerationOptions().steps == 50  # no --num_inference_steps and no --sampler: 50 steps, as before
    # the dashed spellings of before are still accepted (hidden from --help)
    old = p.parse_args(["--pipeline", "phantom", "--prompts", "disease", "--output_dir", "o", "--num-images", "4"])
    assert old.num_images == 4 and "--num-images" not in p.format_help()
    for flag, new in [
        ("--out", "--output_dir"),
        ("--steps", "--num_inference_steps"),
        ("--guidance", "--guidance_scale"),
    ]:
        with pytest.raises(SystemExit):
            p.parse_args(["--pipeline", "phantom", "--prompts", "disease", flag, "1"])
        assert f"{flag} was renamed: use {new}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        p.parse_args(["--pipeline", "phantom", "--output_dir", "o"])
    assert "give exactly one of --prompts and --reports" in capsys.readouterr().err


def test_every_command_spells_options_with_underscores():
    from genssl_hf.evaluation.report import build_parser as evaluate
    from genssl_hf.generation.materialize.cli import build_parser as generate
    from genssl_hf.training.finetune_args import build_parser as finetune
    from genssl_hf.training.mae import build_parser as mae
    from genssl_hf.training.ssl.pretrain import build_parser as ssl

    for build in (evaluate, generate, finetune, mae, ssl):
        p = build()
        shown = [s for a in p._actions if a.help != "==SUPPRESS==" for s in a.option_strings if s.startswith("--")]
        assert shown and not [s for s in shown if "-" in s[2:]], (p.prog, shown)


def test_generator_stages_read_typed_config_files(tmp_path, capsys):
    from genssl_hf.training.generator.args import LdmArguments, autoencoder_parser, ldm_parser

    cfg = _write(tmp_path / "ldm.yaml", "dataset: phantom:8\nmax_steps: 2\noutput_dir: o\nautoencoder: ae\n")
    p = ldm_parser()
    ns = p.parse_args([str(cfg), "--validation_prompts", "Edema", "no Edema"])
    ldm = next(d for d in p.to_dataclasses(ns) if isinstance(d, LdmArguments))
    assert (ldm.autoencoder, ldm.validation_prompts, ns.learning_rate, ns.per_device_train_batch_size) == (
        "ae",
        ["Edema", "no Edema"],
        2.5e-4,
        32,
    )
    bad = _write(tmp_path / "ae.yaml", "dataset: phantom:8\nmax_steps: 2\noutput_dir: o\nkl_weight: -1\n")
    with pytest.raises(SystemExit):
        autoencoder_parser().parse_args([str(bad)])
    assert f"config file {bad}: kl_weight: must be >= 0, got -1" in capsys.readouterr().err
