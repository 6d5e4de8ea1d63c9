#!/usr/bin/env python
"""Run every ``benchmarks/bench_*.py`` and collect the one JSON line each prints into
``benchmarks/results.json`` (``make bench``; ``--quick`` passes the quick size through)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.machine import machine_info  # noqa: E402


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="run each benchmark at its quick size")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names (without bench_ / .py)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per benchmark")
    args = parser.parse_args(argv)

    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {f"bench_{n.removeprefix('bench_').removesuffix('.py')}.py" for n in args.only}
        scripts = [s for s in scripts if s.name in wanted]
    results, failures = [], []
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for script in scripts:
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"== {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        sys.stdout.write(proc.stdout[-4000:])
        record = last_json_line(proc.stdout)
        if proc.returncode != 0 or record is None:
            failures.append(script.name)
            sys.stderr.write(proc.stderr[-4000:])
            continue
        record.setdefault("script", script.name)
        record["wall_s"] = round(time.perf_counter() - start, 1)
        record["quick"] = args.quick
        results.append(record)
    payload = {
        # each result carries its own machine block with the matmul peaks of its run; this one names the machine kind
        "machine": {**machine_info(peaks=False), "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
        "failed": failures,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"collected {len(results)} results into {args.out}; failed: {failures or 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
