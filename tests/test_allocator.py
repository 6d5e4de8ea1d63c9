"""genssl_hf.core.allocator: freed big blocks stay in the heap (no page faults when reused), the
opt-out, and a clear error for a bad setting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genssl_hf.core import allocator

ROOT = Path(__file__).resolve().parents[1]

# Allocate, touch and free a 64 MB block (over glibc's largest mmap threshold) five times; print the
# minor page faults of the last four rounds: with the heap kept, the block is reused without faults.
_FAULTS = textwrap.dedent(
    """
    import ctypes, resource
    from genssl_hf.core.allocator import retain_freed_memory
    applied = retain_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, sum(faults[1:]))
    """
)


def _reuse_faults(mode: str) -> tuple[bool, int]:
    env = {**os.environ, allocator.MALLOC_ENV: mode, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_retained_blocks_are_reused_without_page_faults():
    applied, retained = _reuse_faults("retain")
    if not applied:
        pytest.skip("not glibc")
    default_applied, default = _reuse_faults("default")
    assert not default_applied
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert default >= 4 * pages // 2  # glibc maps the block afresh each round: every page faults again
    assert retained < pages // 10  # kept in the heap: the block's pages are already mapped


def test_bad_setting_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(allocator.MALLOC_ENV, "jemalloc")
    with pytest.raises(ValueError, match="GENSSL_HF_MALLOC='jemalloc'.*retain, default"):
        allocator.retain_freed_memory()
    monkeypatch.setenv(allocator.MALLOC_ENV, "Default ")
    assert allocator.malloc_choice() == "default"
    assert allocator.retain_freed_memory() is False
