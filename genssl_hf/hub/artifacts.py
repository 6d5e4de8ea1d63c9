"""The artifact kinds the publisher knows, which files of a folder ship, and each kind's validator:
the folder must reload with the loader its users will call (see :mod:`genssl_hf.hub.publish`)."""

from __future__ import annotations

import fnmatch
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..utils import read_json

logger = logging.getLogger(__name__)


KINDS = ("encoder", "classifier", "generator", "prompt_set", "dataset", "report_generator", "dual_encoder")
REPO_TYPES = {
    "encoder": "model",
    "classifier": "model",
    "generator": "model",
    "prompt_set": "dataset",
    "dataset": "dataset",
    "report_generator": "model",
    "dual_encoder": "model",
}


# Never shipped: training state, logs, caches, temporary and hidden files.
IGNORE_PATTERNS = (
    "checkpoint-*",
    "checkpoints",
    "logs",
    "runs",
    "wandb",
    "tensorboard",
    "__pycache__",
    ".*",
    "*.tmp",
    "*.tmp-*",
    "*.lock",
    "optimizer.*",
    "scheduler.pt",
    "rng_state*",
    "training_args.bin",
    "train_state.json",
    "*.pyc",
)


_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".svg", ".pdf")


class ArtifactError(ValueError):
    """An artifact folder is missing, incomplete, or does not reload with its own loader."""


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")
    return kind


