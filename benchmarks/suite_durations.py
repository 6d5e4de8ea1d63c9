#!/usr/bin/env python
"""The test suite's time, from a ``pytest --durations=0`` log (issue 37, item 5).

    pytest -n 2 --timeout 900 -p no:cacheprovider --durations=0 -q tests | tee suite.txt
    python benchmarks/suite_durations.py suite.txt                 # summary: total, slowest 20
    python benchmarks/suite_durations.py suite.txt --write-table   # also refresh tests/durations.json

Each test's seconds are its setup + call + teardown (a module fixture's cost lands on the first test
that uses it). Their sum is a load-independent proxy of the suite's cost (the wall time of ``-n 2``
is about half of it when the two workers end together). ``--write-table`` stores every test of at
least ``--min-seconds`` in tests/durations.json, which tests/conftest.py's xdist scheduler reads to
hand out the longest modules first; the "split" list there (modules whose slow tests share no
fixture, handed out test by test) is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "durations.json"
LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(setup|call|teardown)\s+(\S.*?)\s*$")
SUMMARY = re.compile(r"^=*\s*(\d+ (?:passed|failed).*?) in ([\d.]+)s", re.M)


def parse(text: str) -> dict[str, dict[str, float]]:
    """``{nodeid: {"setup": s, "call": s, "teardown": s}}`` from a --durations=0 report."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out[m.group(3)][m.group(2)] = out[m.group(3)].get(m.group(2), 0.0) + float(m.group(1))
    if not out:
        raise ValueError("no duration lines found: run pytest with --durations=0 (and without -v's truncation)")
    return dict(out)


def summary(text: str, top: int = 20) -> dict:
    per_test = parse(text)
    totals = {k: sum(v.values()) for k, v in per_test.items()}
    by_module: dict[str, float] = defaultdict(float)
    for nodeid, s in totals.items():
        by_module[nodeid.split("::", 1)[0]] += s
    m = SUMMARY.search(text)
    return {
        "tests_timed": len(totals),
        "sum_seconds": round(sum(totals.values()), 1),
        "setup_seconds": round(sum(v.get("setup", 0.0) for v in per_test.values()), 1),
        "call_seconds": round(sum(v.get("call", 0.0) for v in per_test.values()), 1),
        "pytest_summary": m.group(1) if m else None,
        "pytest_wall_seconds": float(m.group(2)) if m else None,
        "slowest": [
            {"test": k, "seconds": round(s, 2), **{p: round(per_test[k].get(p, 0.0), 2) for p in ("setup", "call")}}
            for k, s in sorted(totals.items(), key=lambda kv: -kv[1])[:top]
        ],
        "modules": {k: round(v, 1) for k, v in sorted(by_module.items(), key=lambda kv: -kv[1])},
    }


def write_table(text: str, min_seconds: float) -> None:
    old = json.loads(TABLE.read_text()) if TABLE.is_file() else {}
    totals = {k: sum(v.values()) for k, v in parse(text).items()}
    seconds = {k: round(s, 1) for k, s in sorted(totals.items()) if s >= min_seconds}
    table = {
        "about": "seconds per test (setup + call + teardown) for tests/conftest.py's xdist scheduler; "
        "tests not listed count default_seconds; refresh with benchmarks/suite_durations.py",
        "default_seconds": old.get("default_seconds", 0.5),
        "split": old.get("split", []),
        "seconds": seconds,
    }
    tmp = TABLE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    tmp.replace(TABLE)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", type=Path, help="the output of pytest --durations=0")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--write-table", action="store_true", help="refresh tests/durations.json from this log")
    p.add_argument("--min-seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    if not args.log.is_file():
        p.error(f"log {args.log} does not exist")
    text = args.log.read_text(errors="replace")
    out = summary(text, args.top)
    print(f"{out['pytest_summary']} in {out['pytest_wall_seconds']} s (wall)")
    print(f"sum of test durations {out['sum_seconds']} s (setup {out['setup_seconds']}, call {out['call_seconds']})")
    print("\n| # | seconds | setup | call | test |\n|---|---|---|---|---|")
    for i, r in enumerate(out["slowest"], 1):
        print(f"| {i} | {r['seconds']:.1f} | {r['setup']:.1f} | {r['call']:.1f} | `{r['test']}` |")
    print("\n| module | seconds |\n|---|---|")
    for k, v in list(out["modules"].items())[: args.top]:
        print(f"| `{k}` | {v:.1f} |")
    if args.write_table:
        write_table(text, args.min_seconds)
        print(f"wrote {TABLE}")
    return out


if __name__ == "__main__":
    main()
