"""Publish genssl_hf artifacts to the Hugging Face Hub, or write exactly what would be uploaded.

Five kinds of artifact folder, each checked with its own loader before and after staging:

=============  ============  =====================================================================
kind           repo type     loader used for validation
=============  ============  =====================================================================
``encoder``    model         ``ViTMAEForPreTraining`` + ``AutoImageProcessor`` (an AdaINImageProcessor)
``classifier`` model         ``ViTForImageClassification`` (or genssl_hf's subclass named in
                             ``config.architectures``) + ``AutoImageProcessor``
``generator``  model         ``genssl_hf.generation.CXRLatentDiffusionPipeline.from_pretrained``
``prompt_set`` dataset       ``genssl_hf.prompts.PromptSet.from_pretrained``
``dataset``    dataset       ``datasets.load_dataset(folder)`` (parquet shards + README ``configs``)
``report_``    model         ``VisionEncoderDecoderModel`` + ``AutoProcessor`` (a ReportGeneratorProcessor);
``generator``                the card's licence follows the training report corpus (non-commercial
                             terms inherited) and the leak guard checks every file and the card's
                             example outputs for report text
``dual_encoder`` model       ``VisionTextDualEncoderModel`` + ``AutoImageProcessor`` + ``AutoTokenizer``
=============  ============  =====================================================================

:func:`publish` (or ``publish_<kind>``) then

1. selects the files to ship (weights, configs, card, figures; never checkpoints, logs, caches or
   hidden files),
2. refreshes the README card through huggingface_hub ``ModelCard`` / ``DatasetCard``: metadata
   (license, tags, datasets, base_model, ``model-index`` eval results from a metrics JSON), and a
   managed section with provenance read from the artifact's own files (AdaIN statistics from
   ``preprocessor_config.json``, prompt-set fingerprint, generator id, generation config),
   intended use and limitations, data sources and citation,
3. runs the leak guard (:mod:`genssl_hf.hub.leak`) over every outgoing file and the new card
   *before anything is written or uploaded*,
4. stages the folder (hard links where possible), reloads it with the kind's loader, and either
   renames it into place (``dry_run=DIR``, atomic) or uploads it with
   ``HfApi.create_repo(private=True by default, exist_ok=True)`` + ``HfApi.upload_folder``.

The parts live in their own modules: :mod:`.artifacts` (kinds, file selection, validators),
:mod:`.provenance`, :mod:`.artifact_card` (the card and its managed section), :mod:`.stage`
(real-data index, metrics, destination checks, staging and upload), :mod:`.outgoing` (the checks
every outgoing file passes: local paths, the leak guard), :mod:`.leak` (the guard) and
:mod:`.publish_cli` (the command line); this module composes them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import HfApi

from ..utils import read_json
from . import card_text  # noqa: F401 - re-exported (tests read the card texts through this module)
from .artifact_card import MANAGED_BEGIN, MANAGED_END, build_card, eval_results_from_metrics
from .artifacts import (
    KINDS,
    REPO_TYPES,
    ArtifactError,
    _check_kind,
    _pipeline_class,  # noqa: F401 - re-exported: the generator loader the tests reuse
    select_files,
    validate_artifact,
)
from .export import export_plain_classifier, export_vit_encoder, is_native_classifier
from .export_generator import export_diffusers_generator, needs_diffusers_export
from .export_prompts import export_prompt_rows, needs_prompt_rows
from .leak import describe_index
from .local_paths import LocalPathError
from .outgoing import PublishInterruptedError, prepare_outgoing
from .provenance import _report_generator_license, collect_provenance
from .stage import REAL_DATA_ENV, _check_destination, _read_metrics, _resolve_index, _upload, _write_dry_run

__all__ = [
    "KINDS",
    "REPO_TYPES",
    "ArtifactError",
    "LocalPathError",
    "PublishResult",
    "publish",
    "publish_artifact",
    "publish_encoder",
    "publish_classifier",
    "publish_generator",
    "publish_prompt_set",
    "publish_dataset",
    "publish_all",
    "validate_artifact",
    "export_plain_classifier",
    "select_files",
    "collect_provenance",
    "build_card",
    "eval_results_from_metrics",
    "DEFAULT_RUN_LAYOUT",
    "DEFAULT_REPO_NAMES",
    "REAL_DATA_ENV",
    "MANAGED_BEGIN",
    "MANAGED_END",
    "main",
]

logger = logging.getLogger(__name__)

METRICS_FILES = ("eval_results.json", "metrics.json")  # looked up in model folders when metrics=None

# Sub-folders of a pipeline run folder that hold each artifact (override with ``layout=``).
DEFAULT_RUN_LAYOUT = {
    "prompt_set": "prompt_set",
    "generator": "generator",
    "dataset": "generated_dataset",
    "encoder": "mae",
    "classifier": "classifier",
    "dual_encoder": "dual_encoder",
}
DEFAULT_REPO_NAMES = {
    "prompt_set": "genssl-prompts",
    "generator": "genssl-cxr-generator",
    "dataset": "genssl-synthetic-cxr",
    "encoder": "genssl-mae-encoder",
    "classifier": "genssl-classifier",
    "dual_encoder": "genssl-dual-encoder",
}


@dataclass
class PublishResult:
    """What :func:`publish` did. ``folder`` is the dry-run folder (or the temporary staging folder,
    gone after an upload); ``files`` the relative paths shipped; ``commit`` the upload's CommitInfo."""

    kind: str
    source: Path
    repo_id: str | None
    repo_type: str
    private: bool
    dry_run: bool
    folder: Path | None
    files: list[str] = field(default_factory=list)
    url: str | None = None
    commit: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": str(self.source),
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "private": self.private,
            "dry_run": self.dry_run,
            "folder": str(self.folder) if self.folder else None,
            "files": self.files,
            "url": self.url,
        }


