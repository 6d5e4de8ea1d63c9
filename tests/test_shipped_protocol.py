"""Issue 34, item 5: the packager of the GEN-SSL encoder chosen under the protocol
(genssl_hf.hub.shipped_protocol): the choice reads validation only, bad input is refused before any
work naming the input, and the card's numbers are the pooled rows', as results.json holds them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genssl_hf.hub import shipped_protocol as sp
from genssl_hf.hub.shipped_protocol_card import auc_text, card_body, difference_text
from genssl_hf.utils import write_json

RECIPE = "blr3e-3_light"
SEEDS = (0, 1, 2)


def _model_folder(folder: Path, dataset: Path, steps: int) -> Path:
    """A folder with what the packager checks before any work (the weights are never loaded here)."""
    write_json(folder / "config.json", {"model_type": "vit_mae", "mask_ratio": 0.9})
    write_json(folder / "preprocessor_config.json", {})
    (folder / "model.safetensors").write_bytes(b"")
    write_json(folder / "run_config.json", {"args": {"dataset": str(dataset)}, "derived": {"num_train_images": 3000}})
    write_json(folder / "train_summary.json", {"global_step": steps})
    return folder


def _stage(run: Path, arm: str, fraction: float, seed: int, init: Path | str, validation_auc: float) -> None:
    stage = run / sp.stage_name(arm, RECIPE, fraction, seed)
    write_json(stage / "stage.json", {"config": {"init": str(init), "fraction": fraction, "seed": seed}})
    write_json(stage / "run" / "metrics.json", {"best": {"validation": {"mean_auc": validation_auc}}})


def _row(arm: str, fraction: float, mean: float, vs: dict | None = None, seeds=SEEDS) -> dict:
    return {
        "arm": arm,
        "fraction": fraction,
        "mean": mean,
        "median": mean,
        "min": mean - 0.01,
        "max": mean + 0.01,
        "seeds": list(seeds),
        "recipe": RECIPE,
        "title": {"random_init_adain": "Random init, AdaIN input", "real_mae": "MAE on real images"}.get(arm, arm),
        "vs": vs or {},
    }


def _vs(difference: float, low: float, high: float, p: float = 0.05) -> dict:
    return {"difference": difference, "low": low, "high": high, "p_value": p, "runs": 3}


@pytest.fixture
def run(tmp_path):
    """A protocol run: two GEN-SSL candidates ("late": higher test AUC, lower validation AUC than
    "early"), the standardised baseline and MAE on real images, their stages, pooled file and row."""
    run = tmp_path / "runs" / "base"
    dataset = run / "generated_dataset" / "dataset"
    dataset.mkdir(parents=True)
    folders = {
        "early": _model_folder(run / "mae_genssl" / "model", dataset, 460),
        "late": _model_folder(tmp_path / "runs" / "long" / "model", dataset, 10000),
    }
    real = _model_folder(run / "mae_real" / "model", run / "real_unlabelled", 460)
    validation = {"early": 0.95, "late": 0.93, "random_init_adain": 0.9, "real_mae": 0.94}
    for fraction in sp.FRACTIONS:
        for seed in SEEDS:
            for arm, init in (*folders.items(), ("random_init_adain", "tiny"), ("real_mae", real)):
                _stage(run, arm, fraction, seed, init, validation[arm] + 0.001 * seed)
    rows = []
    for fraction in sp.FRACTIONS:
        rows += [
            _row("random_init_adain", fraction, 0.90, {"early": _vs(-0.03, -0.08, 0.01)}),
            _row("early", fraction, 0.93, {"random_init_adain": _vs(0.03, -0.01, 0.08, 0.145)}),
            _row("late", fraction, 0.97, {"random_init_adain": _vs(0.07, 0.04, 0.1, 0.0)}),
            # the real arm holds the contrast in its own direction (real minus GEN-SSL)
            _row("real_mae", fraction, 0.94, {"early": _vs(0.01, -0.02, 0.035, 0.5), "late": _vs(-0.03, -0.05, -0.01)}),
        ]
    pooled = run / "protocol_pooled.json"
    write_json(pooled, rows)
    results = tmp_path / "results.json"
    record = {
        f"{r['fraction']:.0%} {r['arm']}": {
            "mean": round(r["mean"], 4),
            "median": round(r["median"], 4),
            **{f"vs_{b}": [round(v[k], 4) for k in ("difference", "low", "high")] for b, v in r["vs"].items()},
        }
        for r in rows
    }
    write_json(results, {"results": [{"name": "row", "pooled": record, "command": "python bench.py --protocol"}]})
    return {"run": run, "folders": folders, "pooled": pooled, "results": results, "real": real}


def _plan(run, candidates=None, pooled=None, **kwargs):
    options = {"baseline": "random_init_adain", "real_arm": "real_mae", "results_json": run["results"]}
    options.update(results_row="row")
    options.update(kwargs)
    return sp.plan_release(run["run"], candidates or run["folders"], [pooled or run["pooled"]], **options)


def test_stage_names_are_the_protocols():
    from genssl_hf.pipeline.protocol import arm_stage_name

    for fraction in (0.01, 0.1, 1.0):
        assert sp.stage_name("genssl_10k", RECIPE, fraction, 7) == arm_stage_name("genssl_10k", RECIPE, fraction, 7)


def test_the_choice_reads_validation_never_test(run):
    plan = _plan(run)
    # "late" has the higher pooled test AUC (97 against 93) but the lower validation AUC: not chosen
    assert plan.chosen == "early" and plan.folder == run["folders"]["early"]
    table = {c["arm"]: c for c in plan.choice}
    assert table["early"]["validation_auc"]["1%"] == pytest.approx(0.951)  # mean of 0.950, 0.951, 0.952
    assert table["late"]["score"] == pytest.approx(0.931)
    assert table["early"]["seeds"] == {"1%": [0, 1, 2], "10%": [0, 1, 2]}
    assert plan.real_folder == run["real"]
    # the other way round on validation, the other candidate wins
    for seed in SEEDS:
        for fraction in sp.FRACTIONS:
            _stage(run["run"], "late", fraction, seed, run["folders"]["late"], 0.99)
    assert _plan(run).chosen == "late"


def test_the_choice_compares_candidates_on_the_seeds_all_of_them_ran(run):
    rows = json.loads(run["pooled"].read_text())
    for r in rows:
        if r["arm"] == "early" and r["fraction"] == 0.01:
            r["seeds"] = [0, 1, 2, 3]  # one more seed for "early": its run is left out of the choice
    write_json(run["pooled"], rows)
    _stage(run["run"], "early", 0.01, 3, run["folders"]["early"], 0.10)  # would sink "early" if counted
    plan = _plan(run)
    early = next(c for c in plan.choice if c["arm"] == "early")
    assert early["seeds"]["1%"] == [0, 1, 2] and early["validation_auc"]["1%"] == pytest.approx(0.951)
    assert plan.chosen == "early"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: (r["run"] / sp.stage_name("late", RECIPE, 0.1, 2) / "run" / "metrics.json").unlink(), "ft_late__"),
        (lambda r: (r["folders"]["late"] / "model.safetensors").unlink(), r"late=.*no model.safetensors"),
        (lambda r: (r["folders"]["late"] / "train_summary.json").unlink(), "late=.*training steps"),
        (
            lambda r: write_json(r["pooled"], [x for x in json.loads(r["pooled"].read_text()) if x["arm"] != "late"]),
            "no pooled row of arm 'late' at 1%",
        ),
        (
            lambda r: write_json(
                r["pooled"], [x for x in json.loads(r["pooled"].read_text()) if x["arm"] != "random_init_adain"]
            ),
            "random_init_adain",
        ),
        (
            lambda r: write_json(
                r["run"] / sp.stage_name("early", RECIPE, 0.01, 0) / "stage.json", {"config": {"init": "tiny"}}
            ),
            "early=.*fine-tuned tiny, not this folder",
        ),
        (
            lambda r: write_json(
                r["folders"]["late"] / "run_config.json", {"args": {"dataset": str(r["run"] / "real_unlabelled")}}
            ),
            "late=.*not on the run's generated images",
        ),
        (lambda r: write_json(r["results"], {"results": []}), "--results_row 'row': no such row"),
    ],
)
def test_bad_input_is_refused_before_any_work_naming_it(run, change, message):
    change(run)
    with pytest.raises(sp.ProtocolInputError, match=message):
        _plan(run)


def test_bad_arguments_are_refused_naming_them(run, tmp_path):
    with pytest.raises(sp.ProtocolInputError, match="--pooled .*no such file"):
        _plan(run, pooled=tmp_path / "absent.json")
    write_json(tmp_path / "bad.json", {"rows": []})
    with pytest.raises(sp.ProtocolInputError, match="not a list of pooled protocol rows"):
        _plan(run, pooled=tmp_path / "bad.json")
    with pytest.raises(sp.ProtocolInputError, match="ARM=FOLDER"):
        sp.parse_candidates("genssl")
    with pytest.raises(sp.ProtocolInputError, match="given twice"):
        sp.parse_candidates("a=x,a=y")
    with pytest.raises(sp.ProtocolInputError, match="--run_dir .*no such folder"):
        sp.plan_release(tmp_path / "nowhere", run["folders"], [run["pooled"]], baseline="b", real_arm="r",
                        results_json=run["results"], results_row="row")  # fmt: skip
    args = [
        "--run_dir",
        str(run["run"]),
        "--candidates",
        "x=y",
        "--pooled",
        "p",
        "--real_arm",
        "r",
        "--results_row",
        "row",
    ]
    with pytest.raises(SystemExit, match="not in genssl_hf.utils.PRETRAINED"):
        sp.main([*args, "--name", "no-such-name"])
    with pytest.raises(SystemExit, match="--real_data .*nih-cxr14-1000-64px"):
        sp.main([*args, "--name", "nih-genssl-mae-64-protocol", "--real_data", str(tmp_path)])


def test_only_the_chosen_arm_needs_its_comparisons(run):
    rows = json.loads(run["pooled"].read_text())
    for r in rows:
        if r["arm"] == "real_mae":
            del r["vs"]["late"]  # "late" (not chosen) is never compared with MAE on real images
    write_json(run["pooled"], rows)
    assert _plan(run).chosen == "early"
    for r in rows:
        if r["arm"] == "real_mae":
            del r["vs"]["early"]
    write_json(run["pooled"], rows)
    with pytest.raises(sp.ProtocolInputError, match="early was chosen on validation .*--contrast early:real_mae"):
        _plan(run)


def test_each_candidate_is_compared_with_its_own_real_arm(run):
    assert sp.parse_real_arms("real_mae") == "real_mae"
    assert sp.parse_real_arms("early=real_mae, late=real_10k") == {"early": "real_mae", "late": "real_10k"}
    with pytest.raises(sp.ProtocolInputError, match="--real_arm: expected"):
        sp.parse_real_arms("early=real_mae,early=real_10k")
    # "late" would be compared with a 10k-step real arm this run never pooled: only the chosen one's counts
    plan = _plan(run, real_arm={"early": "real_mae", "late": "real_10k"})
    assert plan.chosen == "early" and plan.real_arm == "real_mae"
    with pytest.raises(sp.ProtocolInputError, match=r"--real_arm: no MAE-on-real-images arm for \['late'\]"):
        _plan(run, real_arm={"early": "real_mae"})


def test_with_several_pooled_files_the_numbers_come_from_one_file_with_every_comparison(run, tmp_path):
    # another group pooled "early" at 1 % over 10 seeds against the baseline only (no MAE-real contrast)
    seeds = tuple(range(10))
    more = [
        _row("random_init_adain", 0.01, 0.88, {"early": _vs(-0.01, -0.03, 0.01)}, seeds),
        _row("early", 0.01, 0.91, {"random_init_adain": _vs(0.01, -0.01, 0.03)}, seeds),
    ]
    write_json(tmp_path / "protocol_pooled_onepct.json", more)
    for seed in seeds[3:]:
        _stage(run["run"], "early", 0.01, seed, run["folders"]["early"], 0.95)
    plan = sp.plan_release(
        run["run"],
        run["folders"],
        [tmp_path / "protocol_pooled_onepct.json", run["pooled"]],
        baseline="random_init_adain",
        real_arm="real_mae",
        results_json=run["results"],
        results_row="row",
    )
    one = plan.numbers["1%"]
    assert one["file"] == str(run["pooled"]) and one["arms"]["early"]["mean"] == 0.93
    assert [c["against"] for c in one["comparisons"]] == ["random_init_adain", "real_mae"]
    # the choice still compares the candidates on the seeds both ran
    assert next(c for c in plan.choice if c["arm"] == "early")["seeds"]["1%"] == [0, 1, 2]


def test_the_results_row_must_hold_the_pooled_numbers(run):
    doc = json.loads(run["results"].read_text())
    doc["results"][0]["pooled"]["10% real_mae"]["vs_early"][1] = -0.5  # a CI bound recorded otherwise
    write_json(run["results"], doc)
    with pytest.raises(sp.ProtocolInputError, match=r"pooled\['10% real_mae'\] vs_early\[1\] is -0.5"):
        _plan(run)


def test_comparisons_come_from_the_arms_row_or_mirrored_from_the_other(run):
    plan = _plan(run)
    base, real = plan.numbers["1%"]["comparisons"]
    assert (base["against"], base["difference"], base["low"], base["high"], base["sign"]) == (
        "random_init_adain", 0.03, -0.01, 0.08, 1,
    )  # fmt: skip
    # stored as real minus GEN-SSL +1.0 (-2.0 to +3.5): the card's GEN-SSL minus real is -1.0 (-3.5 to +2.0)
    assert (real["difference"], real["low"], real["high"]) == (-0.01, -0.035, 0.02)
    assert (real["results_key"], real["results_entry"], real["sign"]) == ("1% real_mae", "vs_early", -1)
    cited = {(k, e): v for k, e, v in sp.cited_numbers(plan.numbers, plan.chosen)}
    assert cited[("1% real_mae", "vs_early[0]")] == 0.01 and cited[("1% early", "mean")] == 0.93


def test_the_card_gives_the_pooled_numbers_rounded_as_percent(run):
    plan = _plan(run)
    assert auc_text({"mean": 0.929273, "min": 0.91024, "max": 0.94425}) == "92.9 (91.0-94.4)"
    assert difference_text(_vs(0.0330913, -0.0054365, 0.086372, 0.145)) == "+3.3 (-0.5 to +8.6), p 0.145"
    assert difference_text(_vs(0.0194691, 0.0088516, 0.0301146, 0.0)) == "+1.9 (+0.9 to +3.0), p 0.000"
    commands = {
        "base": "python bench.py --pretrain-only",
        "pretrain": "python -m genssl_hf pretrain ...",
        "protocol": "python bench.py",
        "package": "python x",
    }
    record = sp.release_record(plan, "nih-genssl-mae-64-protocol", "row", commands)
    facts = {
        "name": "nih-genssl-mae-64-protocol",
        "config": {"image_size": 64, "patch_size": 8, "hidden_size": 128, "num_hidden_layers": 4, "mask_ratio": 0.9},
        "derived": {"num_train_images": 3000, "total_batch_size": 128},
        "parameters": 830_000,
        "steps": "460",
        "real_steps": "460",
        "commands": commands,
        "results_row": "row",
        "measured": {"mae_loss": 0.0912345, "mean_patch_loss": 0.19},
    }
    text = card_body(record, facts)
    assert "| 1 % | 3 | 93.0 (92.0-94.0) | 90.0 (89.0-91.0) | 94.0 (93.0-95.0) |" in text
    assert "| 1 % | Random init, AdaIN input (`random_init_adain`) | +3.0 (-1.0 to +8.0), p 0.145 | 3 |" in text
    assert "| 10 % | MAE on real images (`real_mae`) | -1.0 (-3.5 to +2.0), p 0.500 | 3 |" in text
    assert "`real_mae`, equal pre-training length" in text
    assert "| **early** (chosen) | 95.10 (0, 1, 2) | 95.10 (0, 1, 2) | 95.10 |" in text
    assert "| late | 93.10 (0, 1, 2) |" in text
    assert "0.0912 (predict-the-mean baseline: 0.1900" in text and "`benchmarks/results.json` row `row`" in text
    for limit in ("In-split test", "4-14 points below", "--recalibration_method", "64 px", "not a medical device"):
        assert limit in text
    facts["real_steps"] = "10000"
    assert "`real_mae`, 10000 steps against this one's 460" in card_body(record, facts)
    assert json.loads(json.dumps(record))["choice"][0]["arm"] == "early"


def test_commands_lose_this_machines_paths(run, tmp_path):
    roots = {str(tmp_path / "runs"): "outputs/", "/data/real": "../shared/data/"}
    command = f"/opt/venv/bin/python3 bench.py --output-dir {tmp_path / 'runs' / 'base'} --shared /data/real"
    assert sp.portable(command, roots) == "python bench.py --output-dir outputs/base --shared ../shared/data"
    repo = sp.CHECKOUT
    assert sp.without_roots(f'"{repo}/genssl_hf/x"', roots) == '"genssl_hf/x"'


def test_the_pretraining_command_is_the_run_configs_and_parses(tmp_path):
    from genssl_hf.training.mae import build_parser

    folder = tmp_path / "runs" / "long" / "model"
    record = {
        "environment": {},
        "args": {
            "dataset": str(tmp_path / "runs" / "base" / "generated_dataset" / "dataset"),
            "output_dir": str(folder),
            "model": "tiny",
            "max_steps": 10000,
            "mask_ratio": 0.9,
            "resume_from_checkpoint": "latest",  # how the run survived interruptions, not its recipe
            "overwrite_output_dir": False,
        },
    }
    write_json(folder / "run_config.json", record)
    command = sp.pretraining_command(folder, {str(tmp_path / "runs"): "outputs/"})
    assert command.startswith("python -m genssl_hf pretrain --method mae ")
    assert "--dataset outputs/base/generated_dataset/dataset" in command and "--max_steps 10000" in command
    assert "resume" not in command and str(tmp_path) not in command
    words = command.split()[6:]
    build_parser().parse_args(words)  # every option is the MAE trainer's
