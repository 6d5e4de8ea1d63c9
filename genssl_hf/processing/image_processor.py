"""``AdaINImageProcessor``: grayscale -> resize -> [0, 1] -> AdaIN to reference statistics -> normalise
-> 1 or 3 channels, as a transformers image processor on the PIL/numpy backend (no torchvision).

AdaIN (GEN-SSL): S_Y(x) = sigma(Y) * (x - mu(x)) / sigma(x) + mu(Y), with mu(x), sigma(x) the image's own
pixel statistics and mu(Y), sigma(Y) (``adain_mean`` / ``adain_std``) those of a real reference set,
computed by :func:`genssl_hf.processing.compute_reference_stats` and stored with their provenance in
``reference_stats`` inside ``preprocessor_config.json``. sigma(x) is floored at ``adain_eps`` so a flat
image maps to the constant mu(Y) instead of dividing by zero.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ImageInput, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack

from .stats import ReferenceStats, to_gray_uint8_or_float

# The paper's published constants (no provenance given); used only when no statistics were computed.
PAPER_ADAIN_MEAN = 0.5062
PAPER_ADAIN_STD = 0.2732
# Written into every preprocessor_config.json: this processor is not part of transformers.
REQUIRES_HINT = "genssl_hf (pip install genssl_hf; then `import genssl_hf` before AutoImageProcessor.from_pretrained)"


class AdaINImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_adain (`bool`): align each image to the reference mean/std (AdaIN) after rescaling.
    adain_mean (`float`): reference mean mu(Y) on the [0, 1] scale.
    adain_std (`float`): reference standard deviation sigma(Y) on the [0, 1] scale.
    adain_eps (`float`): floor on an image's own std sigma(x) (flat images map to mu(Y)).
    adain_clip (`bool`): clip the aligned image to [0, 1] (off by default: the formula is unclipped).
    num_channels (`int`): 1 (grayscale) or 3 (grayscale replicated, the ViT/MAE recipe).
    reference_stats (`dict`): provenance of ``adain_mean`` / ``adain_std`` (see ``ReferenceStats``).
    """

    do_adain: bool
    adain_mean: float
    adain_std: float
    adain_eps: float
    adain_clip: bool
    num_channels: int
    reference_stats: dict | None


