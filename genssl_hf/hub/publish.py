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
(real-data index, metrics, staging) and :mod:`.leak` (the guard); this module composes them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import HfApi

from ..utils import atomic_dir, read_json
from ..typed_args import hidden_aliases
from ..validation import checked_parser
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
from .leak import LeakError, check_text, describe_index, scan_files
from .provenance import _report_generator_license, collect_provenance
from .stage import REAL_DATA_ENV, _read_metrics, _resolve_index, _stage

__all__ = [
    "KINDS",
    "REPO_TYPES",
    "ArtifactError",
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
    if export is None:
        return _publish_folder(kind, folder, repo_id, **kwargs)
    dry_run = kwargs.get("dry_run")
    if dry_run is not None and Path(dry_run).resolve() == source.resolve():
        raise ValueError(f"dry-run folder {dry_run} is the artifact folder itself; pick another path")
    validate_artifact(kind, source)
    with tempfile.TemporaryDirectory(prefix=f"genssl-export-{kind}-") as tmpd:
        result = _publish_folder(kind, export(source, Path(tmpd) / source.name), repo_id, **kwargs)
    result.source = source
    return result


def _check_destination(source: Path, repo_id: str | None, dry_run: str | os.PathLike | None, overwrite: bool) -> None:
    """Where the publication goes is given and usable: a repo id, or a dry-run folder that is not
    the source and does not exist yet (unless ``overwrite``)."""
    if dry_run is None and not repo_id:
        raise ValueError("pass repo_id (to upload) or dry_run=DIR (to write the folder that would be uploaded)")
    if repo_id is not None and repo_id.count("/") > 1:
        raise ValueError(f"repo_id {repo_id!r} must be 'name' or 'namespace/name'")
    if dry_run is not None:
        dest = Path(dry_run)
        if dest.resolve() == source.resolve():
            raise ValueError(f"dry-run folder {dest} is the artifact folder itself; pick another path")
        if dest.exists() and not overwrite:
            raise FileExistsError(f"dry-run folder {dest} already exists (pass overwrite=True to replace it)")


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
    if metrics is None and kind in ("encoder", "classifier", "report_generator"):
        # the fine-tuning stage writes its selected model's metrics beside the weights
        metrics = next((source / n for n in METRICS_FILES if (source / n).is_file()), None)
    metrics_data = _read_metrics(metrics)
    if kind == "report_generator" and license is None:
        license = _report_generator_license(source)  # the training corpus's terms carry over to the model
    index = _resolve_index(real_data, allow_unchecked)

    # 1. the source reloads with its own loader (before any work)
    validate_artifact(kind, source)
    files = select_files(kind, source, ignore_patterns, include_images)
    if not files:
        raise ArtifactError(f"{kind} folder {source} has no files to publish")
    provenance = collect_provenance(kind, source)
    card = build_card(
        kind,
        source,
        provenance=provenance,
        repo_id=repo_id,
        license=license,
        tags=tags,
        datasets=datasets,
        base_model=base_model,
        metrics=metrics_data,
        eval_dataset=eval_dataset,
        leak_checked=describe_index(index) if index is not None else None,
        related=related,
    )
    text = str(card)

    # 2. leak guard over every outgoing file and the new card, before anything is written
    if index is not None:
        findings = scan_files(source, [f for f in files if f != "README.md"], index)
        if findings:
            raise LeakError(findings, source)
        check_text(text, index, name="README.md")
    shipped = sorted({*files, "README.md"})

    result = PublishResult(
        kind=kind,
        source=source,
        repo_id=repo_id,
        repo_type=REPO_TYPES[kind],
        private=private,
        dry_run=dry_run is not None,
        folder=None,
        files=shipped,
        provenance=provenance,
    )
    # 3. stage, reload, then rename into place or upload
    if dry_run is not None:
        _write_dry_run(kind, source, files, text, Path(dry_run), overwrite)
        result.folder = Path(dry_run)
        logger.info("dry run: wrote %s (%d files) for %s", result.folder, len(shipped), repo_id or kind)
        return result
    _upload(kind, source, files, text, result, api or HfApi(token=token), revision, commit_message)
    logger.info("uploaded %s to %s (%s, %s)", source, repo_id, REPO_TYPES[kind], "private" if private else "public")
    return result


def _write_dry_run(kind: str, source: Path, files: Sequence[str], text: str, dest: Path, overwrite: bool) -> None:
    """Write exactly the folder that would be uploaded to ``dest`` (atomically) and reload it."""
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        _stage(source, files, text, tmp)
        validate_artifact(kind, tmp)


def _upload(
    kind: str,
    source: Path,
    files: Sequence[str],
    text: str,
    result: PublishResult,
    api: HfApi,
    revision: str | None,
    commit_message: str | None,
) -> None:
    """Stage the folder (hard links), reload it, then create the repo and upload; the commit and
    the repo URL go into ``result``."""
    with tempfile.TemporaryDirectory(prefix=f"genssl-publish-{kind}-") as tmpd:
        staged = Path(tmpd) / "upload"
        _stage(source, files, text, staged, link=True)
        validate_artifact(kind, staged)
        repo = api.create_repo(result.repo_id, repo_type=REPO_TYPES[kind], private=result.private, exist_ok=True)
        result.commit = api.upload_folder(
            repo_id=result.repo_id,
            folder_path=str(staged),
            repo_type=REPO_TYPES[kind],
            revision=revision,
            commit_message=commit_message or f"Upload genssl_hf {kind.replace('_', ' ')}",
        )
        result.url = str(getattr(repo, "url", repo) or "") or None
        result.folder = None


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
    if dry_run is None and not namespace:
        raise ValueError("pass namespace (user or organisation to upload to) or dry_run=DIR")
    names = {**DEFAULT_REPO_NAMES, **(repo_names or {})}
    repo_ids = {k: f"{namespace}/{names[k]}" if namespace else names[k] for k in found}
    index = _resolve_index(real_data, allow_unchecked)
    metrics = metrics or {}
    links: dict[str, dict[str, Any]] = {
        "generator": {"datasets": [repo_ids[k] for k in ("prompt_set",) if k in found]},
        "dataset": {
            "datasets": [repo_ids[k] for k in ("prompt_set",) if k in found],
            "related": {k: repo_ids[k] for k in ("generator",) if k in found},
        },
        "encoder": {"datasets": [repo_ids[k] for k in ("dataset",) if k in found]},
        "classifier": {
            "base_model": repo_ids.get("encoder"),
            "datasets": [repo_ids[k] for k in ("dataset",) if k in found],
        },
        "prompt_set": {"related": {k: repo_ids[k] for k in ("generator", "dataset") if k in found}},
        "dual_encoder": {"datasets": [repo_ids[k] for k in ("dataset",) if k in found]},
    }
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
                **{**links.get(k, {}), **kwargs},
            )
        if dry_run is not None:
            return results
        api = api or HfApi(token=token)
        for k in order:
            staged = results[k].folder
            repo = api.create_repo(repo_ids[k], repo_type=REPO_TYPES[k], private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_ids[k],
                folder_path=str(staged),
                repo_type=REPO_TYPES[k],
                commit_message=f"Upload genssl_hf {k.replace('_', ' ')}",
            )
            results[k] = PublishResult(
                kind=k,
                source=found[k],
                repo_id=repo_ids[k],
                repo_type=REPO_TYPES[k],
                private=private,
                dry_run=False,
                folder=None,
                files=results[k].files,
                url=str(getattr(repo, "url", repo)),
                commit=commit,
                provenance=results[k].provenance,
            )
    return results


