"""Builders for the paper's three prompt strategies.

- **disease** (5 prompts): the CheXpert five names, ``"Atelectasis"`` ... ``"Pleural Effusion"``.
- **heuristic** (30 prompts): every disease x size x side, written ``"{Size} {side} {disease}"``
  with ``Size`` in {Small, Big} and ``side`` in {left-sided, right-sided, bilateral}, disease in
  lower case: "Big left-sided atelectasis", "Small bilateral pleural effusion". 5 diseases x 2
  sizes x 3 sides = 30. Two sizes and three sides are the coarsest grid that says *how much* and
  *where*, the two attributes a radiologist states first for each of these findings; the grid is
  applied uniformly (also to cardiomegaly and edema, which are usually central or bilateral) because
  the paper's 30 is exactly 5 x 6. The phantom world writes its reports in this same vocabulary
  ("Big left-sided pleural effusion. No cardiomegaly."), so heuristic prompts condition generators
  trained on phantoms with words they have seen.
- **elaborated** (about 66): candidate visual features per disease (shipped curated file, optionally
  extended by an LLM) are scored against a real report corpus (:mod:`genssl_hf.prompts.scoring`);
  features with psi >= threshold under the chosen variant become ``"{Disease} with {feature}"``
  (existence positive) and ``"{Disease} with no {feature}"`` (existence negative).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from genssl_hf.data.schema import CHEXPERT5
from genssl_hf.utils import sha256_bytes

from .promptset import Prompt, PromptSet, _check_threshold
from .scoring import MATCH_MODES, TF_MODES, VARIANTS, FeatureScores, score_features

__all__ = [
    "DISEASES",
    "SIZES",
    "SIDES",
    "DEFAULT_THRESHOLD",
    "CANDIDATES_PATH",
    "THRESHOLD_GRID",
    "build_disease_prompts",
    "build_heuristic_prompts",
    "build_elaborated_prompts",
    "load_candidates",
    "normalize_variant",
]

DISEASES: tuple[str, ...] = tuple(CHEXPERT5)
SIZES = ("Small", "Big")
SIDES = ("left-sided", "right-sided", "bilateral")
DEFAULT_THRESHOLD = 0.015
CANDIDATES_PATH = Path(__file__).resolve().parent / "data" / "candidate_features.json"
THRESHOLD_GRID = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1)
PROVENANCES = ("paper", "curated", "llm", "user")


def normalize_variant(variant: str) -> str:
    """``"negation-aware"`` and ``"negation_aware"`` are the same variant."""
    v = str(variant).replace("-", "_")
    if v not in VARIANTS:
        raise ValueError(f"unknown scoring variant {variant!r}; choose 'paper' or 'negation-aware'")
    return v


def build_disease_prompts(diseases: Sequence[str] = DISEASES) -> PromptSet:
    """One prompt per disease, its name: 5 prompts by default."""
    return PromptSet(
        [Prompt(text=d, disease=d, existence="positive", strategy="disease") for d in diseases],
        strategy="disease",
        diseases=list(diseases),
    )


def build_heuristic_prompts(
    diseases: Sequence[str] = DISEASES, sizes: Sequence[str] = SIZES, sides: Sequence[str] = SIDES
) -> PromptSet:
    """disease x size x side, "{Size} {side} {disease}": 30 prompts by default."""
    prompts = [
        Prompt(
            text=f"{size} {side} {d.lower()}",
            disease=d,
            existence="positive",
            strategy="heuristic",
            attributes={"size": size.lower(), "side": side.removesuffix("-sided")},
        )
        for d in diseases
        for size in sizes
        for side in sides
    ]
    return PromptSet(prompts, strategy="heuristic", diseases=list(diseases), sizes=list(sizes), sides=list(sides))


def load_candidates(source: str | os.PathLike | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Candidate features as ``{"name", "version", "sha256", "diseases": {disease: [{"feature",
    "provenance"}, ...]}}``. ``source``: None (the shipped file), a JSON path, or a mapping in the
    same layout (``diseases`` may also map a disease to a plain list of feature strings, provenance
    then ``"user"``)."""
    if source is None or isinstance(source, (str, os.PathLike)):
        path = Path(source) if source is not None else CANDIDATES_PATH
        if not path.is_file():
            raise FileNotFoundError(f"candidate feature file not found: {path}")
        raw = path.read_bytes()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        digest = sha256_bytes(raw)
        origin = "genssl_hf/prompts/data/candidate_features.json" if path == CANDIDATES_PATH else path.name
    else:
        data = dict(source) if isinstance(source, Mapping) else source
        digest = sha256_bytes(json.dumps(data, sort_keys=True).encode())
        origin = "in-memory"
    if not isinstance(data, Mapping):
        raise ValueError(
            f'--candidates ({origin}): expected a JSON object {{"diseases": {{disease: [features]}}}}, '
            f"got a JSON {type(data).__name__}"
        )
    diseases = data.get("diseases")
    if not isinstance(diseases, Mapping) or not diseases:
        raise ValueError(f"candidates ({origin}) need a non-empty 'diseases' mapping")
    out: dict[str, list[dict[str, str]]] = {}
    for disease, items in diseases.items():
        if not isinstance(items, list):
            raise ValueError(f"candidates for {disease!r} must be a list")
        entries = []
        for it in items:
            entry = {"feature": it, "provenance": "user"} if isinstance(it, str) else dict(it)
            feat = entry.get("feature")
            if not isinstance(feat, str) or not feat.strip():
                raise ValueError(f"empty candidate feature for {disease!r}: {it!r}")
            if entry.get("provenance") not in PROVENANCES:
                raise ValueError(
                    f"candidate {feat!r} ({disease}) has provenance {entry.get('provenance')!r}; "
                    f"expected one of {PROVENANCES}"
                )
            entry["feature"] = " ".join(feat.split())
            entries.append(entry)
        out[str(disease)] = entries
    return {
        "name": data.get("name", origin),
        "version": str(data.get("version", "unversioned")),
        "source": origin,
        "sha256": digest,
        "diseases": out,
    }


