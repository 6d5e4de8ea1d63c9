"""The phantom world's finding vocabulary: finding specs, their random draw, and the report text
written from them (and parsed back).

A finding spec maps a CheXpert-five finding to ``{"size": "small"|"big", "side": ...}``; sides
follow the radiological convention (the patient's right is on the image's left) and only the
findings of :data:`FINDING_SIDES` that have sides take one. The renderer
(:mod:`genssl_hf.data.phantom_render`) adds its rendering parameters to the spec it returns.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .schema import CHEXPERT5

SIZES = ("small", "big")
SIDES = ("left", "right", "bilateral")
SIDED_FINDINGS = ("Atelectasis", "Consolidation", "Pleural Effusion")
FINDING_SIDES: dict[str, tuple[str, ...]] = {
    "Atelectasis": SIDES,
    "Cardiomegaly": (),
    "Consolidation": SIDES,
    "Edema": ("bilateral",),
    "Pleural Effusion": SIDES,
}


def normalise_findings(findings: Mapping[str, Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Validate a finding spec ``{name: {"size": "small"|"big", "side": ...}}``; fill defaults."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in findings.items():
        if name not in FINDING_SIDES:
            raise ValueError(f"unknown phantom finding {name!r}; known: {list(CHEXPERT5)}")
        spec = dict(spec or {})
        size = spec.setdefault("size", "big")
        if size not in SIZES:
            raise ValueError(f"finding {name!r}: size must be one of {SIZES}, got {size!r}")
        sides = FINDING_SIDES[name]
        if sides:
            side = spec.setdefault("side", "bilateral" if len(sides) == 1 else "right")
            if side not in sides:
                raise ValueError(f"finding {name!r}: side must be one of {sides}, got {side!r}")
        elif spec.get("side") not in (None, ""):
            raise ValueError(f"finding {name!r} has no side, got side={spec['side']!r}")
        else:
            spec.pop("side", None)
        out[name] = spec
    return out


def sample_findings(rng: np.random.Generator, prevalence: float = 0.3) -> dict[str, dict[str, Any]]:
    """Draw each finding independently with probability ``prevalence``, then its size and side."""
    findings = {}
    for name in CHEXPERT5:
        if rng.random() < prevalence:
            spec = {"size": SIZES[int(rng.integers(2))]}
            sides = FINDING_SIDES[name]
            if sides:
                spec["side"] = sides[int(rng.integers(len(sides)))]
            findings[name] = spec
    return findings


def write_report(findings: Mapping[str, Mapping[str, Any]]) -> str:
    """A short radiology-style report from the finding spec, in the heuristic-prompt vocabulary."""
    sentences = []
    for name in CHEXPERT5:
        if name in findings:
            spec = findings[name]
            words = [spec["size"].capitalize()]
            if "side" in spec:
                words.append("bilateral" if spec["side"] == "bilateral" else f"{spec['side']}-sided")
            words.append(name.lower())
            sentences.append(" ".join(words) + ".")
    for name in CHEXPERT5:
        if name not in findings:
            sentences.append(f"No {name.lower()}.")
    return " ".join(sentences)


_PROMPT_SIZE = {"small": "small", "big": "big", "large": "big", "mild": "small", "moderate": "big", "massive": "big"}


def findings_from_text(text: str) -> dict[str, dict[str, Any]]:
    """Parse a report or prompt in the phantom vocabulary back into a finding spec.

    Understands "Big left-sided pleural effusion", "Small bilateral atelectasis", "Cardiomegaly",
    "Edema with pulmonary venous congestion" (the disease word alone means present with default
    size), "No X" and "X with no <feature>" (absent, the negative class of an elaborated prompt). Unknown words are
    ignored, so a heuristic or disease prompt maps to its finding.
    """
    spec: dict[str, dict[str, Any]] = {}
    for sentence in [s.strip().lower() for s in text.replace(",", ".").split(".") if s.strip()]:
        for name in CHEXPERT5:
            key = name.lower()
            if key not in sentence:
                continue
            before, _, after = sentence.partition(key)
            before = before.split()
            if before[-1:] == ["no"] or sentence.startswith("no "):
                continue
            # "{Disease} with no {feature}" stands for the negative class in the elaborated prompt
            # sets (genssl_hf.prompts), so it renders as absent here too.
            if after.strip().startswith(("with no ", "without ")):
                continue
            entry: dict[str, Any] = {}
            for w in before:
                if w in _PROMPT_SIZE:
                    entry["size"] = _PROMPT_SIZE[w]
                side = w.removesuffix("-sided")
                if side in SIDES and FINDING_SIDES[name] and side in FINDING_SIDES[name]:
                    entry["side"] = side
            spec[name] = entry
    return normalise_findings(spec)


__all__ = [
    "FINDING_SIDES",
    "SIDED_FINDINGS",
    "SIDES",
    "SIZES",
    "findings_from_text",
    "normalise_findings",
    "sample_findings",
    "write_report",
]
