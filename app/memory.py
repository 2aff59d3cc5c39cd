"""Keeping freed memory in the process for the next request (glibc's malloc).

glibc serves every block over its mmap threshold (128 kB, rising to at most 32 MB) with a
fresh ``mmap`` and unmaps it when freed, and gives each thread a heap of its own made of
64 MB pieces that it unmaps when they empty. A forward pass allocates and frees many
activation tensors that big, so every request faults their pages in again, each page
zeroed by the kernel first: time spent on every request for memory the previous one freed.

With one heap for all threads, no ``mmap`` for large blocks and no trimming, freed blocks
stay in the heap and the next forward reuses them: next to no faults, and faster forwards
in a thread like the service's (docs/PERFORMANCE.md, "Freed memory", has the fault counts
and timings). The cost: the process keeps the heap its largest request needed. This is what
swapping in jemalloc or tcmalloc with ``LD_PRELOAD`` buys CPU inference, done with the C
library the process already has.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# mallopt takes an int: the largest threshold it can express, i.e. never trim.
NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc's malloc for one heap, no ``mmap`` and no trimming; whether it agreed.

    Call it before other threads allocate: a thread that already has a heap of its own
    keeps it. False where the C library is not glibc (musl's ``mallopt`` accepts nothing,
    macOS has none): memory then behaves as it did.
    """
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt is a stub
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # All three: a thread's own heap would still be unmapped piece by piece, and without
    # trimming off the main heap's top would still go back.
    kept = (
        mallopt(M_ARENA_MAX, 1) == 1
        and mallopt(M_MMAP_MAX, 0) == 1
        and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    )
    log.debug("malloc keeps freed memory: %s", kept)
    return kept
