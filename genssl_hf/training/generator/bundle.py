"""Bundle I/O of the generator's training: the frozen autoencoder and text encoder an LDM run loads,
and the ``CXRLatentDiffusionPipeline`` folder (plus its sample grid) it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ...utils import atomic_dir
from .data import DEFAULT_PHANTOM_PROMPTS


def load_autoencoder(path: str):
    from ...generation.models import CXRAutoencoderKL

    p = Path(path)
    for cand in (p, p / "autoencoder", p / "vae"):
        if (cand / "config.json").is_file() and (cand / "diffusion_pytorch_model.safetensors").is_file():
            return CXRAutoencoderKL.from_pretrained(str(cand)), cand
    raise FileNotFoundError(f"--autoencoder {path}: no CXRAutoencoderKL folder there (nor in autoencoder/ or vae/)")


def load_text_encoder(spec: str, tokenizer: str | None):
    from transformers import AutoModel, AutoTokenizer

    from ...generation.pipeline import PACKAGED_TEXT_ENCODERS

    source = spec if spec in PACKAGED_TEXT_ENCODERS else None
    path = PACKAGED_TEXT_ENCODERS[spec]() if source else spec
    if not source and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"--text_encoder {spec}: not a packaged encoder ({sorted(PACKAGED_TEXT_ENCODERS)}) nor a model folder"
        )
    model = AutoModel.from_pretrained(str(path)).eval().requires_grad_(False)
    if type(model).__name__ == "CLIPModel":
        model = model.text_model
    return model, AutoTokenizer.from_pretrained(str(tokenizer or path)), source


class TextEmbeddingCache:
    """Frozen text encoder with a per-prompt cache of last hidden states (the same few thousand
    reports recur every epoch)."""

    def __init__(self, model, tokenizer, max_length: int, device, limit: int = 50_000):
        self.model, self.tok, self.max_length, self.device, self.limit = (
            model.to(device),
            tokenizer,
            max_length,
            device,
            limit,
        )
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()  # not inference_mode: the embeddings feed a graph that is differentiated
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            enc = self.tok(
                missing, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hid = self.model(
                input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
            ).last_hidden_state
            if len(self.cache) + len(missing) > self.limit:
                self.cache.clear()
            for t, h in zip(missing, hid.float()):
                self.cache[t] = h
        return torch.stack([self.cache[t] for t in texts])


def save_pipeline(
    accelerator, unet, vae, text_model, tokenizer, text_source, scale, args, state, n_rows, out: Path
) -> None:
    from ...data.phantom import render_grid
    from ...generation.cards import write_generator_card
    from ...generation.pipeline import CXRLatentDiffusionPipeline
    from ...generation.schedulers import bundle_scheduler

    unet = accelerator.unwrap_model(unet).eval()
    pipe = CXRLatentDiffusionPipeline(
        vae=vae.float().cpu(),
        unet=unet.float().cpu(),
        text_encoder=text_model.cpu(),
        tokenizer=tokenizer,
        scheduler=bundle_scheduler(),
        scale_factor=scale,
        image_size=args.resolution,
        max_text_length=args.max_text_length,
        text_encoder_source=text_source,
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
        write_generator_card(
            tmp,
            pipe,
            provenance=provenance,
            example_prompts=prompts[:2],
            folder_name=str(out),
            guidance_scale=args.guidance_scale,
            training_data=f"Trained on `{args.dataset}` ({n_rows} rows, text column `{args.text_column}`).",
        )
    if args.num_validation_images > 0:
        pipe.set_progress_bar_config(disable=True)
        n = args.num_validation_images
        res = pipe(
            prompts,
            num_images_per_prompt=n,
            num_inference_steps=args.validation_steps,
            guidance_scale=args.guidance_scale,
            seeds=list(range(n * len(prompts))),
            output_type="np",
            dtype=torch.bfloat16 if args.mixed_precision == "bf16" else None,
        )
        caps = [f"{p[:40]} (seed {s})" for p, s in zip(res.prompts, res.seeds)]
        render_grid(
            list(res.images[..., 0]),
            caps,
            Path(args.output_dir) / "samples.png",
            ncols=n,
            title=f"samples after {state.global_step} steps, guidance {args.guidance_scale}",
        )