def publish(
    kind: str,
    folder: str | os.PathLike,
    repo_id: str | None = None,
    **kwargs: Any,
) -> PublishResult:
    """Validate, card, leak-check and then upload ``folder`` as ``repo_id`` (see :func:`_publish_folder`
    for the arguments). A genssl_hf classifier (own ``model_type`` ``genssl_hf_vit``) is first
    exported with :func:`export_plain_classifier`, so what is published loads exactly with plain
    transformers (``AutoModelForImageClassification``) and never silently as a wrong head."""
    source = Path(folder)
    export = None
    if kind == "classifier" and source.is_dir() and is_native_classifier(source):
        export = export_plain_classifier
    elif (
        kind == "encoder"
        and (source / "config.json").is_file()
        and not (source / "vit" / "config.json").exists()
        and read_json(source / "config.json").get("model_type") == "vit_mae"
    ):
        # A ViTMAE folder gets vit/: its encoder as a plain ViTModel for AutoModelForImageClassification.
        # The method-neutral encoders of the other methods (ViTModel, ResNetModel) already load as they are.
        export = export_vit_encoder
    elif kind == "prompt_set" and needs_prompt_rows(source):
        export = export_prompt_rows  # load_dataset: one row a prompt, with its scores
    elif kind == "generator" and needs_diffusers_export(source):
        export = export_diffusers_generator  # text encoder inside + the loader module diffusers imports
    if export is None:
        return _publish_folder(kind, folder, repo_id, **kwargs)
    dry_run = kwargs.get("dry_run")
    if dry_run is not None and Path(dry_run).resolve() == source.resolve():
        raise ValueError(f"dry-run folder {dry_run} is the artifact folder itself; pick another path")
    validate_artifact(kind, source)
    if kind == "generator":  # ids and sources as the run's datasets record them: read from the source
        kwargs.setdefault("provenance", _exported_generator_provenance(source))
    kwargs.setdefault("run_dir", source.parent)  # paths inside the run are written relative to it
    with tempfile.TemporaryDirectory(prefix=f"genssl-export-{kind}-") as tmpd:
        result = _publish_folder(kind, export(source, Path(tmpd) / source.name), repo_id, **kwargs)
    result.source = source
    return result


