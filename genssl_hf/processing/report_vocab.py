"""A word-level report vocabulary built from the training reports, as R2Gen and its successors build
theirs (lower-cased words and punctuation kept when they occur at least ``min_frequency`` times; the
rest map to ``[UNK]``). A decoder trained from scratch on it predicts over tens to a few thousand
words instead of MiniLM's 30,522 WordPiece pieces, which makes each training step several times
cheaper on CPU. The result is a ``PreTrainedTokenizerFast`` (BERT-style special tokens) that saves
to and reloads from a model folder with ``AutoTokenizer``."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

__all__ = ["REPORT_SPECIAL_TOKENS", "build_report_vocabulary_tokenizer"]

REPORT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    # words (hyphenated ones kept whole: "right-sided") and each other punctuation mark as its own
    # token ("effusion." -> "effusion", "."); the pattern keeps its matches and drops the whitespace
    return pre_tokenizers.Split(Regex(r"\w+(?:[-']\w+)*|[^\w\s]"), "removed", invert=True)


def build_report_vocabulary_tokenizer(reports: Sequence[str], min_frequency: int = 3):
    """Word-level tokenizer of ``reports`` (the training split only: no test words leak into the
    vocabulary). Decoding joins words with spaces and attaches punctuation (``"no edema."``)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    if int(min_frequency) < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    reports = list(reports)
    if not reports or not all(isinstance(r, str) for r in reports):
        raise ValueError("build_report_vocabulary_tokenizer needs a non-empty list of report strings")
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = _pre_tokenizer()
    counts: Counter[str] = Counter()
    for r in reports:
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(r)))
    words = sorted(w for w, c in counts.items() if c >= int(min_frequency))
    vocab = {t: i for i, t in enumerate([*REPORT_SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    # BPE-style decoder is wrong here: WordPiece's decoder joins with spaces and glues punctuation
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=512,
    )
