"""The token vocabulary of report scoring and labelling: tokenisation (Arrow's C++ kernels, one
batch at a time), plural folding, the skipped words and the negation triggers.

The rules are documented (and pinned by ``tests/test_prompts_scoring.py``) in
:mod:`genssl_hf.prompts.scoring`, which re-exports the public names; the rule-based report
labeller (:mod:`genssl_hf.prompts.labeller`) shares the same vocabulary.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = [
    "POST_NEGATION",
    "PRE_NEGATION",
    "PSEUDO_NEGATION",
    "SCOPE_END",
    "SKIP_TOKENS",
    "feature_tokens",
    "normalize_tokens",
    "tokenize",
]

_BOUNDARY = frozenset(".;:!?")
SKIP_TOKENS = frozenset({"a", "an", "the", "of"})

PRE_NEGATION = (
    "no",
    "not",
    "without",
    "negative for",
    "free of",
    "absence of",
    "resolution of",
    "no evidence of",
    "no signs of",
    "no sign of",
    "rather than",
    "never",
    "nor",
    "neither",
    "none",
)
POST_NEGATION = (
    "resolved",
    "has resolved",
    "have resolved",
    "cleared",
    "removed",
    "no longer",
    "absent",
    "ruled out",
    "not seen",
    "not identified",
    "not visualized",
)
PSEUDO_NEGATION = (
    "no change",
    "no interval change",
    "no significant change",
    "no significant interval change",
    "not changed",
    "not significantly changed",
    "no increase",
    "not only",
)
SCOPE_END = ("but", "however", "although", "though", "except", "aside", "apart", "otherwise", "yet")


def _fold(tok: str) -> str:
    if len(tok) > 3:
        if tok.endswith("ies"):
            return tok[:-3] + "y"
        if tok.endswith("s") and not tok.endswith("ss"):
            return tok[:-1]
    return tok


def tokenize(text: str) -> list[str]:
    """Lower-case tokens of ``text``: word runs plus the boundary punctuation ``. ; : ! ?``
    (exactly the tokens the batch scorer sees)."""
    codes, uniques, _ = _tokenize_batch([text])
    return [uniques[c] for c in codes.tolist()]


def normalize_tokens(tokens: Iterable[str]) -> list[str]:
    """Plural-folded tokens (the rules: :mod:`genssl_hf.prompts.scoring`)."""
    return [_fold(t) for t in tokens]


def feature_tokens(feature: str) -> tuple[str, ...]:
    """The token sequence a feature matches: folded words, without ``a an the of`` or punctuation."""
    toks = tuple(_fold(t) for t in tokenize(feature) if t not in _BOUNDARY and t not in SKIP_TOKENS)
    if not toks:
        raise ValueError(f"feature {feature!r} has no word tokens to match (after skipping {sorted(SKIP_TOKENS)})")
    return toks


def _tokenize_batch(texts: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Tokenise a batch in Arrow's C++ kernels (no Python object per token): returns the token
    codes into ``uniques`` (the batch's distinct tokens) and the token count of each report.
    Same tokens as :func:`tokenize` (``\\w`` = Unicode letters, digits, marks and underscore)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.utf8_lower(pa.array(texts, type=pa.large_string()))
    arr = pc.replace_substring_regex(arr, r"[^\p{L}\p{N}\p{M}_.;:!?]+", " ")
    arr = pc.replace_substring_regex(arr, r"([.;:!?])", r" \1 ")
    lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(arr))
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    enc = pc.dictionary_encode(lists.values.slice(offsets[0], offsets[-1] - offsets[0]))
    codes = np.asarray(enc.indices, dtype=np.int64)
    uniques = enc.dictionary.to_pylist()
    n_tok = np.diff(offsets)
    if "" in uniques:  # an empty report splits into one empty token: drop it
        empty = uniques.index("")
        keep = codes != empty
        doc = np.repeat(np.arange(len(texts)), n_tok)
        codes = codes[keep]
        n_tok = np.bincount(doc[keep], minlength=len(texts)).astype(np.int64)
    return codes, uniques, n_tok