class AdaINImageProcessor(PilBackend):
    r"""Chest X-ray image processor with AdaIN alignment to a real reference set.

    Steps (each switchable): grayscale (always: X-rays are single-channel; RGB inputs use ITU-R 601 luma
    exactly like PIL ``convert("L")``) -> ``do_resize`` to ``size`` (bilinear, in uint8 for uint8 inputs) ->
    ``do_rescale`` by ``rescale_factor`` (integer inputs, and float inputs with values above 1; float inputs
    already on [0, 1] are kept) -> ``do_adain`` -> ``do_normalize`` with ``image_mean`` / ``image_std`` ->
    ``num_channels`` output channels. Returns ``pixel_values`` of shape (N, num_channels, H, W).

    Note: AdaIN followed by normalisation is an affine map of each image's z-score, so what AdaIN
    decides is the *scale of the reconstruction target* and, with ``adain_clip``, the clipping; with
    ``do_adain=False`` (the ablation) images keep their own brightness and contrast.
    """

    valid_kwargs = AdaINImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    size = {"height": 224, "width": 224}
    default_to_square = True
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5]
    image_std = [0.5]
    do_center_crop = False
    do_adain = True
    adain_mean = PAPER_ADAIN_MEAN
    adain_std = PAPER_ADAIN_STD
    adain_eps = 1e-3
    adain_clip = False
    num_channels = 3
    reference_stats = None

    def __init__(self, **kwargs: Unpack[AdaINImageProcessorKwargs]):
        super().__init__(**kwargs)
        self._check_config(self.num_channels, self.adain_std, self.adain_eps, self.image_mean, self.image_std)

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_reference_stats(cls, stats: ReferenceStats | dict, **kwargs: Any) -> "AdaINImageProcessor":
        """A processor aligned to computed reference statistics, keeping their provenance."""
        stats = stats if isinstance(stats, ReferenceStats) else ReferenceStats.from_dict(stats)
        return cls(adain_mean=float(stats.mean), adain_std=float(stats.std), reference_stats=stats.to_dict(), **kwargs)

    @staticmethod
    def _check_config(num_channels, adain_std, adain_eps, image_mean, image_std) -> None:
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        if adain_std is not None and not float(adain_std) > 0:
            raise ValueError(f"adain_std must be > 0, got {adain_std}")
        if adain_eps is not None and not float(adain_eps) > 0:
            raise ValueError(f"adain_eps must be > 0, got {adain_eps}")
        for name, v in (("image_mean", image_mean), ("image_std", image_std)):
            if v is not None and not isinstance(v, (int, float)) and len(v) not in (1, num_channels):
                raise ValueError(f"{name} must have 1 or num_channels={num_channels} values, got {list(v)}")

    def to_dict(self) -> dict[str, Any]:
        # transformers' own error for an unknown processor names the folder, not the class: the
        # file it points at says what to install.
        return {**super().to_dict(), "requires": REQUIRES_HINT}

    # ----------------------------------------------------------------------------- per image
    def process_image(self, image: ImageInput, *args: Any, **kwargs: Any) -> np.ndarray:
        """Any input (PIL, numpy, torch; HxW, HxWxC or CxHxW) -> 2-D grayscale, uint8 kept as uint8."""
        return to_gray_uint8_or_float(image)

    def _prepare_images_structure(self, images: ImageInput, expected_ndims: int = 3) -> list[Any]:
        # Grayscale inputs are 2-D: a single HxW array must count as one image, not as H images.
        if isinstance(images, Image.Image):
            return [images]
        if hasattr(images, "ndim") and hasattr(images, "shape"):
            if images.ndim == 2:
                return [images]
            if images.ndim == 3:
                return [images] if (images.shape[0] in (1, 3, 4) or images.shape[-1] in (1, 3, 4)) else list(images)
            if images.ndim == 4:
                return list(images)
            raise ValueError(f"expected an image or a batch of images, got an array of shape {tuple(images.shape)}")
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("no images were given to the processor")
            flat: list[Any] = []
            for im in images:
                flat.extend(self._prepare_images_structure(im) if isinstance(im, (list, tuple)) else [im])
            return flat
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    # ------------------------------------------------------------------------------- batch
    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: Any,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
        return_tensors: Any = None,
        do_adain: bool = True,
        adain_mean: float = PAPER_ADAIN_MEAN,
        adain_std: float = PAPER_ADAIN_STD,
        adain_eps: float = 1e-3,
        adain_clip: bool = False,
        num_channels: int = 3,
        **kwargs: Any,
    ) -> BatchFeature:
        self._check_config(num_channels, adain_std, adain_eps, image_mean, image_std)
        for i, im in enumerate(images):  # before resizing: PIL would hide NaN or an empty image
            check_image_values(im, f"image {i} of {len(images)}")
        resample = resample if resample is not None else PILImageResampling.BILINEAR
        if do_resize:
            if not (size.height and size.width):
                raise ValueError(f"AdaINImageProcessor resizes to {{'height', 'width'}}; got size={dict(size)}")
            images = [_resize_gray(im, (size.width, size.height), resample) for im in images]
        same_shape = len({im.shape for im in images}) == 1
        # One vectorised pass when all images share a shape (the usual case after resizing).
        groups = [images] if same_shape else [[im] for im in images]
        arrays = [
            self._finish(
                _to_unit_float(g, do_rescale, rescale_factor),
                do_adain,
                adain_mean,
                adain_std,
                adain_eps,
                adain_clip,
                num_channels,
                do_normalize,
                image_mean,
                image_std,
            )
            for g in groups
        ]
        if same_shape:
            pixel_values: Any = arrays[0]
        else:
            if return_tensors is not None:
                raise ValueError("images of different sizes cannot be batched into one tensor: enable do_resize")
            pixel_values = [a[0] for a in arrays]
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    @staticmethod
    def _finish(
        x, do_adain, adain_mean, adain_std, adain_eps, adain_clip, num_channels, do_normalize, image_mean, image_std
    ):
        """(n, H, W) float on [0, 1] -> (n, C, H, W) float32."""
        if do_adain:
            x = _adain(x, float(adain_mean), float(adain_std), float(adain_eps))  # inputs checked in _preprocess
            if adain_clip:
                np.clip(x, 0.0, 1.0, out=x)
        x = x[:, None]
        if do_normalize:
            m = np.asarray(image_mean, dtype=np.float32).reshape(-1)
            s = np.asarray(image_std, dtype=np.float32).reshape(-1)
            if m.size == 1 and s.size == 1:  # normalise once, then replicate
                x = (x - m[0]) / s[0]
                if num_channels == 3:
                    x = np.repeat(x, 3, axis=1)
            else:
                if num_channels == 3:
                    x = np.repeat(x, 3, axis=1)
                x = (x - m.reshape(1, -1, 1, 1)) / s.reshape(1, -1, 1, 1)
        elif num_channels == 3:
            x = np.repeat(x, 3, axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)


