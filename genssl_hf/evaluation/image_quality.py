"""Generated-image quality (GEN-SSL paper, Tables 6-7): FID with a pluggable feature extractor and
dataset similarity as the mean nearest-neighbour cosine similarity between embedded sets.

No Inception weights can be downloaded here, so FID is computed in the feature space of any local
encoder (for example a ViT / ViTMAE folder this project trained). FID values compare only under
the same extractor: every result carries the extractor's ``name`` and it is printed with every
number.

Extractors are callables ``images -> (N, D) float array`` with a ``name`` attribute; images are
float tensors ``(N, C, H, W)`` in ``[0, 1]`` (``C`` 1 or 3). :class:`EncoderFeatureExtractor`
wraps a saved transformers vision encoder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch

__all__ = [
    "FeatureExtractor",
    "EncoderFeatureExtractor",
    "extract_features",
    "frechet_distance",
    "compute_fid",
    "mean_nn_cosine_similarity",
    "dataset_similarity",
    "faiss_available",
]


class FeatureExtractor(Protocol):
    name: str

    def __call__(self, images: torch.Tensor) -> np.ndarray: ...


class EncoderFeatureExtractor:
    """Embeddings from a local transformers vision encoder folder (ViT, ViTMAE, a genssl_hf classifier).

    ``pooling``: ``"mean"`` (mean of patch tokens, default) or ``"cls"``. For ViTMAE the random
    masking is switched off (mask ratio 0) so every patch is seen. Input normalisation comes from
    the folder's ``preprocessor_config.json`` (``image_mean`` / ``image_std``; AdaIN reference
    statistics when the processor has them) and falls back to mean 0.5 / std 0.5.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        pooling: str = "mean",
        device: str | torch.device = "cpu",
        image_size: int | None = None,
    ):
        from transformers import AutoConfig, AutoModel

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"feature extractor folder {model_dir} has no config.json")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls'; got {pooling!r}")
        config = AutoConfig.from_pretrained(model_dir)
        if getattr(config, "model_type", "") == "vit_mae":
            config.mask_ratio = 0.0
        model_type = getattr(config, "model_type", "")
        if model_type in ("vit", "genssl_hf_vit") and getattr(config, "architectures", None):
            # classifier folders: load just the encoder weights
            from transformers import ViTModel

            self.model = ViTModel.from_pretrained(model_dir, config=config, add_pooling_layer=False)
        else:
            self.model = AutoModel.from_pretrained(model_dir, config=config)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.pooling = pooling
        self.image_size = int(image_size or getattr(config, "image_size", 224))
        self.num_channels = int(getattr(config, "num_channels", 3))
        mean, std = _normalisation_from_folder(model_dir)
        self.mean, self.std = float(mean), float(std)
        self.name = f"{model_type}:{model_dir.resolve().name} ({pooling} pooling, {self.image_size}px)"
        self.source = str(model_dir.resolve())

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = _prepare(images, self.image_size, self.num_channels)
        x = ((x - self.mean) / self.std).to(self.device)
        out = self.model(pixel_values=x)
        h = out.last_hidden_state
        feats = h[:, 0] if self.pooling == "cls" else h[:, 1:].mean(dim=1)
        return feats.float().cpu().numpy()


def _normalisation_from_folder(model_dir: Path) -> tuple[float, float]:
    import json

    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        return 0.5, 0.5
    cfg = json.loads(path.read_text())
    mean, std = cfg.get("image_mean", 0.5), cfg.get("image_std", 0.5)
    mean = float(np.mean(mean)) if isinstance(mean, (list, tuple)) else float(mean)
    std = float(np.mean(std)) if isinstance(std, (list, tuple)) else float(std)
    return mean, std


