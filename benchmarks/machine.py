"""The machine a benchmark ran on, measured in the same run: every benchmark prints this block and
puts it in its JSON line, so that a number is never read without its machine.

- CPU model, core count, torch threads; AMX present or not (``amx_bf16`` / ``amx_tile`` in
  /proc/cpuinfo), AVX512-BF16; the "kind" of machine (``cpu-amx``, ``cpu-no-amx`` or
  ``cuda:<GPU name>``), which names the BENCHMARKS.md table a row belongs to;
- dense matmul peaks (GFLOP/s) in fp32 and bf16 (and fp16 on a GPU), measured now, because the
  speed-up that bf16 can give over an fp32 reference is bounded by their ratio at equal arithmetic;
- the load average at start and (with :func:`finish`) at the end: the development machines are
  shared, and absolute numbers move with the load.

    from benchmarks.machine import machine_info, print_machine, finish
    info = machine_info()          # measures the peaks (a few seconds)
    print_machine(info)
    ... benchmark ...
    record["machine"] = finish(info)
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "cpu_model",
    "cpu_flags",
    "has_amx",
    "machine_kind",
    "matmul_peak_gflops",
    "machine_info",
    "print_machine",
    "finish",
    "format_machine",
]


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_family_model() -> str | None:
    """``"family 26 model 2"``: the virtualised model name here is only "AMD EPYC", and two EPYC
    generations differ 1.7x in their bf16 / fp32 matmul ratio (Zen 4: ~2.6x, Zen 5: ~4.4x)."""
    fields = {}
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("cpu family", "model") and key not in fields:
            fields[key] = value.strip()
        if len(fields) == 2:
            return f"family {fields['cpu family']} model {fields['model']}"
    return None


def cpu_flags() -> set[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def has_amx(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return "amx_bf16" in flags or "amx_tile" in flags


def machine_kind(device: str = "cpu") -> str:
    """Which BENCHMARKS.md table a result belongs to."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name()}"
    return "cpu-amx" if has_amx() else "cpu-no-amx"


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5, device: str = "cpu") -> dict[str, float]:
    """Dense ``n x n x n`` matmul throughput in ``dtype``: the median over ``repeats`` timings of 3
    products, as wall-clock GFLOP/s and (CPU only) GFLOP per CPU-second x torch threads, i.e. what
    the cores deliver when another process does not preempt them."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    cuda = device.startswith("cuda")
    for _ in range(2):
        a @ b
    walls, cpus = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(3):
            a @ b
        if cuda:
            torch.cuda.synchronize()
        walls.append((time.perf_counter() - t) / 3)
        cpus.append((time.process_time() - c) / 3)
    flop = 2.0 * n**3
    out = {"wall": round(flop / statistics.median(walls) / 1e9, 1)}
    if not cuda:
        out["cpu_time"] = round(flop / max(statistics.median(cpus), 1e-9) / 1e9 * torch.get_num_threads(), 1)
    return out


def machine_info(peaks: bool = True, device: str = "cpu", n: int | None = None, repeats: int = 5) -> dict[str, Any]:
    """The machine block (see the module docstring). ``peaks=False`` skips the matmul timings
    (for dry runs and tests)."""
    flags = cpu_flags()
    info: dict[str, Any] = {
        "kind": machine_kind(device),
        "cpu_model": cpu_model(),
        "cpu_family_model": cpu_family_model(),
        "amx": has_amx(flags),
        "amx_flags": sorted(f for f in flags if f.startswith("amx")),
        "avx512_bf16": "avx512_bf16" in flags,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "shared_machine_note": "load average counts every process on the machine (other agents included)",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
        )
    if peaks:
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
        if device.startswith("cuda"):
            dtypes["fp16"] = torch.float16
        size = n or (8192 if device.startswith("cuda") else 2048)
        info["matmul_gflops"] = {k: matmul_peak_gflops(dt, size, repeats, device) for k, dt in dtypes.items()}
        info["matmul_n"] = size
        mm = info["matmul_gflops"]
        key = "wall" if device.startswith("cuda") else "cpu_time"
        info["bf16_over_fp32"] = round(mm["bf16"][key] / mm["fp32"][key], 2)
    return info


def finish(info: dict[str, Any]) -> dict[str, Any]:
    """Adds the load average at the end of the run; returns ``info``."""
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return info


def format_machine(info: dict[str, Any]) -> str:
    amx = f"AMX ({', '.join(info['amx_flags'])})" if info["amx"] else "no AMX"
    family = f" ({info['cpu_family_model']})" if info.get("cpu_family_model") else ""
    lines = [
        f"machine [{info['kind']}]: {info['cpu_model']}{family}, {info['cores']} cores, {amx}, "
        f"avx512_bf16 {'yes' if info['avx512_bf16'] else 'no'}, torch {info['torch']} ({info['torch_threads']} threads)"
    ]
    if "gpu" in info:
        lines.append(f"  GPU: {info['gpu']} x {info['gpu_count']}, {info['gpu_memory_gib']} GiB, CUDA {info['cuda']}")
    if "matmul_gflops" in info:
        mm = info["matmul_gflops"]
        peaks = ", ".join(
            f"{k} {v['wall']:.0f}" + (f" (CPU-time {v['cpu_time']:.0f})" if "cpu_time" in v else "")
            for k, v in mm.items()
        )
        lines.append(
            f"  matmul peaks (n={info['matmul_n']}, GFLOP/s, this run): {peaks}; "
            f"bf16/fp32 {info['bf16_over_fp32']:.2f}x"
        )
    load = f"  load average at start {info['load_avg_start'][0]:.2f}"
    if "load_avg_end" in info:
        load += f", at end {info['load_avg_end'][0]:.2f}"
    lines.append(load + f" on {info['cores']} cores (shared machine: other processes count)")
    return "\n".join(lines)


def print_machine(info: dict[str, Any]) -> None:
    print(format_machine(info), flush=True)


def record_results(rows: list[dict[str, Any]], path: str | Path | None = None) -> None:
    """Put result rows (each with a ``name``) into ``benchmarks/results.json``, replacing rows of the
    same name, written atomically. For benchmarks that make several rows and do not go through
    ``run_all.py``, which collects one JSON line per script."""
    import json
    import os

    path = Path(path) if path else Path(__file__).resolve().parent / "results.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"results": [], "failed": []}
    names = {r["name"] for r in rows}
    doc["results"] = [r for r in doc.get("results", []) if r.get("name") not in names] + list(rows)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