def _merge_llm(cands: dict[str, Any], llm, diseases: Sequence[str]) -> list[dict[str, Any]]:
    from .llm import feature_key

    answers = []
    for d in diseases:
        have = {feature_key(e["feature"]) for e in cands["diseases"].setdefault(d, [])}
        feats = llm.features(d)
        answers.append({"disease": d, "num_features": len(feats)})
        for f in feats:
            if feature_key(f) not in have:
                cands["diseases"][d].append({"feature": f, "provenance": "llm"})
                have.add(feature_key(f))
    return answers


def _check_scoring_modes(match: str, tf: str) -> None:
    if match not in MATCH_MODES:
        raise ValueError(f"unknown match mode {match!r}; choose one of {MATCH_MODES}")
    if tf not in TF_MODES:
        raise ValueError(f"unknown tf mode {tf!r}; choose one of {TF_MODES}")


def _candidates_for(candidates, diseases: Sequence[str] | None, llm) -> tuple[dict[str, Any], list[str], Any]:
    """The candidate features (extended by ``llm``'s answers when given), the diseases to prompt for
    (default: every disease of the candidates) and the record of the LLM's part (None without one)."""
    cands = load_candidates(candidates)
    diseases = list(diseases) if diseases is not None else list(cands["diseases"])
    missing = [d for d in diseases if d not in cands["diseases"] and llm is None]
    if missing:
        raise ValueError(f"no candidate features for {missing}; candidates cover {list(cands['diseases'])}")
    llm_info = None
    if llm is not None:
        llm_info = {
            "model": llm.model_id,
            "backend": llm.backend,
            "settings": llm.settings,
            "answers": _merge_llm(cands, llm, diseases),
        }
    return cands, diseases, llm_info


