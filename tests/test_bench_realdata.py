"""benchmarks/bench_genssl_realdata.py (issue 21): the arms the protocol compares, the extra encoders'
stages (compute-matched, other input size, contrastive), the paired contrasts table and the
command-line checks. The real-data run itself needs ../shared/data and an hour; these parts do not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_genssl_realdata as bench  # noqa: E402


@pytest.fixture
def protocol_calls(monkeypatch):
    """The protocol stubbed out: what ``run_protocol`` received (its arms and keywords) and the
    baselines ``pooled_rows`` was asked for land in the returned dict; nothing is fine-tuned."""
    import genssl_hf.pipeline.protocol as protocol

    seen: dict = {}

    def fake_run_protocol(config, root, arms, **kwargs):
        seen.update(arms=arms, **kwargs)
        return {"recipes": kwargs["recipes"], "tuning": {}, "runs": []}

    def fake_pooled_rows(result, root, baselines, n_bootstrap):
        seen["baselines"] = baselines
        return []

    monkeypatch.setattr(protocol, "run_protocol", fake_run_protocol)
    monkeypatch.setattr(protocol, "pooled_rows", fake_pooled_rows)
    return seen


def test_main_arms_subset_and_extra_arms():
    arms = bench.protocol_arms(
        ["mae_genssl_10k_2000", "mae_real_128px_2000", "moco_v2"], ["random_init_adain", "genssl", "real_mae"]
    )
    by_name = {a.name: a for a in arms}
    assert list(by_name)[:3] == ["random_init_adain", "genssl", "real_mae"] and len(arms) == 6
    # every extra arm takes a tuned main arm's recipe, reads its own stage and runs 3 seeds at 1 / 10 %
    for name in ("mae_genssl_10k_2000", "mae_real_128px_2000", "moco_v2"):
        a = by_name[name]
        assert a.tune_as in by_name and by_name[a.tune_as].tune_as is None
        assert a.seeds == (0, 1, 2) and a.fractions == (0.01, 0.1) and a.group in ("extra", "scaling")
    assert by_name["moco_v2"].init == "ssl_moco_v2/model" and by_name["moco_v2"].deps == ("ssl_moco_v2",)
    assert by_name["mae_real_128px_2000"].image_size == 128 and by_name["mae_genssl_10k_2000"].image_size is None
    with pytest.raises(ValueError, match="unknown"):
        bench.protocol_arms([], ["no_such_arm"])


def test_compute_matched_arms_share_one_generated_set_and_one_step_budget():
    specs = {k: bench.EXTRA_STAGES[f"mae_genssl_{k}k_2000"] for k in (3, 10, 30)}
    assert {s["data"] for s in specs.values()} == {"generated_30k"}
    assert all(s["generation"] == {"num_images": 30000} for s in specs.values())
    assert [s["pretrain"]["max_train_samples"] for s in specs.values()] == [3000, 10000, None]
    steps = {
        s["pretrain"]["max_steps"]
        for s in [*specs.values(), bench.EXTRA_STAGES["mae_real_2000"], bench.EXTRA_STAGES["mae_real_128px_2000"]]
    }
    assert steps == {2000}
    # 128 px keeps the 8 x 8 patch grid of the 64 px / patch 8 preset
    big = bench.EXTRA_STAGES["mae_real_128px_2000"]
    assert big["image_size"] // big["pretrain"]["patch_size"] == 64 // 8
    for a, b in bench.CONTRASTS:
        assert a in bench.EXTRA_STAGES and (b in bench.EXTRA_STAGES or b in {x.name for x in bench.protocol_arms([])})


def _pooled_row(arm: str, title: str, mean: float, vs: dict) -> dict:
    return {
        "fraction": 0.01,
        "arm": arm,
        "title": title,
        "recipe": "blr3e-3_light",
        "seeds": [0, 1, 2],
        "mean": mean,
        "median": mean,
        "q1": mean,
        "q3": mean,
        "min": mean,
        "max": mean,
        "vs": vs,
    }


def test_tables_show_the_chosen_baselines_and_the_contrasts():
    d = {"difference": 0.021, "low": 0.004, "high": 0.038, "p_value": 0.012}
    pooled = [
        _pooled_row("random_init_adain", "Random init, AdaIN input", 0.90, {}),
        _pooled_row("mae_genssl_3k_2000", "GEN-SSL, 3k", 0.92, {"random_init_adain": d}),
        _pooled_row(
            "mae_genssl_30k_2000",
            "GEN-SSL, 30k",
            0.94,
            {"random_init_adain": d, "mae_genssl_3k_2000": {**d, "difference": 0.02}},
        ),
    ]
    result = {
        "recipes": {"blr3e-3_light": {}},
        "tuning": {
            "random_init_adain": {
                "0.01": {
                    "chosen": "blr3e-3_light",
                    "validation_auc": {"blr3e-3_light": [0.93]},
                    "runs": 1,
                    "seconds": 30.0,
                }
            }
        },
    }
    table = bench.protocol_tables(
        result,
        pooled,
        ("random_init_adain",),
        [("mae_genssl_30k_2000", "mae_genssl_3k_2000"), ("mae_genssl_10k_2000", "mae_genssl_3k_2000")],
    )
    assert "vs random init + AdaIN input |" in table and "| vs random init |" not in table
    assert "| 1% | random_init_adain | 1% |" not in table and "**93.0**" in table
    assert (
        "| 1% | GEN-SSL, 3k | blr3e-3_light | 3 | 92.0 | 92.0 (92.0-92.0) | 92.0-92.0 | +2.1 (+0.4 to +3.8), p 0.012 |"
        in table
    )
    # the contrast row names both arms; a contrast whose arm did not run is left out
    assert "| 1% | GEN-SSL, 30k | GEN-SSL, 3k | 3 | +2.0 (+0.4 to +3.8), p 0.012 |" in table
    assert table.count("GEN-SSL, 3k |") == 2


def test_command_line_rejects_bad_choices_before_any_stage(tmp_path, capsys):
    shared = tmp_path / "shared"
    (shared / "kermany-pneumonia-224").mkdir(parents=True)
    (shared / "nih-cxr14-1000-64px").mkdir()
    out = tmp_path / "out"
    for bad, message in (
        (["--recipes", "blr9"], "--recipes: unknown"),
        (["--main-arms", "nope"], "--main-arms: unknown"),
        (["--seeds", "0"], "--seeds must be"),
        (["--extra", "nope"], "--extra: unknown"),
        (["--fractions", "0.01,1.0"], "--fractions: distinct few-shot fractions"),
        (["--fractions", "0.01,0.01"], "--fractions: distinct few-shot fractions"),
        (["--fractions", "one"], "--fractions: not a comma list"),
        (["--main-group", "main/1"], "--main-group must be a plain name"),
    ):
        with pytest.raises(SystemExit):
            bench.main(["--shared", str(shared), "--output-dir", str(out), "--protocol", *bad])
        assert message in capsys.readouterr().err
    assert not out.exists()


def _tiny_mae_folder(folder: Path, adain: bool) -> None:
    import torch
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    from genssl_hf.processing.image_processor import AdaINImageProcessor
    from genssl_hf.training.mae_init import apply_mae_init

    cfg = ViTMAEConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        mask_ratio=0.75,
    )
    torch.manual_seed(0)
    apply_mae_init(ViTMAEForPreTraining(cfg)).save_pretrained(folder)
    AdaINImageProcessor(size={"height": 32, "width": 32}, do_adain=adain).save_pretrained(folder)


def test_reconstruction_rows_score_every_mae_of_a_run_folder_against_its_baselines(tmp_path):
    """A run folder with two MAE stages and a classifier stage: both MAEs are found and scored on the
    real test split, each beside the constant and mean-image baselines of the real training split."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    layout = np.zeros((48, 48))
    layout[8:40, 6:20] = 200.0
    layout[8:40, 28:42] = 200.0

    def images(n):
        return [
            Image.fromarray(np.clip(layout + rng.normal(0, 20, layout.shape), 0, 255).astype(np.uint8))
            for _ in range(n)
        ]

    datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict({"image": images(n), "label": [0] * n})
            for split, n in (("train", 12), ("test", 8))
        }
    ).save_to_disk(str(tmp_path / "real_data" / "dataset"))
    _tiny_mae_folder(tmp_path / "mae_a" / "model", adain=True)
    _tiny_mae_folder(tmp_path / "mae_b" / "model", adain=False)
    (tmp_path / "finetune" / "model").mkdir(parents=True)
    (tmp_path / "finetune" / "model" / "config.json").write_text('{"architectures": ["ViTForImageClassification"]}')

    names = bench.mae_folders(tmp_path)
    assert names == ["mae_a", "mae_b"]
    rows = bench.reconstruction_rows(tmp_path, names, n_bootstrap=200)
    assert [(r["encoder"], r["adain"], r["mask_ratio"], r["test_images"], r["reference_images"]) for r in rows] == [
        ("mae_a", True, 0.75, 8, 12),
        ("mae_b", False, 0.75, 8, 12),
    ]
    for r in rows:
        # aligned images: the mean image is far better than one constant patch
        assert 0 < r["mean_image"] < 0.5 * r["best_constant_patch"]
        assert r["model_over_mean_image"] == pytest.approx(r["model"] / r["mean_image"], rel=1e-3)
        low, high = r["model_over_mean_image_ci"]
        assert low <= r["model_over_mean_image"] <= high
    table = bench.reconstruction_table(rows)
    assert table.count("\n") == 3 and "| mae_a | None | on |" in table


