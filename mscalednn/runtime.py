"""Process-wide settings that make training fast on the CPU.

glibc's malloc returns large freed blocks to the system (munmap, heap trimming) and maps them
again at the next allocation, so every training step pays page faults on every large tensor:
on the development machine that made a forward-Laplacian step at d = 100 about twice as slow
(benchmarks/RESULTS.md). :func:`tune_allocator` asks glibc to keep freed memory in the process
instead (the same as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_). The
``mscale`` command calls it; a library user may call it once at start-up. The cost: the
process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only); True if the settings were applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, 2**30)          # the largest value glibc accepts: no mmap per tensor
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)     # never give the heap's top back
    ok &= mallopt(_M_TOP_PAD, 2**28)                # grow the heap in 256 MiB steps
    return bool(ok)
