"""Process-wide settings: a faster allocator on the CPU, TF32 on GPUs, and signals that stop
training cleanly.

glibc's malloc returns large freed blocks to the system (munmap, heap trimming) and maps them
again at the next allocation, so every training step pays page faults on every large tensor:
on the development machine that made a forward-Laplacian step at d = 100 about twice as slow
(benchmarks/RESULTS.md). :func:`tune_allocator` asks glibc to keep freed memory in the process
instead (the same as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_). The
``mscale`` command calls it; a library user may call it once at start-up. The cost: the
process keeps its peak memory until it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import signal
import sys
import threading

import torch

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


@contextlib.contextmanager
def tf32(enabled: bool):
    """Within: float32 matrix products and convolutions on NVIDIA GPUs in TF32 (10-bit mantissa,
    faster on Ampere and later) if ``enabled``, in full float32 otherwise; the previous settings
    are restored after. No effect on the CPU."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


class StopRequest:
    """SIGINT / SIGTERM as a request to stop: a context manager whose instance, called, says
    whether a signal came. The training loop asks after every step, writes a checkpoint and
    returns (``mscale solve`` then exits 128 + the signal number: 130, 143). A second signal
    while the first is handled raises KeyboardInterrupt as usual. Handlers are installed only
    in the main thread (elsewhere Python does not allow it) and restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __call__(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
