"""The options of ``genssl prompts`` (:mod:`genssl_hf.prompts.build`) as typed dataclasses and their
parser (:class:`~genssl_hf.typed_args.TypedArgumentParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genssl_hf.typed_args import TypedArgumentParser, hidden_aliases
from genssl_hf.validation import checked_parser, renamed_options

from .builders import DEFAULT_THRESHOLD
from .scoring import MATCH_MODES, TF_MODES

__all__ = ["PromptSetArguments", "ElaboratedArguments", "PromptHubArguments", "RENAMED_OPTIONS", "build_parser"]


@dataclass(kw_only=True)
class PromptSetArguments:
    _argument_group_name = "prompt set"
    strategy: Literal["disease", "heuristic", "elaborated"] = field(metadata={"help": "how the prompts are built"})
    output_dir: str = field(metadata={"help": "output folder (written atomically)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output_dir folder"})
    no_progress: bool = field(default=False, metadata={"help": "no progress bar"})


@dataclass(kw_only=True)
class ElaboratedArguments:
    _argument_group_name = "elaborated"
    reports: str | None = field(
        default=None,
        metadata={
            "help": "report corpus: IU .tgz, .txt (one per line), .jsonl/.json/.csv/.parquet, or save_to_disk folder"
        },
    )
    column: str = field(default="text", metadata={"help": "text column of a tabular corpus"})
    corpus_name: str | None = field(
        default=None, metadata={"help": "name recorded in the set metadata (default: the file name)"}
    )
    threshold: float = field(default=DEFAULT_THRESHOLD, metadata={"help": "keep features with psi >= this"})
    variant: str = field(
        default="paper",
        metadata={
            "choices": ["paper", "negation-aware", "negation_aware"],
            "help": "score the threshold applies to",
        },
    )
    match: str = field(
        default="tokens", metadata={"choices": list(MATCH_MODES), "help": "how TF counts a multi-word feature"}
    )
    tf: str = field(default="count", metadata={"choices": list(TF_MODES), "help": "TF normalisation"})
    candidates: str | None = field(
        default=None, metadata={"help": "candidate features JSON (default: the shipped curated file)"}
    )
    llm_model: str | None = field(
        default=None,
        metadata={"help": "transformers causal LM (local folder or Hub id) that proposes extra features"},
    )
    llm_endpoint: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible server URL (POST /v1/chat/completions) that proposes extra features"},
    )
    llm_endpoint_model: str = field(default="default", metadata={"help": "model name sent to --llm_endpoint"})
    llm_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "environment variable holding the endpoint's API key"}
    )
    llm_cache: str | None = field(
        default=None, metadata={"help": "answer cache folder (default: ~/.cache/genssl_hf/llm_answers)"}
    )
    llm_max_new_tokens: int = field(default=128, metadata={"help": "tokens per LLM answer"})


@dataclass(kw_only=True)
class PromptHubArguments:
    _argument_group_name = "hub"
    push_to_hub: str | None = field(
        default=None, metadata={"metavar": "REPO_ID", "help": "also upload the set to this Hub dataset repo"}
    )
    public: bool = field(default=False, metadata={"help": "create the Hub repo public (default: private)"})


# Spellings before the options used underscores and transformers' names.
RENAMED_OPTIONS = {"--out": "--output_dir"}
OLD_SPELLINGS = {
    f"--{n.replace('_', '-')}": f"--{n}"
    for n in (
        "corpus_name",
        "llm_model",
        "llm_endpoint",
        "llm_endpoint_model",
        "llm_api_key_env",
        "llm_cache",
        "llm_max_new_tokens",
        "no_progress",
        "push_to_hub",
    )
}


def build_parser() -> TypedArgumentParser:
    p = TypedArgumentParser(
        [PromptSetArguments, ElaboratedArguments, PromptHubArguments],
        prog="genssl prompts",
        description="Build a GEN-SSL prompt set (disease: 5, heuristic: 30, elaborated: ~66) and save it as a folder "
        "with prompts.json and a README card.",
    )
    renamed_options(p, RENAMED_OPTIONS)
    return hidden_aliases(checked_parser(p), OLD_SPELLINGS)