def build_elaborated_prompts(
    reports: Any,
    *,
    candidates: str | os.PathLike | Mapping[str, Any] | None = None,
    diseases: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    variant: str = "paper",
    column: str = "text",
    match: str = "tokens",
    tf: str = "count",
    corpus_name: str | None = None,
    llm=None,
    readings_table: bool = True,
    show_progress: bool = False,
    build_command: str | None = None,
) -> PromptSet:
    """Score candidate features against ``reports`` and keep those with psi >= ``threshold``.

    ``reports``: a ``datasets`` dataset (text in ``column``) or an iterable of strings, streamed
    once per scoring reading. ``llm``: an optional :class:`genssl_hf.prompts.llm.FeatureLLM` whose
    de-duplicated answers extend the candidates (provenance ``"llm"``). Prompt order: disease order,
    then candidate order, ``with`` before ``with no``.
    """
    threshold = _check_threshold(threshold)
    variant = normalize_variant(variant)
    _check_scoring_modes(match, tf)
    cands, diseases, llm_info = _candidates_for(candidates, diseases, llm)

    # Score each distinct feature once (the same feature may serve several diseases).
    unique = list(dict.fromkeys(e["feature"] for d in diseases for e in cands["diseases"][d]))
    if not unique:
        raise ValueError("no candidate features to score")
    # A one-shot iterator cannot be streamed twice: materialise it only then.
    if readings_table and iter(reports) is reports:
        reports = list(reports)
    scores = score_features(
        unique, reports, column=column, match=match, tf=tf, show_progress=show_progress, corpus_name=corpus_name
    )
    idx = {f: i for i, f in enumerate(unique)}
    prompts, feature_table = _keep_features(cands, diseases, scores, idx, variant, threshold)
    rows = [idx[r["feature"]] for r in feature_table]  # each feature-table row's position in ``unique``
    table = _survivors_by_threshold(scores, rows)
    readings = (
        _survivors_by_reading(unique, reports, column, scores, variant, threshold, rows) if readings_table else None
    )

    meta: dict[str, Any] = {
        "diseases": diseases,
        "threshold": threshold,
        "variant": variant,
        "scoring": {
            "formula": "psi_p = (1/N) * sum_i TF(p, r_i)",
            "match": match,
            "tf": tf,
            "module": "genssl_hf.prompts.scoring",
        },
        "corpus": {
            "name": corpus_name or "unnamed corpus",
            "sha256": scores.corpus_sha256,
            "num_reports": scores.num_reports,
            "column": column,
        },
        "candidates": {k: cands[k] for k in ("name", "version", "source", "sha256")},
        "features": feature_table,
        "survivors_by_threshold": table,
        "survivors_by_reading": readings,
        "templates": {"positive": "{Disease} with {feature}", "negative": "{Disease} with no {feature}"},
    }
    if llm_info is not None:
        meta["llm"] = llm_info
    if build_command:
        meta["build_command"] = build_command
    return PromptSet(prompts, strategy="elaborated", **meta)


def _keep_features(
    cands: dict[str, Any],
    diseases: Sequence[str],
    scores: FeatureScores,
    idx: dict[str, int],
    variant: str,
    threshold: float,
) -> tuple[list[Prompt], list[dict[str, Any]]]:
    """The prompts of the candidates with psi >= ``threshold`` under ``variant`` ("with", then
    "with no"), and the table of every candidate's scores and whether it was kept."""
    chosen = scores.variant(variant)
    prompts: list[Prompt] = []
    feature_table = []
    for d in diseases:
        for e in cands["diseases"][d]:
            i = idx[e["feature"]]
            sc = {"paper": float(scores.paper[i]), "negation_aware": float(scores.negation_aware[i])}
            kept = bool(chosen[i] >= threshold)
            feature_table.append(
                {"disease": d, "feature": e["feature"], "provenance": e["provenance"], "kept": kept, **sc}
            )
            if not kept:
                continue
            for existence, joiner in (("positive", "with"), ("negative", "with no")):
                prompts.append(
                    Prompt(
                        text=f"{d} {joiner} {e['feature']}",
                        disease=d,
                        existence=existence,
                        strategy="elaborated",
                        feature=e["feature"],
                        feature_provenance=e["provenance"],
                        scores=sc,
                    )
                )
    if not prompts:
        raise ValueError(
            f"no candidate feature reaches psi >= {threshold} under the {variant!r} variant "
            f"(best: {float(chosen.max()):.4g}); lower --threshold or check the corpus"
        )
    return prompts, feature_table


def _survivors_by_threshold(scores: FeatureScores, rows: list[int]) -> dict[str, dict[str, int]]:
    """Prompts kept at each threshold of :data:`THRESHOLD_GRID`, per variant (``rows``: the
    feature-table rows' positions in the scores)."""

    def survivors(values: np.ndarray) -> dict[str, int]:
        per_row = np.array([values[i] for i in rows])
        return {f"{t:g}": int(2 * (per_row >= t).sum()) for t in THRESHOLD_GRID}

    return {"paper": survivors(scores.paper), "negation_aware": survivors(scores.negation_aware)}


def _survivors_by_reading(
    unique: list[str], reports: Any, column: str, scores: FeatureScores, variant: str, threshold: float, rows: list[int]
) -> list[dict[str, Any]]:
    """Prompts kept at ``threshold`` under every reading (match x tf) of psi; ``scores`` is the
    chosen reading's, reused."""
    readings = []
    for m in MATCH_MODES:
        for t in TF_MODES:
            s = (
                scores
                if (m == scores.match and t == scores.tf)
                else score_features(unique, reports, column=column, match=m, tf=t)
            )
            vals = s.variant(variant)
            readings.append(
                {"match": m, "tf": t, "prompts_at_threshold": int(2 * sum(vals[i] >= threshold for i in rows))}
            )
    return readings
