"""The real-data comparison protocol (issue 21): recipes chosen on validation only, the tuning seeds'
runs reused, ``tune_as`` arms inheriting a recipe, input-standardisation overrides, pooled statistics."""

from __future__ import annotations

import json
import os
import sys

import pytest

from genssl_hf.pipeline.launch import _run_command
from genssl_hf.pipeline.protocol import Arm, _finetune_stage, arm_stage_name, pooled_rows, run_protocol, select_recipe
from genssl_hf.pipeline.stages import run_stage
from genssl_hf.pipeline.steps import stage_real_data

RECIPES = {"slow": {"base_learning_rate": 1e-4}, "fast": {"base_learning_rate": 4e-3, "randaug_n": 0}}


def _config() -> dict:
    return {
        "name": "protocol-test",
        "seed": 0,
        "image_size": 32,
        "real_data": {"source": "phantom", "sizes": {"train": 96, "validation": 48, "test": 64}},
        "generation": {"num_images": 10},
        "pretrain": {"args": {}},
        "finetune": {
            "random_init_preset": "tiny",
            "label_fractions": [0.5],
            "args": {
                "recipe": "tiny",
                "num_train_epochs": 2,
                "per_device_train_batch_size": 16,
                "n_bootstrap": 0,
                "test_split": "none",
                "mixed_precision": "no",
                "selection_metric": "mean_auc",
                "image_size": 32,
            },
        },
    }


def test_select_recipe_takes_the_best_mean_and_the_first_on_ties():
    assert select_recipe({"a": [0.6, 0.8], "b": [0.9, 0.4], "c": [0.7, 0.7]}) == "a"
    assert select_recipe({"a": [0.5], "b": [0.9], "c": [0.9]}) == "b"
    with pytest.raises(ValueError):
        select_recipe({})


def test_an_arm_of_another_input_size_fine_tunes_at_its_own_size(tmp_path):
    # an encoder pre-trained at 128 px fine-tunes at 128 even where the run's args name another size
    cfg = _config()
    stage = _finetune_stage(
        cfg, tmp_path, Arm("big", "Big", "tiny", image_size=128), "fast", RECIPES["fast"], 0.5, 0, print
    )
    assert stage.config["size"] == 128 and stage.config["finetune"]["args"]["image_size"] == 128
    same = _finetune_stage(cfg, tmp_path, Arm("small", "Small", "tiny"), "fast", RECIPES["fast"], 0.5, 0, print)
    assert same.config["size"] == 32 and same.config["finetune"]["args"]["image_size"] == 32
    assert cfg["image_size"] == 32 and cfg["finetune"]["args"]["image_size"] == 32  # the run's config is untouched


def test_a_stage_command_gets_its_own_environment(tmp_path):
    cmd = [
        sys.executable,
        "-c",
        "import os; print('threads', os.environ.get('OMP_NUM_THREADS'), os.environ.get('GENSSL_PROBE'))",
    ]
    _run_command(cmd, tmp_path, print, env={"OMP_NUM_THREADS": "1", "GENSSL_PROBE": "x"})
    assert "threads 1 x" in (tmp_path / "command.log").read_text()
    assert os.environ.get("GENSSL_PROBE") is None


def test_bad_arms_fail_before_any_stage(tmp_path):
    cfg = _config()
    with pytest.raises(ValueError, match="unique"):
        run_protocol(cfg, tmp_path, [Arm("a", "A", "tiny"), Arm("a", "A2", "tiny")])
    with pytest.raises(ValueError, match="tune_as"):
        run_protocol(cfg, tmp_path, [Arm("a", "A", "tiny", tune_as="b")])
    with pytest.raises(ValueError, match="tune_seeds"):
        run_protocol(cfg, tmp_path, [Arm("a", "A", "tiny")], seeds=(0,), tune_seeds=(1,))
    assert not any(tmp_path.iterdir())