def test_protocol_fractions_and_main_group_reach_the_protocol(tmp_path, protocol_calls):
    """``--fractions 0.01 --main-group onepct`` (more seeds of the main arms at 1 % only): the protocol
    gets those fractions, the main arms score in evaluation stages of their own group, the extra arms
    keep theirs."""
    seen = protocol_calls
    cfg = bench.config(quick=False, shared=tmp_path)
    bench.run_protocol_benchmark(
        cfg,
        tmp_path,
        tmp_path,
        [],
        quick=False,
        workers=1,
        main_arms=["random_init_adain", "genssl"],
        recipe_names=["blr3e-3_light"],
        seeds=tuple(range(10)),
        full_fraction=False,
        fractions=(0.01,),
        main_group="onepct",
    )
    assert seen["fractions"] == (0.01,) and seen["seeds"] == tuple(range(10)) and seen["tune_seeds"] == (0,)
    assert [(a.name, a.group) for a in seen["arms"]] == [("random_init_adain", "onepct"), ("genssl", "onepct")]
    assert list(seen["recipes"]) == ["blr3e-3_light"] and seen["full_fraction"] is False
    # the default keeps the main group (earlier runs' evaluation stages stay valid) and adds extras as before
    bench.run_protocol_benchmark(
        cfg, tmp_path, tmp_path, [], quick=False, workers=1, main_arms=["genssl"], recipe_names=["blr3e-3_light"]
    )
    assert [(a.name, a.group) for a in seen["arms"]] == [("genssl", "main")] and seen["fractions"] == (0.01, 0.1)


