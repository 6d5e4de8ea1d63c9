"""Card metadata a Hub reader can trust: what the YAML header may say, and what goes to the text.

- ``datasets``: Hub dataset names only (``name`` or ``namespace/name``); a description ("600-image
  subset of ...") goes to the card's text.
- ``model-index``: measured metrics only; a difference between two models (``AUC difference``,
  ``delta``, ``gain``...) is not a metric of this model and goes to the text.
- ``metrics``: the metric types of the model-index, at the top level too.
- ``license: other`` comes with ``license_name`` and ``license_link`` (a ``LICENSE.md`` shipped in
  the repo, :data:`LICENSE_TEXT`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["LICENSE_NAME", "LICENSE_FILE", "LICENSE_TEXT", "tidy_metadata", "is_repo_name"]

LICENSE_NAME = "genssl-research-only"
LICENSE_FILE = "LICENSE.md"
LICENSE_TEXT = """# genssl-research-only

This repository was made with the `genssl_hf` package (GEN-SSL recipe).

1. Research use only. Not a medical device; not for diagnosis, triage or any decision about a
   patient. Synthetic images must never be presented as real patient images.
2. Data the artifact derives from keep their own terms, listed in the card's "Data sources"
   section (for example CC BY-NC-ND 4.0 for the Indiana University reports: non-commercial use).
   Whoever uses or redistributes this artifact accepts those terms as well.
3. Provided as is, without warranty of any kind. Redistributions carry this file.
"""

_REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?$")
_DIFFERENCE = re.compile(r"difference|delta|\bdiff\b|\bgain\b|improvement|\bvs\.?\b|minus", re.I)


def is_repo_name(name: Any) -> bool:
    """Whether ``name`` can be a Hub repo name (not a description)."""
    return isinstance(name, str) and bool(_REPO_NAME.match(name))


def _is_difference(result: Any) -> bool:
    return bool(_DIFFERENCE.search(f"{result.metric_name or ''} {result.metric_type or ''}"))


def tidy_metadata(data: Any, *, is_dataset: bool) -> list[str]:
    """Make ``data`` (a ``ModelCardData`` / ``DatasetCardData``) follow the rules above, in place.
    Returns the lines the card's text must say instead (described datasets, differences)."""
    notes: list[str] = []
    if getattr(data, "license", None) == "other":
        data.license_name = getattr(data, "license_name", None) or LICENSE_NAME
        data.license_link = getattr(data, "license_link", None) or LICENSE_FILE
    if is_dataset:
        return notes
    datasets = [data.datasets] if isinstance(data.datasets, str) else list(data.datasets or [])
    data.datasets = [d for d in datasets if is_repo_name(d)] or None
    notes += [f"Training data: {d}" for d in datasets if not is_repo_name(d)]
    results = list(data.eval_results or [])
    kept = [r for r in results if not _is_difference(r)]
    notes += [
        f"{r.metric_name or r.metric_type} ({r.dataset_name}, {r.dataset_split}): {r.metric_value:.4g}"
        " (a difference between two models, so not in the model-index)"
        for r in results
        if _is_difference(r)
    ]
    data.eval_results = kept or None
    if kept:
        data.metrics = sorted({*(getattr(data, "metrics", None) or []), *(r.metric_type for r in kept)})
    return notes