def test_protocol_tunes_on_validation_reuses_runs_and_scores_every_arm(tmp_path):
    cfg = _config()
    root = tmp_path / "run"
    run_stage(root, stage_real_data(cfg), print)
    from genssl_hf.processing import AdaINImageProcessor

    donor = root / "donor"
    AdaINImageProcessor(adain_mean=0.45, adain_std=0.2, image_mean=[0.5], image_std=[0.5]).save_pretrained(donor)
    arms = [
        Arm("random_init", "Random init", "tiny", layer_decay=1.0),
        Arm("random_init_adain", "Random init, AdaIN input", "tiny", image_processor="donor", layer_decay=1.0),
        Arm("copy", "Random init again", "tiny", layer_decay=1.0, tune_as="random_init"),
        # an ablation arm: fewer seeds, scored by its own evaluation group, paired on its seeds
        Arm("one_seed", "One seed", "tiny", layer_decay=1.0, tune_as="random_init", seeds=(0,), group="extra"),
    ]
    logs: list[str] = []
    threads_before = os.environ.get("OMP_NUM_THREADS")
    result = run_protocol(
        cfg,
        root,
        arms,
        fractions=(0.5,),
        seeds=(0, 1),
        tune_seeds=(0,),
        recipes=RECIPES,
        full_fraction=False,
        workers=2,
        evaluation_args={"n_bootstrap": 50},
        log=logs.append,
    )
    # one thread per stage process is set for the commands, not in this process's environment
    assert os.environ.get("OMP_NUM_THREADS") == threads_before and "subprocess_env" not in cfg

    # the choice is the best validation AUC of the tuning runs, read from their metrics
    for arm in ("random_init", "random_init_adain"):
        val = {
            r: json.loads((root / arm_stage_name(arm, r, 0.5, 0) / "run" / "metrics.json").read_text())["best"][
                "validation"
            ]["mean_auc"]
            for r in RECIPES
        }
        t = result["tuning"][arm]["0.5"]
        assert t["chosen"] == max(val, key=lambda r: (val[r], -list(RECIPES).index(r)))
        assert t["runs"] == 2 and t["validation_auc"] == {r: [v] for r, v in val.items()}
    assert "copy" not in result["tuning"]
    runs = {(r["arm"], r["seed"]): r for r in result["runs"]}
    assert len(runs) == 7 and ("one_seed", 1) not in runs
    assert runs[("one_seed", 0)]["evaluation"] != runs[("copy", 0)]["evaluation"]
    assert runs[("copy", 0)]["recipe"] == result["tuning"]["random_init"]["0.5"]["chosen"]
    # every distinct stage ran once: 4 tuning runs, 7 - 2 reused seed runs, 2 + 1 evaluations
    ran = [line for line in logs if line.endswith("] running")]
    assert len(ran) == len(set(ran)) == 4 + 5 + 3, ran
    # the AdaIN arm fine-tuned behind the donor's processor, the others behind mean / std 0.5
    chosen = runs[("random_init_adain", 1)]["stage"]
    resolved = json.loads((root / chosen / "run" / "run_config.json").read_text())["resolved"]
    assert resolved["normalizer"]["do_adain"] and resolved["normalizer_source"] == str(
        donor / "preprocessor_config.json"
    )
    plain = json.loads((root / runs[("random_init", 1)]["stage"] / "run" / "run_config.json").read_text())
    assert not plain["resolved"]["normalizer"]["do_adain"] and plain["layer_decay"] == 1.0
    assert plain["base_learning_rate"] == RECIPES[runs[("random_init", 1)]["recipe"]]["base_learning_rate"]
    assert plain["test_split"] == "none"
    assert all(0.0 <= r["test_auc"] <= 1.0 for r in result["runs"])
    assert json.loads((root / "protocol.json").read_text())["tuning"] == result["tuning"]

    pooled = {r["arm"]: r for r in pooled_rows(result, root, baselines=("random_init",), n_bootstrap=50)}
    assert set(pooled) == {"random_init", "random_init_adain", "copy", "one_seed"}
    one = pooled["one_seed"]["vs"]["random_init"]
    assert one["difference"] == pytest.approx(
        runs[("one_seed", 0)]["test_auc"] - runs[("random_init", 0)]["test_auc"], abs=1e-6
    )
    d = pooled["random_init_adain"]["vs"]["random_init"]
    aucs = [runs[("random_init_adain", s)]["test_auc"] - runs[("random_init", s)]["test_auc"] for s in (0, 1)]
    assert d["difference"] == pytest.approx(sum(aucs) / 2, abs=1e-6) and d["low"] <= d["difference"] <= d["high"]
    assert pooled["random_init"]["vs"] == {}
    assert pooled["copy"]["min"] <= pooled["copy"]["median"] <= pooled["copy"]["max"]

    # a rerun finds every stage valid
    logs.clear()
    run_protocol(
        cfg,
        root,
        arms,
        fractions=(0.5,),
        seeds=(0, 1),
        tune_seeds=(0,),
        recipes=RECIPES,
        full_fraction=False,
        workers=2,
        evaluation_args={"n_bootstrap": 50},
        log=logs.append,
    )
    assert not [line for line in logs if line.endswith("] running")]