def test_encoders_pretrained_elsewhere_join_the_main_group_with_their_contrasts(tmp_path, protocol_calls, capsys):
    """``--encoder NAME=FOLDER:TUNE_AS`` (a long run resumed outside the run folder) fine-tunes like a
    main arm with TUNE_AS's recipe; ``--contrast`` adds its paired contrasts; bad values stop early."""
    folder = tmp_path / "long" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    seen = protocol_calls
    parser = bench.argparse.ArgumentParser()
    known = [a.name for a in bench.protocol_arms([])]
    enc = bench.parse_encoder(f"genssl_10k={folder}:genssl:GEN-SSL, 10,000 steps", parser, known)
    assert enc == {"name": "genssl_10k", "folder": str(folder), "tune_as": "genssl", "title": "GEN-SSL, 10,000 steps"}
    cfg = bench.config(quick=False, shared=tmp_path)
    bench.run_protocol_benchmark(
        cfg,
        tmp_path,
        tmp_path,
        [],
        quick=False,
        workers=1,
        main_arms=["random_init_adain", "genssl"],
        recipe_names=["blr3e-3_light"],
        seeds=(0, 1, 2),
        full_fraction=False,
        main_group="long",
        encoders=[enc],
        contrasts=[("genssl_10k", "genssl")],
    )
    arm = seen["arms"][-1]
    assert (arm.name, arm.init, arm.tune_as, arm.group, arm.fractions) == (
        "genssl_10k",
        str(folder),
        "genssl",
        "long",
        (0.01, 0.1),
    )
    assert arm.deps == () and arm.seeds is None  # the main arms' seeds
    assert seen["baselines"] == ("random_init_adain", "genssl")  # the contrast's "against" is scored
    assert (tmp_path / "protocol_results_long.md").is_file()  # the main group's tables stay
    shared = tmp_path / "shared"
    (shared / "kermany-pneumonia-224").mkdir(parents=True)
    (shared / "nih-cxr14-1000-64px").mkdir()
    for bad, message in (
        (["--encoder", "x"], "--encoder: expected NAME=FOLDER:TUNE_AS"),
        (["--encoder", f"a={tmp_path}:genssl"], "holds no config.json"),
        (["--encoder", f"a={folder}:nope"], "TUNE_AS 'nope' is not an arm"),
        (["--encoder", f"genssl={folder}:genssl"], "the name is taken"),
        (["--encoder", f"a={folder}:genssl", "--encoder", f"a={folder}:genssl"], "two encoders share"),
        (["--contrast", "a"], "--contrast: expected ARM:AGAINST"),
        (["--contrast", "genssl:nope"], "unknown arm ['nope']"),
    ):
        with pytest.raises(SystemExit):
            bench.main(["--shared", str(shared), "--output-dir", str(tmp_path / "out"), "--protocol", *bad])
        assert message in capsys.readouterr().err


