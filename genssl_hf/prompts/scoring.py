"""Report-relevance scoring of prompt features: psi_p = (1/N) * sum_i TF(p, r_i).

What TF(p, r) means here (pinned by ``tests/test_prompts_scoring.py``):

1. **Tokenisation.** Text is lower-cased; tokens are runs of word characters (Unicode letters,
   digits, combining marks, underscore; so "air-fluid" is the two tokens ``air fluid`` and "XXXX"
   is one token). The characters ``. ; : ! ?`` are kept as *boundary* tokens: they end negation
   scopes and no phrase can match across them, but they are not counted in the report length.
2. **Normalisation of tokens.** Plural folding on both sides (``opacities -> opacity``,
   ``angles -> angle``: a trailing ``ies`` becomes ``y``, a trailing ``s`` not preceded by ``s`` is
   dropped for tokens longer than 3 characters) and the articles/preposition ``a an the of`` are
   skipped when matching, so "blunting of costophrenic angles" matches "blunting of the
   costophrenic angle". Skipped tokens still count in the report length.
3. **count(p, r)** has two documented modes (``match=``):

   - ``"tokens"`` (default): bag of words. ``count(p, r)`` is the mean, over the feature's distinct
     tokens w, of the number of occurrences of w in r. "vascular congestion" in "Pulmonary vascular
     congestion. Vascular calcification." counts (2 + 1) / 2 = 1.5.
   - ``"phrase"``: the number of non-overlapping occurrences of the feature's token sequence in the
     report's token sequence (leftmost first); matches never span a boundary token.

4. **TF** (``tf=``): ``"count"`` (default, the textbook raw term frequency): ``TF(p, r) = count(p, r)``,
   so psi_p is the mean number of mentions per report. ``"length"``: ``TF = count(p, r) / |r|`` with
   ``|r|`` the number of word tokens of r (TF = 0 for an empty report), the length-normalised TF.

   Why the defaults (``match="tokens", tf="count"``): the paper gives neither the tokenisation nor
   the normalisation, but says its threshold 0.015 kept features such as "presence of air-fluid
   levels", "enlarged central pulmonary arteries" and "blunting of costophrenic angles". Such
   phrases almost never occur verbatim in real reports (IU even anonymises "angles" to XXXX), and
   a length-normalised TF at 0.015 demands a mention in about every second report on short
   radiology reports, so neither strict reading lets the paper's own examples through. The bag of
   words with raw counts is the reading under which the paper's threshold behaves as it describes:
   0.015 keeps a feature whose words appear on average at least 1.5 times per 100 reports.
   The shipped elaborated card tabulates what survives under the other readings too.

Two variants are always computed together:

- ``paper``: every mention counts (the paper's psi).
- ``negation_aware``: mentions inside a negated scope do not count. A scope opens after a
  pre-negation trigger (``no``, ``not``, ``without``, ``negative for``, ``free of``, ``absence of``,
  ``resolution of``, ``no evidence of`` ...; ``PRE_NEGATION``) and runs forward to the next boundary
  token or scope terminator (``but``, ``however``, ``although``, ``though``, ``except``, ``aside``,
  ``apart``, ``otherwise``, ``yet``); a post-negation trigger (``resolved``, ``cleared``,
  ``removed``, ``no longer``, ``absent``, ``ruled out``, ``not seen`` ...; ``POST_NEGATION``)
  negates backward to the previous boundary/terminator (or the report start). Pseudo-negations
  (``no change``, ``no interval change``, ``not changed``, ``no significant change``...) open no
  scope. A phrase mention is negated when a pre-trigger ends before its first word, or a
  post-trigger starts after its last word, with no boundary in between; in ``tokens`` mode each
  word occurrence is judged the same way on its own.

Everything is vectorised per batch of reports: Arrow's C++ string kernels tokenise and
dictionary-encode the batch (no Python object per token), then numpy does shifted array comparisons
per feature and cumulative sums for the negation scopes; 100k reports score in
seconds (``benchmarks/bench_prompt_scoring.py``).

The token vocabulary (tokenisation, folding, skipped words, negation triggers) lives in
:mod:`genssl_hf.prompts.report_tokens`, shared with the report labeller; its public names are
part of this module's API too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .report_tokens import (
    _BOUNDARY,
    POST_NEGATION,
    PRE_NEGATION,
    PSEUDO_NEGATION,
    SCOPE_END,
    SKIP_TOKENS,
    _fold,
    _tokenize_batch,
    feature_tokens,
    normalize_tokens,
    tokenize,
)

__all__ = [
    "VARIANTS",
    "TF_MODES",
    "MATCH_MODES",
    "FeatureScores",
    "tokenize",
    "normalize_tokens",
    "feature_tokens",
    "score_features",
    "iter_texts",
]

VARIANTS = ("paper", "negation_aware")
TF_MODES = ("count", "length")
MATCH_MODES = ("tokens", "phrase")


@dataclass
class FeatureScores:
    """psi of each feature under both variants, plus corpus facts (never the text itself)."""

    features: list[str]
    paper: np.ndarray
    negation_aware: np.ndarray
    num_reports: int
    num_tokens: int
    tf: str
    match: str
    corpus_sha256: str
    mention_counts: np.ndarray = field(repr=False)
    affirmed_counts: np.ndarray = field(repr=False)

    def variant(self, name: str) -> np.ndarray:
        if name not in VARIANTS:
            raise ValueError(f"unknown scoring variant {name!r}; choose one of {VARIANTS}")
        return self.paper if name == "paper" else self.negation_aware


def iter_texts(corpus: Any, column: str = "text") -> Iterator[str]:
    """Strings of ``corpus``: a ``datasets.Dataset``/``IterableDataset`` (``column``), or any iterable
    of strings. Raises on a missing column or a non-string row, naming the row."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a hard dependency
        datasets = None
    if isinstance(corpus, (str, bytes)):
        raise TypeError("corpus must be an iterable of report strings or a datasets dataset, not a single string")
    if datasets is not None and isinstance(corpus, (datasets.Dataset, datasets.IterableDataset)):
        names = corpus.column_names
        if names is not None and column not in names:
            raise KeyError(f"corpus has no text column {column!r}; its columns are {list(names)} (pass column=...)")
        if isinstance(corpus, datasets.Dataset):
            # Column access streams Arrow batches without materialising Python row dicts.
            source = (t for batch in corpus.select_columns([column]).iter(batch_size=4096) for t in batch[column])
        else:

            def _rows():
                for i, row in enumerate(corpus):
                    if column not in row:
                        raise KeyError(f"corpus row {i} has no text column {column!r}; its keys are {list(row)}")
                    yield row[column]

            source = _rows()
    else:
        source = iter(corpus)
    for i, t in enumerate(source):
        if not isinstance(t, str):
            raise TypeError(f"corpus row {i} is {type(t).__name__}, not a string: {t!r:.60}")
        yield t


