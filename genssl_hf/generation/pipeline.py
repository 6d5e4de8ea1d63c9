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

The bundle's scheduler and the sampling presets live in :mod:`.schedulers`, the per-image seeds
in :mod:`.seeds`, the output class and call checks in :mod:`.sampling` and the denoising loop's
speed helpers in :mod:`.fast_inference`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import DiffusionPipeline

from .fast_inference import _is_channels_last, _memoize_cross_attention_kv
from .folder_code import PACKAGED_TEXT_ENCODERS, has_own_loader_code, packaged_text_encoder, write_loader_code
from .folder_code import _minilm_path  # noqa: F401 - re-exported (tests and benchmarks call it here)
from .models import CXRAutoencoderKL, CXRDiffusionUNet
from .sampling import CXRPipelineOutput, _SamplingRun, check_call_arguments, postprocess_images
from .schedulers import GENERATION_PRESETS, bundle_scheduler
from .seeds import resolve_seeds

__all__ = [
    "CXRLatentDiffusionPipeline",
    "PACKAGED_TEXT_ENCODERS",
]


@contextlib.contextmanager
def _loader_module_lock():
    """Held while a folder with a loader module loads. diffusers rewrites ``<folder>/pipeline.py`` into
    one machine-wide modules cache on every load (``HF_MODULES_CACHE/diffusers_modules/local``) and
    imports it from there, so a second process loading at the same moment (the other rank of
    ``accelerate launch``, a parallel test) could import the file half-written: "module
    'diffusers_modules.local.pipeline' has no attribute 'CXRLatentDiffusionPipeline'"."""
    from diffusers.utils import HF_MODULES_CACHE
    from filelock import FileLock

    os.makedirs(HF_MODULES_CACHE, exist_ok=True)
    with FileLock(os.path.join(HF_MODULES_CACHE, "genssl_hf_loader_module.lock")):
        yield


