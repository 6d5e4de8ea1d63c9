"""The ``publish`` command line (``scripts/publish.py``, ``python -m genssl_hf.hub.publish``): one
artifact folder, or every artifact of a run folder with ``--kind all``; the work is done by
:func:`genssl_hf.hub.publish.publish` / :func:`~genssl_hf.hub.publish.publish_all`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from ..typed_args import hidden_aliases
from ..validation import checked_parser
from . import publish as _publish
from .artifacts import KINDS, ArtifactError
from .leak import LeakError
from .stage import REAL_DATA_ENV


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genssl publish",
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
            res = _publish.publish_all(
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
            r = _publish.publish(
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
