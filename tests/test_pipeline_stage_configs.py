"""Pipeline stages run the ``genssl`` command on a config file they write into their folder, and the
real data of a run comes from the one dataset registry (a new scheme needs no pipeline code)."""

import sys

import pytest

from genssl_hf.cli import run_command
from genssl_hf.pipeline import load_preset, steps, training_steps
from genssl_hf.pipeline.config import validate_config
from genssl_hf.utils import read_json

# The trainer each (command words, method) reaches, by the module attribute ``genssl`` calls.
TRAINERS = {
    ("pretrain", "mae"): "genssl_hf.training.mae.main",
    ("pretrain", "simclr"): "genssl_hf.training.ssl.pretrain.main",
    ("pretrain", "convirt"): "genssl_hf.training.vlp.main",
    ("finetune", None): "genssl_hf.training.finetune.main",
    ("evaluate", None): "genssl_hf.evaluation.report.main",
    ("evaluate-vlp", None): "genssl_hf.evaluation.vlp.main",
    ("train-generator", "autoencoder"): "genssl_hf.training.generator.autoencoder_main",
    ("train-generator", "ldm"): "genssl_hf.training.generator.ldm_main",
}


def _parser(words: tuple, method: str | None):
    from genssl_hf.evaluation.report import build_parser as evaluation
    from genssl_hf.evaluation.vlp import build_parser as vlp_evaluation
    from genssl_hf.training.finetune import build_parser as finetune
    from genssl_hf.training.generator import autoencoder_parser, ldm_parser
    from genssl_hf.training.mae import build_parser as mae
    from genssl_hf.training.ssl.pretrain import build_parser as ssl
    from genssl_hf.training.vlp import build_parser as vlp

    return {
        ("pretrain", "mae"): mae,
        ("pretrain", "simclr"): ssl,
        ("pretrain", "convirt"): vlp,
        ("finetune", None): finetune,
        ("evaluate", None): evaluation,
        ("evaluate-vlp", None): vlp_evaluation,
        ("train-generator", "autoencoder"): autoencoder_parser,
        ("train-generator", "ldm"): ldm_parser,
    }[(words[0], method)]()


class _Launched(Exception):
    pass


def _stage_jobs(tmp_path, monkeypatch) -> list[tuple[list[str], str]]:
    """The command line and folder of every subprocess job of the stages, run up to the launch."""
    jobs = []

    def launch(cmd, folder, log, name="command", env=None):
        jobs.append((cmd, folder))
        if name != "autoencoder":  # the generator stage launches the LDM after its autoencoder
            raise _Launched

    monkeypatch.setattr(steps, "_run_command", launch)
    monkeypatch.setattr(training_steps, "_run_command", launch)
    monkeypatch.setattr(training_steps, "generator_training_data", lambda spec, folder: tmp_path / "pairs")
    demo, contrastive = load_preset("demo"), load_preset("contrastive")
    demo["generator"] = {
        "source": "train",
        "autoencoder_args": {"max_steps": 3},
        "ldm_args": {"max_steps": 3, "warmup_steps": 2},
    }
    root, real, stats = tmp_path / "run", tmp_path / "run" / "real_data", tmp_path / "run" / "stats.json"
    log = lambda message: None  # noqa: E731
    built = [
        training_steps.stage_generator(demo, log),
        training_steps.stage_pretrain(demo, "mae_genssl", root / "generated_dataset", "on", stats, log),
        training_steps.stage_ssl_pretrain(contrastive, "simclr", stats, root, log),
        training_steps.stage_vlp(demo, stats, log),
        training_steps.stage_finetune(demo, "genssl", str(root / "mae_genssl" / "model"), real, log, 0.5, 3, ""),
        steps.stage_evaluation(demo, root, ["random_init", "genssl"], real, log, 1.0, 0, ""),
        steps.stage_vlp_zero_shot(demo, root, real, log),
    ]
    for stage in built:
        folder = root / stage.name
        folder.mkdir(parents=True)
        with pytest.raises(_Launched):
            stage.run(folder)
    return jobs


