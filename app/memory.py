"""Keeping freed memory in the process for the next request (glibc's malloc).

glibc serves every block over its mmap threshold (128 kB, rising to at most 32 MB) with a
fresh ``mmap`` and unmaps it when freed. A forward pass allocates and frees many activation
tensors that big, so every request faults all their pages in again, each page zeroed by the
kernel first: 57,600 page faults a forward for deeplabv3_resnet50 at 640x480 (225 MB), 11,600
for deeplabv3_mobilenet_v3_large. With ``mmap`` and trimming off, freed blocks stay in
malloc's heap and the next forward reuses them: no faults, and a forward 1.1x (resnet50) to
1.2x (mobilenet) faster, with less variance (docs/PERFORMANCE.md, "Freed memory").

The cost: the process keeps the heap its largest request needed instead of returning it.
This is what swapping in jemalloc or tcmalloc with ``LD_PRELOAD`` buys CPU inference, done
with the C library the process already has.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int: the largest threshold it can express, i.e. never trim.
NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc's malloc never to ``mmap`` blocks nor trim its heap; whether it agreed.

    False where the C library is not glibc (musl's ``mallopt`` accepts nothing, macOS has
    none): memory then behaves as it did.
    """
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt is a stub
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Both or neither matter: without trimming off, the heap's top would still go back.
    kept = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    log.debug("malloc keeps freed memory: %s", kept)
    return kept
