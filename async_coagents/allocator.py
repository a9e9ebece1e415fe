"""Keep freed memory in the process: glibc's allocator settings for numpy's large temporaries.

A replicated network (``run.replicas``) computes on arrays of R x B x U numbers: at R = 200 on the
paper's correlated network every temporary is 1.3 MB. glibc hands blocks that large out with
``mmap`` (or trims them off the top of the heap) and gives them back to the kernel when numpy
frees them, so the next update's temporaries start on fresh pages and page-fault on first touch,
a large share of a replicated update at R = 200. :func:`keep_freed_memory` raises the two
thresholds (the ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` of ``mallopt(3)``) so
that freed blocks below 32 MiB stay in the heap for reuse, and the heap is trimmed only past
512 MiB of free space.
It changes where memory comes from, never a number; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024**2  # glibc's ceiling for this setting on 64-bit
TRIM_THRESHOLD = 512 * 1024**2


@functools.cache
def keep_freed_memory() -> bool:
    """Tune this process's allocator once (see the module docstring); True if glibc took it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
