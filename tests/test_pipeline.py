"""The end-to-end pipeline: the smoke preset runs every stage, a rerun skips valid stages, and
bad configs fail before any stage runs."""

import json

import datasets
import pytest

from genssl_hf.pipeline import load_preset, run_pipeline
from genssl_hf.pipeline.config import validate_config
from genssl_hf.pipeline.stages import Stage, run_stage


def test_presets_load_and_validate():
    for name in ("smoke", "demo", "paper"):
        cfg = load_preset(name)
        assert cfg["name"] == name
    cfg = load_preset("smoke", ["pretrain.args.num_train_epochs=3", "generation.guidance_scale=5.5"])
    assert cfg["pretrain"]["args"]["num_train_epochs"] == 3 and cfg["generation"]["guidance_scale"] == 5.5


def test_bad_configs_fail_early():
    with pytest.raises(FileNotFoundError, match="known presets"):
        load_preset("no-such-preset")
    with pytest.raises(ValueError, match="key.path=value"):
        load_preset("smoke", ["oops"])
    cfg = load_preset("smoke")
    cfg["variants"] = ["random_init", "magic"]
    with pytest.raises(ValueError, match="unknown variants"):
        validate_config(cfg)
    cfg = load_preset("smoke")
    del cfg["pretrain"]
    with pytest.raises(KeyError, match="pretrain"):
        validate_config(cfg)
    cfg = load_preset("smoke")
    cfg["real_data"] = {"source": "kermany"}
    with pytest.raises(ValueError, match="needs real_data.path"):
        validate_config(cfg)
    cfg = load_preset("smoke")
    cfg["finetune"].update(label_fractions=[0.1, 1.0], seeds=[0, 1], seed_fractions=[0.5])
    with pytest.raises(ValueError, match="seed_fractions"):
        validate_config(cfg)
    cfg["finetune"].update(seeds=[3, 3], seed_fractions=None)
    with pytest.raises(ValueError, match="repeats a seed"):
        validate_config(cfg)


def test_finetune_runs_repeat_seeds_only_where_asked():
    from genssl_hf.pipeline.config import finetune_runs

    cfg = load_preset("smoke")
    cfg["finetune"].update(label_fractions=[0.01, 0.1, 1.0])
    assert finetune_runs(cfg) == [(0.01, cfg["seed"], "_f1"), (0.1, cfg["seed"], "_f10"), (1.0, cfg["seed"], "_f100")]
    cfg["finetune"].update(seeds=[0, 1, 2], seed_fractions=[0.01, 0.1])
    assert finetune_runs(cfg) == [
        (0.01, 0, "_f1"),
        (0.01, 1, "_f1_s1"),
        (0.01, 2, "_f1_s2"),
        (0.1, 0, "_f10"),
        (0.1, 1, "_f10_s1"),
        (0.1, 2, "_f10_s2"),
        (1.0, 0, "_f100"),
    ]


