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
import sys
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


def _run(queues: list[list[str]], cost: dict[str, float], refill) -> float:
    """Two (or more) workers running their queues; ``refill(worker, last_seconds)`` after every test
    may extend ``queues[worker]``. Returns the time the last worker ends."""
    clock = [0.0] * len(queues)
    while any(queues):
        w = min((i for i, q in enumerate(queues) if q), key=lambda i: clock[i])
        test = queues[w].pop(0)
        clock[w] += cost.get(test, 0.0)
        refill(w, cost.get(test, 0.0))
    return max(clock)


def simulate(order: list[str], cost: dict[str, float], split: set[str], workers: int = 2) -> dict[str, float]:
    """The makespan of xdist's round-robin ``load`` scheduler (its chunk and refill rules) and of
    tests/conftest.py's longest-first module scheduler, replaying measured per-test seconds (a model:
    a module fixture's cost stays on the test that paid it in the measured run)."""
    pending = list(order)
    chunk = max(min(len(order) // workers // 4, len(order)), 2)
    queues = [[] for _ in range(workers)]
    for q in queues:
        q.extend(pending[:chunk])
        del pending[:chunk]

    def load_refill(w, last):
        lo, hi = max(2, len(pending) // workers // 4), max(2, len(pending) // workers // 2)
        if pending and len(queues[w]) < lo and not (last >= 0.1 and len(queues[w]) >= 2):
            n = hi - len(queues[w])
            queues[w].extend(pending[:n])
            del pending[:n]

    load = _run(queues, cost, load_refill)
    units: dict[str, list[str]] = {}
    for t in order:
        module = t.split("::", 1)[0]
        units.setdefault(t if module in split else module, []).append(t)
    queues = [[] for _ in range(workers)]

    def longest_refill(w, _last=0.0):
        if units and len(queues[w]) <= 2:
            key = max(units, key=lambda k: sum(cost.get(t, 0.0) for t in units[k]))
            queues[w].extend(units.pop(key))

    for w in range(workers):
        longest_refill(w)
    for w in range(workers):
        longest_refill(w)
    ideal = sum(cost.get(t, 0.0) for t in order) / workers
    return {"load_round_robin": load, "longest_first": _run(queues, cost, longest_refill), "perfect_balance": ideal}


def cpu_time(text: str) -> dict[str, float] | None:
    """User and system CPU seconds and the wall time from a ``/usr/bin/time -v`` report at the end of
    the log (children included: pytest's workers and the launches they wait for)."""
    got = {}
    for key, pattern in (
        ("user_s", r"User time \(seconds\): ([\d.]+)"),
        ("sys_s", r"System time \(seconds\): ([\d.]+)"),
        ("wall", r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)"),
    ):
        m = re.search(pattern, text)
        if not m:
            return None
        got[key] = m.group(1)
    parts = [float(x) for x in got.pop("wall").split(":")]
    wall = sum(v * 60**i for i, v in enumerate(reversed(parts)))
    return {"user_s": float(got["user_s"]), "sys_s": float(got["sys_s"]), "wall_s": wall}


def load_of(uptime_file: Path | None) -> list[list[float]] | None:
    """The load averages (1, 5, 15 min) of every ``uptime`` line in a file (before, after a run)."""
    if uptime_file is None or not uptime_file.is_file():
        return None
    rows = re.findall(r"load average: ([\d.]+), ([\d.]+), ([\d.]+)", uptime_file.read_text())
    return [[float(x) for x in r] for r in rows]


def run_record(log: Path, uptime_file: Path | None, order: list[str] | None) -> dict:
    text = log.read_text(errors="replace")
    if not SUMMARY.search(text):  # a run still going (or killed): what it has reported so far
        return {
            "complete": False,
            "log": str(log),
            "passed_so_far": len(re.findall(r"\bPASSED\b", text)),
            "failed_so_far": re.findall(r"FAILED (\S+)", text),
            "load_before_after": load_of(uptime_file),
        }
    out = summary(text, 20)
    out.pop("modules")
    out["cpu"] = cpu_time(text)
    out["load_before_after"] = load_of(uptime_file)
    if order:
        split = set(json.loads(TABLE.read_text()).get("split", [])) if TABLE.is_file() else set()
        costs = {k: sum(v.values()) for k, v in parse(text).items()}
        out["simulated_makespan_seconds"] = {k: round(v, 1) for k, v in simulate(order, costs, split).items()}
    return out


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


def record(args: argparse.Namespace, order: list[str] | None) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import machine_info, record_results

    machine = machine_info(peaks=False)  # the suite is not compared with a matmul peak
    after = run_record(args.log, args.uptime, order)
    row = {
        "name": "test_suite_time",
        "unit": "seconds; `pytest -n 2 --timeout 900 --durations=0 tests` under /usr/bin/time -v",
        "command": "pytest -n 2 --timeout 900 -p no:cacheprovider --durations=0 tests",
        "after": after,
        "baseline": run_record(args.baseline, args.baseline_uptime, order) if args.baseline else None,
        "machine": machine,
        "note": "shared 2-core machine: wall times move with the load (other sessions' jobs); CPU seconds "
        "(user + sys) and the simulated makespans (measured per-test seconds replayed through both "
        "schedulers) are the comparable numbers",
    }
    record_results([row])
    print("recorded test_suite_time in benchmarks/results.json")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", type=Path, help="the output of pytest --durations=0")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--write-table", action="store_true", help="refresh tests/durations.json from this log")
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--uptime", type=Path, help="`uptime` before and after the run of LOG")
    p.add_argument("--baseline", type=Path, help="the same report for the code before the change")
    p.add_argument("--baseline-uptime", type=Path)
    p.add_argument("--record", action="store_true", help="put the test_suite_time row into results.json")
    p.add_argument("--simulate", type=Path, help="collection order (pytest --collect-only -q): replay both schedulers")
    args = p.parse_args(argv)
    if not args.log.is_file():
        p.error(f"log {args.log} does not exist")
    text = args.log.read_text(errors="replace")
    order = [t for t in args.simulate.read_text().splitlines() if "::" in t] if args.simulate else None
    if not SUMMARY.search(text):
        print(f"{args.log}: no pytest summary line (a run still going, or killed)")
        if args.record:
            record(args, order)
        return {}
    out = summary(text, args.top)
    print(f"{out['pytest_summary']} in {out['pytest_wall_seconds']} s (wall)")
    print(f"sum of test durations {out['sum_seconds']} s (setup {out['setup_seconds']}, call {out['call_seconds']})")
    print("\n| # | seconds | setup | call | test |\n|---|---|---|---|---|")
    for i, r in enumerate(out["slowest"], 1):
        print(f"| {i} | {r['seconds']:.1f} | {r['setup']:.1f} | {r['call']:.1f} | `{r['test']}` |")
    print("\n| module | seconds |\n|---|---|")
    for k, v in list(out["modules"].items())[: args.top]:
        print(f"| `{k}` | {v:.1f} |")
    if order:
        costs = {k: sum(v.values()) for k, v in parse(text).items()}
        split = set(json.loads(TABLE.read_text()).get("split", [])) if TABLE.is_file() else set()
        out["simulated_makespan_seconds"] = {k: round(v, 1) for k, v in simulate(order, costs, split).items()}
        print("\nsimulated two-worker makespan (s):", out["simulated_makespan_seconds"])
    if args.record:
        record(args, order)
    if args.write_table:
        write_table(text, args.min_seconds)
        print(f"wrote {TABLE}")
    return out


if __name__ == "__main__":
    main()