def test_every_stage_job_is_genssl_on_the_config_file_in_its_folder(tmp_path, monkeypatch):
    jobs = _stage_jobs(tmp_path, monkeypatch)
    assert len(jobs) == 8
    seen = []
    for cmd, folder in jobs:
        assert cmd[:3] == [sys.executable, "-m", "genssl_hf"], cmd
        config = cmd[-1]
        assert config.startswith(str(folder)) and config.endswith("_config.json"), cmd
        options = read_json(config)
        words = tuple(cmd[3:-1])
        method = words[1] if len(words) > 1 else options.get("method")
        monkeypatch.setattr(TRAINERS[(words[0], method)], lambda argv, publish=None: seen.append(argv) or 0)
        assert run_command(words[0], [*words[1:], config]) == 0  # what `python -m genssl_hf ...` runs
        argv = seen[-1]
        if method == "convirt":  # `genssl pretrain --method convirt` is the VLP trainer with that loss
            assert argv[:2] == ["--loss", "convirt"] and "loss" not in options
        args = _parser(words, method).parse_args(argv)  # every option is one the trainer takes
        assert args.output_dir == options["output_dir"] and args.output_dir.startswith(str(folder))
        if words == ("finetune",):
            assert (args.seed, args.label_fraction, args.num_train_epochs) == (3, 0.5, 12)
        if words == ("evaluate",):
            assert [m.split("=")[0] for m in args.model] == ["Random init", "GEN-SSL (AdaIN)"]
        if words == ("pretrain", "simclr"):  # shared options of the other methods are left out
            assert args.method == "simclr" and "queue_size" not in options


def test_a_new_dataset_scheme_reaches_the_pipeline_without_pipeline_code(tmp_path, monkeypatch):
    """A scheme registered in ``data.registry`` is a ``real_data.source``: validated, loaded through
    the registry, its missing splits carved from train, and written as the run's real split."""
    import datasets

    from genssl_hf.data import registry
    from genssl_hf.data.phantom import phantom_splits

    opened = []

    def throwaway(root, label_names):
        opened.append(root)
        return datasets.DatasetDict(train=phantom_splits({"train": 40}, size=32, seed=5)["train"])

    monkeypatch.setitem(registry.DATASET_SCHEMES, "throwaway", (throwaway, "a scheme for this test"))
    cfg = load_preset("smoke")
    cfg["image_size"] = 32
    cfg["real_data"] = {"source": "throwaway", "path": "/data/throwaway", "validation_fraction": 0.25}
    validate_config(cfg)
    stage = steps.stage_real_data(cfg)
    folder = tmp_path / "real_data"
    folder.mkdir()
    summary = stage.run(folder)
    assert opened == ["/data/throwaway"]
    assert sum(summary["sizes"].values()) == 40 and set(summary["sizes"]) == {"train", "validation", "test"}
    test = datasets.load_dataset(str(folder / "dataset"), split="test")
    assert len(test) == summary["sizes"]["test"] > 0 and "image" in test.column_names
    cfg["real_data"]["source"] = "unregistered"
    with pytest.raises(ValueError, match="real_data.source must be one of .*throwaway"):
        validate_config(cfg)
    # The generator can train on the scheme's images, their findings written as short reports.
    cfg["real_data"]["source"] = "phantom"
    cfg["generator"] = {"source": "train", "dataset": "throwaway", "path": "/data/throwaway"}
    cfg["generator"] |= {"autoencoder_args": {"max_steps": 1}, "ldm_args": {"max_steps": 1}}
    validate_config(cfg)
    pairs = datasets.load_dataset(str(training_steps.generator_training_data(cfg["generator"], folder)), split="train")
    source = throwaway("/data/throwaway", None)["train"]
    names = source.features["labels"].feature.names
    assert pairs.column_names == ["image", "text"] and len(pairs) == 40
    for labels, text in zip(source["labels"], pairs["text"]):
        assert text == (" ".join(f"{names[i].replace('_', ' ')}." for i in labels) or "No finding.")
    assert {"No finding."} < set(pairs["text"])  # both healthy and diseased rows
    cfg["generator"]["dataset"] = "unregistered"
    with pytest.raises(ValueError, match="generator.dataset must be one of .*throwaway"):
        validate_config(cfg)
