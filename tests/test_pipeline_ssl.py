"""The pipeline's contrastive / pretext variants are config entries: validation, titles (Tab. 9
layout), the pre-training command, the fine-tuning config of a ResNet variant."""

from pathlib import Path

import pytest

from genssl_hf.pipeline.config import load_preset, validate_config
from genssl_hf.pipeline.variants import variant_title
from genssl_hf.pipeline.ssl_variants import (
    ssl_finetune_config,
    ssl_finetune_init,
    ssl_pretrain_options,
    ssl_stage_name,
    ssl_variant_names,
)


def test_presets_carry_the_tab9_variants():
    cfg = load_preset("contrastive")
    assert cfg["variants"] == ["random_init", "genssl", "simclr", "moco_v2", "simsiam", "rotation"]
    assert ssl_variant_names(cfg) == ["simclr", "moco_v2", "simsiam", "rotation"]
    assert variant_title(cfg, "moco_v2") == "MoCo v2 (tiny, generated, AdaIN)"
    assert variant_title(cfg, "random_init") == "Random init"
    paper = load_preset("paper")
    assert {"simclr", "moco_v2", "simsiam", "rotation"} <= set(paper["variants"])


def test_pretrain_command_and_resnet_finetune_config(tmp_path):
    cfg = load_preset("contrastive")
    cfg["ssl_variants"]["simclr_cnn"] = {
        "method": "simclr",
        "backbone": "resnet-tiny",
        "adain": "off",
        "data": "real",
        "args": {"temperature": 0.5},
    }
    cfg["ssl_variants"]["cnn_random"] = {"method": "random_init", "backbone": "resnet-tiny"}
    cfg["variants"] += ["simclr_cnn", "cnn_random"]
    validate_config(cfg)
    options = ssl_pretrain_options(cfg, "simclr_cnn", tmp_path, tmp_path / "stats.json", tmp_path / "out")
    assert options["method"] == "simclr" and options["model"] == "resnet-tiny" and options["adain"] == "off"
    assert options["temperature"] == 0.5 and options["dataset"] == str(tmp_path / "real_unlabelled" / "dataset")
    assert options["figure"] == "off"  # real images never drawn into an artifact
    assert variant_title(cfg, "simclr_cnn") == "SimCLR (resnet-tiny, real, no AdaIN)"
    ft = ssl_finetune_config(cfg, "simclr_cnn")["finetune"]["args"]
    assert ft["recipe"] == "resnet-tiny" and "drop_path" not in ft
    assert ssl_stage_name(cfg, "cnn_random") is None and ssl_finetune_init(cfg, "cnn_random", tmp_path) == "resnet-tiny"
    assert ssl_finetune_init(cfg, "simclr_cnn", Path("/r")) == "/r/ssl_simclr_cnn/model"


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"method": "barlow_twins"}, "method 'barlow_twins'"),
        ({"method": "simclr", "backbone": "resnet-7"}, "backbone 'resnet-7'"),
        ({"method": "simclr", "data": "web"}, "data must be"),
        ({"method": "simclr", "adain": "maybe"}, "adain must be"),
    ],
)
def test_bad_variants_fail_before_any_stage(bad, match):
    cfg = load_preset("contrastive")
    cfg["ssl_variants"]["bad"] = bad
    with pytest.raises(ValueError, match=match):
        validate_config(cfg)
    cfg = load_preset("contrastive")
    cfg["variants"].append("nope")
    with pytest.raises(ValueError, match="unknown variants"):
        validate_config(cfg)