class _Matcher:
    """Pre-compiled features and negation triggers, shared across batches."""

    def __init__(self, features: Sequence[str]):
        self.features = list(features)
        self.seqs = [feature_tokens(f) for f in self.features]
        self.pre = [tuple(normalize_tokens(tokenize(t))) for t in PRE_NEGATION]
        self.post = [tuple(normalize_tokens(tokenize(t))) for t in POST_NEGATION]
        self.pseudo = [tuple(normalize_tokens(tokenize(t))) for t in PSEUDO_NEGATION]
        self.ends = [tuple(normalize_tokens(tokenize(t))) for t in SCOPE_END]
        vocab: dict[str, int] = {}
        for seq in [tuple(sorted(SKIP_TOKENS)), *self.seqs, *self.pre, *self.post, *self.pseudo, *self.ends]:
            for t in seq:
                vocab.setdefault(t, len(vocab) + 2)  # 0: other word, 1: boundary
        self.vocab = vocab
        # A feature whose token sequence has a proper border (prefix == suffix) can overlap itself;
        # only those need the (rare) sequential non-overlap pass.
        self.self_overlapping = [any(s[:k] == s[-k:] for k in range(1, len(s))) for s in self.seqs]


def _find(ids: np.ndarray, seq_ids: Sequence[int]) -> np.ndarray:
    """Start positions where ``seq_ids`` occurs contiguously in ``ids``."""
    k = len(seq_ids)
    n = ids.shape[0] - k + 1
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    hit = ids[:n] == seq_ids[0]
    for j in range(1, k):
        hit &= ids[j : j + n] == seq_ids[j]
    return np.flatnonzero(hit)


