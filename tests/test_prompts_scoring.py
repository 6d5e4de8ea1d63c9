"""Relevance scoring: TF arithmetic on hand-computed examples, negation scopes, streaming inputs,
bad input, and the vectorised scorer against a plain-Python reference."""

import random
import re

import datasets
import numpy as np
import pytest

from genssl_hf.prompts.scoring import feature_tokens, score_features, tokenize
from genssl_hf.utils import sha256_strings


def _phrase(features, reports, **kw):
    return score_features(features, reports, match="phrase", **kw)


# --- tokenisation ------------------------------------------------------------------------------
def test_tokenize_and_feature_tokens():
    assert tokenize("Air-fluid levels; NO effusion.") == ["air", "fluid", "levels", ";", "no", "effusion", "."]
    # plurals folded, articles/"of" skipped, hyphens split
    assert feature_tokens("Blunting of the costophrenic angles") == ("blunting", "costophrenic", "angle")
    assert feature_tokens("bibasilar opacities") == ("bibasilar", "opacity")
    assert feature_tokens("presence of air-fluid levels") == ("presence", "air", "fluid", "level")
    assert feature_tokens("mass") == ("mass",)  # "ss" is not a plural
    with pytest.raises(ValueError, match="no word tokens"):
        feature_tokens("the of")


# --- TF arithmetic, hand-computed ------------------------------------------------------------
REPORTS = [
    "Small left pleural effusion. No pleural effusion on the right.",  # 10 words
    "Pleural effusion pleural effusion",  # 4 words
]


def test_phrase_count_tf():
    s = _phrase(["pleural effusion"], REPORTS, tf="count")
    # r1: 2 mentions (1 negated), r2: 2 mentions -> paper (2+2)/2, negation-aware (1+2)/2
    assert s.paper[0] == pytest.approx(2.0)
    assert s.negation_aware[0] == pytest.approx(1.5)
    assert s.num_reports == 2 and s.num_tokens == 14


def test_phrase_length_tf():
    s = _phrase(["pleural effusion"], REPORTS, tf="length")
    assert s.paper[0] == pytest.approx((2 / 10 + 2 / 4) / 2)
    assert s.negation_aware[0] == pytest.approx((1 / 10 + 2 / 4) / 2)


def test_tokens_mode_is_mean_over_distinct_words():
    reports = ["Pulmonary vascular congestion. Vascular calcification."]  # 5 words
    s = score_features(["vascular congestion"], reports, match="tokens", tf="count")
    assert s.paper[0] == pytest.approx((2 + 1) / 2)
    s = score_features(["vascular congestion"], reports, match="tokens", tf="length")
    assert s.paper[0] == pytest.approx(1.5 / 5)
    # words in any order and any sentence count in tokens mode, not in phrase mode
    s = score_features(["congestion vascular"], ["Congestion. Vascular."], match="tokens")
    assert s.paper[0] == pytest.approx(1.0)
    assert _phrase(["congestion vascular"], ["Congestion. Vascular."]).paper[0] == 0


def test_phrase_matching_rules():
    # articles / "of" skipped, plurals folded
    assert _phrase(["blunting of costophrenic angle"], ["Blunting of the costophrenic angles."]).paper[0] == 1
    # never across a sentence boundary or across two reports
    assert _phrase(["pleural effusion"], ["Right pleural. Effusion absent"]).paper[0] == 0
    assert _phrase(["pleural effusion"], ["left pleural", "effusion here"]).paper.sum() == 0
    # non-overlapping occurrences, leftmost first
    assert _phrase(["effusion effusion"], ["effusion effusion effusion"]).paper[0] == 1
    assert _phrase(["effusion effusion"], ["effusion effusion effusion effusion"]).paper[0] == 2
    # empty report: counted in N, TF 0 (also under length normalisation)
    s = _phrase(["edema"], ["Edema.", ""], tf="length")
    assert s.num_reports == 2 and s.paper[0] == pytest.approx(0.5)


# --- negation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "report, affirmed",
    [
        ("No pleural effusion.", 0),
        ("No pneumothorax or pleural effusion.", 0),
        ("No evidence of pleural effusion.", 0),
        ("Without pleural effusion.", 0),
        ("Negative for pleural effusion.", 0),
        ("The lungs are free of pleural effusion.", 0),
        ("Resolution of pleural effusion.", 0),
        ("The left pleural effusion has resolved.", 0),
        ("Previously seen pleural effusion has cleared", 0),
        ("No pneumothorax. Small pleural effusion.", 1),  # scope ends at the period
        ("No pneumothorax; small pleural effusion", 1),
        ("No pneumothorax, but a small pleural effusion.", 1),  # ... and at "but"
        ("Pleural effusion. No pneumothorax.", 1),  # negation after the mention
        ("No change in the pleural effusion.", 1),  # pseudo-negation
        ("No interval change of pleural effusion", 1),
        ("Pleural effusion. Pleural effusion has resolved. No pleural effusion", 1),
    ],
)
def test_negation_scopes(report, affirmed):
    s = _phrase(["pleural effusion"], [report])
    assert s.mention_counts[0] >= 1
    assert s.affirmed_counts[0] == affirmed
    assert s.paper[0] == s.mention_counts[0]  # the paper variant counts every mention