def _ignored(rel: str, patterns: Sequence[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(p, pat) for p in parts for pat in patterns) or any(
        fnmatch.fnmatch(rel, pat) for pat in patterns
    )


def select_files(
    kind: str, folder: str | os.PathLike, ignore_patterns: Sequence[str] = (), include_images: bool | None = None
) -> list[str]:
    """The relative paths of ``folder`` that a publication of ``kind`` ships (README included
    when present; it is replaced by the refreshed card).

    ``include_images`` (default: off for ``encoder`` / ``classifier``, on otherwise): ship image
    files. Figures of trained models (MAE reconstructions, attention maps) are drawn from the
    training or test images, which may be real, and composites (grids, overlays) are beyond what
    the leak guard can match tile by tile, so they stay home unless asked for."""
    _check_kind(kind)
    folder = Path(folder)
    if include_images is None:
        include_images = kind not in ("encoder", "classifier", "report_generator", "dual_encoder")
    patterns = (*IGNORE_PATTERNS, *ignore_patterns, *(() if include_images else [f"*{e}" for e in _IMAGE_EXTS]))
    files = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.is_symlink() and not p.resolve().is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if _ignored(rel, patterns):
            continue
        if kind == "prompt_set" and rel not in ("prompts.json", "README.md", "data/prompts.parquet"):
            continue
        if kind == "dataset" and "/" in rel and not rel.startswith("data/"):
            continue  # only the shards below data/, plus top-level config / card / figures
        files.append(rel)
    return files


def _need(folder: Path, *names: str) -> None:
    for n in names:
        if not (folder / n).is_file():
            raise ArtifactError(f"{folder} has no {n}: not a complete artifact folder")


def _load_processor(folder: Path, kind: str):
    import genssl_hf  # noqa: F401  (registers AdaINImageProcessor with AutoImageProcessor)
    from transformers import AutoImageProcessor

    _need(folder, "preprocessor_config.json")
    try:
        return AutoImageProcessor.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(f"{kind} folder {folder}: the image processor does not reload: {e}") from e


def _check_loading_info(folder: Path, cls_name: str, info: Mapping[str, Any]) -> None:
    missing = list(info.get("missing_keys") or [])
    unexpected = list(info.get("unexpected_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ArtifactError(
            f"{folder} does not reload as {cls_name}: missing weights {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, mismatched {mismatched[:5]}"
        )
    if unexpected:
        logger.warning("%s: weights not used by %s: %s", folder, cls_name, unexpected[:5])


def _validate_encoder(folder: Path) -> dict[str, Any]:
    from transformers import ViTMAEForPreTraining

    _need(folder, "config.json")
    if (folder / "encoder_info.json").is_file():
        return _validate_neutral_encoder(folder)
    try:
        model, info = ViTMAEForPreTraining.from_pretrained(str(folder), output_loading_info=True)
    except Exception as e:
        raise ArtifactError(f"encoder folder {folder} does not reload as ViTMAEForPreTraining: {e}") from e
    _check_loading_info(folder, "ViTMAEForPreTraining", info)
    proc = _load_processor(folder, "encoder")
    if type(proc).__name__ != "AdaINImageProcessor":
        raise ArtifactError(
            f"encoder folder {folder}: processor is {type(proc).__name__}, expected AdaINImageProcessor"
        )
    return {
        "model_class": type(model).__name__,
        "processor_class": type(proc).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _validate_neutral_encoder(folder: Path) -> dict[str, Any]:
    """A method-neutral encoder export (SimCLR, MoCo v2, SimSiam, rotation; ``genssl_hf.models.save_encoder``):
    it must reload exactly with ``AutoModel`` and into the stock classification class."""
    from genssl_hf.models import verify_encoder_folder

    try:
        checked = verify_encoder_folder(folder)
    except Exception as e:
        raise ArtifactError(f"encoder folder {folder} does not reload exactly: {e}") from e
    proc = _load_processor(folder, "encoder")
    if type(proc).__name__ != "AdaINImageProcessor":
        raise ArtifactError(
            f"encoder folder {folder}: processor is {type(proc).__name__}, expected AdaINImageProcessor"
        )
    return {
        "model_class": checked["auto_model"],
        "classifier_class": checked["classifier"],
        "processor_class": type(proc).__name__,
        "method": read_json(folder / "encoder_info.json").get("method"),
    }


def _classifier_class(folder: Path):
    cfg = read_json(folder / "config.json")
    if cfg.get("model_type") == "resnet":  # the CNN slot
        from transformers import ResNetForImageClassification

        return ResNetForImageClassification
    archs = cfg.get("architectures") or []
    if "GenSSLViTForImageClassification" in archs:
        from genssl_hf.models.vit_classifier import GenSSLViTForImageClassification

        return GenSSLViTForImageClassification
    if "BeitForImageClassification" in archs:  # a mean-pooled classifier exported for plain transformers
        from transformers import BeitForImageClassification

        return BeitForImageClassification
    from transformers import ViTForImageClassification

    return ViTForImageClassification


def _validate_classifier(folder: Path) -> dict[str, Any]:
    _need(folder, "config.json")
    cls = _classifier_class(folder)
    try:
        model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    except Exception as e:
        raise ArtifactError(f"classifier folder {folder} does not reload as {cls.__name__}: {e}") from e
    _check_loading_info(folder, cls.__name__, info)
    if not getattr(model.config, "id2label", None):
        raise ArtifactError(f"classifier folder {folder}: config has no id2label")
    proc = _load_processor(folder, "classifier")
    return {
        "model_class": cls.__name__,
        "processor_class": type(proc).__name__,
        "labels": [model.config.id2label[i] for i in sorted(model.config.id2label)],
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _pipeline_class():
    try:
        from genssl_hf.generation import CXRLatentDiffusionPipeline
    except ImportError:
        from genssl_hf.generation.pipeline import CXRLatentDiffusionPipeline
    return CXRLatentDiffusionPipeline


def _validate_generator(folder: Path) -> dict[str, Any]:
    _need(folder, "model_index.json")
    cls = _pipeline_class()
    try:
        pipe = cls.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(f"generator folder {folder} does not reload as {cls.__name__}: {e}") from e
    return {"pipeline_class": type(pipe).__name__, "image_size": int(pipe.config.image_size)}


def _validate_prompt_set(folder: Path) -> dict[str, Any]:
    from genssl_hf.prompts import PromptSet

    _need(folder, "prompts.json")
    try:
        ps = PromptSet.from_pretrained(folder)
    except Exception as e:
        raise ArtifactError(f"prompt set folder {folder} does not reload with PromptSet.from_pretrained: {e}") from e
    return {"num_prompts": len(ps), "fingerprint": ps.fingerprint, "strategy": ps.strategy}


def _validate_dataset(folder: Path) -> dict[str, Any]:
    import datasets

    if not any(folder.glob("data/**/*.parquet")) and not any(folder.glob("*.parquet")):
        raise ArtifactError(f"dataset folder {folder} has no parquet shards")
    _need(folder, "README.md")  # its YAML configs tell load_dataset (and the Hub) where the shards are
    try:
        # Streaming reads the README configs and the first rows of every split: checks the layout
        # and the Features without converting GBs of shards into an arrow cache.
        dd = datasets.load_dataset(str(folder), streaming=True)
        splits = {}
        for name, split in dd.items():
            first = next(iter(split), None)
            if first is None:
                raise ArtifactError(f"dataset folder {folder}: split {name!r} is empty")
            splits[name] = sorted(first)
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"dataset folder {folder} does not reload with datasets.load_dataset: {e}") from e
    return {"splits": splits}


def _validate_report_generator(folder: Path) -> dict[str, Any]:
    import genssl_hf  # noqa: F401  (registers ReportGeneratorProcessor with AutoProcessor)
    from transformers import AutoProcessor, VisionEncoderDecoderModel

    _need(folder, "config.json", "processor_config.json")
    try:
        model, info = VisionEncoderDecoderModel.from_pretrained(str(folder), output_loading_info=True)
    except Exception as e:
        raise ArtifactError(
            f"report_generator folder {folder} does not reload as VisionEncoderDecoderModel: {e}"
        ) from e
    _check_loading_info(folder, "VisionEncoderDecoderModel", info)
    try:
        proc = AutoProcessor.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(f"report_generator folder {folder}: the processor does not reload: {e}") from e
    return {
        "model_class": type(model).__name__,
        "processor_class": type(proc).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _validate_dual_encoder(folder: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer, VisionTextDualEncoderModel

    _need(folder, "config.json")
    try:
        model, info = VisionTextDualEncoderModel.from_pretrained(str(folder), output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise ArtifactError(
            f"dual-encoder folder {folder} does not reload as VisionTextDualEncoderModel + tokenizer: {e}"
        ) from e
    _check_loading_info(folder, "VisionTextDualEncoderModel", info)
    proc = _load_processor(folder, "dual_encoder")
    return {
        "model_class": type(model).__name__,
        "processor_class": type(proc).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


_VALIDATORS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "encoder": _validate_encoder,
    "classifier": _validate_classifier,
    "generator": _validate_generator,
    "prompt_set": _validate_prompt_set,
    "dataset": _validate_dataset,
    "report_generator": _validate_report_generator,
    "dual_encoder": _validate_dual_encoder,
}


def validate_artifact(kind: str, folder: str | os.PathLike) -> dict[str, Any]:
    """Reload ``folder`` with the loader of ``kind``; raise :class:`ArtifactError` naming the folder
    when it does not. Returns a small summary (model class, labels, splits...)."""
    _check_kind(kind)
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{kind} folder {folder} does not exist or is not a folder")
    return _VALIDATORS[kind](folder)