def test_extra_only_keeps_the_named_extra_arms_of_every_group(tmp_path, monkeypatch, protocol_calls):
    """``--extra-only`` fine-tunes the arms ``--extra`` names whatever their evaluation group (the
    sampler arms score in group ``sampler``: they were dropped, and the sweep fine-tuned nothing),
    with their recipe sources' tuning runs alone."""
    seen = protocol_calls
    monkeypatch.setattr(bench, "run_extra_stages", lambda *a, **k: None)
    extra = ["mae_genssl_ddim50", "mae_genssl_unipc8", "mae_real_128px_2000", "jigsaw"]
    bench.run_protocol_benchmark(
        bench.config(quick=False, shared=tmp_path),
        tmp_path,
        tmp_path,
        extra,
        quick=False,
        workers=1,
        extra_only=True,
        main_arms=["random_init_adain", "genssl", "real_mae"],
        recipe_names=["blr3e-3_light"],
        seeds=(0, 1, 2),
        fractions=(0.1,),
        main_group="sampler",
    )
    groups = {a.name: a.group for a in seen["arms"]}
    assert {n: groups[n] for n in extra} == {
        "mae_genssl_ddim50": "sampler",
        "mae_genssl_unipc8": "sampler",
        "mae_real_128px_2000": "extra",
        "jigsaw": "extra",
    }
    sources = [a for a in seen["arms"] if a.group == "tuning_sources"]
    assert sorted(a.name for a in sources) == ["genssl", "real_mae"] and all(a.seeds == (0,) for a in sources)
