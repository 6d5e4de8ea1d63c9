"""The generator's latent diffusion UNet (stage 2) as an engine task: frozen autoencoder and text
encoder (inputs made outside autocast, after the step's seed), latents scaled by ``scale_factor``
(1 / std of the training latents unless given, kept in the train state), v-prediction MSE under the
bundle's scaled-linear schedule, the empty prompt with probability ``prompt_dropout`` (for CFG)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ...validation import check_weight_files
from ..args import args_to_dict, check_output_dir
from ..common import init_trackers, make_accelerator
from ..optim import cosine_schedule_with_warmup
from ..common import no_trace_on_early_failure, write_run_config
from ..engine import Engine
from .args import UNET_PRESETS, apply_num_threads, engine_config, ldm_parser, model_folder
from .bundle import TextEmbeddingCache, load_autoencoder, load_text_encoder, save_pipeline
from ...processing.collate import ImageTextCollator
from .data import check_resolution, image_text_loader, load_image_text_dataset, prepare_texts


@torch.no_grad()
def estimate_scale_factor(vae, batches: Sequence[torch.Tensor], accelerator=None) -> float:
    """1 / std of the (sampled) latents of ``batches``, pooled over processes (Rombach et al. 4.3.2)."""
    s1 = torch.zeros((), dtype=torch.float64)
    s2 = torch.zeros((), dtype=torch.float64)
    n = torch.zeros((), dtype=torch.float64)
    for x in batches:
        z_mu, z_sigma = vae.encode(x.to(vae.device, vae.dtype))
        z = (z_mu + torch.randn_like(z_sigma) * z_sigma).double().cpu()
        s1 += z.sum()
        s2 += (z * z).sum()
        n += z.numel()
    tot = torch.stack([s1, s2, n])
    if accelerator is not None and accelerator.num_processes > 1:
        tot = accelerator.reduce(tot.to(accelerator.device), reduction="sum").cpu()
    mean = tot[0] / tot[2]
    var = tot[1] / tot[2] - mean * mean
    std = float(var.clamp_min(1e-12).sqrt())
    return 1.0 / std


class LDMTask:
    """Engine task: ``prepare_batch`` encodes the images (frozen VAE, sampled latents x scale), embeds
    the augmented prompts (frozen text encoder) and draws the noise and timesteps; ``training_step``
    is the UNet's v-prediction MSE."""

    def __init__(self, args: argparse.Namespace, vae, text: TextEmbeddingCache, noise_scheduler, scale: float, device):
        self.args, self.vae, self.text, self.scale, self.device = args, vae, text, scale, device
        self.alphas = noise_scheduler.alphas_cumprod.to(device)
        self.num_timesteps = noise_scheduler.config.num_train_timesteps

    def prepare_batch(self, batch):
        x = batch["pixel_values"].to(self.device)
        texts = prepare_texts(batch["text"], self.args.prompt_dropout, self.args.drop_negative_sentences)
        with torch.no_grad():
            z_mu, z_sigma = self.vae.encode(x.to(self.vae.dtype))
            z = (z_mu + torch.randn_like(z_sigma) * z_sigma).float() * self.scale
        context = self.text(texts).to(self.device)
        noise = torch.randn_like(z)
        t = torch.randint(0, self.num_timesteps, (z.shape[0],), device=self.device)
        a = self.alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * z  # v-prediction target
        return {"noisy": noisy, "t": t, "context": context, "target": target}

    def training_step(self, unet, batch):
        pred = unet(batch["noisy"], timesteps=batch["t"], context=batch["context"])
        return F.mse_loss(pred.float(), batch["target"]), {}


def build_unet(args: argparse.Namespace, vae, text_hidden_size: int):
    """A ``CXRDiffusionUNet`` from a ``--model`` folder (a pipeline or UNet folder), else
    ``--model_config`` or the ``--model`` preset, conditioned on the text encoder's hidden size."""
    from ...generation.models import BUNDLE_UNET_CONFIG, PHANTOM_UNET_CONFIG, CXRDiffusionUNet

    folder = model_folder(args.model, UNET_PRESETS)
    if folder:
        p = Path(folder)
        p = p / "unet" if (p / "unet" / "config.json").is_file() else p
        unet = CXRDiffusionUNet.from_pretrained(str(p))
    else:
        cfg = (
            json.loads(Path(args.model_config).read_text())
            if args.model_config
            else dict(PHANTOM_UNET_CONFIG if args.model == "phantom" else BUNDLE_UNET_CONFIG)
        )
        cfg["cross_attention_dim"] = text_hidden_size
        cfg["in_channels"] = cfg["out_channels"] = vae.config.latent_channels
        unet = CXRDiffusionUNet(**cfg)
    if unet.config.cross_attention_dim != text_hidden_size:
        raise ValueError(
            f"UNet cross_attention_dim {unet.config.cross_attention_dim} != text encoder hidden size {text_hidden_size}"
        )
    return unet


