"""A stratified, seeded validation split carved out of a training split (scikit-learn)."""

from __future__ import annotations

from collections import Counter

import datasets
import numpy as np

RARE = "__rare__"


def _column(ds: datasets.Dataset, name: str) -> list:
    if name not in ds.column_names:
        raise KeyError(f"dataset has no column {name!r}; its columns are {ds.column_names}")
    # straight from Arrow (honours an indices mapping; never decodes the image column)
    return ds.select_columns([name]).with_format("arrow")[:][name].to_pylist()


def _strata(values: list, min_count: int) -> np.ndarray:
    """Stratum key per row: the class, or for a multi-label list its label combination; combinations
    rarer than ``min_count`` are pooled (then into the largest stratum if the pool is still too small)."""
    keys = ["|".join(map(str, sorted(v))) if isinstance(v, (list, tuple)) else str(v) for v in values]
    counts = Counter(keys)
    keys = [k if counts[k] >= min_count else RARE for k in keys]
    counts = Counter(keys)
    if 0 < counts.get(RARE, 0) < min_count:
        biggest = max((k for k in counts if k != RARE), key=lambda k: counts[k], default=RARE)
        keys = [biggest if k == RARE else k for k in keys]
    return np.asarray(keys)


def stratified_split(
    ds: datasets.Dataset,
    fraction: float = 0.1,
    seed: int = 0,
    *,
    by: str | None = None,
    group_by: str | None = None,
) -> datasets.DatasetDict:
    """Split ``ds`` into ``train`` and ``validation`` (about ``fraction`` of the rows), stratified.

    Args:
        by: the column to stratify on; default ``label`` (multi-class) or ``labels``
            (multi-label: the label *combination* is the stratum, combinations with too few rows
            are pooled). Any other column (e.g. ``subtype``) works too.
        group_by: keep all rows of a group (e.g. ``patient_id``) on one side, so no patient is in
            both. Then ``fraction`` of the *groups* go to validation, stratified by each group's
            most common stratum; the row share follows when group sizes do not depend on the class.
        seed: the shuffling seed; the same seed on the same dataset gives the same split.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if len(ds) < 2:
        raise ValueError(f"cannot split a dataset of {len(ds)} row(s)")
    if by is None:
        by = "label" if "label" in ds.column_names else "labels"
    values = _column(ds, by)
    indices = np.arange(len(ds))
    if group_by is None:
        strata = _strata(values, 2)
        n_val = max(1, int(round(fraction * len(ds))))
        n_val = max(n_val, len(set(strata)))  # sklearn needs a validation slot per stratum
        if n_val >= len(ds):
            raise ValueError(f"fraction {fraction} leaves no training rows ({len(ds)} rows, {len(set(strata))} strata)")
        train_idx, val_idx = train_test_split(indices, test_size=n_val, stratify=strata, random_state=seed)
    else:
        # Split the groups, not the rows: each group is stratified by its most common stratum
        # (sklearn's StratifiedGroupKFold is exact-greedy but takes seconds per few thousand groups).
        groups = [str(g) for g in _column(ds, group_by)]
        if any(g == "" for g in groups):
            raise ValueError(f"column {group_by!r} has empty values; cannot group by it")
        row_keys = _strata(values, 1)
        per_group: dict[str, Counter] = {}
        for g, k in zip(groups, row_keys):
            per_group.setdefault(g, Counter())[k] += 1
        names = sorted(per_group)
        if len(names) < 2:
            raise ValueError(f"column {group_by!r} has a single group; cannot split by it")
        group_keys = _strata([min(c, key=lambda k: (-c[k], k)) for c in (per_group[n] for n in names)], 2)
        n_val = min(len(names) - 1, max(1, int(round(fraction * len(names))), len(set(group_keys))))
        _, val_groups = train_test_split(
            np.asarray(names),
            test_size=n_val,
            stratify=group_keys if n_val >= len(set(group_keys)) else None,
            random_state=seed,
        )
        in_val = np.isin(np.asarray(groups), val_groups)
        train_idx, val_idx = indices[~in_val], indices[in_val]
    return datasets.DatasetDict({"train": ds.select(np.sort(train_idx)), "validation": ds.select(np.sort(val_idx))})
