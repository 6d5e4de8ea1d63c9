"""The generator's autoencoder (stage 1) as an engine task: L1 + ``kl_weight`` KL + ``adv_weight``
least-squares PatchGAN (the discriminator steps after the generator, on the same batch, from
``adv_start_step``), an optional MONAI perceptual loss; then the ``CXRAutoencoderKL`` folder, its
card and a reconstruction grid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ...utils import atomic_dir
from ...validation import check_weight_files
from ..args import args_to_dict, check_output_dir
from ..common import init_trackers, make_accelerator
from ..optim import cosine_schedule_with_warmup
from ..common import no_trace_on_early_failure, write_run_config
from ..engine import Engine
from .args import AUTOENCODER_PRESETS, apply_num_threads, autoencoder_parser, engine_config, model_folder
from ...processing.collate import ImageTextCollator
from .data import check_resolution, image_text_loader, load_image_text_dataset


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent elements, averaged over the batch."""
    kl = 0.5 * (z_mu.float().pow(2) + z_sigma.float().pow(2) - torch.log(z_sigma.float().pow(2) + 1e-12) - 1.0)
    return kl.flatten(1).sum(1).mean()


class AutoencoderTask:
    """Engine task: the generator's losses in ``training_step``; the discriminator's least-squares
    step (its own prepared optimiser) in ``auxiliary_step``, after the generator's step."""

    def __init__(self, args: argparse.Namespace, accelerator, disc, opt_d, perceptual, state):
        from monai.losses import PatchAdversarialLoss

        self.args, self.accelerator, self.state = args, accelerator, state
        self.disc, self.opt_d, self.perceptual = disc, opt_d, perceptual
        self.adv = PatchAdversarialLoss(criterion="least_squares")
        self._x = self._recon = None
        self._use_adv = False

    def training_step(self, vae, batch):
        args, x = self.args, batch["pixel_values"]
        self._use_adv = args.adv_weight > 0 and self.state.global_step >= args.adv_start_step
        recon, z_mu, z_sigma = vae(x)
        recon = recon.float()
        l1 = (recon - x).abs().mean()
        kl = kl_loss(z_mu, z_sigma)
        loss_g = l1 + args.kl_weight * kl
        if self.perceptual is not None:
            loss_g = loss_g + args.perceptual_weight * self.perceptual(recon, x)
        g_adv = torch.zeros((), device=x.device)
        if self._use_adv:
            # the discriminator's gradients from this pass are discarded: only G steps here
            g_adv = self.adv(self.disc(recon.contiguous())[-1].float(), target_is_real=True, for_discriminator=False)
            loss_g = loss_g + args.adv_weight * g_adv
        self._x, self._recon = x, recon
        return loss_g, {"l1": l1, "kl": kl, "g_adv": g_adv}

    def auxiliary_step(self, vae) -> dict[str, torch.Tensor]:
        x, recon = self._x, self._recon
        self._x = self._recon = None
        self.opt_d.zero_grad(set_to_none=True)
        d_loss = torch.zeros((), device=x.device)
        if self._use_adv:
            fake = self.disc(recon.detach().contiguous())[-1].float()
            real = self.disc(x.contiguous())[-1].float()
            d_loss = (
                self.args.adv_weight
                * 0.5
                * (
                    self.adv(fake, target_is_real=False, for_discriminator=True)
                    + self.adv(real, target_is_real=True, for_discriminator=True)
                )
            )
            self.accelerator.backward(d_loss)
            self.opt_d.step()
            self.opt_d.zero_grad(set_to_none=True)
        return {"d": d_loss}


def build_autoencoder(args: argparse.Namespace):
    """A ``CXRAutoencoderKL``: from a ``--model`` folder, else ``--model_config`` (JSON kwargs) or the
    ``--model`` preset."""
    from ...generation.models import BUNDLE_AUTOENCODER_CONFIG, PHANTOM_AUTOENCODER_CONFIG, CXRAutoencoderKL

    folder = model_folder(args.model, AUTOENCODER_PRESETS)
    if folder:
        check_weight_files(folder, "--model")
        path = Path(folder)
        path = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {folder}: no autoencoder config.json there")
        return CXRAutoencoderKL.from_pretrained(str(path))
    if args.model_config:
        cfg = json.loads(Path(args.model_config).read_text())
    else:
        cfg = dict(PHANTOM_AUTOENCODER_CONFIG if args.model == "phantom" else BUNDLE_AUTOENCODER_CONFIG)
    return CXRAutoencoderKL(**cfg)


def _perceptual_loss(args: argparse.Namespace):
    if not args.perceptual_weight > 0:
        return None
    from monai.losses import PerceptualLoss

    try:
        return PerceptualLoss(spatial_dims=2, network_type=args.perceptual_network)
    except Exception as e:
        raise RuntimeError(
            f"--perceptual_weight {args.perceptual_weight}: could not build MONAI PerceptualLoss "
            f"({args.perceptual_network}); it needs pretrained weights from the internet or the torch hub cache: {e}"
        ) from None