def _exported_generator_provenance(source: Path) -> dict[str, Any]:
    out = collect_provenance("generator", source)
    te = out.pop("text encoder source", None)
    out["text encoder"] = "stored in text_encoder/ + tokenizer/" + (f" (a copy of the packaged {te})" if te else "")
    return out


def _publish_folder(
    kind: str,
    folder: str | os.PathLike,
    repo_id: str | None = None,
    *,
    dry_run: str | os.PathLike | None = None,
    private: bool = True,
    token: str | None = None,
    real_data: Any = None,
    allow_unchecked: bool = False,
    metrics: str | os.PathLike | Mapping[str, Any] | None = None,
    eval_dataset: str | None = None,
    license: str | None = None,
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
    base_model: str | Sequence[str] | None = None,
    related: Mapping[str, str] | None = None,
    ignore_patterns: Sequence[str] = (),
    include_images: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    api: HfApi | None = None,
    provenance: Mapping[str, Any] | None = None,
    run_dir: Path | None = None,
) -> PublishResult:
    """Validate, card, leak-check and then upload ``folder`` as ``repo_id`` (or, with
    ``dry_run=DIR``, write exactly the folder that would be uploaded to ``DIR`` and reload it).

    ``real_data``: paths (images, folders, IU report archives, parquet) or a built
    :class:`~genssl_hf.hub.leak.RealDataIndex`; defaults to ``$GENSSL_REAL_DATA``. Without it the
    call fails unless ``allow_unchecked=True``. ``metrics``: a metrics JSON (path or dict) that
    becomes the card's ``model-index``; for model folders ``eval_results.json`` / ``metrics.json``
    beside the weights is used when not given. ``private`` is True unless you say otherwise.
    """
    _check_kind(kind)
    source = Path(folder)
    _check_destination(source, repo_id, dry_run, overwrite)
    metrics_data, license = _metrics_and_license(kind, source, metrics, license)
    index = _resolve_index(real_data, allow_unchecked)

    # 1. the source reloads with its own loader (before any work)
    validate_artifact(kind, source)
    files = select_files(kind, source, ignore_patterns, include_images)
    if not files:
        raise ArtifactError(f"{kind} folder {source} has no files to publish")
    provenance = dict(provenance) if provenance is not None else collect_provenance(kind, source)
    card_args = dict(license=license, tags=tags, datasets=datasets, base_model=base_model, related=related)
    card = build_card(
        kind,
        source,
        provenance=provenance,
        repo_id=repo_id,
        metrics=metrics_data,
        eval_dataset=eval_dataset,
        leak_checked=describe_index(index) if index is not None else None,
        **card_args,
    )
    # 2. checks over every outgoing file and the new card, before anything is written
    text, rewritten, files = prepare_outgoing(source, files, card, index, run_dir or source.parent)
    result = PublishResult(
        kind=kind,
        source=source,
        repo_id=repo_id,
        repo_type=REPO_TYPES[kind],
        private=private,
        dry_run=dry_run is not None,
        folder=None,
        files=sorted({*files, "README.md"}),
        provenance=provenance,
    )
    # 3. stage, reload, then rename into place or upload
    if dry_run is not None:
        _write_dry_run(kind, source, files, text, Path(dry_run), overwrite, rewritten)
        result.folder = Path(dry_run)
        logger.info("dry run: wrote %s (%d files) for %s", result.folder, len(result.files), repo_id or kind)
        return result
    _upload(kind, source, files, text, rewritten, result, api or HfApi(token=token), revision, commit_message)
    logger.info("uploaded %s to %s (%s, %s)", source, repo_id, REPO_TYPES[kind], "private" if private else "public")
    return result


