"""Generator backends as the dataset writer sees them: anything that maps (prompts, seeds) to
images. The phantom world, any diffusers pipeline folder, or a ``module:factory`` callable."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from genssl_hf.utils import read_json, sha256_file

logger = logging.getLogger(__name__)


@runtime_checkable
class ImageGenerator(Protocol):
    """What the materialiser needs from a generator: images for prompts, one seed per image,
    each image depending only on its own (prompt, seed). Returns a batch of grayscale images as
    uint8, or floats in [0, 1]: (B, H, W), (B, H, W, C), (B, C, H, W) arrays / tensors or a list
    of PIL images."""

    generator_id: str

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> Any: ...


def to_uint8_gray(images: Any, height: int | None = None, width: int | None = None) -> list[np.ndarray]:
    """A generator's batch -> list of (H, W) uint8 arrays; floats are read as [0, 1]."""
    if hasattr(images, "images"):  # a diffusers output object
        images = images.images
    if isinstance(images, (list, tuple)):
        arrays = [_one_gray(im) for im in images]
    else:
        if hasattr(images, "detach"):  # torch tensor
            images = images.detach().float().cpu().numpy()
        arr = np.asarray(images)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        arrays = [_one_gray(a) for a in arr]
    for a in arrays:
        if (height is not None and a.shape[0] != height) or (width is not None and a.shape[1] != width):
            raise ValueError(f"generator returned a {a.shape[0]}x{a.shape[1]} image, expected {height}x{width}")
    return arrays


def _one_gray(im: Any) -> np.ndarray:
    if hasattr(im, "convert") and hasattr(im, "mode"):  # PIL
        return np.asarray(im.convert("L") if im.mode != "L" else im, dtype=np.uint8)
    if hasattr(im, "detach"):
        im = im.detach().float().cpu().numpy()
    a = np.asarray(im)
    if a.ndim == 3:
        if a.shape[-1] == 1:
            a = a[..., 0]
        elif a.shape[-1] in (3, 4):
            rgb = a[..., :3].astype(np.float32)
            a = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as PIL "L"
            a = (
                a.astype(np.float32)
                if np.issubdtype(im.dtype if hasattr(im, "dtype") else a.dtype, np.floating)
                else np.round(a)
            )
        else:
            raise ValueError(f"cannot read an image of shape {a.shape} as grayscale")
    if a.ndim != 2:
        raise ValueError(f"cannot read an image of shape {a.shape} as grayscale")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError("generator returned non-finite pixel values")
        return np.ascontiguousarray(np.floor(np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return np.ascontiguousarray(np.clip(a, 0, 255).astype(np.uint8))


class DiffusersGenerator:
    """A diffusers text-to-image pipeline as an :class:`ImageGenerator`.

    One CPU ``torch.Generator`` per image, seeded with the sample seed (CPU generators give the
    same initial noise on any device), ``output_type="np"``.
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        generator_id: str,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.0,
        height: int | None = None,
        width: int | None = None,
        call_kwargs: Mapping[str, Any] | None = None,
    ):
        self.pipeline = pipeline
        self.generator_id = generator_id
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.height, self.width = height, width
        self.call_kwargs = dict(call_kwargs or {})
        dtype = self.call_kwargs.get("dtype")
        if isinstance(dtype, str):  # JSON from the command line: "bfloat16" -> torch.bfloat16
            import torch

            if not isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
                raise ValueError(f"pipeline dtype {dtype!r} is not a torch dtype")
            self.call_kwargs["dtype"] = getattr(torch, dtype.removeprefix("torch."))
        try:
            self._accepts_batch_size = "batch_size" in inspect.signature(pipeline.__call__).parameters
        except (TypeError, ValueError):
            self._accepts_batch_size = False

    @property
    def default_size(self) -> tuple[int, int] | None:
        return _pipeline_default_size(self.pipeline)

    def prompt_token_overflow(self, prompts: Sequence[str]) -> list[int | None]:
        """Tokens of each prompt the pipeline's text encoder cuts off (None: unknown)."""
        own = getattr(self.pipeline, "prompt_token_overflow", None)
        if own is not None:
            return list(own(prompts))
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        if tokenizer is None or not isinstance(limit, int) or limit > 1_000_000:
            return [None] * len(prompts)
        return [max(0, len(ids) - limit) for ids in tokenizer(list(prompts), truncation=False)["input_ids"]]

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> Any:
        import torch

        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        kwargs = dict(
            prompt=list(prompts),
            generator=gens,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            output_type="np",
            **self.call_kwargs,
        )
        if self._accepts_batch_size and "batch_size" not in self.call_kwargs:
            kwargs["batch_size"] = len(prompts)  # our batch is the pipeline's batch
        if self.height is not None:
            kwargs["height"] = self.height
        if self.width is not None:
            kwargs["width"] = self.width
        with torch.inference_mode():
            out = self.pipeline(**kwargs)
        return out.images if hasattr(out, "images") else out


def _pipeline_default_size(pipe: Any) -> tuple[int, int] | None:
    for attr in ("default_image_size", "image_size", "sample_size"):
        value = getattr(pipe, attr, None)
        if value is None and hasattr(pipe, "config"):
            value = pipe.config.get(attr) if isinstance(pipe.config, Mapping) else getattr(pipe.config, attr, None)
        if isinstance(value, int):
            return value, value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return int(value[0]), int(value[1])
    return None


class PhantomGenerator:
    """The phantom chest X-ray world as a text-to-image "generator": the prompt is parsed into
    findings (``genssl_hf.data.phantom.findings_from_text``) and the phantom is rendered from the
    sample seed. An oracle generator for dry runs, tests and pipeline demos without a trained
    diffusion model. Like the prompt sets, the parser reads "X with no <feature>" as the negative
    class: such a prompt renders a film without X, matching its "no X" label."""

    batch_invariant = True  # numpy, one image at a time: bit-exact for any batch size or thread count

    def prompt_token_overflow(self, prompts: Sequence[str]) -> list[int]:
        return [0] * len(prompts)  # the prompt parser reads the whole text

    def __init__(self, size: int = 128, generator_id: str | None = None):
        from genssl_hf.data import phantom

        self._phantom = phantom
        self.size = int(size)
        self.generator_id = generator_id or f"phantom-v{phantom.PHANTOM_VERSION}"
        self.default_size = (self.size, self.size)

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[np.ndarray]:
        out = []
        for text, seed in zip(prompts, seeds):
            findings = self._phantom.findings_from_text(text)
            out.append(self._phantom.sample_phantom(int(seed), self.size, findings=findings).image)
        return out


def check_generator_spec(spec: Any) -> None:
    """Cheap validation of a generator spec before any compute: a pipeline folder must exist and
    hold ``model_index.json``; ``module:factory`` must name an importable module."""
    if spec is None:
        raise ValueError("no generator given: pass a pipeline folder, 'phantom', or 'module:factory'")
    if not isinstance(spec, (str, os.PathLike)):
        if not callable(spec):
            raise ValueError(f"generator {spec!r} is not callable")
        return
    text = os.fspath(spec)
    if text == "phantom":
        return
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"pipeline {path} is not a folder")
        if not (path / "model_index.json").is_file():
            raise ValueError(f"pipeline folder {path} has no model_index.json (not a diffusers pipeline folder)")
        return
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        module = text.split(":")[0]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"generator factory module {module!r} (from {text!r}) cannot be imported")
        return
    raise ValueError(f"pipeline folder {path} does not exist")