def test_stage_skips_when_valid_and_reruns_when_config_changes(tmp_path):
    calls = []

    def run(folder):
        calls.append(1)
        (folder / "out.txt").write_text("x")
        return {"n": len(calls)}

    assert run_stage(tmp_path, Stage("s", {"a": 1}, run, ["out.txt"]), log=lambda m: None) == {"n": 1}
    assert run_stage(tmp_path, Stage("s", {"a": 1}, run, ["out.txt"]), log=lambda m: None) == {"n": 1}
    assert len(calls) == 1
    run_stage(tmp_path, Stage("s", {"a": 2}, run, ["out.txt"]), log=lambda m: None)  # config changed
    (tmp_path / "s" / "out.txt").unlink()  # output lost
    run_stage(tmp_path, Stage("s", {"a": 2}, run, ["out.txt"]), log=lambda m: None)
    assert len(calls) == 3

    def broken(folder):
        return {}

    with pytest.raises(RuntimeError, match="without its outputs"):
        run_stage(tmp_path, Stage("b", {}, broken, ["missing.txt"]), log=lambda m: None)
    assert not (tmp_path / "b" / "stage.json").exists()


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
    """The CI-sized run of every stage with the shipped phantom generator."""
    logs = []
    result = run_pipeline(load_preset("smoke"), tmp_path / "run", log=logs.append)
    root = tmp_path / "run"
    # Generated dataset: balanced over the heuristic prompt set's classes, reloads with load_dataset.
    gen = datasets.load_dataset(str(root / "generated_dataset" / "dataset"), split="train")
    assert len(gen) == 60 and len(set(gen["prompt"])) == 30
    assert (root / "sample_grid" / "generated_samples.png").stat().st_size > 10_000
    # Encoder, classifier, results and plots.
    assert (root / "mae_genssl" / "model" / "reconstruction.png").is_file()
    results = root / "evaluation" / "results"
    table = (results / "results.md").read_text()
    assert "GEN-SSL (AdaIN)" in table and "Random init" in table and "paired" in table
    assert (results / "mauc_comparison.png").is_file() and list(results.glob("roc_*.png"))
    rows = json.loads((results / "comparison.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {"random_init", "genssl"}
    assert all(0.0 <= r["mean_auc"] <= 1.0 for r in rows)
    # Hub-ready dry-run folders exist for every artifact and reload.
    dry = root / "hub" / "dry_run"
    assert {p.name for p in dry.iterdir()} >= {"prompt_set", "generator", "dataset", "encoder", "classifier"}
    from transformers import ViTForImageClassification, ViTMAEForPreTraining

    ViTMAEForPreTraining.from_pretrained(dry / "encoder")
    ViTForImageClassification.from_pretrained(dry / "encoder")
    assert len(datasets.load_dataset(str(dry / "dataset"), split="train")) == 60
    # A rerun resumes: every stage is already valid.
    logs.clear()
    run_pipeline(load_preset("smoke"), root, log=logs.append)
    assert all("skipped" in line for line in logs if line.startswith("[")), logs
    assert result["seconds"] > 0


def test_a_stage_made_under_the_old_option_names_stays_valid(tmp_path):
    """Stage folders written before the trainers took transformers' option names (``epochs``,
    ``blr``, ``preset``, ``max_train_steps``, ...) are not rerun for the rename alone."""
    import copy

    from genssl_hf.pipeline.stages import fingerprint, stage_is_valid
    from genssl_hf.utils import write_json

    old = {
        "seed": 0,
        "init": "tiny",
        "finetune": {
            "random_init_preset": "tiny",
            "args": {"preset": "tiny", "epochs": 2, "batch_size": 16, "blr": 1e-3, "n_bootstrap": 0},
        },
        "pretrain": {"args": {"preset": "tiny", "max_train_steps": 5, "num_train_epochs": 1}},
        "generator": {
            "source": "train",
            "autoencoder_args": {"max_train_steps": 3, "train_batch_size": 4},
            "ldm_args": {"max_train_steps": 3, "lr_warmup_steps": 2},
        },
        "vlp": {"num_pairs": 10, "args": {"image_tower": "tiny", "max_train_steps": 3}},
    }
    new = {
        "seed": 0,
        "init": "tiny",
        "finetune": {
            "random_init_preset": "tiny",
            "args": {
                "recipe": "tiny",
                "num_train_epochs": 2,
                "per_device_train_batch_size": 16,
                "base_learning_rate": 1e-3,
                "n_bootstrap": 0,
            },
        },
        "pretrain": {"args": {"model": "tiny", "max_steps": 5, "num_train_epochs": 1}},
        "generator": {
            "source": "train",
            "autoencoder_args": {"max_steps": 3, "per_device_train_batch_size": 4},
            "ldm_args": {"max_steps": 3, "warmup_steps": 2},
        },
        "vlp": {"num_pairs": 10, "args": {"model": "tiny", "max_steps": 3}},
    }
    folder = tmp_path / "stage"
    folder.mkdir()
    (folder / "out.txt").write_text("x")
    write_json(folder / "stage.json", {"fingerprint": fingerprint(old)})
    assert stage_is_valid(folder, Stage("stage", new, lambda f: {}, outputs=["out.txt"]))
    other = copy.deepcopy(new)
    other["finetune"]["args"]["num_train_epochs"] = 3  # another value is another stage
    assert not stage_is_valid(folder, Stage("stage", other, lambda f: {}, outputs=["out.txt"]))
    write_json(folder / "stage.json", {"fingerprint": fingerprint(new)})
    assert stage_is_valid(folder, Stage("stage", new, lambda f: {}, outputs=["out.txt"]))