def latent_scale_factor(args: argparse.Namespace, state, vae, ds, accelerator) -> float:
    """The latent scale: the one in the train state (a resumed run keeps its own), ``--scale_factor``,
    or 1 / std of the latents of ``--scale_factor_batches`` seeded batches."""
    if "scale_factor" in state.extra:
        return float(state.extra["scale_factor"])
    if args.scale_factor is not None:
        return float(args.scale_factor)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds), generator=g)[: args.scale_factor_batches * args.per_device_train_batch_size].tolist()
    shard = idx[accelerator.process_index :: accelerator.num_processes]
    est_coll = ImageTextCollator(args.resolution, args.image_column, None)
    torch.manual_seed(args.seed + 17 + accelerator.process_index)
    bs = args.per_device_train_batch_size
    batches = [est_coll([ds[i] for i in shard[j : j + bs]])["pixel_values"] for j in range(0, len(shard), bs)]
    scale = estimate_scale_factor(vae, batches, accelerator)
    accelerator.print(f"latent scale factor estimated from {len(idx)} images: {scale:.5f}")
    return scale


def _check_ldm_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.prompt_dropout < 1.0:
        raise ValueError(f"--prompt_dropout must be in [0, 1), got {args.prompt_dropout}")
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    for option, folder in (("--model", model_folder(args.model, UNET_PRESETS)), ("--autoencoder", args.autoencoder)):
        if folder:
            check_weight_files(folder, option)


@no_trace_on_early_failure
def train_ldm(args: argparse.Namespace) -> Path:
    """Run the LDM loop described by ``args`` (see :func:`ldm_parser`); returns the saved
    ``<output_dir>/pipeline`` folder."""
    from diffusers import DDPMScheduler

    from ...generation.schedulers import bundle_scheduler

    apply_num_threads(args)
    _check_ldm_args(args)
    vae, vae_path = load_autoencoder(args.autoencoder)
    check_resolution(args.resolution, vae.downsample_factor)
    text_model, tokenizer, text_source = load_text_encoder(args.text_encoder, args.tokenizer)
    torch.manual_seed(args.seed)  # the UNet's init (torch seeds its default generator randomly at start-up)
    unet = build_unet(args, vae, text_model.config.hidden_size)
    ds = load_image_text_dataset(
        args.dataset,
        split=args.split,
        image_column=args.image_column,
        text_column=args.text_column,
        resolution=args.resolution,
        seed=args.seed,
        config_name=args.dataset_config,
        max_samples=args.max_train_samples,
    )
    accelerator = make_accelerator(args)
    device = accelerator.device
    vae = vae.to(device).eval().requires_grad_(False)
    text = TextEmbeddingCache(text_model, tokenizer, args.max_text_length, device)
    noise_sched = DDPMScheduler(
        **{
            k: v
            for k, v in bundle_scheduler().config.items()
            if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "clip_sample")
        }
    )
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    loader = image_text_loader(
        ds,
        ImageTextCollator(args.resolution, args.image_column, args.text_column),
        args.per_device_train_batch_size,
        args.seed,
    )
    engine = Engine(accelerator, engine_config(args, "ldm", ("train/loss",), max_grad_norm=1.0))
    lr_sched = cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps, min_lr_ratio=0.1)
    unet, optimizer = engine.prepare(unet, optimizer, lr_sched)
    loader = accelerator.prepare(loader)
    state = engine.resume(args.resume_from_checkpoint)
    scale = state.extra["scale_factor"] = latent_scale_factor(args, state, vae, ds, accelerator)

    config = {
        **args_to_dict(args),
        "stage": "ldm",
        "scale_factor": scale,
        "unet_config": dict(accelerator.unwrap_model(unet).config),
        "autoencoder_path": str(vae_path),
        "num_train_rows": len(ds),
        "text_encoder_source": text_source,
    }
    write_run_config(accelerator, args.output_dir, config)
    init_trackers(accelerator, "genssl_ldm", config)
    result = engine.run(LDMTask(args, vae, text, noise_sched, scale, device), unet, optimizer, lr_sched, loader, state)
    out = Path(args.output_dir) / "pipeline"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_pipeline(
            accelerator, unet, vae, text_model, tokenizer, text_source, scale, args, result.state, len(ds), out
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def ldm_main(argv: list[str] | None = None) -> Path:
    return train_ldm(ldm_parser().parse_args(argv))