def check_sampler_support(spec: Any, sampler: str) -> None:
    """``sampler`` (a preset of ``GENERATION_PRESETS``) needs a pipeline folder whose pipeline class
    has ``use_preset`` (checked from ``model_index.json``, no weights loaded). The phantom world has no
    denoising steps, a ``module:factory`` is called with fixed arguments and a generator object comes
    with its scheduler already chosen: each is refused rather than silently sampled otherwise."""
    from genssl_hf.generation.schedulers import check_sampler_name

    check_sampler_name(sampler)
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(
            f"sampler {sampler!r} applies to a diffusers pipeline folder; this generator is a "
            f"{type(spec).__name__} object: choose its scheduler yourself (pipe.use_preset({sampler!r})) "
            "and leave sampler unset"
        )
    text = os.fspath(spec)
    if text == "phantom":
        raise ValueError(
            f"sampler {sampler!r}: the phantom generator renders its images directly, with no denoising "
            "steps to sample; leave sampler unset or generate with a diffusion pipeline folder"
        )
    path = Path(text)
    if not path.is_dir():
        raise ValueError(
            f"sampler {sampler!r}: generator {text!r} is a 'module:factory', called with fixed arguments; "
            "choose the scheduler inside the factory and leave sampler unset"
        )
    cls = _pipeline_class(path)
    if cls is None or not hasattr(cls, "use_preset"):
        name = read_json(path / "model_index.json").get("_class_name")
        raise ValueError(
            f"sampler {sampler!r}: the pipeline in {path} ({name}) has no sampling presets (use_preset); "
            "leave sampler unset to sample with its own scheduler"
        )