@no_trace_on_early_failure
def train_autoencoder(args: argparse.Namespace) -> Path:
    """Run the autoencoder loop described by ``args`` (see :func:`autoencoder_parser`); returns the
    saved ``<output_dir>/autoencoder`` folder."""
    from monai.networks.nets import PatchDiscriminator

    apply_num_threads(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    torch.manual_seed(args.seed)  # the autoencoder's and the discriminator's init (torch seeds randomly at start-up)
    vae = build_autoencoder(args)
    check_resolution(args.resolution, vae.downsample_factor)
    ds = load_image_text_dataset(
        args.dataset,
        split=args.split,
        image_column=args.image_column,
        text_column=None,
        resolution=args.resolution,
        seed=args.seed,
        config_name=args.dataset_config,
        max_samples=args.max_train_samples,
    )
    perceptual = _perceptual_loss(args)
    accelerator = make_accelerator(args)
    disc = PatchDiscriminator(
        spatial_dims=2, num_layers_d=args.disc_layers, channels=args.disc_channels, in_channels=1, out_channels=1
    )
    opt_g = torch.optim.Adam(vae.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.disc_learning_rate or args.learning_rate)
    loader = image_text_loader(
        ds, ImageTextCollator(args.resolution, args.image_column, None), args.per_device_train_batch_size, args.seed
    )
    engine = Engine(accelerator, engine_config(args, "autoencoder", ("train/l1", "train/kl", "train/d")))
    sched_g = cosine_schedule_with_warmup(opt_g, args.warmup_steps, args.max_steps, min_lr_ratio=0.1)
    # the checkpoint layout of the hand-written loop: models [vae, disc], optimisers [G, D]
    vae, opt_g = engine.prepare(vae, opt_g, sched_g)
    disc, opt_d, loader = accelerator.prepare(disc, opt_d, loader)
    state = engine.resume(args.resume_from_checkpoint)
    config = {
        **args_to_dict(args),
        "stage": "autoencoder",
        "model_config": dict(accelerator.unwrap_model(vae).config),
        "num_train_rows": len(ds),
    }
    write_run_config(accelerator, args.output_dir, config)
    init_trackers(accelerator, "genssl_autoencoder", config)
    task = AutoencoderTask(args, accelerator, disc, opt_d, perceptual, state)
    result = engine.run(task, vae, opt_g, sched_g, loader, state, extra_models=(disc,))
    out = Path(args.output_dir) / "autoencoder"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(vae)
        with atomic_dir(out, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            _write_ae_card(tmp, model, args, result.state, len(ds))
        _ae_sample_grid(model, ds, args, Path(args.output_dir) / "reconstructions.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def _write_ae_card(folder: Path, model, args, state, n_rows: int) -> None:
    lines = [
        "# CXR autoencoder (genssl_hf)",
        "",
        "MONAI `AutoencoderKL` saved as a diffusers `ModelMixin` (`genssl_hf.generation.CXRAutoencoderKL`).",
        "Load it with `CXRAutoencoderKL.from_pretrained(folder)`; use it with `scripts/train_ldm.py --autoencoder`.",
        "",
        f"- dataset: `{args.dataset}` (split {args.split}, {n_rows} rows)",
        f"- resolution: {args.resolution}; steps: {state.global_step}; seed: {args.seed}",
        f"- losses: L1 + {args.kl_weight} KL + {args.adv_weight} PatchGAN (from step {args.adv_start_step})"
        + (f" + {args.perceptual_weight} perceptual" if args.perceptual_weight else ""),
        f"- config: `{json.dumps(dict(model.config), default=str)}`",
        "",
        "Research use only. Not a medical device.",
    ]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


@torch.no_grad()
def _ae_sample_grid(model, ds, args, path: Path, n: int = 8) -> None:
    from ...data.phantom import render_grid

    coll = ImageTextCollator(args.resolution, args.image_column, None)
    x = coll([ds[i] for i in range(min(n, len(ds)))])["pixel_values"].to(model.device, model.dtype)
    model.eval()
    rec = model.reconstruct(x).float().clamp(0, 1).cpu().numpy()[:, 0]
    imgs = [a for pair in zip(x.float().cpu().numpy()[:, 0], rec) for a in pair]
    caps = [c for i in range(len(rec)) for c in (f"input {i}", f"reconstruction {i}")]
    render_grid(imgs, caps, path, ncols=4, title="autoencoder reconstructions")


def autoencoder_main(argv: list[str] | None = None) -> Path:
    return train_autoencoder(autoencoder_parser().parse_args(argv))