def _metrics_and_license(kind: str, source: Path, metrics: Any, license: str | None) -> tuple[Any, str | None]:
    """The card's metrics (given, else the fine-tuning stage's file beside the weights) and licence
    (given, else for a report generator the training corpus's terms, which carry over to the model)."""
    if metrics is None and kind in ("encoder", "classifier", "report_generator"):
        metrics = next((source / n for n in METRICS_FILES if (source / n).is_file()), None)
    if kind == "report_generator" and license is None:
        license = _report_generator_license(source)
    return _read_metrics(metrics), license


publish_artifact = publish  # the name exported by ``genssl_hf.hub``


def publish_encoder(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a ViTMAE folder with its AdaINImageProcessor (see :func:`publish`)."""
    return publish("encoder", folder, repo_id, **kwargs)


def publish_classifier(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a ViT classifier folder with its processor (see :func:`publish`)."""
    return publish("classifier", folder, repo_id, **kwargs)


def publish_generator(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a ``CXRLatentDiffusionPipeline`` folder (see :func:`publish`)."""
    return publish("generator", folder, repo_id, **kwargs)


def publish_prompt_set(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a saved ``PromptSet`` folder as a dataset repo (see :func:`publish`)."""
    return publish("prompt_set", folder, repo_id, **kwargs)


def publish_dataset(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> PublishResult:
    """Publish a generated dataset folder (parquet shards + README ``configs``) (see :func:`publish`)."""
    return publish("dataset", folder, repo_id, **kwargs)


def publish_all(
    artifacts: Mapping[str, str | os.PathLike] | str | os.PathLike,
    namespace: str | None = None,
    *,
    dry_run: str | os.PathLike | None = None,
    repo_names: Mapping[str, str] | None = None,
    layout: Mapping[str, str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    real_data: Any = None,
    allow_unchecked: bool = False,
    private: bool = True,
    token: str | None = None,
    overwrite: bool = False,
    api: HfApi | None = None,
    **kwargs: Any,
) -> dict[str, PublishResult]:
    """Publish every artifact of a pipeline run, linking their cards (the encoder lists the
    synthetic dataset, the classifier names the encoder as ``base_model``...).

    ``artifacts``: a mapping kind -> folder, or a run folder whose sub-folders follow ``layout``
    (default :data:`DEFAULT_RUN_LAYOUT`; kinds whose folder is absent are skipped). ``metrics``:
    kind -> metrics JSON (path or dict). With ``dry_run=DIR`` each kind goes to ``DIR/<kind>``.
    The real-data index is built once and every artifact is checked before any is uploaded.
    """
    found = _run_artifacts(artifacts, layout)
    if dry_run is None and not namespace:
        raise ValueError("pass namespace (user or organisation to upload to) or dry_run=DIR")
    names = {**DEFAULT_REPO_NAMES, **(repo_names or {})}
    repo_ids = {k: f"{namespace}/{names[k]}" if namespace else names[k] for k in found}
    index = _resolve_index(real_data, allow_unchecked)
    metrics = metrics or {}
    links = _card_links(repo_ids)
    order = [k for k in KINDS if k in found]
    # Dry-run every artifact first (validation, cards, leak guard): nothing is uploaded unless all pass.
    results: dict[str, PublishResult] = {}
    with tempfile.TemporaryDirectory(prefix="genssl-publish-all-") as tmpd:
        base = Path(dry_run) if dry_run is not None else Path(tmpd)
        for k in order:
            results[k] = publish(
                k,
                found[k],
                repo_ids[k],
                dry_run=base / k,
                private=private,
                real_data=index,
                allow_unchecked=True,
                metrics=metrics.get(k),
                overwrite=overwrite,
                **{"run_dir": _common_run_dir(found), **links.get(k, {}), **kwargs},
            )
        if dry_run is not None:
            return results
        api = api or HfApi(token=token)
        uploaded: dict[str, PublishResult] = {}
        for i, k in enumerate(order):
            try:  # each upload is one Hub commit (all its files or none); say which repos are done
                uploaded[k] = _upload_staged(results[k], api)
            except Exception as err:
                raise PublishInterruptedError(
                    {o: repo_ids[o] for o in order[:i]}, {o: repo_ids[o] for o in order[i:]}, err
                ) from err
        return uploaded


def _run_artifacts(
    artifacts: Mapping[str, str | os.PathLike] | str | os.PathLike, layout: Mapping[str, str] | None
) -> dict[str, Path]:
    """kind -> folder: the mapping given, or the sub-folders of a run folder that ``layout`` names."""
    if isinstance(artifacts, (str, os.PathLike)):
        run_dir = Path(artifacts)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run folder {run_dir} does not exist")
        lay = {**DEFAULT_RUN_LAYOUT, **(layout or {})}
        found = {k: run_dir / sub for k, sub in lay.items() if (run_dir / sub).is_dir()}
        if not found:
            raise ArtifactError(f"run folder {run_dir} holds none of the artifact folders {lay}")
    else:
        found = {k: Path(v) for k, v in artifacts.items()}
    for k in found:
        _check_kind(k)
    return found


def _common_run_dir(found: Mapping[str, Path]) -> Path:
    """The run folder that holds every artifact (paths inside it are published relative to it)."""
    common = Path(os.path.commonpath([str(p.absolute()) for p in found.values()]))
    if len(found) == 1 or common in found.values() or len(common.parts) < 2:
        return next(iter(found.values())).absolute().parent
    return common


def _card_links(repo_ids: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """What each card of a run names of the others: the data it was trained on (``datasets``), the
    model it was fine-tuned from (``base_model``) and related repos."""

    def ids(*kinds: str) -> list[str]:
        return [repo_ids[k] for k in kinds if k in repo_ids]

    return {
        "generator": {"related": {k: repo_ids[k] for k in ("prompt_set",) if k in repo_ids}},
        "dataset": {
            "datasets": ids("prompt_set"),
            "related": {k: repo_ids[k] for k in ("generator",) if k in repo_ids},
        },
        "encoder": {"datasets": ids("dataset")},
        "classifier": {"base_model": repo_ids.get("encoder"), "datasets": ids("dataset")},
        "prompt_set": {"related": {k: repo_ids[k] for k in ("generator", "dataset") if k in repo_ids}},
        "dual_encoder": {"datasets": ids("dataset")},
    }


def _upload_staged(staged: PublishResult, api: HfApi) -> PublishResult:
    """Create the repo and upload the folder a dry run of :func:`publish_all` staged."""
    kind, repo_id = staged.kind, staged.repo_id
    repo = api.create_repo(repo_id, repo_type=REPO_TYPES[kind], private=staged.private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(staged.folder),
        repo_type=REPO_TYPES[kind],
        commit_message=f"Upload genssl_hf {kind.replace('_', ' ')}",
    )
    return PublishResult(
        kind=kind,
        source=staged.source,
        repo_id=repo_id,
        repo_type=REPO_TYPES[kind],
        private=staged.private,
        dry_run=False,
        folder=None,
        files=staged.files,
        url=str(getattr(repo, "url", repo)),
        commit=commit,
        provenance=staged.provenance,
    )


def publish_after_training(kind: str, folder: str | os.PathLike, repo_id: str) -> str:
    """What the training scripts' ``--push_to_hub`` does once training has finished: publish the
    folder through :func:`publish` (validation, card, the leak guard against the real data named in
    ``$GENSSL_REAL_DATA``) to a private repo. Returns the repo URL. Training modules never import
    this: the scripts hand it to their ``main(publish=...)``."""
    result = publish(kind, folder, repo_id, private=True)
    return result.url or repo_id


def build_parser():
    """The command line's parser (:mod:`.publish_cli`)."""
    from .publish_cli import build_parser as cli_parser

    return cli_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (:mod:`.publish_cli`)."""
    from .publish_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