def _folder_fingerprint(path: Path) -> str:
    """Content hash of a pipeline folder: every file's relative path and SHA-256."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def default_generator_id(spec: Any) -> str:
    """``<folder name>@<12 hex of its content hash>`` for a pipeline folder; the spec otherwise."""
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return f"{path.resolve().name}@{_folder_fingerprint(path)[:12]}"
        if os.fspath(spec) == "phantom":
            from genssl_hf.data import phantom

            return f"phantom-v{phantom.PHANTOM_VERSION}"
        return os.fspath(spec)
    return getattr(spec, "generator_id", None) or type(spec).__name__


def load_generator(
    spec: Any,
    *,
    height: int | None = None,
    width: int | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float = 7.0,
    device: Any = None,
    generator_id: str | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
    sampler: str | None = None,
) -> ImageGenerator:
    """An :class:`ImageGenerator` from a spec: an object that already is one; ``"phantom"``;
    a diffusers pipeline folder (through ``genssl_hf.generation``'s pipeline class when present,
    else ``DiffusionPipeline.from_pretrained``); or ``"package.module:factory"``, a callable
    called with ``height, width, num_inference_steps, guidance_scale, device``. ``sampler``: a
    preset of ``GENERATION_PRESETS`` the pipeline switches to (``use_preset``); a pipeline folder
    only (see :func:`check_sampler_support`). ``num_inference_steps``: as given, else the sampler
    preset's, else 50."""
    check_generator_spec(spec)
    if sampler is not None:
        check_sampler_support(spec, sampler)
    if num_inference_steps is None:
        from genssl_hf.generation.schedulers import GENERATION_PRESETS

        num_inference_steps = GENERATION_PRESETS[sampler]["num_inference_steps"] if sampler is not None else 50
    if not isinstance(spec, (str, os.PathLike)):
        if generator_id and not getattr(spec, "generator_id", None):
            with contextlib.suppress(AttributeError):
                spec.generator_id = generator_id
        return spec
    text = os.fspath(spec)
    gid = generator_id or default_generator_id(spec)
    if text == "phantom":
        if height is not None and width is not None and height != width:
            raise ValueError("the phantom generator makes square images: height must equal width")
        return PhantomGenerator(size=height or width or 128, generator_id=gid)
    path = Path(text)
    if path.is_dir():
        pipe = _load_pipeline(path)
        if sampler is not None:
            pipe.use_preset(sampler)
        if device is not None:
            pipe = pipe.to(device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        return DiffusersGenerator(
            pipe,
            generator_id=gid,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            call_kwargs=call_kwargs,
        )
    module_name, attr = text.split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    gen = factory(
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        device=device,
    )
    if not getattr(gen, "generator_id", None):
        with contextlib.suppress(AttributeError):
            gen.generator_id = gid
    return gen


def _pipeline_class(path: Path) -> Any:
    """The ``genssl_hf.generation`` class a pipeline folder's ``model_index.json`` names (None: another)."""
    class_name = read_json(path / "model_index.json").get("_class_name")
    if isinstance(class_name, list):  # [loader module, class] (genssl_hf.generation.folder_code)
        class_name = class_name[-1]
    try:
        generation = importlib.import_module("genssl_hf.generation")
        cls = getattr(generation, class_name, None) if class_name else None
        if cls is None:
            with contextlib.suppress(ImportError):
                cls = getattr(importlib.import_module("genssl_hf.generation.pipeline"), class_name, None)
    except ImportError:
        cls = None
    return cls


def _load_pipeline(path: Path) -> Any:
    cls = _pipeline_class(path)
    if cls is not None:
        return cls.from_pretrained(str(path))
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(path))


def _size_from_pipeline_folder(path: Path) -> tuple[int, int] | None:
    """Image size from a pipeline folder's configs (no weights loaded)."""
    index = read_json(path / "model_index.json")
    for key in ("default_image_size", "image_size", "sample_size", "height"):
        v = index.get(key)
        if isinstance(v, int):
            return v, v
        if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v):
            return v[0], v[1]
    return None


def _check_pipeline_size(path: Path, height: int, width: int) -> None:
    """A pipeline folder's autoencoder downsamples by 2 per level after the first: refuse a size it
    cannot decode now, before any folder is created or any model loaded."""
    vae = path / "vae" / "config.json"
    if not vae.is_file():
        return
    cfg = read_json(vae)
    levels = cfg.get("block_out_channels") or cfg.get("channels")
    if not isinstance(levels, list) or not levels:
        return
    factor = 2 ** (len(levels) - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of {factor}, the downsampling of the "
            f"autoencoder in {path}; choose --image_size / --height / --width as a multiple of {factor}"
        )


def _token_overflow(generator: Any, texts: Sequence[str]) -> list[int | None]:
    """Per prompt, the tokens the generator's text encoder cuts off (warned about once per run)."""
    count = getattr(generator, "prompt_token_overflow", None)
    values = list(count(texts)) if count is not None else [None] * len(texts)
    cut = [(t, n) for t, n in zip(texts, values) if n]
    if cut and not getattr(generator, "_genssl_truncation_warned", False):
        logger.warning(
            "%d prompt(s) of this chunk are longer than the text encoder reads and are cut (e.g. %r... "
            "loses %d tokens); the dataset records the count in prompt_tokens_truncated",
            len(cut),
            cut[0][0][:60],
            cut[0][1],
        )
        with contextlib.suppress(AttributeError):
            generator._genssl_truncation_warned = True
    return values