# ------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="publish",
        description="Publish a genssl_hf artifact folder to the Hugging Face Hub (private by default), "
        "or write exactly the folder that would be uploaded (--dry_run DIR). Every outgoing file is "
        "checked for report text and pixels of the real data given with --real_data.",
    )
    p.add_argument(
        "--kind",
        choices=[*KINDS, "all"],
        required=True,
        help="artifact kind; 'all' publishes every artifact of a run folder given as --folder",
    )
    p.add_argument("--folder", required=True, help="the artifact folder (or the run folder with --kind all)")
    p.add_argument("--repo_id", help="namespace/name of the repo (with --kind all: the namespace)")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True, help="private repo (default)")
    vis.add_argument("--public", dest="private", action="store_false", help="public repo")
    p.add_argument(
        "--dry_run",
        metavar="DIR",
        help="write the folder that would be uploaded to DIR, check it reloads, upload nothing",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dry_run folder")
    p.add_argument("--token", help="Hub token (default: the logged-in token / HF_TOKEN)")
    p.add_argument(
        "--metrics",
        help="metrics JSON for the card's model-index (classifier); with --kind all: applies to the classifier",
    )
    p.add_argument("--eval_dataset", help="name of the evaluation dataset in the model-index")
    p.add_argument(
        "--real_data",
        nargs="+",
        metavar="PATH",
        help="real images / folders / report archives / parquet the artifact must not contain "
        f"(default: ${REAL_DATA_ENV})",
    )
    p.add_argument("--no_leak_check", action="store_true", help="skip the real-data leak check (not recommended)")
    p.add_argument("--license", help="license id for the card (default: keep the card's, else apache-2.0)")
    p.add_argument("--tag", action="append", default=[], help="extra card tag (repeatable)")
    p.add_argument("--dataset", action="append", default=[], help="dataset repo id to list in the card (repeatable)")
    p.add_argument("--base_model", help="base model repo id for the card")
    p.add_argument(
        "--include_images",
        action="store_true",
        default=None,
        help="ship image files of encoder / classifier folders (figures; checked by the leak guard, but "
        "grids and overlays of real images are not matched tile by tile)",
    )
    p.add_argument("--commit_message")
    p.add_argument("-v", "--verbose", action="store_true")
    old = "repo-id dry-run eval-dataset real-data no-leak-check base-model include-images commit-message".split()
    return hidden_aliases(checked_parser(p), {f"--{o}": "--" + o.replace("-", "_") for o in old})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.dry_run is None and not args.repo_id:
        print("error: pass --repo_id to upload, or --dry_run DIR", file=sys.stderr)
        return 2
    try:
        if args.kind == "all":
            res = publish_all(
                args.folder,
                args.repo_id,
                dry_run=args.dry_run,
                real_data=args.real_data,
                allow_unchecked=args.no_leak_check,
                private=args.private,
                token=args.token,
                overwrite=args.overwrite,
                metrics={"classifier": args.metrics} if args.metrics else None,
            )
            out = {k: r.to_dict() for k, r in res.items()}
        else:
            r = publish(
                args.kind,
                args.folder,
                args.repo_id,
                dry_run=args.dry_run,
                private=args.private,
                token=args.token,
                real_data=args.real_data,
                allow_unchecked=args.no_leak_check,
                metrics=args.metrics,
                eval_dataset=args.eval_dataset,
                license=args.license,
                tags=args.tag,
                datasets=args.dataset,
                base_model=args.base_model,
                commit_message=args.commit_message,
                overwrite=args.overwrite,
                include_images=args.include_images,
            )
            out = r.to_dict()
    except (LeakError, ArtifactError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def publish_after_training(kind: str, folder: str | os.PathLike, repo_id: str) -> str:
    """What the training scripts' ``--push_to_hub`` does once training has finished: publish the
    folder through :func:`publish` (validation, card, the leak guard against the real data named in
    ``$GENSSL_REAL_DATA``) to a private repo. Returns the repo URL. Training modules never import
    this: the scripts hand it to their ``main(publish=...)``."""
    result = publish(kind, folder, repo_id, private=True)
    return result.url or repo_id