def _resize_gray(img: np.ndarray, wh: tuple[int, int], resample: Any) -> np.ndarray:
    if img.shape[1] == wh[0] and img.shape[0] == wh[1]:
        return img
    pil = Image.fromarray(img) if img.dtype == np.uint8 else Image.fromarray(img.astype(np.float32), mode="F")
    return np.asarray(pil.resize(wh, resample=int(resample)))


def _to_unit_float(group: list[np.ndarray], do_rescale: bool, factor: float) -> np.ndarray:
    x = np.stack(group).astype(np.float32, copy=False)
    if not do_rescale:
        return x
    if all(im.dtype == np.uint8 for im in group):
        return x * np.float32(factor)
    if float(x.max(initial=0.0)) > 1.0:
        return x * np.float32(factor)
    warnings.warn("float images already on [0, 1] are not rescaled again", stacklevel=3)
    return x


def check_image_values(x: np.ndarray, name: str = "image") -> None:
    """Raise ``ValueError`` naming ``name`` for an empty image or one with NaN / infinite pixels:
    one such pixel would make AdaIN's mean and std, and so every output pixel, NaN."""
    x = np.asarray(x)
    if x.size == 0 or x.ndim < 2:
        raise ValueError(f"{name} is empty or not an image (shape {tuple(x.shape)})")
    if x.dtype.kind in "fc":
        bad = ~np.isfinite(x)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            which = f"{name} image {first[:-2]}" if len(first) > 2 else name
            raise ValueError(
                f"{which} has NaN or infinite pixels ({int(bad.sum())} in all, the first at "
                f"{first[-2:]}); AdaIN would turn the whole image into NaN"
            )


def adain_numpy(x: np.ndarray, mean: float, std: float, eps: float = 1e-3) -> np.ndarray:
    """AdaIN over the last two axes of a (..., H, W) float array: sigma_Y * (x - mu_x) / max(sigma_x, eps) + mu_Y.
    Raises ``ValueError`` for an empty input or NaN / infinite pixels (naming the image)."""
    check_image_values(x, "AdaIN input")
    return _adain(x, mean, std, eps)


def _adain(x: np.ndarray, mean: float, std: float, eps: float) -> np.ndarray:
    mu = x.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)
    sd = x.std(axis=(-2, -1), keepdims=True, dtype=np.float64)
    scale = (std / np.maximum(sd, eps)).astype(np.float32)
    return ((x - mu.astype(np.float32)) * scale + np.float32(mean)).astype(np.float32, copy=False)


def register_auto_class() -> None:
    """Make ``AutoImageProcessor.from_pretrained(dir)`` resolve ``AdaINImageProcessor`` (no remote code),
    also as the processor of the genssl_hf classifier's config (``genssl_hf_vit``). ``import genssl_hf``
    runs this once transformers' ``image_processing_auto`` is imported; explicit calls are harmless.

    transformers maps image processors per config class, so a tiny private config class carries the
    registration; it never shadows the stock ViT / ViTMAE mappings.
    """
    from transformers import AutoImageProcessor, PretrainedConfig

    from genssl_hf.models.vit_classifier import GenSSLViTConfig

    global _AdaINRegistrationConfig
    if "_AdaINRegistrationConfig" not in globals():

        class _AdaINRegistrationConfig(PretrainedConfig):  # noqa: N801 (private)
            model_type = "genssl_adain_processor"

        globals()["_AdaINRegistrationConfig"] = _AdaINRegistrationConfig
    for config_class in (globals()["_AdaINRegistrationConfig"], GenSSLViTConfig):
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": AdaINImageProcessor}, exist_ok=True)