def test_negation_in_tokens_mode():
    s = score_features(["vascular congestion"], ["No vascular congestion. Vascular calcification."], match="tokens")
    assert s.paper[0] == pytest.approx((2 + 1) / 2)
    assert s.negation_aware[0] == pytest.approx((1 + 0) / 2)


# --- inputs ------------------------------------------------------------------------------------
def test_datasets_inputs_and_corpus_hash():
    texts = ["No edema.", "Mild pulmonary edema.", "Edema and effusion."]
    ref = score_features(["pulmonary edema", "effusion"], texts)
    ds = datasets.Dataset.from_dict({"report": texts, "id": [1, 2, 3]})
    for corpus in (ds, ds.to_iterable_dataset(), iter(texts), (t for t in texts)):
        s = score_features(["pulmonary edema", "effusion"], corpus, column="report")
        np.testing.assert_allclose(s.paper, ref.paper)
        np.testing.assert_allclose(s.negation_aware, ref.negation_aware)
        assert s.corpus_sha256 == sha256_strings(texts)
        assert s.num_reports == 3


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        score_features(["edema"], [])
    with pytest.raises(TypeError, match="row 1"):
        score_features(["edema"], ["Edema.", None])
    with pytest.raises(KeyError, match="no text column 'text'"):
        score_features(["edema"], datasets.Dataset.from_dict({"report": ["x"]}))
    with pytest.raises(KeyError, match="no text column"):
        score_features(["edema"], datasets.Dataset.from_dict({"report": ["x"]}).to_iterable_dataset())
    with pytest.raises(ValueError, match="no features"):
        score_features([], ["x"])
    with pytest.raises(ValueError, match="empty"):
        score_features(["edema", "  "], ["x"])
    with pytest.raises(ValueError, match="duplicate"):
        score_features(["pleural effusion", "Pleural effusions"], ["x"])
    with pytest.raises(TypeError, match="single string"):
        score_features(["edema"], "Edema.")
    with pytest.raises(ValueError, match="tf mode"):
        score_features(["edema"], ["x"], tf="log")


# --- vectorised scorer == plain-Python reference ------------------------------------------------
def _reference_counts(feature, report):
    """Straightforward per-report implementation of the documented phrase rules."""
    from genssl_hf.prompts.report_tokens import (
        POST_NEGATION,
        PRE_NEGATION,
        PSEUDO_NEGATION,
        SCOPE_END,
        SKIP_TOKENS,
        _fold,
    )

    toks = [_fold(t) for t in re.findall(r"\w+|[.;:!?]", report.lower())]
    seqs = lambda lst: [tuple(_fold(t) for t in re.findall(r"\w+", x)) for x in lst]  # noqa: E731

    def starts(seq):
        return [i for i in range(len(toks) - len(seq) + 1) if tuple(toks[i : i + len(seq)]) == seq]

    pseudo = {i for s in seqs(PSEUDO_NEGATION) for i in starts(s)}
    bound = {i for i, t in enumerate(toks) if t in ".;:!?"} | {i for s in seqs(SCOPE_END) for i in starts(s)}
    pre = {i + len(s) - 1 for s in seqs(PRE_NEGATION) for i in starts(s) if i not in pseudo}
    post = {i for s in seqs(POST_NEGATION) for i in starts(s) if i not in pseudo}
    content = [(i, t) for i, t in enumerate(toks) if t not in SKIP_TOKENS]
    feat = feature_tokens(feature)
    k = len(feat)
    n = aff = 0
    j, last_end = 0, -1
    while j <= len(content) - k:
        if tuple(t for _, t in content[j : j + k]) == feat and j >= last_end:
            first, last = content[j][0], content[j + k - 1][0]
            n += 1
            lo = max([b for b in bound if b <= first], default=0)
            hi = min([b for b in bound if b > last], default=len(toks))
            if not (any(lo <= p < first for p in pre) or any(last < p < hi for p in post)):
                aff += 1
            last_end = j + k
            j += k
        else:
            j += 1
    return n, aff


def test_vectorised_matches_reference():
    rng = random.Random(0)
    words = (
        "no pleural effusion edema not the of small left without resolved but change cardiomegaly . ; opacity".split()
    )
    reports = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 25))) for _ in range(300)]
    feats = ["pleural effusion", "edema", "small left opacity", "cardiomegaly", "effusion edema"]
    s = score_features(feats, reports, match="phrase", batch_size=37)  # many batch boundaries
    for f, feat in enumerate(feats):
        ref = [_reference_counts(feat, r) for r in reports]
        assert s.mention_counts[f] == sum(a for a, _ in ref), feat
        assert s.affirmed_counts[f] == sum(b for _, b in ref), feat
