"""Metrics of generated radiology reports: language (BLEU-1..4, ROUGE-L, METEOR) and clinical efficacy.

- **BLEU-n** (n = 1..4): corpus BLEU from ``sacrebleu`` (``BLEU(max_ngram_order=n)``), lower-cased,
  ``13a`` tokenisation, no smoothing, one reference per report; reported on the [0, 1] scale as in
  the report-generation literature (R2Gen: BLEU-4 0.165 on IU X-ray).
- **ROUGE-L**: the mean over reports of the LCS F-measure from ``rouge-score`` (no stemming).
- **METEOR**: ``nltk.translate.meteor_score`` averaged over reports. It needs nltk's WordNet data
  (synonym matching), which ``nltk.download`` fetches from the internet; where it is not installed
  METEOR is left out and the result says why (``meteor_skipped``) instead of silently reporting a
  different metric.
- **Clinical efficacy**: the 14 CheXpert observations (or a subset) are extracted from the generated
  and the reference report by :mod:`genssl_hf.prompts.labeller`; an observation counts as stated when
  labelled present (uncertain counts as not stated unless ``uncertain_as="positive"``, the usual CE
  convention); precision / recall / F1 of generated against reference, micro-averaged over
  (report, observation) pairs, plus the macro average and per observation.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from genssl_hf.data.schema import CHEXPERT14
from genssl_hf.prompts.labeller import label_reports, positives

__all__ = [
    "bleu_scores",
    "rouge_l",
    "meteor",
    "meteor_available",
    "language_metrics",
    "clinical_efficacy",
    "report_metrics",
]


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    hyps, refs = list(hypotheses), list(references)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} generated reports but {len(refs)} references")
    if not hyps:
        raise ValueError("no reports to score")
    for name, texts in (("generated", hyps), ("reference", refs)):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{name} report {i} is {type(t).__name__}, not a string")
    return hyps, refs


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str], max_order: int = 4) -> dict[str, float]:
    """Corpus BLEU-1 .. BLEU-``max_order`` (sacrebleu, no smoothing) on [0, 1]."""
    from sacrebleu.metrics import BLEU

    hyps, refs = _check_pairs(hypotheses, references)
    out = {}
    for n in range(1, max_order + 1):
        bleu = BLEU(max_ngram_order=n, lowercase=True, tokenize="13a", smooth_method="none", effective_order=False)
        out[f"bleu{n}"] = float(bleu.corpus_score(hyps, [refs]).score) / 100.0
    return out


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, no stemming)."""
    from rouge_score import rouge_scorer

    hyps, refs = _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]))


def meteor_available() -> tuple[bool, str]:
    """Whether nltk and its WordNet data are installed; the reason when not."""
    try:
        import nltk  # noqa: F401
        from nltk.corpus import wordnet
    except ImportError:
        return False, "METEOR skipped: nltk is not installed"
    try:
        wordnet.ensure_loaded()
    except LookupError:
        return False, (
            "METEOR skipped: nltk's WordNet data is not installed (nltk.download('wordnet') needs "
            "internet access; install it once to get METEOR)"
        )
    return True, ""


def meteor(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean METEOR (nltk) over reports, on lower-cased whitespace/punctuation tokens. Raises
    ``RuntimeError`` (with the reason) when WordNet is missing; :func:`language_metrics` skips instead."""
    ok, reason = meteor_available()
    if not ok:
        raise RuntimeError(reason)
    from nltk.translate.meteor_score import meteor_score

    from genssl_hf.prompts.report_tokens import tokenize

    hyps, refs = _check_pairs(hypotheses, references)
    return float(np.mean([meteor_score([tokenize(r)], tokenize(h)) for h, r in zip(hyps, refs)]))


def language_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """BLEU-1..4, ROUGE-L and METEOR (or ``meteor_skipped`` with the reason)."""
    out: dict[str, Any] = {**bleu_scores(hypotheses, references), "rouge_l": rouge_l(hypotheses, references)}
    ok, reason = meteor_available()
    if ok:
        out["meteor"] = meteor(hypotheses, references)
    else:
        out["meteor_skipped"] = reason
    return out


def clinical_efficacy(
    hypotheses: Sequence[str],
    references: Sequence[str],
    observations: Sequence[str] = CHEXPERT14,
    uncertain_as: str = "negative",
) -> dict[str, Any]:
    """Precision / recall / F1 of the observations stated in the generated reports against those
    stated in the references (micro over report x observation, macro, and per observation)."""
    hyps, refs = _check_pairs(hypotheses, references)
    obs = list(observations)
    y_pred = positives(label_reports(hyps, obs), uncertain_as)
    y_true = positives(label_reports(refs, obs), uncertain_as)
    # counted directly: scikit-learn reads a one-column indicator matrix as a binary/multiclass target
    tp = (y_pred & y_true).sum(axis=0).astype(np.float64)
    fp = (y_pred & (1 - y_true)).sum(axis=0).astype(np.float64)
    fn = ((1 - y_pred) & y_true).sum(axis=0).astype(np.float64)

    def prf(tp_, fp_, fn_):
        p = np.divide(tp_, tp_ + fp_, out=np.zeros_like(tp_), where=(tp_ + fp_) > 0)
        r = np.divide(tp_, tp_ + fn_, out=np.zeros_like(tp_), where=(tp_ + fn_) > 0)
        f = np.divide(2 * p * r, p + r, out=np.zeros_like(tp_), where=(p + r) > 0)
        return p, r, f

    p, r, f = prf(tp, fp, fn)
    mp, mr, mf = prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
    out: dict[str, Any] = {
        "observations": obs,
        "uncertain_as": uncertain_as,
        "num_reports": len(hyps),
        "precision_micro": float(mp[0]),
        "recall_micro": float(mr[0]),
        "f1_micro": float(mf[0]),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
    }
    out["per_observation"] = {
        o: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(y_true[:, i].sum()),
            "predicted": int(y_pred[:, i].sum()),
        }
        for i, o in enumerate(obs)
    }
    return out


def report_metrics(
    hypotheses: Sequence[str],
    references: Sequence[str],
    observations: Sequence[str] = CHEXPERT14,
) -> dict[str, Any]:
    """Language metrics plus clinical efficacy (``ce_*`` keys, details under ``clinical``)."""
    out = language_metrics(hypotheses, references)
    ce = clinical_efficacy(hypotheses, references, observations)
    out.update(
        {
            "ce_precision": ce["precision_micro"],
            "ce_recall": ce["recall_micro"],
            "ce_f1": ce["f1_micro"],
            "ce_f1_macro": ce["f1_macro"],
            "clinical": ce,
        }
    )
    return out
