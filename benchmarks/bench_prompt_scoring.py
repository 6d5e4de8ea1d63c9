#!/usr/bin/env python
"""Benchmark: relevance scoring of the shipped candidate features over synthetic reports.

Scores the 40 shipped candidate features (both variants at once) against N synthetic
radiology-style reports (seeded; 3-8 sentences, negations, pseudo-negations) with
``genssl_hf.prompts.score_features``, repeats, and reports the median seconds per 100k reports.
The baseline, measured side by side on a subsample and scaled to the same N, is a plain-Python
scorer with the same phrase rules (per report, per feature scan).

    python benchmarks/bench_prompt_scoring.py            # 100k reports, 5 repeats
    python benchmarks/bench_prompt_scoring.py --quick    # 20k reports, 3 repeats (about a minute)

Ends with one JSON line: {"name", "value", "unit", "baseline", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402

from genssl_hf.prompts import load_candidates, score_features  # noqa: E402
from genssl_hf.prompts.report_tokens import (  # noqa: E402
    POST_NEGATION,
    PRE_NEGATION,
    PSEUDO_NEGATION,
    SCOPE_END,
    SKIP_TOKENS,
    _fold,
    feature_tokens,
)

FINDINGS = [
    "pleural effusion",
    "pneumothorax",
    "focal consolidation",
    "pulmonary edema",
    "cardiomegaly",
    "atelectasis",
    "airspace disease",
    "vascular congestion",
    "interstitial markings",
    "air bronchograms",
    "volume loss",
]
SIZES = ["Small", "Large", "Mild", "Moderate", "Trace"]
SIDES = ["left", "right", "bilateral", "left basilar", "right upper lobe"]
TEMPLATES = [
    "No {f}.",
    "No {f} or {g}.",
    "There is no evidence of {f}.",
    "{S} {s} {f}.",
    "{S} {f} with {g}.",
    "The {f} has resolved.",
    "No change in {f}.",
    "Heart size is normal.",
    "The lungs are clear.",
    "Negative for {f}, but {g} is present.",
    "Free of {f}; {S} {g} on the {s}.",
    "Stable {f} without {g}.",
    "Blunting of the costophrenic angles.",
    "Degenerative changes of the thoracic spine.",
]


def synthetic_reports(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(3, 8)
        out.append(
            " ".join(
                rng.choice(TEMPLATES).format(
                    f=rng.choice(FINDINGS), g=rng.choice(FINDINGS), S=rng.choice(SIZES), s=rng.choice(SIDES)
                )
                for _ in range(k)
            )
        )
    return out


def naive_scores(features: list[str], reports: list[str]) -> list[tuple[int, int]]:
    """Plain-Python phrase scorer (the documented rules, no vectorisation)."""

    def seqs(lst):
        return [tuple(_fold(t) for t in re.findall(r"\w+", x)) for x in lst]

    pre_s, post_s, pseudo_s, end_s = seqs(PRE_NEGATION), seqs(POST_NEGATION), seqs(PSEUDO_NEGATION), seqs(SCOPE_END)
    feats = [feature_tokens(f) for f in features]
    totals = [[0, 0] for _ in features]
    for report in reports:
        toks = [_fold(t) for t in re.findall(r"\w+|[.;:!?]", report.lower())]

        def starts(seq, toks=toks):
            k = len(seq)
            return [i for i in range(len(toks) - k + 1) if tuple(toks[i : i + k]) == seq]

        pseudo = {i for s in pseudo_s for i in starts(s)}
        bound = sorted({i for i, t in enumerate(toks) if t in ".;:!?"} | {i for s in end_s for i in starts(s)})
        pre = [i + len(s) - 1 for s in pre_s for i in starts(s) if i not in pseudo]
        post = [i for s in post_s for i in starts(s) if i not in pseudo]
        content = [(i, t) for i, t in enumerate(toks) if t not in SKIP_TOKENS]
        ctoks = [t for _, t in content]
        for f, feat in enumerate(feats):
            k = len(feat)
            j = 0
            while j <= len(ctoks) - k:
                if tuple(ctoks[j : j + k]) == feat:
                    first, last = content[j][0], content[j + k - 1][0]
                    lo = max([b for b in bound if b <= first], default=0)
                    hi = min([b for b in bound if b > last], default=len(toks))
                    totals[f][0] += 1
                    if not (any(lo <= p < first for p in pre) or any(last < p < hi for p in post)):
                        totals[f][1] += 1
                    j += k
                else:
                    j += 1
    return [tuple(t) for t in totals]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true", help="20k reports, 3 repeats")
    ap.add_argument("--num-reports", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--baseline-reports", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.num_reports or (20_000 if args.quick else 100_000)
    repeats = args.repeats or (3 if args.quick else 5)
    info = machine_info()
    print_machine(info)
    reports = synthetic_reports(n, args.seed)
    cands = load_candidates()
    features = list(dict.fromkeys(e["feature"] for v in cands["diseases"].values() for e in v))

    timings = {}
    for match in ("tokens", "phrase"):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            score_features(features, reports, match=match)
            ts.append(time.perf_counter() - t0)
        timings[match] = statistics.median(ts)
        print(
            f"{match:6s}: median {timings[match]:.3f} s for {n} reports x {len(features)} features "
            f"({n / timings[match]:,.0f} reports/s; runs {[round(t, 3) for t in ts]})",
            file=sys.stderr,
        )

    # Baseline side by side: plain Python on a subsample, checked equal, scaled to n.
    sub = reports[: args.baseline_reports]
    ts = []
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        ref = naive_scores(features, sub)
        ts.append(time.perf_counter() - t0)
    vec = score_features(features, sub, match="phrase")
    assert [(int(a), int(b)) for a, b in zip(vec.mention_counts, vec.affirmed_counts)] == ref, "vectorised != reference"
    baseline = statistics.median(ts) * n / len(sub)
    per100k = 100_000 / n
    value = timings["phrase"] * per100k
    print(
        json.dumps(
            {
                "name": "prompt_scoring_100k_reports",
                "value": round(value, 3),
                "unit": "s per 100k reports (phrase match, both variants, 40 features)",
                "baseline": round(baseline * per100k, 3),
                "ratio": round(baseline / timings["phrase"], 1),
                "tokens_mode_s_per_100k": round(timings["tokens"] * per100k, 3),
                "num_reports": n,
                "repeats": repeats,
                "machine": finish(info),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