def _prepare(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W); got {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 3 and channels == 1:
        x = x.mean(dim=1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def _batches(images: Any, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for i in range(0, len(images), batch_size):
            yield images[i : i + batch_size]
        return
    if isinstance(images, np.ndarray):
        t = torch.from_numpy(images)
        yield from _batches(t.float() / 255.0 if images.dtype == np.uint8 else t, batch_size)
        return
    # an iterable of PIL images / HxW uint8 arrays / already-batched tensors
    buf = []
    for item in images:
        if isinstance(item, torch.Tensor) and item.ndim == 4:
            yield item
            continue
        arr = np.asarray(item.convert("L") if hasattr(item, "convert") else item)
        t = torch.from_numpy(arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0))
        buf.append(t[None] if t.ndim == 2 else t)
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)


def extract_features(
    images: Any, extractor: Callable[[torch.Tensor], np.ndarray], *, batch_size: int = 64
) -> np.ndarray:
    """Embed ``images`` (tensor / uint8 array / iterable of PIL images or arrays) in batches."""
    feats = [np.asarray(extractor(b), dtype=np.float64) for b in _batches(images, batch_size)]
    if not feats:
        raise ValueError("no images to embed")
    return np.concatenate(feats)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets:
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D; got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s_a, s_b = np.atleast_2d(s_a), np.atleast_2d(s_b)
    covmean = _sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than dimensions): regularise as in the reference FID code
        eps = 1e-6 * np.eye(s_a.shape[0])
        covmean = _sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(max(0.0, diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean)))


def _sqrtm(m: np.ndarray) -> np.ndarray:
    from scipy import linalg

    out = linalg.sqrtm(m)
    return out[0] if isinstance(out, tuple) else out


def compute_fid(
    images_a: Any, images_b: Any, extractor: Callable[[torch.Tensor], np.ndarray], *, batch_size: int = 64
) -> dict[str, Any]:
    """FID between two image sets in ``extractor``'s feature space; the result names the extractor."""
    fa = extract_features(images_a, extractor, batch_size=batch_size)
    fb = extract_features(images_b, extractor, batch_size=batch_size)
    return {
        "fid": frechet_distance(fa, fb),
        "extractor": getattr(extractor, "name", repr(extractor)),
        "num_a": int(len(fa)),
        "num_b": int(len(fb)),
        "feature_dim": int(fa.shape[1]),
        "note": "FID values compare only under the same feature extractor",
    }


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def mean_nn_cosine_similarity(
    query: np.ndarray, reference: np.ndarray, *, backend: str = "auto", chunk: int = 4096
) -> dict[str, Any]:
    """For each query embedding, the cosine similarity of its nearest reference embedding; their mean.

    ``backend``: ``"faiss"`` (exact inner-product index over L2-normalised vectors), ``"numpy"``
    (chunked matrix product, same result) or ``"auto"`` (faiss when installed).
    """
    q, r = _l2_normalise(query), _l2_normalise(reference)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with the same D; got {q.shape} and {r.shape}")
    if len(q) == 0 or len(r) == 0:
        raise ValueError("empty embedding set")
    if backend == "auto":
        backend = "faiss" if faiss_available() else "numpy"
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatIP(r.shape[1])
        index.add(np.ascontiguousarray(r))
        sims, _ = index.search(np.ascontiguousarray(q), 1)
        best = sims[:, 0]
    elif backend == "numpy":
        best = np.concatenate([(q[i : i + chunk] @ r.T).max(axis=1) for i in range(0, len(q), chunk)])
    else:
        raise ValueError(f"backend must be 'auto', 'faiss' or 'numpy'; got {backend!r}")
    best = np.clip(best.astype(np.float64), -1.0, 1.0)
    return {
        "mean_similarity": float(best.mean()),
        "std_similarity": float(best.std()),
        "backend": backend,
        "num_query": int(len(q)),
        "num_reference": int(len(r)),
    }


def dataset_similarity(
    images_query: Any,
    images_reference: Any,
    extractor: Callable[[torch.Tensor], np.ndarray],
    *,
    batch_size: int = 64,
    backend: str = "auto",
) -> dict[str, Any]:
    """Mean nearest-neighbour cosine similarity of ``images_query`` to ``images_reference``,
    both embedded by ``extractor`` (named in the result)."""
    fq = extract_features(images_query, extractor, batch_size=batch_size)
    fr = extract_features(images_reference, extractor, batch_size=batch_size)
    out = mean_nn_cosine_similarity(fq, fr, backend=backend)
    out["extractor"] = getattr(extractor, "name", repr(extractor))
    return out
