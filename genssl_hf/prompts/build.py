"""Command line: build a prompt set and save it (``scripts/build_prompts.py`` is a thin front).

    python scripts/build_prompts.py --strategy heuristic --output_dir prompts/heuristic
    python scripts/build_prompts.py --strategy elaborated \\
        --reports ../shared/data/iu-xray-reports/NLMCXR_reports.tgz --output_dir prompts/elaborated

``--reports`` accepts the IU archive (``.tgz``/``.tar.gz``: FINDINGS + IMPRESSION of each report with
any, via ``genssl_hf.data.reports``),
a ``.txt`` file (one report per line), a ``.jsonl``/``.json``/``.csv``/``.parquet`` file or a
``save_to_disk`` folder (text in ``--column``). Everything is checked before scoring starts, and the
output folder appears only when complete.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Iterable

from genssl_hf.core.secrets import redact_argv

from .build_args import build_parser
from .builders import (
    build_disease_prompts,
    build_elaborated_prompts,
    build_heuristic_prompts,
    normalize_variant,
)
from .promptset import PromptSet, _check_threshold


def iter_report_texts(path: str | Path, column: str = "text") -> tuple[Any, str]:
    """(corpus, name) for a reports path; the corpus is streamed by the scorer."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"reports not found: {p}")
    name = p.name
    suffixes = "".join(p.suffixes[-2:]).lower()
    if p.is_file() and (suffixes.endswith((".tgz", ".tar.gz", ".tar"))):
        return _iu_texts(p), f"Indiana University chest X-ray reports ({name}; FINDINGS + IMPRESSION)"
    if p.is_file() and p.suffix.lower() == ".txt":
        return _lines(p), name
    import datasets

    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - give the user the path and the reason
            raise ValueError(f"{p} is a folder but not a datasets save_to_disk folder: {e}") from e
        if isinstance(ds, datasets.DatasetDict):
            raise ValueError(f"{p} holds several splits {list(ds)}; pass one split's folder")
        return ds, name
    fmt = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"unsupported reports file {p}: use .tgz (IU archive), .txt, .jsonl, .json, "
            ".csv, .parquet or a save_to_disk folder"
        )
    return datasets.load_dataset(fmt, data_files=str(p), split="train", streaming=True), name


def _iu_texts(path: Path) -> Iterable[str]:
    """The ``text`` column (FINDINGS + IMPRESSION) of each IU report with any text, archive order,
    read by the data layer's :func:`genssl_hf.data.reports.iter_iu_reports`."""

    class _Corpus:  # re-iterable: each pass re-reads the archive
        def __iter__(self):
            from genssl_hf.data.reports import iter_iu_reports

            return (r["text"] for r in iter_iu_reports(path) if r["text"])

    return _Corpus()


def _lines(path: Path) -> Iterable[str]:
    class _Corpus:
        def __iter__(self):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    yield line.rstrip("\n")

    return _Corpus()


def run(args: argparse.Namespace, argv: list[str]) -> PromptSet:
    out = Path(args.output_dir)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"error: {out} already exists (pass --overwrite to replace it)")
    if args.strategy != "elaborated":
        given = [
            o
            for o, v in (
                ("--reports", args.reports),
                ("--candidates", args.candidates),
                ("--llm_model", args.llm_model),
                ("--llm_endpoint", args.llm_endpoint),
            )
            if v
        ]
        if given:
            raise SystemExit(f"error: {', '.join(given)} only apply to --strategy elaborated")
    if args.strategy == "disease":
        ps = build_disease_prompts()
    elif args.strategy == "heuristic":
        ps = build_heuristic_prompts()
    else:
        if not args.reports:
            raise SystemExit("error: --strategy elaborated needs --reports (a report corpus to score features against)")
        try:
            _check_threshold(args.threshold)
            variant = normalize_variant(args.variant)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        if args.llm_model and args.llm_endpoint:
            raise SystemExit("error: pass --llm_model or --llm_endpoint, not both")
        llm = None
        if args.llm_model:
            from .llm import TransformersFeatureLLM

            llm = TransformersFeatureLLM(
                args.llm_model, max_new_tokens=args.llm_max_new_tokens, cache_dir=args.llm_cache
            )
        elif args.llm_endpoint:
            import os

            from .llm import OpenAIFeatureLLM

            llm = OpenAIFeatureLLM(
                args.llm_endpoint,
                args.llm_endpoint_model,
                api_key=os.environ.get(args.llm_api_key_env),
                max_tokens=args.llm_max_new_tokens,
                cache_dir=args.llm_cache,
            )
        corpus, name = iter_report_texts(args.reports, args.column)
        ps = build_elaborated_prompts(
            corpus,
            candidates=args.candidates,
            threshold=args.threshold,
            variant=variant,
            column=args.column,
            match=args.match,
            tf=args.tf,
            corpus_name=args.corpus_name or name,
            llm=llm,
            show_progress=not args.no_progress,
            build_command="python scripts/build_prompts.py " + shlex.join(redact_argv(argv)),
        )
    if args.strategy != "elaborated":
        ps.metadata["build_command"] = "python scripts/build_prompts.py " + shlex.join(redact_argv(argv))
    ps.save_pretrained(out, overwrite=args.overwrite)
    print(f"saved {len(ps)} {ps.strategy} prompts ({len(ps.class_labels)} class labels) to {out}")
    if args.push_to_hub:
        info = ps.push_to_hub(args.push_to_hub, private=not args.public)
        print(f"pushed to {getattr(info, 'commit_url', args.push_to_hub)}")
    return ps


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        run(args, argv)
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