def _non_overlapping(starts: np.ndarray, k: int) -> np.ndarray:
    keep, last_end = [], -1
    for s in starts.tolist():
        if s >= last_end:
            keep.append(s)
            last_end = s + k
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class _Stream:
    """A batch's token stream: each token's matcher id (0 any other word, 1 boundary punctuation,
    >= 2 a feature's or trigger's token) and the report it belongs to."""

    ids: np.ndarray
    doc_of: np.ndarray
    n_docs: int

    def find(
        self, m: _Matcher, seq: tuple[str, ...], arr: np.ndarray | None = None, where: np.ndarray | None = None
    ) -> np.ndarray:
        """Start positions of ``seq`` in ``arr`` (default: the stream's ids) that never span two
        reports; ``where`` maps positions in ``arr`` to positions in the stream."""
        st = _find(self.ids if arr is None else arr, [m.vocab[t] for t in seq])
        if st.size and len(seq) > 1:  # never across two reports
            p0 = st if where is None else where[st]
            p1 = st + len(seq) - 1 if where is None else where[st + len(seq) - 1]
            st = st[self.doc_of[p0] == self.doc_of[p1]]
        return st


@dataclass(frozen=True)
class _Scopes:
    """Negation scopes of a stream as cumulative counts: ``seg`` numbers each token's segment (a
    boundary token opens a new one), ``cs_pre`` / ``cs_post`` count the pre- / post-negation marks up
    to each token, ``pre_before_seg`` the pre marks before each segment and ``post_at_seg_end`` the
    post marks up to each segment's end."""

    seg: np.ndarray
    cs_pre: np.ndarray
    cs_post: np.ndarray
    pre_before_seg: np.ndarray
    post_at_seg_end: np.ndarray

    def negated(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Whether each mention spanning stream positions ``first`` .. ``last`` is negated."""
        # negated by a pre-trigger ending before the mention starts, in the same segment ...
        neg = np.where(first > 0, self.cs_pre[np.maximum(first - 1, 0)], 0) - self.pre_before_seg[self.seg[first]] > 0
        # ... or by a post-trigger starting after the mention ends, in the same segment
        neg |= (self.post_at_seg_end[self.seg[last]] - self.cs_post[last]) > 0
        return neg


def _score_batch(texts: list[str], m: _Matcher, match: str = "phrase") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-report count(p, r) of each feature (all mentions / affirmed mentions), shape (F, B),
    and the report word lengths |r|, shape (B,)."""
    B = len(texts)
    codes, uniques, n_tok = _tokenize_batch(texts)
    if codes.shape[0] == 0:
        F = len(m.seqs)
        return np.zeros((F, B), dtype=np.float64), np.zeros((F, B), dtype=np.float64), np.zeros(B, dtype=np.int64)
    # A lookup per *distinct* token only: the vocabulary that matters is the features' and the
    # triggers' tokens (id >= 2); every other word is 0 and boundary punctuation is 1.
    uniq_ids = np.fromiter(
        (1 if u in _BOUNDARY else m.vocab.get(_fold(u), 0) for u in uniques), dtype=np.int32, count=len(uniques)
    )
    stream = _Stream(ids=uniq_ids[codes], doc_of=np.repeat(np.arange(B), n_tok), n_docs=B)
    punct = stream.ids == 1
    words = n_tok - np.bincount(stream.doc_of, weights=punct, minlength=B).astype(np.int64)
    scopes = _negation_scopes(stream, punct, n_tok, m)
    if match == "tokens":
        all_counts, aff_counts = _count_tokens(stream, scopes, m)
    else:
        all_counts, aff_counts = _count_phrases(stream, scopes, m)
    return all_counts, aff_counts, words


def _negation_scopes(stream: _Stream, punct: np.ndarray, n_tok: np.ndarray, m: _Matcher) -> _Scopes:
    """Negation scopes on the full stream (skip tokens included: "free of" needs its "of")."""
    T = stream.ids.shape[0]
    boundary = punct.copy()
    doc_start = np.cumsum(n_tok) - n_tok
    boundary[doc_start[n_tok > 0]] = True
    for seq in m.ends:
        boundary[stream.find(m, seq)] = True
    blocked = np.zeros(T, dtype=bool)
    for seq in m.pseudo:
        blocked[stream.find(m, seq)] = True
    pre_mark = np.zeros(T, dtype=np.int64)
    for seq in m.pre:
        st = stream.find(m, seq)
        pre_mark[st[~blocked[st]] + len(seq) - 1] = 1
    post_mark = np.zeros(T, dtype=np.int64)
    for seq in m.post:
        st = stream.find(m, seq)
        post_mark[st[~blocked[st]]] = 1
    seg = np.cumsum(boundary)  # a boundary token opens a new segment
    n_seg = int(seg[-1]) + 1
    cs_pre = np.cumsum(pre_mark)
    cs_post = np.cumsum(post_mark)
    seg_first = np.searchsorted(seg, np.arange(n_seg), side="left")
    seg_last = np.searchsorted(seg, np.arange(n_seg), side="right") - 1
    pre_before_seg = np.where(seg_first > 0, cs_pre[np.maximum(seg_first - 1, 0)], 0)
    post_at_seg_end = cs_post[np.clip(seg_last, 0, T - 1)]
    return _Scopes(seg, cs_pre, cs_post, pre_before_seg, post_at_seg_end)


def _count_tokens(stream: _Stream, scopes: _Scopes, m: _Matcher) -> tuple[np.ndarray, np.ndarray]:
    """Bag of words: count(p, r) = mean over p's distinct tokens of their occurrences in r (all /
    affirmed occurrences), shape (F, B)."""
    B = stream.n_docs
    all_counts = np.zeros((len(m.seqs), B), dtype=np.float64)
    aff_counts = np.zeros((len(m.seqs), B), dtype=np.float64)
    idx = np.arange(stream.ids.shape[0])
    neg_tok = scopes.negated(idx, idx)
    V = len(m.vocab) + 2
    flat_key = stream.doc_of * V + stream.ids
    M_all = np.bincount(flat_key, minlength=B * V).reshape(B, V)
    M_aff = np.bincount(flat_key[~neg_tok], minlength=B * V).reshape(B, V)
    for f, seq in enumerate(m.seqs):
        cols = sorted({m.vocab[t] for t in seq})
        all_counts[f] = M_all[:, cols].mean(axis=1)
        aff_counts[f] = M_aff[:, cols].mean(axis=1)
    return all_counts, aff_counts


def _count_phrases(stream: _Stream, scopes: _Scopes, m: _Matcher) -> tuple[np.ndarray, np.ndarray]:
    """Phrase: count(p, r) = non-overlapping occurrences of p's token sequence in r (all /
    affirmed), shape (F, B). Matching runs on the content stream: skip tokens removed, boundaries
    kept (so no phrase spans them)."""
    B = stream.n_docs
    all_counts = np.zeros((len(m.seqs), B), dtype=np.float64)
    aff_counts = np.zeros((len(m.seqs), B), dtype=np.float64)
    keep = ~np.isin(stream.ids, [m.vocab[t] for t in SKIP_TOKENS])
    pos = np.flatnonzero(keep)
    cids = stream.ids[keep]
    for f, seq in enumerate(m.seqs):
        k = len(seq)
        st = stream.find(m, seq, cids, pos)  # phrase: contiguous token sequence
        if st.size == 0:
            continue
        if m.self_overlapping[f]:
            st = _non_overlapping(st, k)
        first = pos[st]
        last = pos[st + k - 1]
        docs = stream.doc_of[first]
        all_counts[f] = np.bincount(docs, minlength=B)
        aff_counts[f] = np.bincount(docs[~scopes.negated(first, last)], minlength=B)
    return all_counts, aff_counts


def _checked_features(features: Sequence[str], match: str, tf: str) -> list[str]:
    """The features as a list, after checking the modes and that no feature is empty or matches
    the same tokens as another."""
    if tf not in TF_MODES:
        raise ValueError(f"unknown tf mode {tf!r}; choose one of {TF_MODES}")
    if match not in MATCH_MODES:
        raise ValueError(f"unknown match mode {match!r}; choose one of {MATCH_MODES}")
    features = list(features)
    if not features:
        raise ValueError("no features to score")
    for f in features:
        if not isinstance(f, str) or not f.strip():
            raise ValueError(f"empty or non-string feature {f!r}")
    seen: dict[Any, str] = {}
    for f in features:
        toks = feature_tokens(f)
        key = frozenset(toks) if match == "tokens" else toks
        if key in seen:
            raise ValueError(f"duplicate features {seen[key]!r} and {f!r} match the same tokens {' '.join(toks)!r}")
        seen[key] = f
    return features


class _Totals:
    """Running sums over a corpus' batches: the psi numerators (sum of TF over reports) and the
    mention counts, all and affirmed, per feature, and the number of words."""

    def __init__(self, n_features: int, tf: str):
        self.tf = tf
        self.sum_all = np.zeros(n_features, dtype=np.float64)
        self.sum_aff = np.zeros(n_features, dtype=np.float64)
        self.cnt_all = np.zeros(n_features, dtype=np.float64)
        self.cnt_aff = np.zeros(n_features, dtype=np.float64)
        self.n_words = 0

    def add(self, batch: list[str], m: _Matcher, match: str) -> None:
        a, c, words = _score_batch(batch, m, match)
        self.n_words += int(words.sum())
        self.cnt_all[:] += a.sum(axis=1)
        self.cnt_aff[:] += c.sum(axis=1)
        if self.tf == "count":
            self.sum_all[:] += a.sum(axis=1)
            self.sum_aff[:] += c.sum(axis=1)
        else:
            inv = np.divide(1.0, words, out=np.zeros(len(batch)), where=words > 0)
            self.sum_all[:] += a @ inv
            self.sum_aff[:] += c @ inv


def score_features(
    features: Sequence[str],
    corpus: Any,
    *,
    column: str = "text",
    match: str = "tokens",
    tf: str = "count",
    batch_size: int = 8192,
    show_progress: bool = False,
    corpus_name: str | None = None,
) -> FeatureScores:
    """Score every feature against a streamed corpus under both variants (see module docstring).

    ``corpus``: a ``datasets.Dataset`` / ``IterableDataset`` (text in ``column``) or any iterable of
    strings. Raises ``ValueError`` on an empty corpus or empty/duplicate features, ``KeyError`` on a
    missing column and ``TypeError`` on a non-string row, before any result is returned.
    """
    import hashlib

    features = _checked_features(features, match, tf)
    m = _Matcher(features)
    totals = _Totals(len(features), tf)
    h = hashlib.sha256()  # same construction as genssl_hf.utils.sha256_strings, streamed
    n_reports = 0
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"scoring {corpus_name or 'corpus'}", unit=" reports")
    batch: list[str] = []

    def flush() -> None:
        totals.add(batch, m, match)
        if bar is not None:
            bar.update(len(batch))

    for text in iter_texts(corpus, column):
        b = text.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        batch.append(text)
        n_reports += 1
        if len(batch) >= batch_size:
            flush()
            batch = []
    if batch:
        flush()
    if bar is not None:
        bar.close()
    if n_reports == 0:
        raise ValueError("the corpus is empty: no reports to score")
    return FeatureScores(
        features=features,
        paper=totals.sum_all / n_reports,
        negation_aware=totals.sum_aff / n_reports,
        num_reports=n_reports,
        num_tokens=totals.n_words,
        tf=tf,
        match=match,
        corpus_sha256=h.hexdigest(),
        mention_counts=totals.cnt_all,
        affirmed_counts=totals.cnt_aff,
    )
