#!/usr/bin/env python
"""Start-up cost of the package: ``python -c "import genssl_hf"`` and ``genssl --help`` (``python -m
genssl_hf --help``), each in a fresh interpreter, median wall time over ``--repeats`` runs.

``--before DIR`` times a second checkout (e.g. a worktree of an older commit) in the same run,
interleaved with this one, so the ratio is measured under the same load.

    python benchmarks/bench_import_time.py --repeats 9 --before ../base --record
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import finish, machine_info, print_machine, record_results  # noqa: E402

PROBES = {
    "import genssl_hf": ["-c", "import genssl_hf"],
    "genssl --help": ["-m", "genssl_hf", "--help"],
    "import genssl_hf.data": ["-c", "import genssl_hf.data"],
}


def time_once(checkout: Path, argv: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    r = subprocess.run([sys.executable, *argv], cwd=checkout, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode not in (0, 2):  # --help of an old checkout without the command exits 1 ("No module named")
        return float("nan")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--before", type=Path, default=None, help="another checkout to time in the same run")
    p.add_argument("--record", action="store_true", help="write the row into benchmarks/results.json")
    p.add_argument("--suffix", default="", help="appended to the row name (@machine-session)")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    checkouts = {"after": ROOT}
    if a.before is not None:
        if not (a.before / "genssl_hf" / "__init__.py").is_file():
            p.error(f"--before {a.before}: no genssl_hf package there")
        checkouts["before"] = a.before.resolve()
    info = machine_info(peaks=False)
    print_machine(info)
    times: dict[str, dict[str, list[float]]] = {k: {probe: [] for probe in PROBES} for k in checkouts}
    for _ in range(a.repeats):  # interleaved: both checkouts see the same load
        for name, checkout in checkouts.items():
            for probe, args in PROBES.items():
                times[name][probe].append(time_once(checkout, args))
    rows = []
    for probe in PROBES:
        row = {"probe": probe}
        for name in checkouts:
            values = [t for t in times[name][probe] if t == t]
            row[f"{name}_median_s"] = round(statistics.median(values), 3) if values else None
        if row.get("before_median_s") and row.get("after_median_s"):
            row["speedup"] = round(row["before_median_s"] / row["after_median_s"], 1)
        rows.append(row)
        print(json.dumps(row))
    result = {
        "name": f"import_time{a.suffix}",
        "unit": f"seconds, median of {a.repeats} fresh interpreters",
        "rows": rows,
        "before": str(checkouts.get("before", "")),
        "machine": finish(info),
    }
    if a.record:
        record_results([result])
    return 0


if __name__ == "__main__":
    sys.exit(main())