class CXRLatentDiffusionPipeline(DiffusionPipeline):
    """Text-to-chest-X-ray latent diffusion (MONAI networks, diffusers API).

    >>> pipe = CXRLatentDiffusionPipeline.from_pretrained(folder)
    >>> out = pipe(["Big left-sided pleural effusion."], num_images_per_prompt=4, seeds=[0, 1, 2, 3])
    >>> out.images[0].save("x.png"); out.seeds
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    # diffusers passes None for the [null, null] entries of a folder that names a packaged text encoder
    _optional_components: list[str] = ["text_encoder", "tokenizer"]

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
        if text_encoder is None and text_encoder_source is not None:
            text_encoder, tokenizer = packaged_text_encoder(text_encoder_source, tokenizer)
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

    def enable_fast_inference(
        self, dtype: torch.dtype | None = torch.bfloat16, channels_last: bool = False, compile_unet: bool = False
    ) -> "CXRLatentDiffusionPipeline":
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
            base = {
                **dict(bundle_scheduler().config),
                **{
                    k: base[k]
                    for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
                    if k in base
                },
            }
        cls = getattr(diffusers, preset["scheduler"])
        self.scheduler = cls.from_config(base, **preset["scheduler_kwargs"])
        self._preset_defaults = {
            "num_inference_steps": preset["num_inference_steps"],
            "guidance_fraction": preset["guidance_fraction"],
        }
        return self

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers ``save_pretrained``; a packaged text encoder (``text_encoder_source``) is not
        copied into the folder: the pipeline loads it from its installed package. The local path a
        pipeline was loaded from (``_name_or_path``) is not written. The folder gets the loader
        module diffusers' ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`` needs."""
        self._save(save_directory, **kwargs)
        for cfg in [Path(save_directory) / "model_index.json", *Path(save_directory).glob("*/config.json")]:
            if cfg.is_file():
                data = json.loads(cfg.read_text())
                if data.pop("_name_or_path", None) is not None:
                    cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        write_loader_code(save_directory)

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
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> "CXRLatentDiffusionPipeline":
        from genssl_hf.utils import pretrained_path

        folder = pretrained_path(pretrained_model_name_or_path)  # "genssl_hf/nih-ldm-64": the shipped folder
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"{folder} is not a pipeline folder (no model_index.json)")
        if not has_own_loader_code(folder):
            return super().from_pretrained(str(folder), **kwargs)
        # the folder's loader module is exactly genssl_hf's own import of this class
        kwargs.setdefault("trust_remote_code", True)
        with _loader_module_lock():
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
                    + "; ".join(f"{p[:60]!r}... loses {n} tokens" for p, n in cut[:3]),
                    stacklevel=3,
                )
            tok = self.tokenizer(
                missing,
                padding="max_length",
                truncation=True,
                max_length=self.config.max_text_length,
                return_tensors="pt",
            )
            ids = tok["input_ids"].to(te.device)
            out = te(
                input_ids=ids, attention_mask=tok["attention_mask"].to(te.device) if "attention_mask" in tok else None
            )
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            for p, h in zip(missing, hidden):
                self._prompt_cache[key_of(p)] = h.float()
            while len(self._prompt_cache) > 4096:
                self._prompt_cache.popitem(last=False)
        return torch.stack([self._prompt_cache[key_of(p)] for p in prompts])

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
        prompts, height, width = self.check_inputs(
            prompt,
            num_images_per_prompt,
            num_inference_steps,
            guidance_fraction,
            height,
            width,
            output_type,
            batch_size,
            decode_batch_size,
            dtype,
        )
        all_prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        n = len(all_prompts)
        seeds_used, generators = resolve_seeds(n, generator, seeds)

        do_cfg = guidance_scale > 1.0
        cond_table, idx = self._encode_conditioning(all_prompts, negative_prompt if do_cfg else None)
        init = self.prepare_latents(generators, height, width)
        run = self._sampling_run(
            num_inference_steps, guidance_scale, guidance_fraction, do_cfg, dtype, eta, decode_batch_size
        )
        images = self._sample(init, cond_table, idx, generators, do_cfg, run, batch_size)
        result = self._postprocess(images, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return result, seeds_used
        return CXRPipelineOutput(images=result, seeds=seeds_used, prompts=all_prompts)

    def _sampling_run(
        self, num_inference_steps, guidance_scale, guidance_fraction, do_cfg, dtype, eta, decode_batch_size
    ) -> _SamplingRun:
        """The settings every batch of this call shares."""
        device = self._execution_device
        return _SamplingRun(
            device=device,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_fraction=float(guidance_fraction) if do_cfg else 0.0,
            net_dtype=self.unet.dtype if dtype is None else dtype,
            decode_dtype=self.vae.dtype if dtype is None else dtype,
            autocast=(
                torch.autocast(device_type=device.type, dtype=dtype)
                if dtype in (torch.bfloat16, torch.float16)
                else contextlib.nullcontext()
            ),
            channels_last=_is_channels_last(self.unet),
            step_kwargs=self._step_kwargs(eta),
            decode_batch_size=decode_batch_size,
        )

    def _sample(
        self, init, cond_table, idx, generators, do_cfg: bool, run: _SamplingRun, batch_size: int
    ) -> torch.Tensor:
        """Denoise and decode ``batch_size`` images at a time (in image order); images ``(N, 1, H, W)`` on CPU."""
        device, n = run.device, init.shape[0]
        outputs: list[torch.Tensor] = []
        bar = self.progress_bar(total=n)
        bar.unit = "img"
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            # read before denoise() sets this batch's timesteps: some schedulers' noise scale depends on them
            latents = init[sl].to(device) * self.scheduler.init_noise_sigma
            context = cond_table[idx[sl]]
            context_cond = context.to(device=device, dtype=run.net_dtype)
            if do_cfg:  # the guided steps run the unconditional and conditional halves in one UNet batch
                context = torch.cat([cond_table[-1:].expand(sl.stop - sl.start, -1, -1), context])
            context = context.to(device=device, dtype=run.net_dtype)
            latents = self.denoise(latents, context, context_cond, generators[sl], run, bar)
            outputs.append(self.decode_latents(latents, run).cpu())
        bar.close()
        return torch.cat(outputs).contiguous()

    def check_inputs(
        self,
        prompt: str | Sequence[str],
        num_images_per_prompt: int,
        num_inference_steps: int,
        guidance_fraction: float,
        height: int | None,
        width: int | None,
        output_type: str,
        batch_size: int,
        decode_batch_size: int,
        dtype: torch.dtype | None,
    ) -> tuple[list[str], int, int]:
        """Validate the call's arguments (in this order, so the first bad one is reported); returns
        the prompts as a list and the image height and width (default: the pipeline's image size)."""
        return check_call_arguments(
            prompt,
            num_images_per_prompt,
            num_inference_steps,
            guidance_fraction,
            height or self.config.image_size,
            width or self.config.image_size,
            output_type,
            batch_size,
            decode_batch_size,
            dtype,
            self.latent_downsample,
        )

    def _encode_conditioning(
        self, all_prompts: list[str], negative_prompt: str | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The text conditioning of every image: a table of the distinct prompts' encodings (plus
        the negative prompt's, last, under classifier-free guidance) and each image's row in it."""
        distinct = list(OrderedDict.fromkeys(all_prompts))
        cond_table = self.encode_prompt(distinct + ([negative_prompt] if negative_prompt is not None else []))
        prompt_index = {p: i for i, p in enumerate(distinct)}
        idx = torch.tensor([prompt_index[p] for p in all_prompts], device=cond_table.device)
        return cond_table, idx

    def prepare_latents(self, generators: list[torch.Generator], height: int, width: int) -> torch.Tensor:
        """Each image's initial latent from its own generator (CPU, float32), in image order."""
        f = self.latent_downsample
        latent_shape = (self.vae.config.latent_channels, height // f, width // f)
        return torch.stack([torch.randn(latent_shape, generator=g, dtype=torch.float32) for g in generators])

    def denoise(
        self,
        latents: torch.Tensor,
        context: torch.Tensor,
        context_cond: torch.Tensor,
        generators: list[torch.Generator],
        run: _SamplingRun,
        bar: Any,
    ) -> torch.Tensor:
        """The denoising loop of one batch: sets the scheduler's timesteps, then runs
        classifier-free guidance (``context``: unconditional then conditional rows) on the first
        ``ceil(run.guidance_fraction * steps)`` steps and the conditional branch alone
        (``context_cond``) after. Scheduler noise comes from the batch's own ``generators``."""
        unet = self.unet
        # schedulers keep per-run state (step index, multistep history): reset per batch
        self.scheduler.set_timesteps(run.num_inference_steps, device=run.device)
        timesteps = self.scheduler.timesteps
        guided_steps = math.ceil(run.guidance_fraction * len(timesteps))
        if "generator" in run.step_kwargs:
            run.step_kwargs["generator"] = generators
        b = latents.shape[0]
        compiled = getattr(unet, "_compiled_call_impl", None) is not None
        with run.autocast, contextlib.nullcontext() if compiled else _memoize_cross_attention_kv(unet):
            for i, t in enumerate(timesteps):
                guided = i < guided_steps
                model_in = torch.cat([latents, latents]) if guided else latents
                model_in = self.scheduler.scale_model_input(model_in, t).to(run.net_dtype)
                if run.channels_last:
                    model_in = model_in.contiguous(memory_format=torch.channels_last)
                out = unet(
                    model_in, timesteps=t.expand(model_in.shape[0]), context=context if guided else context_cond
                ).float()
                if guided:
                    out_u, out_c = out.chunk(2)
                    out = out_u + run.guidance_scale * (out_c - out_u)
                latents = self.scheduler.step(out, t, latents, **run.step_kwargs).prev_sample
                # whole images, spread over the steps: the bar ends at exactly n (no 4.000000000000002/4)
                bar.update(b * (i + 1) // len(timesteps) - b * i // len(timesteps))
        return latents

    def decode_latents(self, latents: torch.Tensor, run: _SamplingRun) -> torch.Tensor:
        """Latents -> images ``(N, 1, H, W)`` in [0, 1], ``run.decode_batch_size`` at a time."""
        z = (latents / float(self.config.scale_factor)).to(run.decode_dtype)
        if run.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        with run.autocast:
            return torch.cat([self.vae.decode(part).float() for part in z.split(run.decode_batch_size)]).clamp_(
                0.0, 1.0
            )

    _postprocess = staticmethod(postprocess_images)

    def _step_kwargs(self, eta: float) -> dict[str, Any]:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kw: dict[str, Any] = {}
        if "eta" in params:
            kw["eta"] = eta
        if "generator" in params:
            kw["generator"] = None
        return kw
