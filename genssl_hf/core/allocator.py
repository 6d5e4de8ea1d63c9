"""Keep freed memory in the process heap while training on a CPU (glibc's malloc).

Why: glibc serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
unmaps it on ``free``. A ViT-S/16 MAE step at batch 32-64 allocates and frees dozens of such blocks
(decoder activations of 26-100 MB), so the kernel zeroes and maps fresh pages for each of them in
every step: 9-10 % of the step's CPU time went to the kernel (``sys``) on this project's 2-core Zen 4
machine. With no mmap'd chunks and a high trim threshold, freed blocks are reused from the heap
(``sys`` 0.2 %). Only where memory comes from changes, never a value: training stays bit-exact.
The price: the process keeps its peak footprint instead of returning freed blocks to the system.
jemalloc / tcmalloc (``LD_PRELOAD``) do the same for users who prefer them.

``GENSSL_HF_MALLOC=default`` leaves glibc as it is (to measure the difference, or to keep the
footprint small). The setting is process-wide and stays for the rest of the process.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["MALLOC_ENV", "retain_freed_memory"]

MALLOC_ENV = "GENSSL_HF_MALLOC"
_CHOICES = ("retain", "default")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
_TRIM_THRESHOLD = 1 << 30  # return heap memory to the system only when over 1 GiB sits free at its top


def malloc_choice() -> str:
    """``retain`` (the default) or ``default``, from :data:`MALLOC_ENV`; another value is an error."""
    choice = os.environ.get(MALLOC_ENV, "retain").strip().lower() or "retain"
    if choice not in _CHOICES:
        raise ValueError(f"{MALLOC_ENV}={os.environ[MALLOC_ENV]!r}: choose one of {', '.join(_CHOICES)}")
    return choice


def retain_freed_memory() -> bool:
    """Set glibc's malloc to take every block from the heap and keep what is freed there (see the
    module doc). Returns True when applied; False under ``GENSSL_HF_MALLOC=default``, off Linux, or
    with a C library that is not glibc (musl has no effective ``mallopt``)."""
    if malloc_choice() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (present only in glibc)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
