"""Keep freed memory in the process instead of returning it to the OS after every training step.

torch's CPU allocator calls malloc and free directly, and glibc serves every large block (activations,
gradients, oneDNN's RNN workspace) with a fresh mmap and unmaps it on free. So each training step
page-faults and zeroes its buffers afresh (hundreds of MB a step for a 2 x 1024 LSTM). With mmap off
(M_MMAP_MAX = 0) large blocks come from the heap, and with a high trim threshold freed blocks stay there for
the next step: a few faults a step, and 2 x 1024 training ran markedly faster (bench/RESULTS.md, session 2).
The cost: the process keeps its peak heap until it exits, which a training or evaluation run reaches anyway.
Where mmap is off, glibc still falls back to it if the heap cannot grow.
CHARRNN_KEEP_FREED_MEMORY=0 in the environment leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; False (and nothing done) on other C libraries."""
    if os.environ.get("CHARRNN_KEEP_FREED_MEMORY") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
