"""benchmarks/bench_sampler_downstream.py (issue 37.1): the sampler arms of the protocol driver, the
arithmetic of the ``generation_downstream_equal`` row on synthetic numbers, and the generation
statistics and FID split on a toy run folder (phantom sets, a random tiny ViT-MAE). The sweep itself
needs the real run folder and about 90 CPU-minutes; these parts do not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_genssl_realdata as realdata  # noqa: E402
from benchmarks import bench_sampler_downstream as bench  # noqa: E402
from genssl_hf.utils import write_json  # noqa: E402

REF = "mae_genssl_ddim50"


def test_the_sampler_arms_generate_the_base_set_with_their_preset_and_pretrain_the_same_mae(tmp_path):
    cfg = realdata.config(False, tmp_path / "shared")
    arms = {a.name: a for a in realdata.protocol_arms(list(realdata.SAMPLER_ARMS))}
    from genssl_hf.pipeline.steps import stage_generated_dataset
    from genssl_hf.pipeline.training_steps import stage_pretrain

    base_gen = stage_generated_dataset(cfg, tmp_path / "generator", tmp_path / "prompt_set").config
    stats = tmp_path / "reference_stats" / "reference_stats.json"
    base_mae = stage_pretrain(cfg, "mae_genssl", tmp_path / "generated_dataset", "on", stats, print).config
    for arm, (sampler, _) in realdata.SAMPLER_ARMS.items():
        a = arms[arm]
        assert (a.fractions, a.seeds, a.group, a.tune_as) == ((0.1,), (0, 1, 2), "sampler", "genssl")
        (gen, gen_deps), (mae, mae_deps) = realdata.extra_stages(cfg, tmp_path, arm, tmp_path / "shared", False)
        assert gen.name == bench.generated_stage(arm) and gen_deps == ["generator", "prompt_set"]
        # the base set's settings but the preset's sampler and steps
        expected = {k: v for k, v in base_gen["generation"].items() if k != "num_inference_steps"}
        assert gen.config["generation"] == {**expected, "sampler": sampler}
        assert {k: v for k, v in gen.config.items() if k != "generation"} == {
            k: v for k, v in base_gen.items() if k != "generation"
        }
        # the same MAE recipe, steps and seed on the arm's own set
        assert mae.name == arm and mae_deps == [gen.name, "reference_stats"]
        assert mae.config == {**base_mae, "data": str(tmp_path / gen.name)}
        if arm != REF:
            assert (arm, REF) in realdata.CONTRASTS
    assert realdata.SAMPLER_ARMS[REF][0] == "bundle"


def test_unet_evaluations_follow_the_pipelines_guidance_rule():
    assert bench.unet_evaluations_per_image(50, 3.0) == 100  # cond + uncond on every step
    assert bench.unet_evaluations_per_image(8, 1.0) == 8  # no guidance: the conditional branch alone
    assert bench.unet_evaluations_per_image(5, 3.0, 0.5) == 8  # ceil(0.5 * 5) = 3 guided steps


def _pooled(arm, mean, d=None):
    vs = {} if d is None else {REF: dict(zip(("difference", "low", "high", "p_value"), d))}
    return {"fraction": 0.1, "arm": arm, "title": arm, "seeds": [0, 1, 2], "mean": mean, "vs": vs}


def _stats(sampler, steps, images_per_s):
    return {
        "sampler": sampler,
        "scheduler": "S",
        "steps": steps,
        "unet_evaluations_per_image": bench.unet_evaluations_per_image(steps, 3.0),
        "images_per_s": images_per_s,
    }


def test_the_row_judges_equal_by_the_ci_and_the_margin_and_takes_the_ratios_to_ddim50():
    pooled = [
        _pooled(REF, 0.950),
        _pooled("mae_genssl_unipc8", 0.952, (0.002, -0.010, 0.012, 0.70)),  # CI holds 0, within 0.005: equal
        _pooled("mae_genssl_unipc5", 0.954, (0.004, 0.001, 0.008, 0.02)),  # CI above 0: not equal
        _pooled("mae_genssl_dpm2m5", 0.942, (-0.008, -0.020, 0.004, 0.20)),  # CI holds 0, |d| > 0.005: not equal
        {**_pooled("genssl", 0.9), "fraction": 0.01},  # another fraction: ignored
    ]
    stats = {
        REF: _stats("bundle", 50, 2.0),
        "mae_genssl_unipc8": _stats("fast", 8, 11.0),
        "mae_genssl_unipc5": _stats("unipc-5", 5, 17.0),
        "mae_genssl_dpm2m5": _stats("dpm++2m-5", 5, 16.0),
    }
    fids = {REF: 1.5, "mae_genssl_unipc8": 1.7, "mae_genssl_unipc5": 2.5, "mae_genssl_dpm2m5": 3.0}
    rows = {r["arm"]: r for r in bench.downstream_equal_settings(pooled, stats, fids, REF)}
    assert list(rows) == list(stats)
    ref, u8, u5, d5 = (rows[a] for a in stats)
    assert ref["equal"] and ref["auc_difference"] is None and ref["images_per_s_ratio"] == 1.0 and ref["fid"] == 1.5
    assert u8["equal"] and u8["auc_difference"] == [0.002, -0.01, 0.012] and u8["p_value"] == 0.7
    assert not u5["equal"] and not d5["equal"]
    assert u8["unet_evaluations_per_image"] == 16 and u8["unet_evaluations_ratio"] == 6.25
    assert u8["images_per_s_ratio"] == 5.5 and u5["images_per_s_ratio"] == 8.5 and d5["images_per_s_ratio"] == 8.0
    assert u5["unet_evaluations_ratio"] == 10.0 and d5["fid"] == 3.0
    record = bench.downstream_equal_record(list(rows.values()), {"fid": fids, "floor": 1.5}, REF)
    assert record["name"] == "generation_downstream_equal"
    # unipc-5 is faster but not equal: the fastest equal setting is unipc-8
    assert record["fastest_equal"] == {
        "arm": "mae_genssl_unipc8",
        "sampler": "fast",
        "steps": 8,
        "images_per_s_ratio": 5.5,
        "unet_evaluations_ratio": 6.25,
    }
    assert record["fid"] == {"floor": 1.5}
    # fewer UNet evaluations win over a higher measured images/s (stage timings differ in load)
    fewer_calls = {**u8, "arm": "mae_genssl_unipc3", "unet_evaluations_ratio": 16.7, "images_per_s_ratio": 4.0}
    faster_clock = {**u8, "arm": "mae_genssl_dpm2m5", "unet_evaluations_ratio": 10.0, "images_per_s_ratio": 9.0}
    record = bench.downstream_equal_record([ref, faster_clock, fewer_calls], None, REF)
    assert record["fastest_equal"]["arm"] == "mae_genssl_unipc3"
    with pytest.raises(ValueError, match="no paired difference against 'mae_genssl_ddim50'"):
        bench.downstream_equal_settings([*pooled[:1], _pooled("mae_genssl_unipc8", 0.9)], stats, None, REF)
    with pytest.raises(ValueError, match="reference arm"):
        bench.downstream_equal_settings(pooled[1:], stats, None, REF)


def test_generation_stats_and_the_fid_split_on_a_toy_run_folder(tmp_path):
    import torch
    from transformers import ViTMAEConfig, ViTMAEModel

    import genssl_hf.generation.materialize as mz
    from genssl_hf.pipeline.launch import _jsonable

    torch.manual_seed(0)
    out = tmp_path / "run"
    prompts = [{"text": "Big cardiomegaly.", "disease": "Cardiomegaly"}, {"text": "No finding.", "disease": "No"}]
    results = {}
    # the unipc8 set repeats the reference's seeds (its [0, n) equals the reference's): its FID is the floor's
    for arm, seed in ((REF, 0), ("mae_genssl_unipc8", 0), ("mae_genssl_unipc5", 7)):
        folder = out / bench.generated_stage(arm)
        results[arm] = mz.generate_dataset(
            folder / "dataset", "phantom", prompts=prompts, num_images=8, seed=seed, height=32, width=32, progress=False
        )
        summary = {"dataset": "dataset", "num_images": 8, "result": _jsonable(results[arm])}
        write_json(folder / "stage.json", {"seconds": 99.0, "summary": summary})
    cfg = ViTMAEConfig(
        image_size=32, patch_size=8, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    cfg.intermediate_size = 32
    ViTMAEModel(cfg).save_pretrained(out / "mae_genssl" / "model")

    stats = bench.generation_stats(out, "mae_genssl_unipc5")
    seconds = results["mae_genssl_unipc5"].seconds_generate
    assert stats["seconds_source"] == "writer" and stats["seconds_generate"] == round(seconds, 2)
    assert stats["images_per_s"] == pytest.approx(8 / seconds) and stats["steps"] == 50 and stats["sampler"] is None

    fid = bench.fid_against_reference(out, list(results), REF, num_images=4)
    assert fid["images_per_half"] == 4 and fid["floor"] == fid["fid"][REF] >= 0.0
    # the same images [0, 4) against the same [4, 8) (4 images in 16 dimensions: a singular covariance,
    # whose matrix square root agrees to rounding only)
    assert fid["fid"]["mae_genssl_unipc8"] == pytest.approx(fid["floor"], rel=1e-5)
    assert fid["fid"]["mae_genssl_unipc5"] != pytest.approx(fid["floor"], rel=1e-3)
    assert "vit_mae:model (mean pooling" in fid["extractor"]
